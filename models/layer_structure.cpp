#include "models/layer_structure.h"

#include "engine/error.h"
#include "engine/functional.h"

namespace mb {

namespace {

int64_t width_field(const nlohmann::json& e, const char* key, const std::string& where) {
  MB_CHECK(e.contains(key), where + " lacks \"" + key + "\"");
  const nlohmann::json& v = e[key];
  MB_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, where + ": \"" + key + "\" must be an integer >= 0");
  return v.get<int64_t>();
}

}  // namespace

void apply_layer_structure(BertModel& m, const std::string& source) {
  const nlohmann::json& raw = m.config.raw;
  if (!raw.is_object() || !raw.contains("minibridge")) return;
  const nlohmann::json& mb = raw["minibridge"];
  MB_CHECK(mb.is_object(), source + ": \"minibridge\" must be an object");
  if (!mb.contains("layers")) return;
  const nlohmann::json& layers = mb["layers"];
  MB_CHECK(layers.is_array() && int64_t(layers.size()) == m.config.num_hidden_layers,
           source + ": \"minibridge.layers\" must be an array with one entry per layer (" +
               std::to_string(m.config.num_hidden_layers) + ")");
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string where = source + ": minibridge.layers[" + std::to_string(l) + "]";
    const nlohmann::json& e = layers[l];
    MB_CHECK(e.is_object() && e.contains("kind") && e["kind"].is_string(), where + " must be an object with a \"kind\"");
    const std::string kind = e["kind"].get<std::string>();
    MB_CHECK(kind == "encoder", where + ": unsupported kind \"" + kind + "\"");
    m.layers[l].num_heads = width_field(e, "num_heads", where);
    m.layers[l].intermediate_size = width_field(e, "intermediate_size", where);
  }
}

bool has_uniform_layers(const BertModel& m) {
  for (const BertLayer& L : m.layers)
    if (L.num_heads != m.config.num_attention_heads || L.intermediate_size != m.config.intermediate_size) return false;
  return true;
}

void record_layer_structure(const BertModel& m, nlohmann::json& raw) {
  if (has_uniform_layers(m)) {
    if (raw.contains("minibridge") && raw["minibridge"].is_object()) {
      raw["minibridge"].erase("layers");
      if (raw["minibridge"].empty()) raw.erase("minibridge");
    }
    return;
  }
  nlohmann::json layers = nlohmann::json::array();
  for (const BertLayer& L : m.layers)
    layers.push_back({{"kind", "encoder"}, {"num_heads", L.num_heads}, {"intermediate_size", L.intermediate_size}});
  if (!raw.contains("minibridge") || !raw["minibridge"].is_object()) raw["minibridge"] = nlohmann::json::object();
  raw["minibridge"]["layers"] = layers;
}

Var pruned_layer_forward(const BertModel& m, const BertLayer& L, const Var& x, const Batch& b,
                         const ForwardOptions& opt) {
  const BertConfig& c = m.config;
  const float eps = float(c.layer_norm_eps), p = float(c.hidden_dropout_prob);
  Var h;
  if (L.num_heads == 0) {
    h = layernorm(add_bias(x, L.attn_out_b), L.attn_ln_w, L.attn_ln_b, eps);
  } else {
    Var q = linear(x, L.q_w, L.q_b), k = linear(x, L.k_w, L.k_b), v = linear(x, L.v_w, L.v_b);
    Var ctx = attention(q, k, v, b.offsets, L.num_heads, float(c.attention_probs_dropout_prob), opt.train, opt.rng);
    Var attn = dropout(linear(ctx, L.attn_out_w, L.attn_out_b), p, opt.train, opt.rng);
    h = layernorm(attn, L.attn_ln_w, L.attn_ln_b, eps, x);
  }
  if (L.intermediate_size == 0) return layernorm(add_bias(h, L.ffn_out_b), L.ffn_ln_w, L.ffn_ln_b, eps);
  Var inter = linear(h, L.ffn_in_w, L.ffn_in_b);
  inter = c.hidden_act == "gelu" ? gelu(inter) : gelu_tanh(inter);
  Var out = dropout(linear(inter, L.ffn_out_w, L.ffn_out_b), p, opt.train, opt.rng);
  return layernorm(out, L.ffn_ln_w, L.ffn_ln_b, eps, h);
}

}  // namespace mb
