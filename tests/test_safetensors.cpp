// safetensors read/write, sharded model weights and atomic writes.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "engine/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

using namespace mb;
namespace fs = std::filesystem;
using Named = std::vector<std::pair<std::string, Tensor>>;

namespace {

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(bytes.size()));
}

std::string u64le(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

// A hand-made file: length prefix, header text, data bytes.
std::string raw_file(const std::string& header, const std::string& data = "") {
  return u64le(header.size()) + header + data;
}

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

// read_safetensors' error message, or "" if it loads.
std::string read_error(const std::string& path) {
  try {
    read_safetensors(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Address ranges of `path` in this process' memory map.
std::vector<std::pair<uintptr_t, uintptr_t>> mapped_ranges(const std::string& path) {
  const std::string want = fs::canonical(path).string();
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.size() < want.size() || line.compare(line.size() - want.size(), want.size(), want) != 0) continue;
    uintptr_t lo, hi;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2) out.emplace_back(lo, hi);
  }
  return out;
}

template <class T>
Tensor ints(const std::vector<T>& v, DType dt) {
  Tensor t = Tensor::empty({int64_t(v.size())}, dt);
  std::memcpy(t.raw(), v.data(), v.size() * sizeof(T));
  return t;
}

// One tensor of every dtype (values exact in f16/bf16), an empty one, and an I64 beyond 2^53.
Named sample_tensors() {
  return {
      {"f32", Tensor::from_vector({1.5f, -2.25f, 3.0f, 0.1f, 1e-20f, -7.0f}, {2, 3})},
      {"f16", Tensor::from_vector({0.5f, -1.0f, 65504.0f, 6.103515625e-05f}, {4}).to_dtype(DType::F16)},
      {"bf16", Tensor::from_vector({1.0f, -3.5f, 1e30f, 0.0078125f}, {2, 2}).to_dtype(DType::BF16)},
      {"i32", ints<int32_t>({7, -1, 2147483647}, DType::I32)},
      {"i64", ints<int64_t>({-3, (int64_t(1) << 60) + 1}, DType::I64)},
      {"i8", ints<int8_t>({-128, 127, 0, -1, 5}, DType::I8)},
      {"empty", Tensor::empty({0, 3})},
  };
}

void check_same(const Tensor& a, const Tensor& b) {
  REQUIRE(a.dtype() == b.dtype());
  REQUIRE(a.shape() == b.shape());
  CHECK(std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// No "*.tmp.*" leftovers of AtomicFile in dir.
int temp_files(const std::string& dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().find(".tmp.") != std::string::npos;
  return n;
}

// What check_safetensors.py should print for `tensors`: values as doubles / integers.
nlohmann::json expected_summary(const Named& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::json j = {{"metadata", metadata}, {"tensors", nlohmann::json::object()}};
  for (const auto& [name, t] : tensors) {
    nlohmann::json values = nlohmann::json::array();
    for (int64_t i = 0; i < t.numel(); ++i) {
      switch (t.dtype()) {
        case DType::I32: values.push_back(t.data<int32_t>()[i]); break;
        case DType::I64: values.push_back(t.data<int64_t>()[i]); break;
        case DType::I8: values.push_back(t.data<int8_t>()[i]); break;
        default: values.push_back(double(t.to_f32().f32()[i]));
      }
    }
    j["tensors"][name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"values", values}};
  }
  return j;
}

// Runs check_safetensors.py; its diagnostics are shown unless a failure is expected.
int run_python_reader(const std::string& file, const std::string& expected_json, bool expect_ok) {
  const std::string script = std::string(MB_SOURCE_DIR) + "/tests/reference/check_safetensors.py";
  std::string cmd = "/usr/bin/python3 '" + script + "' '" + file + "'";
  if (!expected_json.empty()) cmd += " '" + expected_json + "'";
  cmd += expect_ok ? " > /dev/null" : " > /dev/null 2>&1";
  return std::system(cmd.c_str());
}

}  // namespace

TEST_CASE("safetensors: round trip of every dtype, empty tensor and metadata") {
  const std::string path = mbtest::scratch_dir("st_roundtrip") + "/m.safetensors";
  const Named in = sample_tensors();
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "héllo"}};
  write_safetensors(path, in, meta);

  SafeTensorsFile f = read_safetensors(path);
  CHECK(f.path == path);
  CHECK(f.metadata == meta);
  REQUIRE(f.tensors.size() == in.size());
  for (const auto& [name, t] : in) {
    const auto& name_ = name;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
    CAPTURE(name_);
    REQUIRE(f.tensors.count(name));
    check_same(f.tensors.at(name), t);
  }

  // Layout: header padded to a multiple of 8, entries and data in the given order.
  const std::string bytes = mbtest::read_file(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  const std::string header = bytes.substr(8, n);
  size_t last = 0;
  for (const auto& [name, t] : in) {
    size_t at = header.find("\"" + name + "\"");
    CHECK(at > last);
    last = at;
  }
  CHECK(std::memcmp(bytes.data() + 8 + n, in[0].second.raw(), in[0].second.nbytes()) == 0);

  // Without metadata there is no __metadata__ key at all.
  write_safetensors(path, {{"x", Tensor::zeros({1})}});
  CHECK(mbtest::read_file(path).find("__metadata__") == std::string::npos);
  CHECK(read_safetensors(path).metadata.empty());
}

