#include "models/mlm_head.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/functional.h"
#include "io/mlm_data.h"

namespace mb {

MlmHead MlmHead::attach(BertModel& m, uint64_t seed) {
  const int64_t H = m.config.hidden_size, V = m.config.vocab_size;
  const std::string p = "cls.predictions.";
  Rng rng(seed);
  auto get = [&](const std::string& name, Shape shape, char init) {
    auto it = m.extra.find(p + name);
    if (it != m.extra.end()) {
      MB_CHECK(it->second.shape() == shape, "tensor '" + p + name + "' has shape " + shape_str(it->second.shape()) +
                                                ", expected " + shape_str(shape));
      return it->second;
    }
    Tensor t = Tensor::empty(shape);
    if (init == 'n') fill_normal(t.f32(), t.numel(), m.config.initializer_range, rng);
    else std::fill_n(t.f32(), t.numel(), init == '1' ? 1.0f : 0.0f);
    return m.extra[p + name] = Var(t);
  };
  MlmHead h;
  h.dense_w = get("transform.dense.weight", {H, H}, 'n');
  h.dense_b = get("transform.dense.bias", {H}, '0');
  h.ln_w = get("transform.LayerNorm.weight", {H}, '1');
  h.ln_b = get("transform.LayerNorm.bias", {H}, '0');
  h.bias = get("bias", {V}, '0');
  return h;
}

Var MlmHead::logits(const BertModel& m, const Var& rows) const {
  Var t = linear(rows, dense_w, dense_b);
  t = m.config.hidden_act == "gelu" ? gelu(t) : gelu_tanh(t);
  t = layernorm(t, ln_w, ln_b, float(m.config.layer_norm_eps));
  return linear(t, m.word_emb, bias);  // decoder tied to the word embeddings
}

MaskedRows masked_rows(const std::vector<int32_t>& labels) {
  MaskedRows r;
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] != kIgnoreLabel) {
      r.rows.push_back(int32_t(i));
      r.targets.push_back(labels[i]);
    }
  return r;
}

Var mlm_loss(const BertModel& m, const MlmHead& head, const Batch& batch, const std::vector<int32_t>& labels,
             const ForwardOptions& opt) {
  MB_CHECK(labels.size() == batch.input_ids.size(), "mlm_loss: one label per token expected");
  const MaskedRows masked = masked_rows(labels);
  const Var hidden = m.hidden_states(batch, opt);
  if (masked.rows.empty()) return cross_entropy(head.logits(m, gather_rows(hidden, {0})), {-100});  // loss 0, no gradient
  return cross_entropy(head.logits(m, gather_rows(hidden, masked.rows)), masked.targets);
}

}  // namespace mb
