// ELECTRA's replaced-token detection (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as
// Discriminators Rather Than Generators"), the objective of `pretrain --objective electra`.
//
// A small generator, trained by masked-LM on the masked positions, proposes a token for each of
// them (sampled from its softmax); the model being pretrained, the discriminator, reads the
// original text with those proposals in place and learns, at every token, whether it is the
// original. Every token gives a training signal, not only the 15 % that are masked, which is what
// makes the objective cheap per unit of downstream quality at small sizes.
//
// Shapes. The generator has the discriminator's width and max(1, layers / 4) layers by default
// (a shallower rather than a narrower generator, as DeBERTa-v3's, so that the embeddings are shared
// outright: word, position, type and their LayerNorm are the discriminator's own Vars). Its MLM
// head (BERT's, models/mlm_head.h) has its decoder tied to those word embeddings. The
// discriminator's head is dense + GELU, then two logits (original, replaced) under cross-entropy:
// ELECTRA's single sigmoid logit written as the difference of two.
//
// Loss = MLM(generator) + disc_weight · mean over all tokens of the discriminator's cross-entropy
// (ELECTRA's λ = 50). No gradient reaches the generator through the sampling. A proposal equal to
// the original token counts as original.
//
// Everything the objective adds lives in the discriminator's `extra` map under "electra.", so that
// training checkpoints carry it; strip_electra() removes it before the discriminator is written as
// a plain BERT model directory.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/bert.h"
#include "models/mlm_head.h"

namespace mb {

inline constexpr const char* kElectraPrefix = "electra.";

inline int default_generator_layers(int64_t layers) { return int(std::max<int64_t>(1, layers / 4)); }

struct Electra {
  BertModel generator;  // its embeddings are the discriminator's Vars
  MlmHead generator_head;
  Var head_dense_w, head_dense_b, head_out_w, head_out_b;  // discriminator head: [H,H], [H], [2,H], [2]

  // A fresh generator and heads (BERT's init from `seed`), registered in disc.extra under
  // "electra.". disc's own MLM head (cls.*), if any, is dropped: it would not match the encoder
  // this objective trains.
  static Electra attach(BertModel& disc, int generator_layers, uint64_t seed);
};

// The ELECTRA loss of one batch (or one data-parallel share of it).
struct ElectraLoss {
  Var loss;                          // mlm_scale · MLM + disc_weight · disc_scale · disc
  double mlm = 0.0, disc = 0.0;      // the unscaled means (0 when there is nothing to average)
  int64_t tokens = 0, replaced = 0;  // tokens seen by the discriminator, of them replaced
  int64_t correct = 0;               // discriminator decisions that were right
  std::vector<int32_t> proposals;    // the generator's, one per selected position in token order
};

struct ElectraStep {
  double disc_weight = 50.0;
  double mlm_scale = 1.0, disc_scale = 1.0;  // data-parallel shares' weights (1: the whole batch)
  // Proposal draws: token t of the global batch (t = draw_offset + its index in this batch) uses
  // draw t of the block starting at sample_base (engine/rng.h: Rng::skip), so the proposals do not
  // depend on how the batch is split.
  uint64_t sample_base = 0;
  int64_t draw_offset = 0;
};

// `batch` holds the masked input ids (MlmBatch::input_ids), `labels` the original id at each
// selected position (kIgnoreLabel elsewhere). opt: the forward options of both models (dropout).
ElectraLoss electra_loss(const BertModel& disc, const Electra& e, const Batch& batch,
                         const std::vector<int32_t>& labels, const ElectraStep& step, const ForwardOptions& opt);

// Proposals for rows of generator logits [n, V]: row i samples from softmax(logits[i]) with the
// uniform draw Rng::uniform_of(Rng::mix(base + (draw[i] + 1)·kGamma)).
std::vector<int32_t> sample_proposals(const Tensor& logits, uint64_t base, const std::vector<int64_t>& draw);

// Removes the objective's tensors from model.extra (before writing it as a plain BERT).
void strip_electra(BertModel& model);

}  // namespace mb
