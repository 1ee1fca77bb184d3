#include "models/bert.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iostream>
#include <optional>
#include <set>

#include "engine/allocator.h"
#include "engine/cpu.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/gemm.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "models/bridge.h"
#include "models/quantize.h"

namespace mb {

namespace fs = std::filesystem;

void Batch::add(const std::vector<int32_t>& ids, const std::vector<int32_t>& types) {
  MB_CHECK(types.empty() || types.size() == ids.size(), "Batch::add: token_type_ids length differs from input_ids");
  input_ids.insert(input_ids.end(), ids.begin(), ids.end());
  if (types.empty()) token_type_ids.insert(token_type_ids.end(), ids.size(), 0);
  else token_type_ids.insert(token_type_ids.end(), types.begin(), types.end());
  offsets.push_back(int32_t(input_ids.size()));
}

// ---------------------------------------------------------------------------------------------
// Parameter names. One table maps each tensor slot to its Hugging Face name (without the "bert."
// prefix) and the shape the config implies.

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

struct Slot {
  std::string name;
  Var* var;
  Shape shape;
  bool required;
};

std::vector<Slot> slots_of(BertModel& m, bool with_pooler, bool with_classifier) {
  const BertConfig& c = m.config;
  const int64_t H = c.hidden_size;
  std::vector<Slot> s = {
      {"embeddings.word_embeddings.weight", &m.word_emb, {c.vocab_size, H}, true},
      {"embeddings.position_embeddings.weight", &m.pos_emb, {c.max_position_embeddings, H}, true},
      {"embeddings.token_type_embeddings.weight", &m.type_emb, {c.type_vocab_size, H}, true},
      {"embeddings.LayerNorm.weight", &m.emb_ln_w, {H}, true},
      {"embeddings.LayerNorm.bias", &m.emb_ln_b, {H}, true},
  };
  for (size_t l = 0; l < m.layers.size(); ++l) {
    BertLayer& L = m.layers[l];
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    if (L.kind == LayerKind::Shared) continue;  // its tensors are stored once, under its source layer
    if (L.kind == LayerKind::Bridge) {
      const int64_t r = L.bridge_rank;
      s.push_back({p + "bridge.down.weight", &L.bridge_down_w, {r, H}, true});
      s.push_back({p + "bridge.up.weight", &L.bridge_up_w, {H, r}, true});
      s.push_back({p + "bridge.up.bias", &L.bridge_up_b, {H}, true});
      if (L.bridge_form == BridgeForm::ResidualLayerNorm) {
        s.push_back({p + "bridge.LayerNorm.weight", &L.bridge_ln_w, {H}, true});
        s.push_back({p + "bridge.LayerNorm.bias", &L.bridge_ln_b, {H}, true});
      }
      continue;
    }
    const int64_t W = L.num_heads * c.head_dim(), I = L.intermediate_size;
    std::vector<Slot> ls = {
        {p + "attention.self.query.weight", &L.q_w, {W, H}, true},
        {p + "attention.self.query.bias", &L.q_b, {W}, true},
        {p + "attention.self.key.weight", &L.k_w, {W, H}, true},
        {p + "attention.self.key.bias", &L.k_b, {W}, true},
        {p + "attention.self.value.weight", &L.v_w, {W, H}, true},
        {p + "attention.self.value.bias", &L.v_b, {W}, true},
        {p + "attention.output.dense.weight", &L.attn_out_w, {H, W}, true},
        {p + "attention.output.dense.bias", &L.attn_out_b, {H}, true},
        {p + "attention.output.LayerNorm.weight", &L.attn_ln_w, {H}, true},
        {p + "attention.output.LayerNorm.bias", &L.attn_ln_b, {H}, true},
        {p + "intermediate.dense.weight", &L.ffn_in_w, {I, H}, true},
        {p + "intermediate.dense.bias", &L.ffn_in_b, {I}, true},
        {p + "output.dense.weight", &L.ffn_out_w, {H, I}, true},
        {p + "output.dense.bias", &L.ffn_out_b, {H}, true},
        {p + "output.LayerNorm.weight", &L.ffn_ln_w, {H}, true},
        {p + "output.LayerNorm.bias", &L.ffn_ln_b, {H}, true},
    };
    // A removed sublayer (width 0) keeps only its output bias and LayerNorm.
    for (Slot& slot : ls) {
      const bool mha_weight = slot.name.find(".attention.self.") != std::string::npos ||
                              slot.name == p + "attention.output.dense.weight";
      const bool ffn_weight = starts_with(slot.name, p + "intermediate.") || slot.name == p + "output.dense.weight";
      if ((W == 0 && mha_weight) || (I == 0 && ffn_weight)) continue;
      s.push_back(slot);
    }
  }
  if (with_pooler) {
    s.push_back({"pooler.dense.weight", &m.pooler_w, {H, H}, false});
    s.push_back({"pooler.dense.bias", &m.pooler_b, {H}, false});
  }
  if (with_classifier) {
    s.push_back({"classifier.weight", &m.classifier_w, {c.num_labels(), H}, false});
    s.push_back({"classifier.bias", &m.classifier_b, {c.num_labels()}, false});
  }
  return s;
}

bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Stored name -> canonical name: drop the "bert." prefix of task-model checkpoints and map the
// TF-era LayerNorm.gamma/beta to weight/bias.
std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", bytes / double(int64_t(1) << 30));
  return buf;
}

