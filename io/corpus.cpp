#include "io/corpus.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/error.h"
#include "engine/rng.h"

namespace mb {
namespace fs = std::filesystem;

namespace {

// FNV-1a of the relative path, mixed with the seed through splitmix64: a per-file random key.
uint64_t file_key(const std::string& rel, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : rel) h = (h ^ c) * 0x100000001b3ull;
  return Rng(h ^ seed).next_u64();
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

Corpus open_corpus(const std::string& dir, double heldout_fraction, uint64_t seed) {
  MB_CHECK(heldout_fraction >= 0 && heldout_fraction < 1,
           dir + ": held-out fraction must be in [0, 1), got " + std::to_string(heldout_fraction));
  std::error_code ec;
  MB_CHECK(fs::is_directory(dir, ec), dir + ": corpus directory not found");
  std::vector<std::pair<uint64_t, std::string>> files;  // (key, path)
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink);
       it != fs::recursive_directory_iterator(); ++it) {
    if (!it->is_regular_file() || it->path().extension() != ".txt" || it->file_size() == 0) continue;
    files.emplace_back(file_key(fs::relative(it->path(), dir).generic_string(), seed), it->path().string());
  }
  MB_CHECK(!files.empty(), dir + ": no text found (no non-empty .txt files)");

  size_t n_heldout = 0;
  if (heldout_fraction > 0) {
    MB_CHECK(files.size() >= 2, dir + ": only one text file, nothing left to train on after holding one out "
                                      "(use a held-out fraction of 0)");
    n_heldout = std::clamp<size_t>(size_t(std::llround(heldout_fraction * double(files.size()))), 1,
                                   files.size() - 1);
  }
  std::sort(files.begin(), files.end());  // by key: the held-out files are the first n_heldout
  Corpus c{dir, {}, {}};
  for (size_t i = 0; i < files.size(); ++i) (i < n_heldout ? c.heldout : c.train).push_back(files[i].second);
  std::sort(c.train.begin(), c.train.end());
  std::sort(c.heldout.begin(), c.heldout.end());
  return c;
}

bool next_paragraph(std::string_view text, size_t& pos, std::string& paragraph, size_t& begin) {
  paragraph.clear();
  while (pos < text.size()) {
    const size_t nl = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, nl - pos);
    const size_t line_start = pos;
    pos = std::min(nl + 1, text.size());
    if (is_blank(line)) {
      if (!paragraph.empty()) return true;
      continue;
    }
    if (paragraph.empty()) begin = line_start;
    else paragraph += ' ';
    if (line.back() == '\r') line.remove_suffix(1);
    paragraph += line;
  }
  return !paragraph.empty();
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MB_CHECK(in, path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  MB_CHECK(!in.bad(), path + ": read error");
  return std::move(ss).str();
}

}  // namespace mb
