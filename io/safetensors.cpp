#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "engine/error.h"
#include "io/atomic_file.h"
#include "io/config.h"

namespace mb {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian; so is this code");

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Same cap as the reference implementation: a larger header is corruption, not a model.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// The deepest legitimate nesting is top object > entry object > shape list (start depths 0, 1, 2).
constexpr int kMaxDepth = 2;

// Parses the header, rejecting duplicate keys (nlohmann would silently keep the last one) and
// needless nesting. Throws mb::Error without the path; the caller prefixes it.
json parse_header(const char* begin, const char* end) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    using E = json::parse_event_t;
    if (ev == E::object_start || ev == E::array_start) {
      if (depth > kMaxDepth) throw Error("header nests too deeply");
      if (ev == E::object_start) keys.emplace_back();
    } else if (ev == E::object_end) {
      keys.pop_back();
    } else if (ev == E::key && !keys.back().insert(parsed.get<std::string>()).second) {
      throw Error("duplicate key '" + parsed.get<std::string>() + "' in header");
    }
    return true;
  };
  if (begin == end || *begin != '{') throw Error("header is not a JSON object (must start with '{')");
  try {
    return json::parse(begin, end, cb);
  } catch (const json::exception& e) {
    throw Error(std::string("header is not valid JSON: ") + e.what());
  }
}

// A JSON integer >= 0 (rejects 1.0, "1", -1).
bool get_uint(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = uint64_t(j.get<int64_t>());
    return true;
  }
  return false;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

// Validates one tensor entry; `err` prefixes messages with the path and tensor name.
Entry parse_entry(const std::string& name, const json& v, const std::string& where) {
  auto err = [&](const std::string& what) { return Error(where + "tensor '" + name + "': " + what); };
  if (!v.is_object()) throw err("entry is not an object");
  Entry e{name, DType::F32, {}, 0, 0};

  auto dt = v.find("dtype");
  if (dt == v.end()) throw err("missing dtype");
  if (!dt->is_string() || !dtype_from_name(dt->get<std::string>(), &e.dtype))
    throw err("unsupported dtype " + dt->dump() + " (supported: F32, F16, BF16, I32, I64, I8)");

  // Each prefix product must fit int64: shape_numel multiplies left to right, so even a shape
  // with a later 0 would overflow there.
  auto sh = v.find("shape");
  const std::string shape_msg = "shape must be a list of non-negative integers";
  if (sh == v.end() || !sh->is_array()) throw err(shape_msg);
  int64_t numel = 1;
  for (const json& d : *sh) {
    uint64_t n;
    if (!get_uint(d, &n)) throw err(shape_msg + ", got " + sh->dump());
    if (n > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, int64_t(n), &numel))
      throw err("shape " + sh->dump() + " is too large");
    e.shape.push_back(int64_t(n));
  }

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !get_uint((*off)[0], &e.begin) ||
      !get_uint((*off)[1], &e.end) || e.begin > e.end)
    throw err("data_offsets must be two integers [begin, end] with 0 <= begin <= end, got " +
              (off == v.end() ? std::string("nothing") : off->dump()));

  uint64_t need;
  if (__builtin_mul_overflow(uint64_t(numel), uint64_t(dtype_size(e.dtype)), &need) || need != e.end - e.begin)
    throw err("byte size mismatch: data_offsets span " + std::to_string(e.end - e.begin) + " bytes but " +
              dtype_name(e.dtype) + " " + shape_str(e.shape) + " needs " + std::to_string(numel) + " x " +
              std::to_string(dtype_size(e.dtype)));
  return e;
}

}  // namespace

