// info: parameter counts and FLOPs per component, dtype and structure of a model directory.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "commands.h"
#include "engine/error.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "models/counting.h"

namespace mbcli {

namespace {

struct InfoOptions {
  std::string model;
  double seq_len = 128;
  bool json = false;
};

std::string grouped(int64_t v) {
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

void run_info(const InfoOptions& o) {
  const mb::BertConfig config = mb::read_bert_config((std::filesystem::path(o.model) / "config.json").string());
  const std::map<std::string, mb::Tensor> stored = mb::read_model_weights(o.model);
  std::set<std::string> dtypes;
  for (const auto& [name, t] : stored) dtypes.insert(mb::dtype_name(t.dtype()));
  std::string dtype;
  for (const auto& d : dtypes) dtype += (dtype.empty() ? "" : "+") + d;
  const mb::BertModel m = mb::BertModel::from_tensors(config, stored, o.model);
  const mb::ModelCounts c = mb::count_model(m, o.seq_len);

  nlohmann::json layers = nlohmann::json::array();
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const mb::LayerCounts& l = c.layers[i];
    if (m.layers[i].kind == mb::LayerKind::Bridge)
      layers.push_back({{"kind", "bridge"}, {"params", l.params}, {"rank", l.bridge_rank},
                        {"form", mb::bridge_form_name(m.layers[i].bridge_form)}, {"bridge_flops", l.bridge_flops}});
    else if (m.layers[i].kind == mb::LayerKind::Shared)
      layers.push_back({{"kind", "shared"}, {"source", m.layers[i].shared_source}, {"swap_qk", m.layers[i].swap_qk},
                        {"params", l.params}, {"heads", l.heads}, {"neurons", l.neurons},
                        {"mha_flops", l.mha_flops}, {"ffn_flops", l.ffn_flops}});
    else
      layers.push_back({{"kind", "encoder"}, {"params", l.params}, {"heads", l.heads}, {"neurons", l.neurons},
                        {"mha_flops", l.mha_flops}, {"ffn_flops", l.ffn_flops}});
  }
  const mb::Quantization& q = m.quantization;
  const std::string compute = !q.quantized() ? "F32"
                              : std::string(q.weights == mb::Precision::Int8 ? "INT8" : "BF16") +
                                    " encoder products, F32 elsewhere";
  double stored_bytes = 0;
  for (const auto& [name, t] : stored) stored_bytes += double(t.nbytes());
  nlohmann::json quantization = nullptr;
  if (q.quantized())
    quantization = {{"dtype", mb::precision_name(q.weights)},
                    {"embeddings", q.int8_embeddings ? "int8" : "f32"},
                    {"format", "minibridge (not readable by Hugging Face)"}};
  nlohmann::json j = {
      {"model", o.model},
      {"dtype", dtype},
      {"compute_dtype", compute},
      {"quantization", quantization},
      {"weight_bytes", stored_bytes},
      {"structure",
       {{"layers", config.num_hidden_layers}, {"hidden_size", config.hidden_size},
        {"num_attention_heads", config.num_attention_heads}, {"head_dim", config.head_dim()},
        {"intermediate_size", config.intermediate_size}, {"vocab_size", config.vocab_size},
        {"max_position_embeddings", config.max_position_embeddings}, {"num_labels", config.num_labels()},
        {"pooler", m.has_pooler()}, {"classifier", m.has_classifier()}}},
      {"params",
       {{"embeddings", c.embedding_params}, {"encoder", c.encoder_params()}, {"pooler", c.pooler_params},
        {"classifier", c.classifier_params}, {"other", c.extra_params}, {"total", c.total_params()}}},
      {"flops", {{"seq_len", o.seq_len}, {"total", c.flops()}, {"per_token", c.flops() / o.seq_len}}},
      {"layers", layers},
      {"runtime", runtime_json()}};
  if (o.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  std::printf("model       %s\n", o.model.c_str());
  std::printf("dtype       %s stored (%.1f MB), %s compute\n", dtype.c_str(), stored_bytes / 1e6, compute.c_str());
  if (q.quantized())
    std::printf("quantized   %s encoder weights, %s word embeddings (minibridge quantize: its own format, not Hugging Face's)\n",
                mb::precision_name(q.weights), q.int8_embeddings ? "int8" : "f32");
  const nlohmann::json& rt = j["runtime"];
  std::printf("runtime     kernels %s, GEMM %s, packed weights: %s\n", rt["cpu_level"].get<std::string>().c_str(),
              rt["gemm"].get<std::string>().c_str(), packed_text(rt["packed"]).c_str());
  // Pruned, bridged and shared layers differ from config.json's uniform sizes: say so, since the
  // per-layer lines below are then the real structure.
  bool uniform = true;
  for (const mb::BertLayer& L : m.layers)
    uniform = uniform && L.kind == mb::LayerKind::Encoder && L.num_heads == config.num_attention_heads &&
              L.intermediate_size == config.intermediate_size;
  std::printf("structure   %lld layers, hidden %lld, %lld heads of %lld, FFN %lld, vocab %lld, positions %lld, %lld labels%s%s%s\n",
              (long long)config.num_hidden_layers, (long long)config.hidden_size, (long long)config.num_attention_heads,
              (long long)config.head_dim(), (long long)config.intermediate_size, (long long)config.vocab_size,
              (long long)config.max_position_embeddings, (long long)config.num_labels(),
              m.has_pooler() ? ", pooler" : "", m.has_classifier() ? ", classifier" : "",
              uniform ? "" : "; layers differ from these sizes (per layer below)");
  std::printf("parameters\n");
  std::printf("  embeddings  %15s\n", grouped(c.embedding_params).c_str());
  std::printf("  encoder     %15s\n", grouped(c.encoder_params()).c_str());
  std::printf("  pooler      %15s\n", grouped(c.pooler_params).c_str());
  std::printf("  classifier  %15s\n", grouped(c.classifier_params).c_str());
  if (c.extra_params) std::printf("  other heads %15s\n", grouped(c.extra_params).c_str());
  std::printf("  total       %15s  (%.1f M)\n", grouped(c.total_params()).c_str(), double(c.total_params()) / 1e6);
  std::printf("FLOPs at sequence length %g (per sequence; heads and FFN neurons): %.3f GFLOP, %.2f MFLOP/token\n",
              o.seq_len, c.flops() / 1e9, c.flops() / o.seq_len / 1e6);
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const mb::LayerCounts& l = c.layers[i];
    if (m.layers[i].kind == mb::LayerKind::Bridge) {
      std::printf("  layer %-3zu bridge rank %-5lld %-19s params %12s  bridge %5.3f GFLOP\n", i, (long long)l.bridge_rank,
                  mb::bridge_form_name(m.layers[i].bridge_form), grouped(l.params).c_str(), l.bridge_flops / 1e9);
      continue;
    }
    std::printf("  layer %-3zu heads %-3lld neurons %-6lld params %12s  MHA %8.3f GFLOP  FFN %8.3f GFLOP", i,
                (long long)l.heads, (long long)l.neurons, grouped(l.params).c_str(), l.mha_flops / 1e9, l.ffn_flops / 1e9);
    if (m.layers[i].kind == mb::LayerKind::Shared)
      std::printf("  (layer %lld's tensors%s)", (long long)m.layers[i].shared_source,
                  m.layers[i].swap_qk ? ", query/key swapped" : "");
    std::printf("\n");
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "parameters, FLOPs, dtype and structure of a model directory");
  cmd->add_option("--model", o->model, "model directory")->required();
  cmd->add_option("--seq-len", o->seq_len, "sequence length for the FLOPs count")->check(CLI::PositiveNumber);
  cmd->add_flag("--json", o->json, "one JSON object instead of text");
  cmd->callback([o] { run_info(*o); });
}

}  // namespace mbcli