std::string canonical_name(std::string n) {
  if (starts_with(n, "bert.")) n = n.substr(5);
  if (ends_with(n, "LayerNorm.gamma")) n = n.substr(0, n.size() - 5) + "weight";
  else if (ends_with(n, "LayerNorm.beta")) n = n.substr(0, n.size() - 4) + "bias";
  return n;
}

// Layers as config.json describes them (its "minibridge" key, or plain BERT layers); tensors unset.
void init_layers(BertModel& m, const std::string& source) {
  m.layers.clear();
  for (const LayerStructure& ls : read_layer_structure(m.config, source)) {
    BertLayer L;
    L.kind = ls.kind;
    L.num_heads = ls.num_heads;
    L.intermediate_size = ls.intermediate_size;
    L.bridge_form = ls.form;
    L.bridge_rank = ls.rank;
    L.shared_source = ls.source;
    L.swap_qk = ls.swap_qk;
    m.layers.push_back(L);
  }
}

// Points every shared layer at its source layer's tensors (once they are loaded or initialised).
void link_shared_layers(BertModel& m) {
  for (BertLayer& L : m.layers) {
    if (L.kind != LayerKind::Shared) continue;
    const BertLayer& src = m.layers[size_t(L.shared_source)];
    const int64_t source = L.shared_source;
    const bool swap = L.swap_qk;
    L = src;  // the same Vars (shared nodes), heads and widths
    L.kind = LayerKind::Shared;
    L.shared_source = source;
    L.swap_qk = swap;
  }
}

}  // namespace

BertModel BertModel::from_tensors(const BertConfig& config, const std::map<std::string, Tensor>& tensors,
                                  const std::string& source) {
  BertModel m;
  m.config = config;
  init_layers(m, source + "/config.json");
  m.quantization = read_quantization(config, source + "/config.json");

  std::map<std::string, const Tensor*> by_name;
  std::vector<std::string> unknown;
  for (const auto& [stored, t] : tensors) {
    const std::string name = canonical_name(stored);
    MB_CHECK(!by_name.count(name), source + ": tensor '" + stored + "' appears twice (under two spellings)");
    by_name[name] = &t;
  }

  std::vector<std::string> missing;
  for (Slot& s : slots_of(m, true, true)) {
    auto it = by_name.find(s.name);
    if (it == by_name.end()) {
      if (s.required) missing.push_back(s.name);
      continue;
    }
    const Tensor& t = *it->second;
    const DType stored = stored_dtype(m.quantization, s.name);
    if (stored == DType::F32)
      MB_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F16 || t.dtype() == DType::BF16,
               source + ": tensor '" + s.name + "' has dtype " + dtype_name(t.dtype()) + ", expected F32, F16 or BF16");
    else
      MB_CHECK(t.dtype() == stored, source + ": tensor '" + s.name + "' has dtype " + dtype_name(t.dtype()) +
                                        ", expected " + dtype_name(stored) +
                                        " (config.json's \"minibridge\".\"quantization\" says so)");
    MB_CHECK(t.shape() == s.shape, source + ": tensor '" + s.name + "' has shape " + shape_str(t.shape()) +
                                       ", config.json implies " + shape_str(s.shape));
    // F32 and quantized weights: zero-copy views; F16/BF16 of an ordinary model: converted once here.
    *s.var = Var(stored == DType::F32 ? t.to_f32() : t);
    by_name.erase(it);
    if (stored != DType::I8) continue;
    // Its scales: F32 [N], finite and positive (what quantize_weight_rows gives).
    const std::string scale_name = s.name + kScaleSuffix;
    auto sc = by_name.find(scale_name);
    MB_CHECK(sc != by_name.end(), source + ": tensor '" + scale_name + "' (the int8 scales of '" + s.name + "') is missing");
    const Tensor& scale = *sc->second;
    MB_CHECK(scale.dtype() == DType::F32 && scale.shape() == Shape{s.shape[0]},
             source + ": tensor '" + scale_name + "' has dtype " + dtype_name(scale.dtype()) + " and shape " +
                 shape_str(scale.shape()) + ", expected F32 " + shape_str({s.shape[0]}) + " (one scale per row of '" +
                 s.name + "')");
    for (int64_t j = 0; j < scale.numel(); ++j) {
      const float v = scale.f32()[j];
      MB_CHECK(std::isfinite(v) && v > 0, source + ": tensor '" + scale_name + "' has scale " + std::to_string(v) +
                                              " at row " + std::to_string(j) + "; int8 scales are finite and positive");
    }
    m.set_weight_scale(*s.var, scale);
    by_name.erase(sc);
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 8; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 8) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    throw Error(source + ": missing tensors: " + list);
  }
  MB_CHECK(m.has_pooler() == m.pooler_b.defined(), source + ": pooler.dense.weight and .bias must come together");
  MB_CHECK(m.has_classifier() == m.classifier_b.defined(),
           source + ": classifier.weight and .bias must come together");

  // Tensors of heads the encoder does not run (masked-LM, next-sentence) are kept; position_ids
  // is a buffer old checkpoints saved. Anything else is reported.
  for (const auto& [name, t] : by_name) {
    if (starts_with(name, "cls.")) m.extra[name] = Var(t->to_f32());
    else if (name != "embeddings.position_ids") unknown.push_back(name);
  }
  if (!unknown.empty()) {
    std::cerr << "minibridge: warning: " << source << ": " << unknown.size() << " unused tensor(s):";
    for (const auto& n : unknown) std::cerr << ' ' << n;
    std::cerr << '\n';
  }
  link_shared_layers(m);
  return m;
}

