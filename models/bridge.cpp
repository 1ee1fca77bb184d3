#include "models/bridge.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/functional.h"

namespace mb {

Var bridge_forward(const BertLayer& L, const Var& x, const BertConfig& c, const ForwardOptions& opt) {
  MB_CHECK(L.kind == LayerKind::Bridge, "bridge_forward: not a bridge layer");
  const Var low = linear(x, L.bridge_down_w, Var());  // x·A: [T, r]
  const Var up = dropout(linear(low, L.bridge_up_w, L.bridge_up_b), float(c.hidden_dropout_prob), opt.train, opt.rng,
                         opt.token_draws(x.dim(1)));
  if (L.bridge_form == BridgeForm::Linear) return up;
  return layernorm(up, L.bridge_ln_w, L.bridge_ln_b, float(c.layer_norm_eps), x);
}

BertLayer make_bridge_layer(int64_t H, int64_t r, BridgeForm form) {
  MB_CHECK(r >= 1, "a bridge needs rank >= 1, got " + std::to_string(r));
  BertLayer L;
  L.kind = LayerKind::Bridge;
  L.bridge_form = form;
  L.bridge_rank = r;
  L.bridge_down_w = Var(Tensor::zeros({r, H}));
  L.bridge_up_w = Var(Tensor::zeros({H, r}));
  L.bridge_up_b = Var(Tensor::zeros({H}));
  if (form == BridgeForm::ResidualLayerNorm) {
    Tensor w = Tensor::empty({H});
    std::fill(w.f32(), w.f32() + H, 1.0f);
    L.bridge_ln_w = Var(w);
    L.bridge_ln_b = Var(Tensor::zeros({H}));
  }
  return L;
}

}  // namespace mb
