// Per-layer structure of compressed models, recorded in config.json under the agreed key
//   "minibridge": {"layers": [{"kind": "encoder", "num_heads": h, "intermediate_size": i}, ...]}
// It is written only when some layer differs from the config, so plain models stay byte-compatible
// with Hugging Face. Widths of 0 remove a sublayer (see BertLayer).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "models/bert.h"

namespace mb {

// Sets each layer's num_heads / intermediate_size from m.config.raw["minibridge"]["layers"] when
// present; throws mb::Error naming `source` (the config file) when the entry is malformed.
void apply_layer_structure(BertModel& m, const std::string& source);

// Writes the "minibridge" layers entry into raw when some layer's widths differ from the config,
// and removes a stale one otherwise.
void record_layer_structure(const BertModel& m, nlohmann::json& raw);

// Whether every layer has the config's widths.
bool has_uniform_layers(const BertModel& m);

// Forward of a layer with a removed sublayer (0 heads or 0 FFN neurons): that sublayer is
// LN(x + b_out); the other one is computed as in BertModel::layer_forward.
Var pruned_layer_forward(const BertModel& m, const BertLayer& L, const Var& x, const Batch& b,
                         const ForwardOptions& opt);

}  // namespace mb