BertModel BertModel::load(const std::string& dir) {
  MB_CHECK(fs::is_directory(dir), dir + ": not a model directory");
  BertConfig config = read_bert_config((fs::path(dir) / "config.json").string());
  BertModel m = from_tensors(config, read_model_weights(dir), dir);
  if (m.quantization.quantized()) {
    const Precision p = m.quantization.weights;
    MB_CHECK(packed_gemm_available(p),
             dir + ": the model is stored in " + precision_name(p) + ", and " + packed_gemm_missing(p));
    m.pack_for_inference(p);
  }
  return m;
}

const Tensor* BertModel::weight_scale(const Var& W) const {
  if (scales_.empty() || !W.defined()) return nullptr;
  auto it = scales_.find(W.value().raw());
  return it == scales_.end() ? nullptr : &it->second;
}

void BertModel::set_weight_scale(const Var& W, Tensor scale) {
  MB_CHECK(W.defined() && W.value().dtype() == DType::I8 && scale.dtype() == DType::F32 && scale.ndim() == 1 &&
               scale.dim(0) == W.dim(0),
           "set_weight_scale: an I8 weight [N, K] takes F32 [N] scales");
  scales_[W.value().raw()] = std::move(scale);
}

void BertModel::require_f32_weights(const std::string& source, const std::string& what) const {
  MB_CHECK(!quantization.quantized(), source + ": the model is quantized (its encoder weights are stored in " +
                                          precision_name(quantization.weights) + "): " + what +
                                          " needs the f32 model it was quantized from");
}

BertModel BertModel::init_random(const BertConfig& config, uint64_t seed, const std::string& source) {
  BertModel m;
  m.config = config;
  init_layers(m, source);
  // Every field is within its limit (io/config.h), yet their product can still be far more than the
  // machine holds: refuse that here, before anything is allocated, rather than be killed half way.
  // (Within the limits no count overflows: at most 2^10 layers of under 2^37 elements each.)
  int64_t numel = 0;
  for (const Slot& s : slots_of(m, true, true)) numel += shape_numel(s.shape);
  const double need = double(numel) * sizeof(float), have = double(physical_memory_bytes());
  MB_CHECK(need <= have, source + ": " + std::to_string(numel) + " parameters need " + gib(need) +
                             " GiB, more than this machine's " + gib(have) + " GiB of memory");
  Rng rng(seed);
  for (Slot& s : slots_of(m, true, true)) {
    *s.var = Var(Tensor::empty(s.shape));
    float* p = s.var->mutable_data();
    const int64_t n = s.var->numel();
    if (ends_with(s.name, "LayerNorm.weight")) std::fill(p, p + n, 1.0f);
    else if (ends_with(s.name, ".bias")) std::fill(p, p + n, 0.0f);
    else fill_normal(p, n, config.initializer_range, rng);
  }
  // nn.Embedding(padding_idx=pad_token_id) zeroes that row.
  std::fill_n(m.word_emb.mutable_data() + config.pad_token_id * config.hidden_size, config.hidden_size, 0.0f);
  link_shared_layers(m);
  return m;
}

