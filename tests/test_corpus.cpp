// Pretraining corpus and masked-LM data: file listing and held-out split, paragraphs, packing,
// resuming from a saved state, masking statistics, and the real corpus's throughput.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "engine/error.h"
#include "io/corpus.h"
#include "io/mlm_data.h"
#include "io/tokenizer.h"
#include "tests/test_util.h"

namespace {

std::string corpus_dir() { return mbtest::data_dir() + "/corpus"; }

const mb::Tokenizer& tokenizer() {
  static const mb::Tokenizer tok = mb::Tokenizer::from_model_dir(mbtest::data_dir() + "/vocab/bert-base-uncased");
  return tok;
}

// A small corpus: six files of a few paragraphs each, hard-wrapped, with CRLF in one of them.
std::string small_corpus(const std::string& name) {
  const std::string dir = mbtest::scratch_dir(name);
  const char* words[] = {"apple", "river", "stone", "cloud", "green", "house", "night", "music", "paper", "light"};
  for (int f = 0; f < 6; ++f) {
    std::string text = "Title " + std::to_string(f) + "\n\n";
    for (int p = 0; p < 3 + f; ++p) {
      for (int w = 0; w < 5 + 3 * p + f; ++w) text += std::string(words[(f + p * w) % 10]) + (w % 4 == 3 ? "\n" : " ");
      text += f == 2 ? "\r\n\r\n" : "\n\n\n";
    }
    mbtest::write_file(dir + "/" + (f % 2 ? "books/" : "wiki/") + "f" + std::to_string(f) + ".txt", text);
  }
  mbtest::write_file(dir + "/METADATA.tsv", "file\tbytes\nf0.txt\t10\n");
  mbtest::write_file(dir + "/SHA256SUMS", "abc  f0.txt\n");
  return dir;
}

// What the stream must produce for one file: its paragraphs' tokens back to back, cut into pieces.
std::vector<std::vector<int32_t>> expected_sequences(const std::string& path, int seq_len) {
  const std::string text = mb::read_text_file(path);
  std::vector<int32_t> ids;
  std::string para;
  size_t pos = 0, begin = 0;
  while (mb::next_paragraph(text, pos, para, begin)) {
    const std::vector<int32_t> t = tokenizer().tokenize(para);
    ids.insert(ids.end(), t.begin(), t.end());
  }
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < ids.size(); i += size_t(seq_len) - 2) {
    std::vector<int32_t> seq{tokenizer().cls_id()};
    seq.insert(seq.end(), ids.begin() + std::ptrdiff_t(i),
               ids.begin() + std::ptrdiff_t(std::min(ids.size(), i + size_t(seq_len) - 2)));
    seq.push_back(tokenizer().sep_id());
    out.push_back(seq);
  }
  return out;
}

}  // namespace

TEST_CASE("open_corpus: real corpus, only .txt files, stable held-out split") {
  const mb::Corpus c = mb::open_corpus(corpus_dir(), 0.01, 0);
  CHECK(c.train.size() == 307);
  CHECK(c.heldout.size() == 3);
  CHECK(std::is_sorted(c.train.begin(), c.train.end()));
  for (const auto* list : {&c.train, &c.heldout})
    for (const std::string& f : *list) CHECK(f.ends_with(".txt"));
  const mb::Corpus again = mb::open_corpus(corpus_dir(), 0.01, 0);
  CHECK(again.heldout == c.heldout);
  CHECK(mb::open_corpus(corpus_dir(), 0.01, 1).heldout != c.heldout);
  CHECK(mb::open_corpus(corpus_dir(), 0.0, 0).train.size() == 310);
  CHECK(mb::open_corpus(corpus_dir(), 0.0001, 0).heldout.size() == 1);  // at least one held out
}

TEST_CASE("open_corpus errors") {
  const std::string empty = mbtest::scratch_dir("corpus_empty");
  mbtest::write_file(empty + "/METADATA.tsv", "x\n");
  mbtest::write_file(empty + "/sub/empty.txt", "");
  CHECK(mbtest::error_of([&] { mb::open_corpus(empty); }).find(empty + ": no text found") == 0);
  CHECK(mbtest::error_of([&] { mb::open_corpus(empty + "/nope"); }) == empty + "/nope: corpus directory not found");
  mbtest::write_file(empty + "/one.txt", "some text\n");
  CHECK(mbtest::error_of([&] { mb::open_corpus(empty, 0.1); }).find(empty + ": only one text file") == 0);
  CHECK(mb::open_corpus(empty, 0.0).train.size() == 1);
  CHECK(mbtest::error_of([&] { mb::open_corpus(empty, 1.0); }).find("held-out fraction must be in [0, 1)") !=
        std::string::npos);
}

