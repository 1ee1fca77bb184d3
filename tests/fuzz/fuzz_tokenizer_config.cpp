// tokenizer_config.json beside vocab.txt (do_lower_case, strip_accents, tokenize_chinese_chars,
// of any JSON type), then the tokenizer it configures on a fixed sentence.
#include "io/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    fuzz::write_file(dir + "/cased", R"({"do_lower_case": false, "tokenize_chinese_chars": true, "strip_accents": null,
  "model_max_length": 512, "tokenizer_class": "BertTokenizer"})");
    fuzz::write_file(dir + "/uncased", R"({"do_lower_case": true, "strip_accents": false})");
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = fuzz::fresh_dir("tok");
  fuzz::write_file(dir + "/vocab.txt", fuzz::tiny_vocab());
  fuzz::write_file(dir + "/tokenizer_config.json", fuzz::bytes(data, size));
  try {
    const Tokenizer tok = Tokenizer::from_model_dir(dir);
    (void)tok.encode("The Café FILM is Unbelievably good 中文!", 16);
  } catch (const Error&) {
  }
  return 0;
}