LayerStructure BertLayer::structure() const {
  if (kind == LayerKind::Shared) return LayerStructure::shared(shared_source, swap_qk);
  if (kind == LayerKind::Bridge)
    return LayerStructure::bridge(bridge_rank, bridge_form);
  return LayerStructure::encoder(num_heads, intermediate_size);
}

std::vector<LayerStructure> BertModel::layer_structure() const {
  std::vector<LayerStructure> out;
  for (const BertLayer& L : layers) out.push_back(L.structure());
  return out;
}

std::vector<std::pair<std::string, Var>> BertModel::named_parameters() const {
  BertModel& self = const_cast<BertModel&>(*this);  // slots_of only reads through the pointers here
  // Task models (a classifier or a cls.* head) put the encoder under "bert.", as HF does.
  const std::string prefix = has_classifier() || !extra.empty() ? "bert." : "";
  std::vector<std::pair<std::string, Var>> out;
  for (const Slot& s : slots_of(self, has_pooler(), has_classifier())) {
    const bool head = starts_with(s.name, "classifier.");
    out.emplace_back(head ? s.name : prefix + s.name, *s.var);
  }
  for (const auto& [name, v] : extra) out.emplace_back(name, v);
  return out;
}

std::vector<std::pair<std::string, Tensor>> BertModel::named_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, v] : named_parameters()) {
    out.emplace_back(name, v.value());
    if (const Tensor* scale = weight_scale(v)) out.emplace_back(name + kScaleSuffix, *scale);  // int8 weights
  }
  return out;
}

void BertModel::set_requires_grad(bool on) const {
  if (on) require_f32_weights("model", "training");
  for (const auto& [name, v] : named_parameters()) v.set_requires_grad(on);
}

