// Per-layer structure that plain BERT cannot express, recorded in config.json under
//   "minibridge": {"layers": [ {...}, ... ]}   (one object per encoder layer)
// so that a compressed model is still an ordinary model directory:
//   {"kind": "encoder", "num_heads": h, "intermediate_size": i}   a normal layer (h, i per layer)
//   {"kind": "bridge", "rank": r, "form": "residual_layernorm" | "linear"}   MB-BERT's Low-Rank Bridge
// A model whose layers are all plain encoders of the config's shape has no "minibridge" key, so
// unmodified Hugging Face models stay byte-compatible.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"

namespace mb {

enum class LayerKind { Encoder, Bridge };

// The bridge's map: LayerNorm(x + (x·A)·B + b) (default) or x·A·B + b.
enum class BridgeForm { ResidualLayerNorm, Linear };

const char* bridge_form_name(BridgeForm f);       // "residual_layernorm" | "linear"
BridgeForm parse_bridge_form(const std::string& name);  // throws mb::Error listing the forms

struct LayerStructure {
  LayerKind kind = LayerKind::Encoder;
  int64_t num_heads = 0, intermediate_size = 0;  // encoder
  int64_t rank = 0;                              // bridge
  BridgeForm form = BridgeForm::ResidualLayerNorm;

  static LayerStructure encoder(int64_t heads, int64_t intermediate) { return {LayerKind::Encoder, heads, intermediate, 0, {}}; }
  static LayerStructure bridge(int64_t rank, BridgeForm form) { return {LayerKind::Bridge, 0, 0, rank, form}; }
  bool operator==(const LayerStructure&) const = default;
};

// The layers config.json describes: its "minibridge" key when present (validated: one entry per
// layer, known kinds, sizes in range; errors start with `source`), else num_hidden_layers plain
// encoder layers.
std::vector<LayerStructure> read_layer_structure(const BertConfig& c, const std::string& source);

// Records `layers` in c.raw (and sets num_hidden_layers): the "minibridge" key when some layer
// differs from a plain encoder of the config's shape, none otherwise (other keys under
// "minibridge" are kept).
void write_layer_structure(BertConfig& c, const std::vector<LayerStructure>& layers);

}  // namespace mb
