#include "models/layer_structure.h"

#include "engine/error.h"

namespace mb {

using nlohmann::json;

const char* bridge_form_name(BridgeForm f) { return f == BridgeForm::Linear ? "linear" : "residual_layernorm"; }

BridgeForm parse_bridge_form(const std::string& name) {
  if (name == "residual_layernorm") return BridgeForm::ResidualLayerNorm;
  if (name == "linear") return BridgeForm::Linear;
  throw Error("unknown bridge form \"" + name + "\" (residual_layernorm, linear)");
}

namespace {

int64_t positive_int(const json& entry, const char* key, const std::string& where, int64_t min, int64_t max) {
  auto it = entry.find(key);
  MB_CHECK(it != entry.end() && it->is_number_integer(), where + ": \"" + key + "\" must be an integer");
  const int64_t v = it->get<int64_t>();
  MB_CHECK(v >= min && v <= max, where + ": \"" + key + "\" is " + std::to_string(v) + ", must be in [" +
                                     std::to_string(min) + ", " + std::to_string(max) + "]");
  return v;
}

}  // namespace

std::vector<LayerStructure> read_layer_structure(const BertConfig& c, const std::string& source) {
  const LayerStructure plain = LayerStructure::encoder(c.num_attention_heads, c.intermediate_size);
  auto mbk = c.raw.find("minibridge");
  if (mbk == c.raw.end() || mbk->is_null()) return std::vector<LayerStructure>(size_t(c.num_hidden_layers), plain);
  MB_CHECK(mbk->is_object(), source + ": \"minibridge\" must be an object");
  if (!mbk->contains("layers")) return std::vector<LayerStructure>(size_t(c.num_hidden_layers), plain);
  const json& layers = mbk->at("layers");
  MB_CHECK(layers.is_array(), source + ": \"minibridge\".\"layers\" must be an array");
  MB_CHECK(int64_t(layers.size()) == c.num_hidden_layers,
           source + ": \"minibridge\".\"layers\" has " + std::to_string(layers.size()) + " entries, num_hidden_layers is " +
               std::to_string(c.num_hidden_layers));
  std::vector<LayerStructure> out;
  for (size_t l = 0; l < layers.size(); ++l) {
    const json& e = layers[l];
    const std::string where = source + ": \"minibridge\".\"layers\"[" + std::to_string(l) + "]";
    MB_CHECK(e.is_object() && e.contains("kind") && e["kind"].is_string(), where + ": needs a string \"kind\"");
    const std::string kind = e["kind"].get<std::string>();
    if (kind == "encoder") {
      const int64_t dh = c.head_dim();
      const int64_t h = positive_int(e, "num_heads", where, 0, c.hidden_size / dh);
      const int64_t i = positive_int(e, "intermediate_size", where, 0, limits::kMaxIntermediateSize);
      // h = 0 or i = 0: K-prune removed that sublayer entirely (see BertLayer).
      out.push_back(LayerStructure::encoder(h, i));
    } else if (kind == "bridge") {
      const int64_t r = positive_int(e, "rank", where, 1, c.hidden_size);  // above d it is no longer low-rank
      BridgeForm form = BridgeForm::ResidualLayerNorm;
      if (e.contains("form")) {
        MB_CHECK(e["form"].is_string(), where + ": \"form\" must be a string");
        try {
          form = parse_bridge_form(e["form"].get<std::string>());
        } catch (const Error& err) {
          throw Error(where + ": " + err.what());
        }
      }
      out.push_back(LayerStructure::bridge(r, form));
    } else if (kind == "shared") {
      MB_CHECK(l > 0, where + ": a shared layer runs an earlier layer's tensors, and layer 0 has none before it");
      const int64_t src = positive_int(e, "source", where, 0, int64_t(l) - 1);
      MB_CHECK(out[size_t(src)].kind == LayerKind::Encoder,
               where + ": \"source\" " + std::to_string(src) + " is not an encoder layer (a shared layer runs an encoder layer's tensors)");
      bool swap = false;
      if (e.contains("swap_qk")) {
        MB_CHECK(e["swap_qk"].is_boolean(), where + ": \"swap_qk\" must be true or false");
        swap = e["swap_qk"].get<bool>();
      }
      out.push_back(LayerStructure::shared(src, swap));
    } else {
      throw Error(where + ": layer kind \"" + kind + "\" is not supported (encoder, bridge, shared)");
    }
  }
  return out;
}

void write_layer_structure(BertConfig& c, const std::vector<LayerStructure>& layers) {
  c.num_hidden_layers = int64_t(layers.size());
  const LayerStructure plain = LayerStructure::encoder(c.num_attention_heads, c.intermediate_size);
  bool all_plain = true;
  for (const LayerStructure& l : layers) all_plain = all_plain && l == plain;
  json& raw = c.raw;
  if (!raw.is_object()) raw = json::object();
  raw["num_hidden_layers"] = c.num_hidden_layers;
  if (all_plain) {
    if (raw.contains("minibridge") && raw["minibridge"].is_object()) {
      raw["minibridge"].erase("layers");
      if (raw["minibridge"].empty()) raw.erase("minibridge");
    }
    return;
  }
  json arr = json::array();
  for (const LayerStructure& l : layers) {
    if (l.kind == LayerKind::Bridge)
      arr.push_back({{"kind", "bridge"}, {"rank", l.rank}, {"form", bridge_form_name(l.form)}});
    else if (l.kind == LayerKind::Shared)
      arr.push_back({{"kind", "shared"}, {"source", l.source}, {"swap_qk", l.swap_qk}});
    else
      arr.push_back({{"kind", "encoder"}, {"num_heads", l.num_heads}, {"intermediate_size", l.intermediate_size}});
  }
  if (!raw.contains("minibridge") || !raw["minibridge"].is_object()) raw["minibridge"] = json::object();
  raw["minibridge"]["layers"] = arr;
}

}  // namespace mb
