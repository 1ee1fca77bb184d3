// BERT encoder (+ pooler, + sequence-classification head) for inference on packed sequences.
//
// Sequences are packed end to end (no padding): token t of sequence i is row offsets[i] + t of
// every activation. Attention runs per sequence, so no work is spent on padding.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"
#include "io/config.h"

namespace mb {

// Packed input: ids and token types of all sequences back to back; sequence i spans
// [offsets[i], offsets[i+1]).
struct Batch {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> token_type_ids;
  std::vector<int32_t> offsets{0};

  void add(const std::vector<int32_t>& ids, const std::vector<int32_t>& types);
  int64_t num_seqs() const { return int64_t(offsets.size()) - 1; }
  int64_t num_tokens() const { return int64_t(input_ids.size()); }
  int64_t length(int64_t i) const { return offsets[i + 1] - offsets[i]; }
};

struct BertLayer {
  int64_t num_heads = 0;  // may differ per layer in pruned models (width = num_heads · head_dim)
  Tensor q_w, q_b, k_w, k_b, v_w, v_b;   // [heads·d_h, H], [heads·d_h]
  Tensor attn_out_w, attn_out_b;         // [H, heads·d_h], [H]
  Tensor attn_ln_w, attn_ln_b;           // [H]
  Tensor ffn_in_w, ffn_in_b;             // [I, H], [I]
  Tensor ffn_out_w, ffn_out_b;           // [H, I], [H]
  Tensor ffn_ln_w, ffn_ln_b;             // [H]
};

// Reused activation buffers: allocating (and page-faulting) fresh memory per call is slow, so
// each slot only ever grows and later calls reuse it.
class BertWorkspace {
 public:
  enum Slot { kHidden, kQkv, kCtx, kAttn, kInter, kPooled, kLogits, kNumSlots };
  // An F32 tensor of `shape` backed by the slot's memory (contents unspecified).
  Tensor& get(Slot slot, Shape shape);

 private:
  Tensor storage_[kNumSlots];
  Tensor views_[kNumSlots];
};

class BertModel {
 public:
  BertConfig config;
  Tensor word_emb, pos_emb, type_emb, emb_ln_w, emb_ln_b;
  std::vector<BertLayer> layers;
  Tensor pooler_w, pooler_b;           // optional (BertModel checkpoints may lack them)
  Tensor classifier_w, classifier_b;   // optional: [num_labels, H]
  std::map<std::string, Tensor> extra; // stored tensors the encoder does not use (e.g. "cls.predictions.*")

  bool has_pooler() const { return pooler_w.defined(); }
  bool has_classifier() const { return classifier_w.defined(); }
  int64_t head_dim() const { return config.head_dim(); }

  // Loads DIR/config.json and DIR/model.safetensors (or sharded). F32 weights stay zero-copy views of
  // the mapping; F16/BF16 are converted to F32. Missing tensors are an error naming them;
  // unknown ones are reported on stderr.
  static BertModel load(const std::string& dir);
  // Same, from tensors already read. `source` names where they came from in messages.
  static BertModel from_tensors(const BertConfig& config, const std::map<std::string, Tensor>& tensors,
                                const std::string& source);
  // BERT's own initialisation: weights ~ normal(0, initializer_range), biases 0, LayerNorm 1/0,
  // the padding row of the word embeddings 0. Pooler and classifier included.
  static BertModel init_random(const BertConfig& config, uint64_t seed);

  // All tensors with Hugging Face names: "bert."-prefixed when a classifier head is present
  // (BertForSequenceClassification), bare otherwise (BertModel).
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;

  // Writes config.json + model.safetensors (atomically), and copies vocab_file to vocab.txt when given.
  void save(const std::string& dir, DType dtype = DType::F32, const std::string& vocab_file = "") const;

  // Checks ids, token types and lengths against the config; throws mb::Error saying which sequence.
  void validate(const Batch& batch) const;

  // Last hidden states [num_tokens, H] (a view of ws.hidden).
  const Tensor& encode(const Batch& batch, BertWorkspace& ws) const;
  // tanh(W·h[CLS] + b) per sequence: [num_seqs, H]. Requires a pooler. `hidden` from encode().
  const Tensor& pool(const Batch& batch, const Tensor& hidden, BertWorkspace& ws) const;
  // Classifier logits from pooled output: [num_seqs, num_labels]. Requires a classifier.
  const Tensor& classify(const Tensor& pooled, BertWorkspace& ws) const;
};

}  // namespace mb
