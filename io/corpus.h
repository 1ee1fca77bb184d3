// A plain-text pretraining corpus: every non-empty *.txt file under a directory (other files,
// e.g. METADATA.tsv, SOURCES.md, SHA256SUMS, are ignored), with a few files held out for
// evaluation. A file is a stream of paragraphs separated by blank lines; the lines of a paragraph
// (hard-wrapped book text, or a Wikipedia article's lines) are joined by single spaces.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mb {

struct Corpus {
  std::string dir;
  std::vector<std::string> train, heldout;  // file paths, each list sorted
};

// Lists DIR's *.txt files recursively and holds out round(heldout_fraction * files) of them, at
// least one when heldout_fraction > 0, at least one left for training. Which files are held out
// depends only on the seed and the files' paths relative to DIR (a seeded hash), so it is stable
// across machines and when other files are added. mb::Error "DIR: no text found" when no
// non-empty .txt file exists; a missing directory or a fraction outside [0, 1) is an error too.
Corpus open_corpus(const std::string& dir, double heldout_fraction = 0.01, uint64_t seed = 0);

// Reads the paragraph starting at or after byte `pos` of text: skips blank lines (empty or only
// spaces/tabs/CR), then joins the lines up to the next blank line or the end, without their line
// ends, by single spaces. Sets `begin` to the paragraph's first byte and `pos` just past it.
// Returns false when only blank lines are left.
bool next_paragraph(std::string_view text, size_t& pos, std::string& paragraph, size_t& begin);

// A whole file's bytes (mb::Error naming it if it cannot be read).
std::string read_text_file(const std::string& path);

}  // namespace mb