TEST_CASE("safetensors: tensors are zero-copy views that keep the mapping alive") {
  const std::string path = mbtest::scratch_dir("st_zerocopy") + "/m.safetensors";
  write_safetensors(path, sample_tensors());

  Tensor t;
  {
    SafeTensorsFile f = read_safetensors(path);
    t = f.tensors.at("f32");
    CHECK(t.is_view());
    auto ranges = mapped_ranges(path);
    REQUIRE(!ranges.empty());
    const auto p = reinterpret_cast<uintptr_t>(t.raw());
    bool inside = false;
    for (auto [lo, hi] : ranges) inside |= lo <= p && p + t.nbytes() <= hi;
    CHECK(inside);
  }
  // The file object is gone; the view still reads the mapped bytes.
  CHECK(!mapped_ranges(path).empty());
  CHECK(t.f32()[0] == 1.5f);
  CHECK(t.f32()[5] == -7.0f);
  t = Tensor();  // last view dies -> unmapped
  CHECK(mapped_ranges(path).empty());
}

TEST_CASE("safetensors: misaligned data is copied, not handed out misaligned") {
  // Written in this order, the F32 tensor starts 6 bytes into the data buffer.
  const std::string path = mbtest::scratch_dir("st_misaligned") + "/m.safetensors";
  Named in = {{"h", Tensor::from_vector({1, 2, 3}, {3}).to_dtype(DType::F16)},
              {"f", Tensor::from_vector({4.5f, -5.5f}, {2})}};
  write_safetensors(path, in);
  SafeTensorsFile f = read_safetensors(path);
  const Tensor& t = f.tensors.at("f");
  CHECK(!t.is_view());
  CHECK(reinterpret_cast<uintptr_t>(t.raw()) % 4 == 0);
  check_same(t, in[1].second);
  CHECK(f.tensors.at("h").is_view());
}

