// Per-layer structure that plain BERT cannot express, recorded in config.json under
//   "minibridge": {"layers": [ {...}, ... ]}   (one object per encoder layer)
// so that a compressed model is still an ordinary model directory:
//   {"kind": "encoder", "num_heads": h, "intermediate_size": i}   a normal layer (h, i per layer)
//   {"kind": "bridge", "rank": r, "form": "residual_layernorm" | "linear"}   MB-BERT's Low-Rank Bridge
//   {"kind": "shared", "source": j, "swap_qk": true}   Pea-KD's shared layer: runs layer j's own
//       tensors (stored once, under layer j), with the query and key projections exchanged when
//       swap_qk
// A model whose layers are all plain encoders of the config's shape has no "minibridge" key, so
// unmodified Hugging Face models stay byte-compatible.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"

namespace mb {

enum class LayerKind { Encoder, Bridge, Shared };

// The bridge's map: LayerNorm(x + (x·A)·B + b) (default) or x·A·B + b.
enum class BridgeForm { ResidualLayerNorm, Linear };

const char* bridge_form_name(BridgeForm f);       // "residual_layernorm" | "linear"
BridgeForm parse_bridge_form(const std::string& name);  // throws mb::Error listing the forms

struct LayerStructure {
  LayerKind kind = LayerKind::Encoder;
  int64_t num_heads = 0, intermediate_size = 0;  // encoder
  int64_t rank = 0;                              // bridge
  BridgeForm form = BridgeForm::ResidualLayerNorm;
  int64_t source = -1;                           // shared: the layer whose tensors it runs
  bool swap_qk = false;                          // shared: query from W_K, b_K and key from W_Q, b_Q

  static LayerStructure encoder(int64_t heads, int64_t intermediate) { return {LayerKind::Encoder, heads, intermediate, 0, {}, -1, false}; }
  static LayerStructure bridge(int64_t rank, BridgeForm form) { return {LayerKind::Bridge, 0, 0, rank, form, -1, false}; }
  static LayerStructure shared(int64_t source, bool swap_qk) { return {LayerKind::Shared, 0, 0, 0, {}, source, swap_qk}; }
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
