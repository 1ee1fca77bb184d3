// Helpers shared by the tests: where fixtures and data live, scratch directories, files,
// error messages, and running the CLI.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/error.h"
#include "engine/rng.h"
#include "io/safetensors.h"
#include "models/bert.h"

namespace mbtest {

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// Directory with oracle-produced fixtures (set by CTest).
inline std::string fixtures_dir() { return env_or("MB_FIXTURES", std::string(MB_BINARY_DIR) + "/fixtures"); }
inline std::string data_dir() { return env_or("MINIBRIDGE_DATA", std::string(MB_SOURCE_DIR) + "/../shared/data"); }
inline std::string cli_path() { return env_or("MB_CLI", std::string(MB_BINARY_DIR) + "/minibridge"); }

// n standard-normal floats from Rng(seed): test inputs that are the same on every platform.
inline std::vector<float> random_normals(size_t n, uint64_t seed) {
  mb::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal());
  return v;
}

// A fresh empty directory under the build tree, removed and recreated on each call.
inline std::string scratch_dir(const std::string& name) {
  std::filesystem::path p = std::filesystem::path(MB_BINARY_DIR) / "test_scratch" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes text to path, creating parent directories.
inline void write_file(const std::string& path, const std::string& text) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ofstream(path, std::ios::binary) << text;
}

// The message of the mb::Error that fn throws ("" when it throws none).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const mb::Error& e) {
    return e.what();
  }
  return "";
}

// One JSON value per line (JSON-lines output and logs); an empty or malformed line throws.
inline std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> v;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
  return v;
}

struct CliRun {
  int status = -1;  // exit code; -1 when killed by a signal
  std::string out, err;
};

// Runs `minibridge ARGS < input`, capturing stdout and stderr.
inline CliRun run_cli(const std::string& args, const std::string& input = "") {
  // One directory per test process: CTest runs test executables side by side.
  const std::string dir = scratch_dir("cli_run_" + std::to_string(getpid()));
  write_file(dir + "/in", input);
  const std::string cmd = cli_path() + " " + args + " < " + dir + "/in > " + dir + "/out 2> " + dir + "/err";
  const int raw = std::system(cmd.c_str());
  CliRun r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_file(dir + "/out");
  r.err = read_file(dir + "/err");
  return r;
}

// Runs `minibridge ARGS` with every file it writes capped at MAX_FILE_BYTES: RLIMIT_FSIZE with
// SIGXFSZ ignored, so that a write past the cap fails (EFBIG) the way a write to a full disk does
// (ENOSPC), instead of the signal killing the process.
inline CliRun run_cli_with_file_limit(const std::string& args, uint64_t max_file_bytes) {
  const std::string dir = scratch_dir("cli_run_limited_" + std::to_string(getpid()));
  const std::string cmd = "exec " + cli_path() + " " + args + " < /dev/null > " + dir + "/out 2> " + dir + "/err";
  const pid_t pid = fork();
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);  // kept across exec
    struct rlimit lim;
    getrlimit(RLIMIT_FSIZE, &lim);
    lim.rlim_cur = rlim_t(max_file_bytes);
    setrlimit(RLIMIT_FSIZE, &lim);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int raw = 0;
  waitpid(pid, &raw, 0);
  CliRun r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_file(dir + "/out");
  r.err = read_file(dir + "/err");
  return r;
}

// Starts `minibridge ARGS` and SIGKILLs it as soon as `path` exists (or after `timeout_s`).
// Returns whether `path` appeared before the kill.
inline bool run_cli_killed_at(const std::string& args, const std::string& path, int timeout_s = 120) {
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string cmd = "exec " + cli_path() + " " + args + " < /dev/null > /dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (!std::filesystem::exists(path) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  return std::filesystem::exists(path);
}

// The packed batch a PyTorch fixture stores: int32 PREFIX"input_ids", PREFIX"offsets" and, when
// present, PREFIX"token_type_ids" (all 0 otherwise).
inline std::vector<int32_t> fixture_ints(const mb::SafeTensorsFile& f, const std::string& name) {
  const mb::Tensor& t = f.tensors.at(name);
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

inline mb::Batch fixture_batch(const mb::SafeTensorsFile& f, const std::string& prefix = "") {
  const std::vector<int32_t> ids = fixture_ints(f, prefix + "input_ids"), off = fixture_ints(f, prefix + "offsets");
  const bool typed = f.tensors.count(prefix + "token_type_ids") > 0;
  const std::vector<int32_t> types = typed ? fixture_ints(f, prefix + "token_type_ids") : std::vector<int32_t>();
  mb::Batch b;
  for (size_t s = 0; s + 1 < off.size(); ++s)
    b.add(std::vector<int32_t>(ids.begin() + off[s], ids.begin() + off[s + 1]),
          typed ? std::vector<int32_t>(types.begin() + off[s], types.begin() + off[s + 1]) : std::vector<int32_t>());
  return b;
}

// A small GLUE directory for one task: the first rows of the real train/dev files.
inline std::string small_glue(const std::string& name, size_t train_rows, size_t dev_rows,
                              const std::string& task = "SST-2") {
  const std::string dir = scratch_dir(name);
  std::filesystem::create_directories(dir + "/" + task);
  for (auto [split, rows] : {std::pair<const char*, size_t>{"train", train_rows}, {"dev", dev_rows}}) {
    std::ifstream in(data_dir() + "/glue/" + task + "/" + split + ".tsv");
    std::ofstream out(dir + "/" + task + "/" + split + ".tsv");
    std::string line;
    for (size_t i = 0; i <= rows && std::getline(in, line); ++i) out << line << "\n";  // header + rows
  }
  return dir;
}

}  // namespace mbtest