void BertModel::save(const std::string& dir, DType dtype, const std::string& tokenizer_dir) const {
  // Each file is written atomically (temp + rename), weights first: a reader never sees a
  // half-written file, and other files in DIR (logs, checkpoints) are left alone.
  create_output_dir(dir);
  const fs::path target = dir;
  std::vector<std::pair<std::string, Tensor>> tensors = named_tensors();
  MB_CHECK(dtype == DType::F32 || !quantization.quantized(), dir + ": a quantized model is saved as it is stored");
  if (dtype != DType::F32)
    for (auto& [name, t] : tensors) t = t.to_dtype(dtype);
  // Wider elements first, so that every tensor of a quantized model stays aligned to its element
  // size (the data starts 8-aligned); an ordinary model's order is unchanged.
  std::stable_sort(tensors.begin(), tensors.end(),
                   [](const auto& a, const auto& b) { return dtype_size(a.second.dtype()) > dtype_size(b.second.dtype()); });
  write_safetensors((target / "model.safetensors").string(), tensors, {{"format", "pt"}});
  std::error_code ec;
  fs::remove(target / "model.safetensors.index.json", ec);  // a shard index from an earlier save would be stale

  BertConfig c = config;
  write_layer_structure(c, layer_structure());
  write_quantization(c, quantization);
  const char* arch = has_classifier() ? "BertForSequenceClassification" : extra.empty() ? "BertModel" : "BertForMaskedLM";
  c.raw["architectures"] = nlohmann::json::array({arch});
  c.raw["torch_dtype"] = dtype == DType::F32 ? "float32" : dtype == DType::F16 ? "float16" : "bfloat16";
  write_bert_config((target / "config.json").string(), c);

  if (!tokenizer_dir.empty() && fs::absolute(tokenizer_dir) != fs::absolute(target)) {
    const fs::path src = tokenizer_dir;
    MB_CHECK(fs::exists(src / "vocab.txt"), (src / "vocab.txt").string() + ": vocabulary not found");
    for (const char* f : {"vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"}) {
      if (!fs::exists(src / f)) continue;
      std::ifstream in(src / f, std::ios::binary);
      std::stringstream bytes;
      bytes << in.rdbuf();
      write_file_atomic((target / f).string(), bytes.str());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Inference.

void BertModel::validate(const Batch& b) const {
  const BertConfig& c = config;
  MB_CHECK(b.token_type_ids.size() == b.input_ids.size(), "batch: token_type_ids and input_ids differ in length");
  MB_CHECK(!b.offsets.empty() && b.offsets.front() == 0 && b.offsets.back() == b.num_tokens(),
           "batch: offsets do not cover the tokens");
  for (int64_t s = 0; s < b.num_seqs(); ++s) {
    const int64_t len = b.length(s);
    MB_CHECK(len >= 1, "sequence " + std::to_string(s) + " is empty");
    MB_CHECK(len <= c.max_position_embeddings, "sequence " + std::to_string(s) + " has " + std::to_string(len) +
                                                   " tokens, more than max_position_embeddings " +
                                                   std::to_string(c.max_position_embeddings));
    for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; ++t) {
      MB_CHECK(b.input_ids[t] >= 0 && b.input_ids[t] < c.vocab_size,
               "sequence " + std::to_string(s) + ": token id " + std::to_string(b.input_ids[t]) +
                   " is outside the vocabulary (size " + std::to_string(c.vocab_size) + ")");
      MB_CHECK(b.token_type_ids[t] >= 0 && b.token_type_ids[t] < c.type_vocab_size,
               "sequence " + std::to_string(s) + ": token type " + std::to_string(b.token_type_ids[t]) +
                   " is outside type_vocab_size " + std::to_string(c.type_vocab_size));
    }
  }
}

Var BertModel::embed(const Batch& b, const ForwardOptions& opt) const {
  validate(b);
  // Positions restart at 0 in every packed sequence.
  std::vector<int32_t> positions(size_t(b.num_tokens()));
  for (int64_t s = 0; s < b.num_seqs(); ++s)
    for (int32_t t = b.offsets[s]; t < b.offsets[s + 1]; ++t) positions[size_t(t)] = t - b.offsets[s];
  if (!opt.train && !needs_grad({&word_emb, &pos_emb, &type_emb, &emb_ln_w, &emb_ln_b})) {
    // Inference: the three rows summed into one buffer and normalised in place, one pass over
    // [T, H] where the autograd ops below make five (batch 8 × 128: 1.6 → 1.3 ms; most of what
    // is left is fetching 1,024 random rows of the 94 MB word table).
    const int64_t T = b.num_tokens(), H = word_emb.dim(1);
    Tensor x = Tensor::empty({T, H});
    const int32_t* ids[3] = {b.input_ids.data(), positions.data(), b.token_type_ids.data()};
    const float* tables[3] = {nullptr, pos_emb.data(), type_emb.data()};
    Tensor words;  // int8 word embeddings: the batch's rows dequantised, in token order
    std::vector<int32_t> token_rows;
    if (word_emb.value().dtype() == DType::I8) {
      const int8_t* q = word_emb.value().data<int8_t>();
      const float* scale = weight_scale(word_emb)->f32();
      words = Tensor::empty({T, H});
      token_rows.resize(size_t(T));
      for (int64_t t = 0; t < T; ++t) {
        const int64_t id = b.input_ids[size_t(t)];
        for (int64_t i = 0; i < H; ++i) words.f32()[t * H + i] = scale[id] * float(q[id * H + i]);
        token_rows[size_t(t)] = int32_t(t);
      }
      ids[0] = token_rows.data();
      tables[0] = words.f32();
    } else {
      tables[0] = word_emb.data();
    }
    embedding_sum_forward(x.f32(), ids, tables, 3, T, H);
    layernorm_forward(x.f32(), nullptr, nullptr, x.f32(), nullptr, emb_ln_w.data(), emb_ln_b.data(), T, H,
                      float(config.layer_norm_eps));
    return Var(x);
  }
  Var x = add(add(embedding(word_emb, b.input_ids), embedding(pos_emb, positions)), embedding(type_emb, b.token_type_ids));
  x = layernorm(x, emb_ln_w, emb_ln_b, float(config.layer_norm_eps));
  return dropout(x, float(config.hidden_dropout_prob), opt.train, opt.rng, opt.token_draws(x.dim(1)));
}

std::pair<Var, Var> query_key(const BertLayer& L, const Var& x, const BertModel* m) {
  const PackedWeight* pq = m ? m->packed_weight(L.q_w) : nullptr;
  const PackedWeight* pk = m ? m->packed_weight(L.k_w) : nullptr;
  if (L.swap_qk) return {linear(x, L.k_w, L.k_b, pk), linear(x, L.q_w, L.q_b, pq)};
  return {linear(x, L.q_w, L.q_b, pq), linear(x, L.k_w, L.k_b, pk)};
}

const PackedWeight* BertModel::packed_weight(const Var& W) const {
  if (packed_.empty() || !W.defined()) return nullptr;
  auto it = packed_.find(W.value().raw());
  return it == packed_.end() ? nullptr : it->second.get();
}

const BertModel::PackedQkv* BertModel::packed_qkv(const BertLayer& L) const {
  if (packed_qkv_.empty() || L.kind == LayerKind::Bridge || !L.q_w.defined()) return nullptr;
  auto it = packed_qkv_.find(L.q_w.value().raw());
  return it == packed_qkv_.end() ? nullptr : &it->second;
}

namespace {

// W's rows as stored: f32, bf16, or int8 with the model's scales for them.
WeightRows rows_of(const BertModel& m, const Var& W) {
  const Tensor& t = W.value();
  if (t.dtype() == DType::BF16) return {Precision::BF16, t.raw(), nullptr};
  if (t.dtype() == DType::I8) {
    const Tensor* scale = m.weight_scale(W);
    MB_CHECK(scale, "an int8 weight without its scales");
    return {Precision::Int8, t.raw(), scale->f32()};
  }
  return {Precision::F32, W.data(), nullptr};
}

// [W_Q; W_K; W_V] packed as one weight [3W, H], and [b_Q; b_K; b_V] (zeros where a bias is absent).
// Rows of any stored form: per-row int8 scales concatenate as the rows do.
std::optional<BertModel::PackedQkv> pack_qkv(const BertModel& m, const BertLayer& L, Precision precision) {
  const int64_t W = L.q_w.dim(0), H = L.q_w.dim(1);
  const Var* weights[3] = {&L.q_w, &L.k_w, &L.v_w};
  const Var* biases[3] = {&L.q_b, &L.k_b, &L.v_b};
  const DType dtype = L.q_w.value().dtype();
  const size_t row_bytes = size_t(H) * dtype_size(dtype);
  std::vector<uint8_t> w(size_t(3 * W) * row_bytes);
  std::vector<float> scale(dtype == DType::I8 ? size_t(3 * W) : 0);
  BertModel::PackedQkv f;
  f.bias = Tensor::zeros({3 * W});
  Precision form = Precision::F32;
  for (int j = 0; j < 3; ++j) {
    const Tensor& t = weights[j]->value();
    if (!t.defined() || t.dtype() != dtype || t.dim(0) != W || t.dim(1) != H) return std::nullopt;
    const WeightRows r = rows_of(m, *weights[j]);
    form = r.form;
    std::memcpy(w.data() + size_t(j * W) * row_bytes, r.values, size_t(W) * row_bytes);
    if (r.scale) std::memcpy(scale.data() + j * W, r.scale, size_t(W) * sizeof(float));
    if (biases[j]->defined()) std::memcpy(f.bias.f32() + j * W, biases[j]->data(), size_t(W) * 4);
  }
  const WeightRows rows{form, w.data(), scale.empty() ? nullptr : scale.data()};
  f.weight = pack_weight(rows, 3 * W, H, precision);
  if (!f.weight) return std::nullopt;
  return f;
}

}  // namespace

void BertModel::pack_for_inference(Precision precision) {
  const bool quantized = quantization.quantized();
  MB_CHECK(!quantized || precision == quantization.weights,
           std::string("this model is stored in ") + precision_name(quantization.weights) + " and runs in it only, not in " +
               precision_name(precision) + " (quantize the f32 model it came from for that)");
  packed_.clear();
  packed_qkv_.clear();
  std::vector<const Var*> weights;
  for (const BertLayer& L : layers) {
    if (L.kind == LayerKind::Bridge) continue;
    if (L.num_heads > 0 && L.q_w.defined()) {  // a sublayer K-prune removed has no Q, K, V
      if (!packed_qkv_.count(L.q_w.value().raw())) {   // shared layers: once
        if (std::optional<PackedQkv> f = pack_qkv(*this, L, precision)) {
          packed_qkv_.emplace(L.q_w.value().raw(), std::move(*f));
          for (const Var* w : {&L.q_w, &L.k_w, &L.v_w}) w->value().release_pages();
        }
      }
      if (!packed_qkv_.count(L.q_w.value().raw()))
        for (const Var* w : {&L.q_w, &L.k_w, &L.v_w}) weights.push_back(w);
    }
    for (const Var* w : {&L.attn_out_w, &L.ffn_in_w, &L.ffn_out_w}) weights.push_back(w);
  }
  const size_t encoder_weights = weights.size();
  weights.push_back(&pooler_w);
  weights.push_back(&classifier_w);
  for (size_t i = 0; i < weights.size(); ++i) {
    const Var* w = weights[i];
    if (!w->defined() || w->numel() == 0 || packed_.count(w->value().raw())) continue;  // shared layers: once
    std::shared_ptr<PackedWeight> p =
        pack_weight(rows_of(*this, *w), w->dim(0), w->dim(1), i < encoder_weights ? precision : Precision::F32);
    if (!p) {
      // A stored bf16 or int8 weight has no other way to run.
      MB_CHECK(w->value().dtype() == DType::F32, std::string("this CPU has no ") + precision_name(precision) +
                                                     " kernel for a " + shape_str(w->value().shape()) + " weight (" +
                                                     cpu_summary() + ")");
      continue;
    }
    packed_[w->value().raw()] = std::move(p);
    w->value().release_pages();
  }
}

Precision BertModel::packed_precision() const {
  for (const auto& [ptr, f] : packed_qkv_)
    if (packed_weight_precision(*f.weight) != Precision::F32) return packed_weight_precision(*f.weight);
  for (const auto& [ptr, p] : packed_)
    if (packed_weight_precision(*p) != Precision::F32) return packed_weight_precision(*p);
  return Precision::F32;
}

void BertModel::unpack() const {
  if (quantization.quantized()) return;  // its bf16 / int8 weights run only packed
  packed_.clear();
  packed_qkv_.clear();
}

size_t BertModel::packed_bytes() const {
  size_t n = 0;
  for (const auto& [ptr, p] : packed_) n += packed_weight_bytes(*p);
  for (const auto& [ptr, f] : packed_qkv_) n += packed_weight_bytes(*f.weight) + f.bias.nbytes();
  return n;
}

Var BertModel::attention_context_packed(const BertLayer& L, const Var& x, const Batch& b) const {
  const PackedQkv* f = packed_qkv(L);
  if (!f || needs_grad({&x, &L.q_w, &L.k_w, &L.v_w, &L.q_b, &L.k_b, &L.v_b})) return Var();
  const int64_t T = x.dim(0), W = L.q_w.dim(0);
  Tensor qkv = Tensor::empty({T, 3 * W});
  if (!gemm_packed(*f->weight, T, x.data(), f->bias.f32(), qkv.f32(), 3 * W)) return Var();
  return Var(attention_fused_qkv(qkv, b.offsets, L.num_heads, L.swap_qk));
}

Var BertModel::layer_forward(const BertLayer& L, const Var& x, const Batch& b, const ForwardOptions& opt) const {
  if (L.kind == LayerKind::Bridge) return bridge_forward(L, x, config, opt);
  const float eps = float(config.layer_norm_eps), p = float(config.hidden_dropout_prob);
  // A sublayer K-prune removed entirely (0 heads or 0 neurons) is LN(x + b_out): what the full
  // sublayer computes with every unit masked.
  Var h;
  if (L.num_heads == 0) {
    h = layernorm(add_bias(x, L.attn_out_b), L.attn_ln_w, L.attn_ln_b, eps);
  } else {
    Var ctx = opt.train ? Var() : attention_context_packed(L, x, b);
    if (!ctx.defined()) {
      const auto [q, k] = query_key(L, x, this);
      Var v = linear(x, L.v_w, L.v_b, packed_weight(L.v_w));
      ctx = attention(q, k, v, b.offsets, L.num_heads, float(config.attention_probs_dropout_prob), opt.train, opt.rng,
                      opt.attention_draws(L.num_heads));
    }
    Var attn = dropout(linear(ctx, L.attn_out_w, L.attn_out_b, packed_weight(L.attn_out_w)), p, opt.train, opt.rng,
                       opt.token_draws(x.dim(1)));
    h = layernorm(attn, L.attn_ln_w, L.attn_ln_b, eps, x);
  }
  if (L.intermediate_size == 0) return layernorm(add_bias(h, L.ffn_out_b), L.ffn_ln_w, L.ffn_ln_b, eps);
  Var inter = linear_gelu(h, L.ffn_in_w, L.ffn_in_b, config.hidden_act != "gelu", packed_weight(L.ffn_in_w));
  Var out = dropout(linear(inter, L.ffn_out_w, L.ffn_out_b, packed_weight(L.ffn_out_w)), p, opt.train, opt.rng,
                    opt.token_draws(x.dim(1)));
  return layernorm(out, L.ffn_ln_w, L.ffn_ln_b, eps, h);
}

Var BertModel::hidden_states(const Batch& b, const ForwardOptions& opt, std::vector<Var>* all_layers) const {
  MB_CHECK(!opt.train || opt.rng, "training forward pass needs a random generator for dropout");
  if (quantization.quantized()) {
    if (opt.train) require_f32_weights("model", "training");
    MB_CHECK(!packed_.empty() || !packed_qkv_.empty(), std::string("this model is stored in ") +
                                                           precision_name(quantization.weights) +
                                                           ": pack_for_inference() it first (BertModel::load does)");
  }
  Var x = embed(b, opt);
  if (all_layers) all_layers->assign(1, x);
  for (const BertLayer& L : layers) {
    x = layer_forward(L, x, b, opt);
    if (all_layers) all_layers->push_back(x);
  }
  return x;
}

Var BertModel::pooled_output(const Batch& b, const Var& hidden) const {
  MB_CHECK(has_pooler(), "this model has no pooler (pooler.dense.* tensors are absent)");
  const std::vector<int32_t> cls(b.offsets.begin(), b.offsets.end() - 1);  // first token of each sequence
  return tanh(linear(gather_rows(hidden, cls), pooler_w, pooler_b, packed_weight(pooler_w)));
}

Var BertModel::classifier_logits(const Var& pooled, const ForwardOptions& opt) const {
  MB_CHECK(has_classifier(), "this model has no classification head (classifier.* tensors are absent)");
  return linear(dropout(pooled, float(config.classifier_dropout), opt.train, opt.rng, opt.seq_draws(pooled.dim(1))),
                classifier_w, classifier_b,
                packed_weight(classifier_w));
}

std::vector<std::vector<int64_t>> encode_shares(const Batch& b, int threads) {
  // Split, each thread streams every weight itself, where the threads of a split product share
  // them: with few tokens a thread that costs more than the waiting it saves (BERT-base, 2 threads,
  // interleaved A/B: 2 × 128 tokens 2 % slower, 4 × 96 even, 8 × 128 3-5 % faster).
  constexpr int64_t kMinTokensPerThread = 160;
  if (threads < 2 || b.num_seqs() < threads || b.num_tokens() < kMinTokensPerThread * threads) return {};
  // Longest first, each to the share with the fewest tokens so far.
  std::vector<int64_t> order(size_t(b.num_seqs()));
  for (size_t s = 0; s < order.size(); ++s) order[s] = int64_t(s);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return b.length(x) > b.length(y); });
  std::vector<std::vector<int64_t>> shares(static_cast<size_t>(threads));
  std::vector<int64_t> tokens(static_cast<size_t>(threads), 0);
  for (int64_t s : order) {
    const size_t g = size_t(std::min_element(tokens.begin(), tokens.end()) - tokens.begin());
    shares[g].push_back(s);
    tokens[g] += b.length(s);
  }
  // The thread with the most tokens sets the pace: split only when it is within 5 % of an even
  // share (batch 8 × 128 on 2 threads gains ~5 %, so a larger imbalance would lose it).
  if (*std::max_element(tokens.begin(), tokens.end()) * threads * 20 > b.num_tokens() * 21) return {};
  for (auto& share : shares) std::sort(share.begin(), share.end());
  return shares;
}

