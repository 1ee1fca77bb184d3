// MB-BERT's Low-Rank Bridge (LoRB): one block that replaces a whole encoder layer,
//   residual_layernorm (default):  LoRB(x) = LayerNorm(x + (x·A)·B + b)
//   linear:                        LoRB(x) = (x·A)·B + b
// with A ∈ R^{H×r}, B ∈ R^{r×H}. Stored as encoder.layer.{i}.bridge.down.weight [r, H] (= Aᵀ),
// .bridge.up.weight [H, r] (= Bᵀ), .bridge.up.bias [H] and .bridge.LayerNorm.weight/.bias [H].
// Built from the differentiable ops of engine/functional.h, so it trains like any layer.
#pragma once
#include <cstdint>

#include "models/bert.h"

namespace mb {

// The bridge's output for x [tokens, H]. In training the low-rank branch gets the config's hidden
// dropout before the residual sum, as BERT's own sublayers do (our choice).
Var bridge_forward(const BertLayer& bridge, const Var& x, const BertConfig& config, const ForwardOptions& opt = {});

// A bridge layer of the given shape with A = B = 0, b = 0 and LayerNorm 1/0 (the caller fills them).
BertLayer make_bridge_layer(int64_t hidden, int64_t rank, BridgeForm form);

}  // namespace mb