TEST_CASE("safetensors: corrupt files give one clear error naming the file") {
  const std::string dir = mbtest::scratch_dir("st_corrupt");
  const std::string a4 = entry("F32", "[1]", "[0,4]");
  struct Case {
    const char* what;
    std::string bytes;
    const char* phrase;
  };
  const Case cases[] = {
      {"shorter than 8 bytes", "abc", "too short"},
      {"header length past EOF", u64le(1000) + "{}", "exceeds the file size"},
      {"absurd header length", u64le(uint64_t(1) << 62) + "{}", "exceeds the file size"},
      {"truncated JSON", raw_file(R"({"a":)"), "not valid JSON"},
      {"trailing garbage", raw_file("{} x"), "not valid JSON"},
      {"invalid UTF-8", raw_file("{\"\xff\":1}"), "not valid JSON"},
      {"array header", raw_file("[1,2]"), "not a JSON object"},
      {"leading space", raw_file(" {}"), "not a JSON object"},
      {"empty header", raw_file(""), "not a JSON object"},
      {"deep nesting", raw_file(R"({"a":{"shape":[[1]]}})"), "nests too deeply"},
      {"entry not object", raw_file(R"({"a":5})"), "'a': entry is not an object"},
      {"missing dtype", raw_file(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "1234"), "missing dtype"},
      {"unknown dtype", raw_file(R"({"a":)" + entry("F64", "[1]", "[0,8]") + "}", "12345678"), "unsupported dtype"},
      {"dtype not string", raw_file(R"({"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", "1234"),
       "unsupported dtype"},
      {"shape not list", raw_file(R"({"a":)" + entry("F32", "1", "[0,4]") + "}", "1234"), "shape must be a list"},
      {"negative dim", raw_file(R"({"a":)" + entry("F32", "[-1]", "[0,4]") + "}", "1234"), "shape must be a list"},
      {"float dim", raw_file(R"({"a":)" + entry("F32", "[1.0]", "[0,4]") + "}", "1234"), "shape must be a list"},
      {"string dim", raw_file(R"({"a":)" + entry("F32", "[\"1\"]", "[0,4]") + "}", "1234"), "shape must be a list"},
      {"missing shape", raw_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", "1234"), "shape must be a list"},
      {"shape overflow", raw_file(R"({"a":)" + entry("F32", "[1099511627776,1099511627776,0]", "[0,0]") + "}"),
       "too large"},
      {"one offset", raw_file(R"({"a":)" + entry("F32", "[1]", "[0]") + "}", "1234"), "data_offsets must be"},
      {"begin > end", raw_file(R"({"a":)" + entry("F32", "[0]", "[4,0]") + "}", "1234"), "data_offsets must be"},
      {"negative offset", raw_file(R"({"a":)" + entry("F32", "[1]", "[-4,0]") + "}", "1234"), "data_offsets must be"},
      {"string offset", raw_file(R"({"a":)" + entry("F32", "[1]", "[0,\"4\"]") + "}", "1234"), "data_offsets must be"},
      {"missing offsets", raw_file(R"({"a":{"dtype":"F32","shape":[1]}})", "1234"), "data_offsets must be"},
      {"byte size", raw_file(R"({"a":)" + entry("F32", "[2]", "[0,4]") + "}", "1234"), "byte size mismatch"},
      {"outside buffer", raw_file(R"({"a":)" + entry("F32", "[2]", "[0,8]") + "}", "1234"),
       "outside the data buffer"},
      {"overlap",
       raw_file(R"({"a":)" + entry("F32", "[2]", "[0,8]") + R"(,"b":)" + entry("F32", "[2]", "[4,12]") + "}",
                std::string(12, 'x')),
       "'b' overlaps tensor 'a'"},
      {"empty inside another",
       raw_file(R"({"a":)" + entry("F32", "[2]", "[0,8]") + R"(,"b":)" + entry("F32", "[0]", "[4,4]") + "}",
                std::string(8, 'x')),
       "overlaps"},
      {"hole",
       raw_file(R"({"a":)" + a4 + R"(,"b":)" + entry("F32", "[1]", "[8,12]") + "}", std::string(12, 'x')),
       "hole at bytes [4, 8)"},
      {"trailing bytes", raw_file(R"({"a":)" + a4 + "}", "12345678"), "hole at bytes [4, 8)"},
      {"data but no tensors", raw_file("{}", "1234"), "hole"},
      {"metadata not object", raw_file(R"({"__metadata__":5,"a":)" + a4 + "}", "1234"),
       "__metadata__ must map strings to strings"},
      {"metadata value not string", raw_file(R"({"__metadata__":{"k":1},"a":)" + a4 + "}", "1234"),
       "__metadata__ must map strings to strings"},
      {"duplicate name", raw_file(R"({"a":)" + a4 + R"(,"a":)" + a4 + "}", "1234"), "duplicate key 'a'"},
      {"duplicate field", raw_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "1234"),
       "duplicate key 'dtype'"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const std::string path = dir + "/bad.safetensors";
    spit(path, c.bytes);
    const std::string msg = read_error(path);
    CAPTURE(msg);
    CHECK(msg.rfind(path + ": ", 0) == 0);
    CHECK(msg.find(c.phrase) != std::string::npos);
  }

  // A header over the 100 MB cap (a sparse file: the length fits, the size is refused unread).
  spit(dir + "/huge.safetensors", u64le(100'000'001) + "{");
  fs::resize_file(dir + "/huge.safetensors", 8 + 100'000'001);
  CHECK(read_error(dir + "/huge.safetensors").find("exceeds the 100 MB limit") != std::string::npos);
  fs::remove(dir + "/huge.safetensors");

  // Not there / not a file.
  CHECK(read_error(dir + "/nope.safetensors").find("cannot open") != std::string::npos);
  CHECK(read_error(dir).find("not a regular file") != std::string::npos);

  // Legal edge cases: no tensors at all; only empty tensors; empty tensors sharing an offset.
  spit(dir + "/ok1.safetensors", raw_file("{}"));
  CHECK(read_safetensors(dir + "/ok1.safetensors").tensors.empty());
  spit(dir + "/ok2.safetensors",
       raw_file(R"({"e":)" + entry("I64", "[0,5]", "[0,0]") + R"(,"a":)" + a4 + R"(,"z":)" +
                    entry("BF16", "[3,0]", "[4,4]") + R"(,"y":)" + entry("F16", "[0]", "[4,4]") + "}  ",
                "1234"));
  SafeTensorsFile ok = read_safetensors(dir + "/ok2.safetensors");
  CHECK(ok.tensors.size() == 4);
  CHECK(ok.tensors.at("e").shape() == Shape{0, 5});
  CHECK(ok.tensors.at("e").numel() == 0);
}

// docs/RELIABILITY.md "Limits": a header past 100 MB is refused before it is parsed, even when the
// file holds that many bytes (a sparse file here: no disk is used).
TEST_CASE("safetensors: a header longer than 100 MB is refused unparsed") {
  const std::string path = mbtest::scratch_dir("st_big_header") + "/m.safetensors";
  mbtest::write_file(path, u64le(100'000'001) + "{");
  fs::resize_file(path, 8 + 100'000'001);
  CHECK(mbtest::error_of([&] { read_safetensors(path); }) ==
        path + ": header length 100000001 exceeds the 100 MB limit");
}

TEST_CASE("safetensors: random truncations and byte flips never crash") {
  const std::string dir = mbtest::scratch_dir("st_fuzz");
  write_safetensors(dir + "/good.safetensors", sample_tensors(), {{"format", "pt"}});
  const std::string good = mbtest::read_file(dir + "/good.safetensors");
  uint64_t header_len;
  std::memcpy(&header_len, good.data(), 8);

  std::mt19937_64 rng(1234);
  auto pick = [&](uint64_t n) { return size_t(rng() % n); };
  int loaded = 0, rejected = 0;
  for (int it = 0; it < 3000; ++it) {
    std::string bytes = good;
    switch (it % 4) {
      case 0: bytes.resize(pick(bytes.size())); break;
      case 1:  // flips inside the header, where they matter most
        for (int k = 0, n = 1 + int(pick(3)); k < n; ++k) bytes[8 + pick(header_len)] ^= char(1 << pick(8));
        break;
      case 2:  // a random printable byte in the header (keeps it UTF-8 more often than a flip)
        bytes[8 + pick(header_len)] = char(' ' + pick(95));
        break;
      case 3: {  // a wrong length prefix
        uint64_t n = it % 8 == 3 ? rng() : header_len + pick(64) - 32;
        std::memcpy(bytes.data(), &n, 8);
        break;
      }
    }
    const std::string path = dir + "/f.safetensors";
    spit(path, bytes);
    try {
      SafeTensorsFile f = read_safetensors(path);
      // Whatever loads must be readable end to end.
      unsigned sum = 0;
      for (const auto& [name, t] : f.tensors)
        for (size_t i = 0; i < t.nbytes(); ++i) sum += static_cast<const unsigned char*>(t.raw())[i];
      (void)sum;
      ++loaded;
    } catch (const Error& e) {
      CHECK(std::string(e.what()).rfind(path, 0) == 0);
      ++rejected;
    }
  }
  MESSAGE("fuzz: " << loaded << " loaded, " << rejected << " rejected");
  CHECK(rejected > 2000);
}

TEST_CASE("safetensors: the independent Python reader accepts our files") {
  const std::string dir = mbtest::scratch_dir("st_python");
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"source", "minibridge"}};
  Named tensors = sample_tensors();
  tensors.push_back({"odd_f16", Tensor::from_vector({1, 2, 3}, {3}).to_dtype(DType::F16)});
  tensors.push_back({"after_odd", Tensor::from_vector({-0.5f, 2.5f}, {1, 2})});  // misaligned F32
  write_safetensors(dir + "/m.safetensors", tensors, meta);
  spit(dir + "/expected.json", expected_summary(tensors, meta).dump());
  CHECK(run_python_reader(dir + "/m.safetensors", dir + "/expected.json", true) == 0);

  // The reader really checks: a wrong expectation and a corrupt file are both refused.
  tensors[0].second.f32()[0] = 99.0f;
  spit(dir + "/wrong.json", expected_summary(tensors, meta).dump());
  CHECK(run_python_reader(dir + "/m.safetensors", dir + "/wrong.json", false) != 0);
  spit(dir + "/bad.safetensors", mbtest::read_file(dir + "/m.safetensors") + "x");  // trailing byte = hole
  CHECK(run_python_reader(dir + "/bad.safetensors", "", false) != 0);
}