TEST_CASE("next_paragraph joins hard-wrapped lines") {
  const std::string text = "\n \nline one\nline two\r\n \t\r\nnext\n\n\nlast line";
  size_t pos = 0, begin = 0;
  std::string p;
  REQUIRE(mb::next_paragraph(text, pos, p, begin));
  CHECK(p == "line one line two");
  CHECK(begin == 3);
  REQUIRE(mb::next_paragraph(text, pos, p, begin));
  CHECK(p == "next");
  CHECK(text.substr(begin, 4) == "next");
  REQUIRE(mb::next_paragraph(text, pos, p, begin));
  CHECK(p == "last line");
  CHECK_FALSE(mb::next_paragraph(text, pos, p, begin));
  pos = 0;
  CHECK_FALSE(mb::next_paragraph("\n\r\n  \n", pos, p, begin));
}

TEST_CASE("MlmStream packs each file's text into [CLS] .. [SEP] sequences, shuffled per epoch") {
  const mb::Corpus c = mb::open_corpus(small_corpus("corpus_pack"), 0.0);
  REQUIRE(c.train.size() == 6);
  const int seq_len = 16;
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& f : c.train)
    for (auto& s : expected_sequences(f, seq_len)) expected.push_back(s);

  mb::MlmStream stream(c.train, tokenizer(), seq_len, 42);
  std::vector<std::vector<int32_t>> epochs[2];
  for (;;) {
    std::vector<int32_t> seq = stream.next_sequence();
    if (stream.epoch() >= 2) break;
    epochs[stream.epoch()].push_back(seq);
  }
  CHECK(epochs[0] != epochs[1]);  // another file order
  for (auto& got : epochs) {
    REQUIRE(got.size() == expected.size());
    size_t short_ones = 0;
    for (const auto& s : got) {
      CHECK(s.size() <= size_t(seq_len));
      short_ones += s.size() < size_t(seq_len);
    }
    CHECK(short_ones <= c.train.size());  // only the last piece of a file
    std::sort(got.begin(), got.end());
    auto want = expected;
    std::sort(want.begin(), want.end());
    CHECK(got == want);
  }

  // Deterministic: the same seed gives the same sequences, another seed another order.
  auto first = [&](uint64_t seed) {
    mb::MlmStream s(c.train, tokenizer(), seq_len, seed);
    std::vector<std::vector<int32_t>> v;
    for (int i = 0; i < 40; ++i) v.push_back(s.next_sequence());
    return v;
  };
  CHECK(first(42) == first(42));
  CHECK(first(42) != first(43));
}

TEST_CASE("MlmStream resumes at exactly the next sequence and mask") {
  const mb::Corpus c = mb::open_corpus(small_corpus("corpus_resume"), 0.0);
  for (int seq_len : {5, 16, 64}) {
    for (int n : {0, 1, 3, 7, 20, 45}) {
      CAPTURE(seq_len);
      CAPTURE(n);
      mb::MlmStream a(c.train, tokenizer(), seq_len, 9);
      for (int i = 0; i < n; ++i) a.next_batch(1 + i % 3);
      // Through text, as a checkpoint stores it.
      const nlohmann::json saved = nlohmann::json::parse(a.state().dump());
      mb::MlmStream b(c.train, tokenizer(), seq_len, 9);
      b.restore(saved);
      CHECK(b.state() == saved);
      for (int i = 0; i < 25; ++i) {
        const mb::MlmBatch x = a.next_batch(2), y = b.next_batch(2);
        REQUIRE(x.input_ids == y.input_ids);
        REQUIRE(x.labels == y.labels);
        REQUIRE(x.offsets == y.offsets);
      }
      CHECK(a.state() == b.state());
    }
  }

  mb::MlmStream a(c.train, tokenizer(), 16, 9);
  CHECK(mbtest::error_of([&] {
          mb::MlmStream(c.train, tokenizer(), 32, 9).restore(a.state());
        }).find("MLM stream state: saved for seed 9, seq_len 16") == 0);
  a.next_batch(3);
  const nlohmann::json before = a.state();
  nlohmann::json bad = before;
  bad["file"] = 99;
  CHECK(mbtest::error_of([&] { a.restore(bad); }).find("position out of range") != std::string::npos);
  CHECK(a.state() == before);  // a failed restore changes nothing
  bad = before;
  bad["token"] = 100000;
  CHECK(mbtest::error_of([&] { a.restore(bad); }).find("changed since the state was saved") != std::string::npos);
  bad.erase("file");
  CHECK(mbtest::error_of([&] { a.restore(bad); }).find("MLM stream state: ") == 0);
}

TEST_CASE("MlmStream: files without text") {
  const std::string dir = mbtest::scratch_dir("corpus_blank");
  mbtest::write_file(dir + "/a.txt", "\n  \n\n");
  mbtest::write_file(dir + "/b.txt", "\r\n\t\n");
  const mb::Corpus c = mb::open_corpus(dir, 0.0);
  mb::MlmStream s(c.train, tokenizer(), 16, 0);
  CHECK(mbtest::error_of([&] { s.next_sequence(); }) == dir + "/a.txt and 1 other files: no text found");

  mbtest::write_file(dir + "/c.txt", "just four words here");  // one short file among blank ones
  mb::MlmStream t(mb::open_corpus(dir, 0.0).train, tokenizer(), 16, 0);
  for (int i = 0; i < 5; ++i) CHECK(t.next_sequence().size() == 6);
}