namespace {

Batch sub_batch(const Batch& b, const std::vector<int64_t>& seqs) {
  Batch sub;
  for (int64_t s : seqs)
    sub.add({b.input_ids.begin() + b.offsets[s], b.input_ids.begin() + b.offsets[s + 1]},
            {b.token_type_ids.begin() + b.offsets[s], b.token_type_ids.begin() + b.offsets[s + 1]});
  return sub;
}

}  // namespace

Tensor BertModel::encode(const Batch& b) const {
  NoGrad no_grad;
  // Packed models only: every product then runs through gemm_packed, which keeps its scratchpad
  // and stream per thread (engine/packed_gemm.cpp).
  const int threads = num_threads();
  if (packed_.empty() || omp_in_parallel()) return hidden_states(b).value();
  const std::vector<std::vector<int64_t>> shares = encode_shares(b, threads);
  if (shares.empty()) return hidden_states(b).value();
  validate(b);  // here, so that an error names the sequence's index in the whole batch
  const int64_t H = config.hidden_size;
  Tensor out = Tensor::empty({b.num_tokens(), H});
  std::vector<std::exception_ptr> errors(shares.size());
#pragma omp parallel num_threads(threads)
  for (size_t g = size_t(omp_get_thread_num()); g < shares.size(); g += size_t(omp_get_num_threads())) {
    try {
      NoGrad no_grad_here;     // gradient mode is per thread
      omp_set_num_threads(1);  // this thread's own setting (restored when the region ends): its GEMMs are planned for one thread
      const Batch sub = sub_batch(b, shares[g]);
      const Tensor h = hidden_states(sub).value();
      for (size_t i = 0; i < shares[g].size(); ++i)
        std::memcpy(out.f32() + b.offsets[shares[g][i]] * H, h.f32() + sub.offsets[i] * H,
                    size_t(sub.length(int64_t(i)) * H) * sizeof(float));
    } catch (...) {
      errors[g] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

Tensor BertModel::pool(const Batch& b, const Tensor& hidden) const {
  NoGrad no_grad;
  return pooled_output(b, Var(hidden)).value();
}

Tensor BertModel::classify(const Tensor& pooled) const {
  NoGrad no_grad;
  return classifier_logits(Var(pooled)).value();
}

}  // namespace mb
