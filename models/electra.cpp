#include "models/electra.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/error.h"
#include "engine/functional.h"
#include "engine/rng.h"
#include "engine/threads.h"

namespace mb {

namespace {

constexpr uint64_t kGeneratorSeedSalt = 0x67656e6572ull;    // "gener"
constexpr uint64_t kGeneratorHeadSalt = 0x67656e68ull;      // "genh"
constexpr uint64_t kDiscHeadSalt = 0x64697363ull;           // "disc"

void erase_prefixed(std::map<std::string, Var>& extra, const std::string& prefix) {
  for (auto it = extra.begin(); it != extra.end();) it = it->first.rfind(prefix, 0) == 0 ? extra.erase(it) : std::next(it);
}

}  // namespace

Electra Electra::attach(BertModel& disc, int generator_layers, uint64_t seed) {
  MB_CHECK(generator_layers >= 1 && generator_layers <= disc.config.num_hidden_layers,
           "electra: the generator's layers must be in [1, " + std::to_string(disc.config.num_hidden_layers) +
               "] (the discriminator's), got " + std::to_string(generator_layers));
  erase_prefixed(disc.extra, "cls.");
  erase_prefixed(disc.extra, kElectraPrefix);

  Electra e;
  BertConfig gc = disc.config;
  gc.num_hidden_layers = generator_layers;
  e.generator = BertModel::init_random(gc, seed ^ kGeneratorSeedSalt, "electra generator");
  // The embeddings are the discriminator's own: one set of Vars, trained by both losses.
  e.generator.word_emb = disc.word_emb;
  e.generator.pos_emb = disc.pos_emb;
  e.generator.type_emb = disc.type_emb;
  e.generator.emb_ln_w = disc.emb_ln_w;
  e.generator.emb_ln_b = disc.emb_ln_b;
  e.generator.pooler_w = e.generator.pooler_b = Var();
  e.generator.classifier_w = e.generator.classifier_b = Var();
  e.generator_head = MlmHead::attach(e.generator, seed ^ kGeneratorHeadSalt);
  for (const auto& [name, v] : e.generator.named_parameters())
    if (name.find("embeddings.") == std::string::npos) disc.extra[std::string(kElectraPrefix) + "generator." + name] = v;

  const int64_t H = disc.config.hidden_size;
  Rng rng(seed ^ kDiscHeadSalt);
  auto make = [&](const std::string& name, Shape shape, bool normal) {
    Tensor t = Tensor::empty(shape);
    if (normal) fill_normal(t.f32(), t.numel(), disc.config.initializer_range, rng);
    else std::fill_n(t.f32(), t.numel(), 0.0f);
    return disc.extra[std::string(kElectraPrefix) + "discriminator_predictions." + name] = Var(t);
  };
  e.head_dense_w = make("dense.weight", {H, H}, true);
  e.head_dense_b = make("dense.bias", {H}, false);
  e.head_out_w = make("dense_prediction.weight", {2, H}, true);
  e.head_out_b = make("dense_prediction.bias", {2}, false);
  return e;
}

void strip_electra(BertModel& model) { erase_prefixed(model.extra, kElectraPrefix); }

std::vector<int32_t> sample_proposals(const Tensor& logits, uint64_t base, const std::vector<int64_t>& draw) {
  MB_CHECK(logits.ndim() == 2 && logits.dim(0) == int64_t(draw.size()), "sample_proposals: one draw per row expected");
  const int64_t n = logits.dim(0), V = logits.dim(1);
  std::vector<int32_t> out(static_cast<size_t>(n));
  const float* L = logits.f32();
  parallel_chunks(n, 4, [&](int64_t a, int64_t b) {
    std::vector<double> p(static_cast<size_t>(V));
    for (int64_t i = a; i < b; ++i) {
      const float* row = L + i * V;
      const float mx = *std::max_element(row, row + V);
      double sum = 0.0;
      for (int64_t v = 0; v < V; ++v) sum += (p[size_t(v)] = std::exp(double(row[v]) - double(mx)));
      const double u = Rng::uniform_of(Rng::mix(base + uint64_t(draw[size_t(i)] + 1) * Rng::kGamma)) * sum;
      // Inverse CDF; the last token with non-zero mass when rounding leaves u past the total.
      int64_t pick = V - 1;
      double acc = 0.0;
      for (int64_t v = 0; v < V; ++v) {
        acc += p[size_t(v)];
        if (u < acc) {
          pick = v;
          break;
        }
      }
      while (pick > 0 && p[size_t(pick)] == 0.0) --pick;
      out[size_t(i)] = int32_t(pick);
    }
  });
  return out;
}

ElectraLoss electra_loss(const BertModel& disc, const Electra& e, const Batch& batch,
                         const std::vector<int32_t>& labels, const ElectraStep& step, const ForwardOptions& opt) {
  MB_CHECK(labels.size() == batch.input_ids.size(), "electra_loss: one label per token expected");
  ElectraLoss r;
  const int64_t T = int64_t(batch.input_ids.size());
  r.tokens = T;
  const auto [rows, targets] = masked_rows(labels);
  std::vector<int64_t> draws;  // token i of the batch takes draw draw_offset + i
  draws.reserve(rows.size());
  for (const int32_t i : rows) draws.push_back(step.draw_offset + i);

  // The generator: MLM at the masked positions, then one proposal per position (no tape).
  Batch corrupted = batch;
  Var mlm;
  if (!rows.empty()) {
    const Var hidden = e.generator.hidden_states(batch, opt);
    const Var logits = e.generator_head.logits(e.generator, gather_rows(hidden, rows));
    mlm = cross_entropy(logits, targets);
    r.mlm = double(mlm.data()[0]);
    r.proposals = sample_proposals(logits.value(), step.sample_base, draws);
    for (size_t k = 0; k < rows.size(); ++k) corrupted.input_ids[size_t(rows[k])] = r.proposals[k];
  }
  // The discriminator reads the original text (unselected positions are) with the proposals in
  // place; a proposal equal to the original (the label) counts as original.
  std::vector<int32_t> is_replaced(static_cast<size_t>(T), 0);
  for (const int32_t i : rows) {
    is_replaced[size_t(i)] = corrupted.input_ids[size_t(i)] != labels[size_t(i)];
    r.replaced += is_replaced[size_t(i)];
  }

  // The discriminator at every token.
  const Var h = disc.hidden_states(corrupted, opt);
  const Var t = linear_gelu(h, e.head_dense_w, e.head_dense_b, disc.config.hidden_act != "gelu");
  const Var d_logits = linear(t, e.head_out_w, e.head_out_b);
  const Var d_loss = cross_entropy(d_logits, is_replaced);
  r.disc = double(d_loss.data()[0]);
  const float* dl = d_logits.data();
  for (int64_t i = 0; i < T; ++i) r.correct += (dl[2 * i + 1] > dl[2 * i]) == bool(is_replaced[size_t(i)]);

  Var total = scale(d_loss, float(step.disc_weight * step.disc_scale));
  if (mlm.defined()) total = add(total, scale(mlm, float(step.mlm_scale)));
  r.loss = total;
  return r;
}

}  // namespace mb
