// Small helpers shared by the tests: where fixtures and data live, temp directories.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

namespace mbtest {

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// Directory with oracle-produced fixtures (set by CTest).
inline std::string fixtures_dir() { return env_or("MB_FIXTURES", std::string(MB_BINARY_DIR) + "/fixtures"); }
inline std::string data_dir() { return env_or("MINIBRIDGE_DATA", std::string(MB_SOURCE_DIR) + "/../shared/data"); }
inline std::string cli_path() { return env_or("MB_CLI", std::string(MB_BINARY_DIR) + "/minibridge"); }

// A fresh empty directory under the build tree, removed and recreated on each call.
inline std::string scratch_dir(const std::string& name) {
  std::filesystem::path p = std::filesystem::path(MB_BINARY_DIR) / "test_scratch" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace mbtest
