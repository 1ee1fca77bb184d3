#include "io/mlm_data.h"

#include <algorithm>

#include "engine/error.h"
#include "io/corpus.h"

namespace mb {

void MlmBatch::append(std::span<const int32_t> ids, std::span<const int32_t> labs) {
  input_ids.insert(input_ids.end(), ids.begin(), ids.end());
  labels.insert(labels.end(), labs.begin(), labs.end());
  offsets.push_back(int32_t(input_ids.size()));
}

Masker Masker::for_tokenizer(const Tokenizer& tok) {
  Masker m;
  m.vocab_size = int32_t(tok.vocab_size());
  m.mask_id = tok.mask_id();
  m.special_ids = {tok.cls_id(), tok.sep_id(), tok.pad_id(), tok.mask_id(), tok.unk_id()};
  return m;
}

void Masker::apply(std::span<int32_t> ids, std::span<int32_t> labels, Rng& rng) const {
  MB_CHECK(ids.size() == labels.size(), "Masker: ids and labels differ in length");
  for (size_t i = 0; i < ids.size(); ++i) {
    labels[i] = kIgnoreLabel;
    if (std::find(special_ids.begin(), special_ids.end(), ids[i]) != special_ids.end()) continue;
    if (rng.uniform() >= probability) continue;
    labels[i] = ids[i];
    const double r = rng.uniform();
    if (r < mask_share) ids[i] = mask_id;
    else if (r < mask_share + random_share) ids[i] = int32_t(rng.below(uint64_t(vocab_size)));
  }
}

// Masking draws from its own RNG stream, independent of the per-epoch file shuffles.
static uint64_t mask_seed(uint64_t seed) { return Rng(seed ^ 0x6d61736b6d61736bull).next_u64(); }

MlmStream::MlmStream(std::vector<std::string> files, const Tokenizer& tok, int seq_len, uint64_t seed)
    : files_(std::move(files)), tok_(tok), masker_(Masker::for_tokenizer(tok)), seq_len_(seq_len), seed_(seed),
      mask_rng_(mask_seed(seed)) {
  MB_CHECK(!files_.empty(), "MLM stream: no files to read");
  MB_CHECK(seq_len >= 3, "MLM stream: seq_len must be at least 3 ([CLS] token [SEP]), got " + std::to_string(seq_len));
  order_ = epoch_order(0);
}

std::vector<size_t> MlmStream::epoch_order(int64_t epoch) const {
  std::vector<size_t> order(files_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  Rng rng(seed_ + 0x9e3779b97f4a7c15ull * uint64_t(epoch + 1));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);  // Fisher-Yates
  return order;
}

void MlmStream::open_file() {
  text_ = read_text_file(files_[order_[file_]]);
  next_byte_ = 0;
  pending_.clear();
  paragraphs_.clear();
  front_used_ = 0;
  file_had_text_ = false;
  open_ = true;
}

bool MlmStream::read_paragraph() {
  std::string para;
  size_t begin = 0;
  if (!next_paragraph(text_, next_byte_, para, begin)) return false;
  std::vector<int32_t> ids;
  try {
    ids = tok_.tokenize(para);
  } catch (const Error& e) {
    const auto line = 1 + std::count(text_.begin(), text_.begin() + std::ptrdiff_t(begin), '\n');
    throw Error(files_[order_[file_]] + ":" + std::to_string(line) + ": " + e.what());
  }
  if (!ids.empty()) paragraphs_.emplace_back(begin, ids.size());
  pending_.insert(pending_.end(), ids.begin(), ids.end());
  return true;
}

void MlmStream::consume(size_t n) {
  pending_.erase(pending_.begin(), pending_.begin() + std::ptrdiff_t(n));
  front_used_ += n;
  while (!paragraphs_.empty() && front_used_ >= paragraphs_.front().second) {
    front_used_ -= paragraphs_.front().second;
    paragraphs_.pop_front();
  }
}

void MlmStream::next_file() {
  // Files are read in a new order each epoch, so "no text at all" means: every file was seen
  // to be empty since the last text.
  if (file_had_text_) files_without_text_.clear();
  else files_without_text_.insert(order_[file_]);
  MB_CHECK(files_without_text_.size() < files_.size(),
           files_.front() + (files_.size() > 1 ? " and " + std::to_string(files_.size() - 1) + " other files" : "") +
               ": no text found");
  open_ = false;
  text_.clear();
  if (++file_ == files_.size()) {
    file_ = 0;
    order_ = epoch_order(++epoch_);
  }
}

std::vector<int32_t> MlmStream::next_sequence() {
  const size_t body = size_t(seq_len_) - 2;
  for (;;) {
    if (!open_) open_file();
    while (pending_.size() < body && read_paragraph()) {
    }
    if (!pending_.empty()) break;
    next_file();
  }
  const size_t n = std::min(body, pending_.size());
  std::vector<int32_t> seq;
  seq.reserve(n + 2);
  seq.push_back(tok_.cls_id());
  seq.insert(seq.end(), pending_.begin(), pending_.begin() + std::ptrdiff_t(n));
  seq.push_back(tok_.sep_id());
  consume(n);
  file_had_text_ = true;
  ++sequences_;
  return seq;
}

MlmBatch MlmStream::next_batch(int batch_size) {
  MlmBatch batch;
  std::vector<int32_t> labels;
  for (int i = 0; i < batch_size; ++i) {
    std::vector<int32_t> ids = next_sequence();
    labels.resize(ids.size());
    masker_.apply(ids, labels, mask_rng_);
    batch.append(ids, labels);
  }
  return batch;
}

nlohmann::json MlmStream::state() const {
  // Position = the paragraph holding the next token (its first byte) and how many of its tokens
  // were already emitted: restoring re-tokenizes one paragraph, not the file up to there.
  const bool in_paragraph = open_ && !paragraphs_.empty();
  return {{"seed", seed_},
          {"seq_len", seq_len_},
          {"files", files_.size()},
          {"epoch", epoch_},
          {"file", file_},
          {"byte", in_paragraph ? paragraphs_.front().first : open_ ? next_byte_ : 0},
          {"token", in_paragraph ? front_used_ : 0},
          {"file_had_text", open_ && file_had_text_},
          {"mask_rng", mask_rng_.state()},
          {"sequences", sequences_}};
}

void MlmStream::restore(const nlohmann::json& s) {
  const std::string what = "MLM stream state: ";
  MlmStream next = *this;  // built aside: a bad state leaves this stream untouched
  try {
    MB_CHECK(s.at("seed").get<uint64_t>() == seed_ && s.at("seq_len").get<int>() == seq_len_ &&
                 s.at("files").get<size_t>() == files_.size(),
             what + "saved for seed " + s.at("seed").dump() + ", seq_len " + s.at("seq_len").dump() + ", " +
                 s.at("files").dump() + " files; this stream has seed " + std::to_string(seed_) + ", seq_len " +
                 std::to_string(seq_len_) + ", " + std::to_string(files_.size()) + " files");
    next.epoch_ = s.at("epoch").get<int64_t>();
    next.file_ = s.at("file").get<size_t>();
    MB_CHECK(next.epoch_ >= 0 && next.file_ < files_.size(), what + "position out of range: " + s.dump());
    next.order_ = epoch_order(next.epoch_);
    next.open_file();
    const size_t byte = s.at("byte").get<size_t>(), token = s.at("token").get<size_t>();
    const std::string& path = files_[next.order_[next.file_]];
    MB_CHECK(byte <= next.text_.size(), what + path + " is shorter than the saved position");
    next.next_byte_ = byte;
    if (token > 0) {
      next.read_paragraph();
      MB_CHECK(!next.paragraphs_.empty() && next.paragraphs_.front().first == byte &&
                   token < next.paragraphs_.front().second,
               what + path + " changed since the state was saved");
      next.consume(token);
    }
    next.file_had_text_ = s.at("file_had_text").get<bool>();
    next.files_without_text_.clear();
    next.mask_rng_ = Rng(s.at("mask_rng").get<uint64_t>());
    next.sequences_ = s.at("sequences").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + e.what());
  }
  *this = std::move(next);
}

std::vector<MlmBatch> make_mlm_eval_set(const std::vector<std::string>& files, const Tokenizer& tok, int seq_len,
                                        int n_sequences, int batch_size, uint64_t seed) {
  MB_CHECK(batch_size > 0, "MLM eval set: batch_size must be positive");
  MlmStream stream(files, tok, seq_len, seed);
  Rng rng(seed);
  std::vector<MlmBatch> batches;
  std::vector<int32_t> labels;
  for (int i = 0; i < n_sequences; ++i) {
    std::vector<int32_t> ids = stream.next_sequence();
    if (stream.epoch() > 0) break;  // one pass over the files at most
    labels.resize(ids.size());
    stream.masker().apply(ids, labels, rng);
    if (i % batch_size == 0) batches.emplace_back();
    batches.back().append(ids, labels);
  }
  return batches;
}

}  // namespace mb
