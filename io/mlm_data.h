// Masked-language-model training data: a deterministic, resumable stream of packed token
// sequences over corpus files, masked the way Hugging Face's DataCollatorForLanguageModeling does.
//
// Packing: each file is one document, tokenized lazily a paragraph at a time (only the current
// file is in memory); its tokens are cut into sequences [CLS] t_1 .. t_{seq_len-2} [SEP] of
// exactly seq_len tokens. The last piece of a file is kept as a shorter sequence rather than
// dropped (or glued to the next file), so that no text is lost on small corpora and a sequence
// never straddles two files; that is one short sequence per file. The order of the files is
// shuffled anew each epoch from the seed; the stream never ends.
#pragma once
#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "io/tokenizer.h"

namespace mb {

inline constexpr int32_t kIgnoreLabel = -100;  // label of unmasked positions (PyTorch's ignore_index)

// Sequences back to back: sequence i is input_ids[offsets[i] .. offsets[i+1]).
struct MlmBatch {
  std::vector<int32_t> input_ids;  // after masking
  std::vector<int32_t> labels;     // the original id where a token was selected, kIgnoreLabel elsewhere
  std::vector<int32_t> offsets{0};

  int size() const { return int(offsets.size()) - 1; }
  int length(int i) const { return offsets[size_t(i) + 1] - offsets[size_t(i)]; }
  void append(std::span<const int32_t> ids, std::span<const int32_t> labs);
};

// DataCollatorForLanguageModeling's masking: each token that is not special is selected with
// `probability`; a selected token becomes [MASK] with probability mask_share, a uniformly random
// id in [0, vocab_size) with probability random_share, and otherwise stays. A sequence may have
// no selected token at all, as in HF.
struct Masker {
  int32_t vocab_size = 0;
  int32_t mask_id = -1;
  std::vector<int32_t> special_ids;  // never selected
  double probability = 0.15, mask_share = 0.8, random_share = 0.1;

  // [CLS], [SEP], [PAD], [MASK] and [UNK] are special (as HF's all_special_ids).
  static Masker for_tokenizer(const Tokenizer& tok);
  // Masks ids in place and writes labels (same length as ids).
  void apply(std::span<int32_t> ids, std::span<int32_t> labels, Rng& rng) const;
};

class MlmStream {
 public:
  // files: the corpus files to stream (e.g. Corpus::train). seq_len >= 3. The seed fixes the
  // file order of every epoch and the masking.
  MlmStream(std::vector<std::string> files, const Tokenizer& tok, int seq_len, uint64_t seed);

  // The next packed, unmasked sequence. mb::Error if a whole epoch yields no token.
  std::vector<int32_t> next_sequence();
  // The next batch_size sequences, masked with the stream's own masking RNG (part of state()).
  MlmBatch next_batch(int batch_size);

  // Everything needed to continue with exactly the same next sequence and masks:
  // {"seed","seq_len","files" (checked on restore), "epoch","file","byte","token","mask_rng",
  // "sequences"}. restore() validates it against this stream (mb::Error on a mismatch).
  nlohmann::json state() const;
  void restore(const nlohmann::json& state);

  int64_t epoch() const { return epoch_; }
  int64_t sequences() const { return sequences_; }  // emitted since the start (restored too)
  Masker& masker() { return masker_; }  // e.g. another masking probability
  const Masker& masker() const { return masker_; }

 private:
  void open_file();           // reads files_[order_[file_]] and starts at its first paragraph
  bool read_paragraph();      // tokenizes the next paragraph into pending_; false at end of file
  void next_file();           // the next file, the next epoch after the last one
  void consume(size_t n);     // drops the first n pending tokens
  std::vector<size_t> epoch_order(int64_t epoch) const;

  std::vector<std::string> files_;
  Tokenizer tok_;
  Masker masker_;
  int seq_len_;
  uint64_t seed_;
  Rng mask_rng_;

  int64_t epoch_ = 0, sequences_ = 0;
  size_t file_ = 0;             // index into order_
  std::vector<size_t> order_;   // this epoch's file order
  std::string text_;            // the current file
  bool open_ = false;
  size_t next_byte_ = 0;        // where the next paragraph to tokenize starts
  std::vector<int32_t> pending_;                    // tokenized, not yet emitted
  std::deque<std::pair<size_t, size_t>> paragraphs_;  // (first byte, tokens) of the paragraphs in pending_
  size_t front_used_ = 0;       // tokens of paragraphs_.front() already emitted
  std::set<size_t> files_without_text_;  // files that yielded nothing since the last text
  bool file_had_text_ = false;
};

// A fixed evaluation set: the first n_sequences sequences of the files (in the stream's epoch-0
// order, fewer if one pass over the files has fewer), masked with a masking RNG seeded by seed,
// cut into batches of batch_size (the last one may be smaller).
std::vector<MlmBatch> make_mlm_eval_set(const std::vector<std::string>& files, const Tokenizer& tok, int seq_len,
                                        int n_sequences, int batch_size, uint64_t seed);

}  // namespace mb