TEST_CASE("safetensors: model directories, single file or sharded") {
  const std::string dir = mbtest::scratch_dir("st_model");
  const Named all = sample_tensors();
  auto error_of = [](const std::string& d) -> std::string {
    try {
      read_model_weights(d);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto write_index = [&](const nlohmann::json& weight_map) {
    spit(dir + "/model.safetensors.index.json",
         nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
  };
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  write_safetensors(dir + "/" + s1, {all[0], all[1], all[2]});
  write_safetensors(dir + "/" + s2, Named(all.begin() + 3, all.end()));
  nlohmann::json wm;
  for (size_t i = 0; i < all.size(); ++i) wm[all[i].first] = i < 3 ? s1 : s2;

  SUBCASE("sharded") {
    write_index(wm);
    auto w = read_model_weights(dir);
    REQUIRE(w.size() == all.size());
    for (const auto& [name, t] : all) check_same(w.at(name), t);
    CHECK(w.at("f32").is_view());
  }
  SUBCASE("single file wins") {
    write_safetensors(dir + "/model.safetensors", {all[0]});
    write_index(wm);
    auto w = read_model_weights(dir);
    REQUIRE(w.size() == 1);
    check_same(w.at("f32"), all[0].second);
  }
  SUBCASE("nothing there") {
    std::string msg = error_of(dir);
    CHECK(msg.rfind(dir, 0) == 0);
    CHECK(msg.find("no model.safetensors") != std::string::npos);
    CHECK(msg.find("pytorch_model.bin") == std::string::npos);
    spit(dir + "/pytorch_model.bin", "x");
    CHECK(error_of(dir).find("only safetensors weights are supported") != std::string::npos);
  }
  SUBCASE("missing shard") {
    wm["i64"] = "model-00003-of-00003.safetensors";
    write_index(wm);
    std::string msg = error_of(dir);
    CHECK(msg.find("model.safetensors.index.json") != std::string::npos);
    CHECK(msg.find("model-00003-of-00003.safetensors") != std::string::npos);
    CHECK(msg.find("not found") != std::string::npos);
  }
  SUBCASE("tensor missing from its shard") {
    wm["ghost"] = s1;
    write_index(wm);
    std::string msg = error_of(dir);
    CHECK(msg.find("'ghost'") != std::string::npos);
    CHECK(msg.find("lacks it") != std::string::npos);
  }
  SUBCASE("listed in the wrong shard") {
    wm["i32"] = s1;
    write_index(wm);
    CHECK(error_of(dir).find("'i32' is listed in " + s1) != std::string::npos);
  }
  SUBCASE("tensor in two shards") {
    Named twice(all.begin() + 3, all.end());
    twice.push_back(all[0]);
    write_safetensors(dir + "/" + s2, twice);
    write_index(wm);
    CHECK(error_of(dir).find("'f32' is present in two shards") != std::string::npos);
  }
  SUBCASE("bad index") {
    spit(dir + "/model.safetensors.index.json", "{\"weight_map\": ");
    CHECK(error_of(dir).find("model.safetensors.index.json: invalid JSON") != std::string::npos);
    write_index(nlohmann::json::array());
    CHECK(error_of(dir).find("\"weight_map\" must be an object") != std::string::npos);
    wm["f32"] = 3;
    write_index(wm);
    CHECK(error_of(dir).find("'f32' maps to 3") != std::string::npos);
    wm["f32"] = "../" + s1;
    write_index(wm);
    CHECK(error_of(dir).find("must be a plain file name") != std::string::npos);
  }
  SUBCASE("corrupt shard names the shard") {
    write_index(wm);
    spit(dir + "/" + s2, "xx");
    CHECK(error_of(dir).rfind(dir + "/" + s2 + ": file is too short", 0) == 0);
  }
}

TEST_CASE("atomic writes: no temp files, no partial targets") {
  const std::string dir = mbtest::scratch_dir("st_atomic");
  const std::string path = dir + "/m.safetensors";
  write_safetensors(path, sample_tensors());
  const std::string before = mbtest::read_file(path);
  CHECK(temp_files(dir) == 0);

  write_file_atomic(dir + "/config.json", "{\"a\": 1}\n");
  CHECK(mbtest::read_file(dir + "/config.json") == "{\"a\": 1}\n");
  write_file_atomic(dir + "/config.json", "{}");  // replaces
  CHECK(mbtest::read_file(dir + "/config.json") == "{}");
  {
    AtomicFile f(dir + "/abandoned");
    f.write("partial");
  }  // no commit: nothing appears
  CHECK(!fs::exists(dir + "/abandoned"));
  CHECK(temp_files(dir) == 0);

  SUBCASE("missing directory") {
    CHECK_THROWS_AS(write_safetensors(dir + "/no/such/dir/m.safetensors", sample_tensors()), Error);
  }
  SUBCASE("target is a directory") {
    fs::create_directories(dir + "/d.safetensors/x");
    CHECK_THROWS_WITH_AS(write_safetensors(dir + "/d.safetensors", sample_tensors()),
                         doctest::Contains("cannot rename"), Error);
    CHECK(fs::is_directory(dir + "/d.safetensors"));
  }
  SUBCASE("invalid tensors are refused before anything is written") {
    CHECK_THROWS_WITH_AS(write_safetensors(path, {{"bad\xff", Tensor::zeros({1})}}),
                         doctest::Contains("cannot write header"), Error);
    CHECK_THROWS_WITH_AS(write_safetensors(path, {{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}),
                         doctest::Contains("duplicate tensor name 'a'"), Error);
    CHECK_THROWS_WITH_AS(write_safetensors(path, {{"__metadata__", Tensor::zeros({1})}}),
                         doctest::Contains("cannot be a tensor name"), Error);
  }
  SUBCASE("the write fails half way") {
    // A file-size limit makes write() fail with EFBIG part way through the data.
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    auto old_handler = signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 100;
    setrlimit(RLIMIT_FSIZE, &small);
    Named big = {{"big", Tensor::zeros({1000})}};
    std::string msg;
    try {
      write_safetensors(path, big);
    } catch (const Error& e) {
      msg = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    CHECK(msg.find("write failed") != std::string::npos);
    CHECK(msg.rfind(path, 0) == 0);
  }
  SUBCASE("unwritable directory") {
    if (geteuid() == 0) {
      MESSAGE("running as root: permissions do not stop writes, skipped");
    } else {
      fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec);
      CHECK_THROWS_WITH_AS(write_safetensors(path, sample_tensors()), doctest::Contains("cannot create temporary file"),
                           Error);
      fs::permissions(dir, fs::perms::owner_all);
    }
  }
  // Whatever failed, the old file is intact and no temp file is left behind.
  CHECK(mbtest::read_file(path) == before);
  CHECK(temp_files(dir) == 0);
}
