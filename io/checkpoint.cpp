#include "io/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/error.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "io/safetensors.h"

namespace mb {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTensors = "tensors.safetensors";
constexpr const char* kState = "state.json";

// "a/b/" and "a/b" name the same checkpoint; its siblings are built from the last component.
fs::path normalize(const std::string& dir) {
  MB_CHECK(!dir.empty(), "checkpoint: empty directory name");
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p;
}

fs::path old_path(const fs::path& p) { return fs::path(p.string() + ".old"); }

bool is_checkpoint(const fs::path& p) { return fs::is_regular_file(p / kState) && fs::is_regular_file(p / kTensors); }

void sync_dir(const fs::path& dir) {  // makes renames inside `dir` durable; best effort
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw Error("checkpoint: cannot rename " + from.string() + " to " + to.string() + ": " + std::strerror(errno));
}

// Installs the complete checkpoint `staging` as `p`. Invariant at every instant: if p exists it is
// complete; if it does not, p.old is. The previous checkpoint is only deleted once p is the new one.
void install(const fs::path& staging, const fs::path& p) {
  const fs::path parent = p.parent_path(), old = old_path(p);
  if (!fs::exists(p)) {
    rename_or_throw(staging, p);
  } else if (!detail::checkpoint_without_exchange &&
             ::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, p.c_str(), RENAME_EXCHANGE) == 0) {
    sync_dir(parent);
    fs::remove_all(staging);  // now holds the previous checkpoint
    return;
  } else if (detail::checkpoint_without_exchange || errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
    // No atomic exchange on this filesystem: two renames, with p.old covering the gap between them.
    rename_or_throw(p, old);
    sync_dir(parent);
    rename_or_throw(staging, p);
  } else {
    throw Error("checkpoint: cannot swap " + staging.string() + " into " + p.string() + ": " + std::strerror(errno));
  }
  sync_dir(parent);
  fs::remove_all(old);
}

}  // namespace

void save_checkpoint(const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
                     const nlohmann::json& state) {
  const fs::path p = normalize(dir);
  const fs::path parent = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::string text;
  try {
    text = state.dump(1) + "\n";
  } catch (const nlohmann::json::exception& e) {  // e.g. a string that is not valid UTF-8
    throw Error(dir + ": cannot write " + kState + ": " + e.what());
  }
  try {
    fs::create_directories(parent);
    // Refuse to replace something that is not a checkpoint (a mistyped --output pointing at data).
    MB_CHECK(!fs::exists(p) || is_checkpoint(p) || (fs::is_directory(p) && fs::is_empty(p)),
             dir + ": exists and is not a checkpoint directory; refusing to replace it");
    // Leftovers of a killed save. p.old is only stale while p exists (otherwise it is the checkpoint).
    const std::string stage_prefix = p.filename().string() + ".staging.";
    for (const auto& e : fs::directory_iterator(parent))
      if (e.path().filename().string().rfind(stage_prefix, 0) == 0) fs::remove_all(e.path());
    if (fs::exists(p)) fs::remove_all(old_path(p));

    const fs::path staging = parent / (stage_prefix + std::to_string(::getpid()));
    fs::create_directory(staging);
    try {
      write_safetensors((staging / kTensors).string(), tensors);  // both fsync the file and staging/
      write_file_atomic((staging / kState).string(), text);
      install(staging, p);
    } catch (const Error& e) {  // a full disk, say: nothing half-written stays behind; DIR is untouched
      std::error_code ec;
      fs::remove_all(staging, ec);
      throw Error(dir + ": cannot save checkpoint: " + e.what());
    } catch (...) {
      std::error_code ec;
      fs::remove_all(staging, ec);
      throw;
    }
  } catch (const fs::filesystem_error& e) {
    throw Error(dir + ": cannot save checkpoint: " + e.what());
  }
}

bool checkpoint_exists(const std::string& dir) {
  const fs::path p = normalize(dir);
  std::error_code ec;
  return is_checkpoint(p) || (!fs::exists(p, ec) && is_checkpoint(old_path(p)));
}

Checkpoint load_checkpoint(const std::string& dir) {
  fs::path p = normalize(dir);
  if (!fs::exists(p) && is_checkpoint(old_path(p))) p = old_path(p);  // a save killed mid-swap
  MB_CHECK(fs::is_directory(p), dir + ": no checkpoint here (no such directory)");
  MB_CHECK(fs::exists(p / kState), p.string() + ": not a checkpoint (no " + kState + ")");
  Checkpoint c;
  c.dir = p.string();
  c.state = read_json_file((p / kState).string());
  c.tensors = read_safetensors((p / kTensors).string()).tensors;
  return c;
}

nlohmann::json rng_to_json(const Rng& rng) {
  const Rng::State s = rng.full_state();
  return {{"counter", s.counter}, {"spare", s.spare}, {"has_spare", s.has_spare}};
}

void rng_from_json(Rng& rng, const nlohmann::json& j) {
  try {
    rng.restore({j.at("counter").get<uint64_t>(), j.at("spare").get<double>(), j.at("has_spare").get<bool>()});
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("RNG state: malformed: ") + e.what());
  }
}

}  // namespace mb
