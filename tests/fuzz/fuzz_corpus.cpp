// Pretraining corpus text: paragraphs (blank lines with spaces, tabs, CR), any bytes, invalid
// UTF-8, through open_corpus and the masked-LM stream that packs it into sequences (the path
// `minibridge pretrain` takes), with its state saved and restored mid-file.
#include "io/corpus.h"
#include "io/data_dir.h"
#include "io/mlm_data.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    fuzz::write_file(dir + "/paragraphs", "The film is good.\nIt is not bad.\n\n  \t\r\n\nA movie, unbelievably good!\n");
    // The start of a few corpus files, when the data directory is there.
    const std::string corpus = find_data_dir() + "/corpus";
    int n = 0;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(corpus, ec);
         !ec && it != std::filesystem::recursive_directory_iterator() && n < 4; it.increment(ec)) {
      if (it->path().extension() != ".txt") continue;
      std::ifstream f(it->path(), std::ios::binary);
      std::string text(2048, '\0');
      f.read(text.data(), std::streamsize(text.size()));
      text.resize(size_t(f.gcount()));
      fuzz::write_file(dir + "/corpus_" + std::to_string(n++), text);
    }
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer tok = [] {
    const std::string path = fuzz::scratch_dir() + "/vocab.txt";
    fuzz::write_file(path, fuzz::tiny_vocab());
    return Tokenizer::from_vocab_file(path);
  }();
  const std::string_view text = fuzz::bytes(data, size);
  size_t pos = 0, begin = 0;
  std::string paragraph;
  while (next_paragraph(text, pos, paragraph, begin))
    if (begin >= pos || pos > text.size()) std::abort();

  const std::string dir = fuzz::fresh_dir("corpus");
  fuzz::write_file(dir + "/book.txt", text);
  try {
    const Corpus c = open_corpus(dir, 0.0);
    MlmStream stream(c.train, tok, 8, 1);
    (void)stream.next_batch(2);
    const nlohmann::json state = stream.state();
    const MlmBatch next = stream.next_batch(2);
    MlmStream resumed(c.train, tok, 8, 1);
    resumed.restore(state);
    if (resumed.next_batch(2).input_ids != next.input_ids) std::abort();  // a resumed stream continues exactly
  } catch (const Error&) {
  }
  return 0;
}
