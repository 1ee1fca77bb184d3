#include "io/data_dir.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "engine/error.h"

namespace mb {

namespace fs = std::filesystem;

std::string find_data_dir() {
  if (const char* env = std::getenv("MINIBRIDGE_DATA"); env && *env) return env;
  std::vector<fs::path> candidates = {fs::current_path() / ".." / "shared" / "data"};
  // The executable usually sits in <checkout>/build[/sub]: look upwards from it too.
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = '\0';
    fs::path p = fs::path(buf).parent_path();
    for (int up = 0; up < 4 && !p.empty(); ++up, p = p.parent_path()) candidates.push_back(p / ".." / "shared" / "data");
  }
  for (const fs::path& c : candidates) {
    std::error_code ec;
    if (fs::is_directory(c, ec)) return fs::weakly_canonical(c).string();
  }
  return "";
}

std::string default_vocab_dir() {
  const std::string data = find_data_dir();
  MB_CHECK(!data.empty(),
           "no data directory: set MINIBRIDGE_DATA to the folder holding vocab/bert-base-uncased/vocab.txt");
  const fs::path dir = fs::path(data) / "vocab" / "bert-base-uncased";
  MB_CHECK(fs::exists(dir / "vocab.txt"), (dir / "vocab.txt").string() + ": vocabulary not found");
  return dir.string();
}

}  // namespace mb
