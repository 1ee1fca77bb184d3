// vocab.txt (one token per line, id = line number; duplicates, CRLF, empty lines, missing special
// tokens, invalid UTF-8), then the tokenizer it makes on a fixed sentence.
#include "io/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) { fuzz::write_file(dir + "/tiny", fuzz::tiny_vocab()); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_dir() + "/vocab.txt";
  fuzz::write_file(path, fuzz::bytes(data, size));
  try {
    const Tokenizer tok = Tokenizer::from_vocab_file(path);
    const Encoding e = tok.encode_pair("The film is unbelievably good! [MASK] café 中", "Not a bad movie, [SEP] is it", 24);
    for (int32_t id : e.input_ids) (void)tok.id_to_token(id);
  } catch (const Error&) {
  }
  return 0;
}
