// BertForMaskedLM's prediction head: transform (dense + activation + LayerNorm), then a decoder
// tied to the word embeddings plus a bias. Its tensors live in the model's `extra` map under the
// Hugging Face names cls.predictions.{transform.dense.weight, transform.dense.bias,
// transform.LayerNorm.weight, transform.LayerNorm.bias, bias}, so they are saved and loaded with
// the model; the tied decoder is not stored twice.
#pragma once
#include <cstdint>
#include <vector>

#include "models/bert.h"

namespace mb {

struct MlmHead {
  Var dense_w, dense_b, ln_w, ln_b, bias;

  // The head stored in the model, or a fresh one (BERT's init) added to it when absent.
  static MlmHead attach(BertModel& model, uint64_t seed);
  // Vocabulary logits for the given hidden rows [N, H] -> [N, vocab].
  Var logits(const BertModel& model, const Var& hidden_rows) const;
};

// The positions of a packed batch a masked-LM loss is taken at (label not -100), in order, and
// their target tokens.
struct MaskedRows {
  std::vector<int32_t> rows, targets;
};
MaskedRows masked_rows(const std::vector<int32_t>& labels);

// Masked-LM loss of a packed batch: cross-entropy over the positions whose label is not -100.
// Only those rows go through the head (15% of tokens), which is most of the saving at 30k vocab.
Var mlm_loss(const BertModel& model, const MlmHead& head, const Batch& batch, const std::vector<int32_t>& labels,
             const ForwardOptions& opt);

}  // namespace mb
