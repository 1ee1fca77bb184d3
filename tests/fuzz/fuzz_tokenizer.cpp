// The tokenizer on arbitrary bytes: normalisation (NFD, accents, control characters, CJK),
// pre-tokenisation, WordPiece, special tokens written in the text, and pair truncation. With the
// bert-base-uncased vocabulary from $MINIBRIDGE_DATA/vocab when present, else a small one.
// Invalid UTF-8 must be an mb::Error; valid text must give ids inside the vocabulary and an
// encoding no longer than max_len.
#include <cstdlib>

#include "io/data_dir.h"
#include "io/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

namespace {
const Tokenizer& tokenizer() {
  static const Tokenizer tok = [] {
    const std::string vocab = find_data_dir() + "/vocab/bert-base-uncased/vocab.txt";
    if (std::filesystem::exists(vocab)) return Tokenizer::from_vocab_file(vocab);
    const std::string path = fuzz::scratch_dir() + "/vocab.txt";
    fuzz::write_file(path, fuzz::tiny_vocab());
    return Tokenizer::from_vocab_file(path);
  }();
  return tok;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    fuzz::write_file(dir + "/pair", "Hello, [MASK] world! Ça va?" + std::string(fuzz::kFileSeparator) + "中文 text\t\x01 here");
  });
  return 0;
}

// Input: text a, separator, text b; the first byte of a (when present) also sets max_len.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tok = tokenizer();
  const auto parts = fuzz::split_files(data, size, 2);
  const std::string a(parts[0]), b(parts[1]);
  const int max_len = a.empty() ? 512 : 3 + (static_cast<unsigned char>(a[0]) % 64);
  try {
    for (int32_t id : tok.tokenize(a))
      if (id < 0 || size_t(id) >= tok.vocab_size()) std::abort();
    const Encoding e = b.empty() ? tok.encode(a, max_len) : tok.encode_pair(a, b, max_len);
    if (e.input_ids.size() > size_t(max_len) || e.input_ids.size() != e.token_type_ids.size()) std::abort();
  } catch (const Error&) {
  }
  return 0;
}