TEST_CASE("MlmStream: a tokenizer error names the file and line") {
  const std::string dir = mbtest::scratch_dir("corpus_utf8");
  mbtest::write_file(dir + "/a.txt", "fine text\n\nbroken \xff byte\n");
  mb::MlmStream s(mb::open_corpus(dir, 0.0).train, tokenizer(), 16, 0);
  CHECK(mbtest::error_of([&] { s.next_sequence(); }).find(dir + "/a.txt:3: ") == 0);
}

TEST_CASE("masking follows DataCollatorForLanguageModeling") {
  const mb::Masker m = mb::Masker::for_tokenizer(tokenizer());
  CHECK(m.vocab_size == 30522);
  CHECK(m.mask_id == tokenizer().mask_id());
  mb::Rng data(1);
  const size_t n = 400000;
  std::vector<int32_t> original(n), ids, labels(n);
  for (auto& id : original) id = int32_t(1000 + data.below(29000));
  ids = original;
  mb::Rng rng(5);
  m.apply(ids, labels, rng);
  size_t selected = 0, masked = 0, random = 0, kept = 0, wrong = 0;
  for (size_t i = 0; i < n; ++i) {
    if (labels[i] == mb::kIgnoreLabel) {
      wrong += ids[i] != original[i];  // unselected tokens stay
      continue;
    }
    ++selected;
    wrong += labels[i] != original[i];
    if (ids[i] == m.mask_id) ++masked;
    else if (ids[i] != original[i]) ++random;
    else ++kept;
  }
  CHECK(wrong == 0);
  const double sel = double(selected) / double(n);
  MESSAGE("selected " << sel << ", [MASK] " << double(masked) / selected << ", random " << double(random) / selected
                      << ", kept " << double(kept) / selected);
  CHECK(sel == doctest::Approx(0.15).epsilon(0.02));  // relative: ±0.003, ~5 sigma
  CHECK(double(masked) / selected == doctest::Approx(0.8).epsilon(0.01));
  CHECK(double(random) / selected == doctest::Approx(0.1).epsilon(0.05));
  CHECK(double(kept) / selected == doctest::Approx(0.1).epsilon(0.05));

  // Special tokens are never selected.
  std::vector<int32_t> specials;
  for (int i = 0; i < 10000; ++i) specials.push_back(m.special_ids[size_t(i) % m.special_ids.size()]);
  const std::vector<int32_t> before = specials;
  std::vector<int32_t> special_labels(specials.size());
  m.apply(specials, special_labels, rng);
  CHECK(specials == before);
  CHECK(std::all_of(special_labels.begin(), special_labels.end(), [](int32_t l) { return l == mb::kIgnoreLabel; }));

  // Deterministic given the RNG.
  std::vector<int32_t> again = original, again_labels(n);
  mb::Rng rng2(5);
  m.apply(again, again_labels, rng2);
  CHECK(again == ids);
  CHECK(again_labels == labels);
}

TEST_CASE("real corpus: sequences, throughput, evaluation set") {
  const mb::Corpus c = mb::open_corpus(corpus_dir(), 0.01, 0);
  mb::MlmStream stream(c.train, tokenizer(), 128, 0);
  const auto t0 = std::chrono::steady_clock::now();
  size_t tokens = 0, full = 0, bad = 0;
  const int n_batches = 100;
  for (int b = 0; b < n_batches; ++b) {
    const mb::MlmBatch batch = stream.next_batch(32);
    tokens += batch.input_ids.size();
    for (int i = 0; i < batch.size(); ++i) {
      full += batch.length(i) == 128;
      // Positions 0 and last hold [CLS]/[SEP], never selected for masking.
      bad += batch.input_ids[size_t(batch.offsets[size_t(i)])] != tokenizer().cls_id() ||
             batch.input_ids[size_t(batch.offsets[size_t(i) + 1] - 1)] != tokenizer().sep_id();
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("MLM stream: " << tokens << " tokens in " << seconds << " s = " << double(tokens) / seconds
                         << " tokens/s (tokenize + pack + mask, one thread)");
  CHECK(bad == 0);
  // Only the last piece of each file read so far may be short.
  CHECK(size_t(n_batches * 32) - full <= stream.state()["file"].get<size_t>() + 1);
  CHECK(tokens > 390000);

  const auto eval = mb::make_mlm_eval_set(c.heldout, tokenizer(), 128, 100, 32, 7);
  REQUIRE(eval.size() == 4);
  CHECK(eval[3].size() == 4);
  size_t labelled = 0, total = 0;
  for (const auto& b : eval) {
    total += b.input_ids.size();
    for (int32_t l : b.labels) labelled += l != mb::kIgnoreLabel;
  }
  CHECK(double(labelled) / double(total) == doctest::Approx(0.15 * 126 / 128).epsilon(0.1));
  const auto eval2 = mb::make_mlm_eval_set(c.heldout, tokenizer(), 128, 100, 32, 7);
  CHECK(eval2[2].input_ids == eval[2].input_ids);
  CHECK(eval2[2].labels == eval[2].labels);
}