SafeTensorsFile read_safetensors(const std::string& path) {
  const std::string where = path + ": ";
  auto fail = [&](const std::string& what) { return Error(where + what); };

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw fail("not a regular file");
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw fail("file is too short (" + std::to_string(size) + " bytes) to be safetensors");
  }
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping keeps the file open
  if (base == MAP_FAILED) throw fail(std::string("mmap failed: ") + std::strerror(map_errno));
  // Shared by every tensor view: the file is unmapped when the last of them dies.
  std::shared_ptr<const void> mapping(base, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  const char* bytes = static_cast<const char*>(base);

  uint64_t header_len;
  std::memcpy(&header_len, bytes, 8);
  if (header_len > size - 8)
    throw fail("header length " + std::to_string(header_len) + " exceeds the file size (" + std::to_string(size) +
               " bytes)");
  if (header_len > kMaxHeaderBytes)
    throw fail("header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  const char* data = bytes + 8 + header_len;
  const uint64_t data_len = size - 8 - header_len;

  json header;
  try {
    header = parse_header(bytes + 8, data);
  } catch (const Error& e) {
    throw fail(e.what());
  }

  SafeTensorsFile out;
  out.path = path;
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ must map strings to strings");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) throw fail("__metadata__ must map strings to strings; '" + k + "' is " + s.dump());
        out.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, v, where));
  }

  // The spec requires the tensors to tile the data buffer exactly: sorted by offsets, each begins
  // where the previous ended and the last ends at the end of the file.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.end > data_len)
      throw fail("tensor '" + e.name + "': data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                 "] are outside the data buffer (" + std::to_string(data_len) + " bytes)");
    if (e.begin < pos)
      throw fail("tensor '" + e.name + "' overlaps tensor '" + prev->name + "' at byte " + std::to_string(e.begin));
    if (e.begin > pos)
      throw fail("data buffer has a hole at bytes [" + std::to_string(pos) + ", " + std::to_string(e.begin) +
                 ") not covered by any tensor");
    pos = e.end;
    prev = &e;
  }
  if (pos != data_len)
    throw fail("data buffer has a hole at bytes [" + std::to_string(pos) + ", " + std::to_string(data_len) +
               ") not covered by any tensor (trailing bytes)");

  for (const Entry& e : entries) {
    const char* p = data + e.begin;
    Tensor t = Tensor::view(mapping, p, e.shape, e.dtype);
    // Offsets are only byte-aligned in general; never hand out a misaligned typed pointer.
    if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) != 0) t = t.clone();
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    MB_CHECK(name != "__metadata__", path + ": '__metadata__' cannot be a tensor name");
    MB_CHECK(!header.contains(name), path + ": duplicate tensor name '" + name + "'");
    MB_CHECK(t.defined(), path + ": tensor '" + name + "' is undefined");
    header[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not valid UTF-8
    throw Error(path + ": cannot write header: " + e.what());
  }
  // Pad so the data buffer starts 8-byte aligned (the 8-byte length prefix is already aligned).
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t len = text.size();

  AtomicFile f(path);
  f.write(&len, 8);
  f.write(text);
  for (const auto& [name, t] : tensors) f.write(t.raw(), t.nbytes());
  f.commit();
}

std::map<std::string, Tensor> read_model_weights(const std::string& dir) {
  const fs::path d(dir);
  const std::string single = (d / "model.safetensors").string();
  const std::string index = (d / "model.safetensors.index.json").string();
  if (fs::exists(single)) return read_safetensors(single).tensors;
  if (!fs::exists(index)) {
    std::string msg = dir + ": no model.safetensors or model.safetensors.index.json";
    if (fs::exists(d / "pytorch_model.bin"))
      msg += " (found pytorch_model.bin, but only safetensors weights are supported; convert it first)";
    throw Error(msg);
  }

  const json j = read_json_file(index);  // errors name the file; size capped
  const std::string map_msg = index + ": \"weight_map\" must be an object mapping tensor names to shard file names";
  MB_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), map_msg);

  std::map<std::string, SafeTensorsFile> shards;  // file name -> loaded shard, each read once
  for (const auto& [name, v] : j["weight_map"].items()) {
    MB_CHECK(v.is_string(), map_msg + "; '" + name + "' maps to " + v.dump());
    const std::string shard = v.get<std::string>();
    // Shards live beside the index; a path must not lead elsewhere.
    MB_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
             index + ": shard name '" + shard + "' for tensor '" + name + "' must be a plain file name");
    auto it = shards.find(shard);
    if (it == shards.end()) {
      const std::string p = (d / shard).string();
      MB_CHECK(fs::exists(p), index + ": shard " + shard + " (holding '" + name + "') not found at " + p);
      it = shards.emplace(shard, read_safetensors(p)).first;
    }
    MB_CHECK(it->second.tensors.count(name),
             index + ": tensor '" + name + "' is listed in " + shard + " but " + it->second.path + " lacks it");
  }

  // Everything the shards hold, names as stored; a name in two shards is ambiguous.
  std::map<std::string, Tensor> out;
  std::map<std::string, std::string> owner;
  for (const auto& [shard, f] : shards)
    for (const auto& [name, t] : f.tensors) {
      auto [it, fresh] = owner.emplace(name, shard);
      MB_CHECK(fresh, index + ": tensor '" + name + "' is present in two shards: " + it->second + " and " + shard);
      out.emplace(name, t);
    }
  return out;
}

}  // namespace mb
