// Pea-KD's Shuffled Parameter Sharing (SPS) layers: a shared layer runs an earlier layer's own
// tensors with query and key exchanged. Counting (parameters of N layers, FLOPs of 2N), the
// transposed attention scores, gradients that add up over both uses (against PyTorch), and
// save/reload storing the tensors once.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/functional.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "models/counting.h"
#include "models/layer_structure.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

// BERT-base widths with `unique` encoder layers followed by shared, query/key-swapped copies of
// layers first_shared..unique-1 (Pea-KD's students: N = 3 → L1 L2 L3 L1* L2* L3*; the 6-layer
// variant → L1..L6 L4* L5* L6*).
mb::BertConfig sps_base_config(int unique, int first_shared) {
  nlohmann::json layers = nlohmann::json::array();
  for (int l = 0; l < unique; ++l) layers.push_back({{"kind", "encoder"}, {"num_heads", 12}, {"intermediate_size", 3072}});
  for (int l = first_shared; l < unique; ++l) layers.push_back({{"kind", "shared"}, {"source", l}, {"swap_qk", true}});
  const nlohmann::json j = {{"vocab_size", 30522}, {"hidden_size", 768}, {"num_hidden_layers", layers.size()},
                            {"num_attention_heads", 12}, {"intermediate_size", 3072},
                            {"minibridge", {{"layers", layers}}}};
  return mb::bert_config_from_json(j, "sps config");
}

double rel_error(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += std::pow(double(got[i]) - double(want[i]), 2);
    den += std::pow(double(want[i]), 2);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

TEST_CASE("an SPS student has the parameters of its unique layers and the FLOPs of all of them") {
  const mb::ModelCounts plain3 = mb::count_config(sps_base_config(3, 3), 128);  // 3 layers, nothing shared
  const mb::ModelCounts sps3 = mb::count_config(sps_base_config(3, 0), 128);    // L1 L2 L3 L1* L2* L3*
  CHECK(sps3.total_params() == 45692930);  // METHODS.md: N = 3 at BERT-base width, 2-way head
  CHECK(sps3.total_params() == plain3.total_params());
  REQUIRE(sps3.layers.size() == 6);
  CHECK(sps3.flops() == doctest::Approx(2.0 * plain3.flops()).epsilon(1e-12));
  for (size_t l = 3; l < 6; ++l) CHECK(sps3.layers[l].params == 0);

  const mb::ModelCounts plain6 = mb::count_config(sps_base_config(6, 6), 128);
  const mb::ModelCounts sps6 = mb::count_config(sps_base_config(6, 3), 128);  // L1..L6 L4* L5* L6*
  CHECK(sps6.total_params() == plain6.total_params());
  CHECK(sps6.flops() == doctest::Approx(1.5 * plain6.flops()).epsilon(1e-12));

  // The counter over a model's actual tensors agrees with the one over its structure.
  const mb::BertModel m = mb::BertModel::load(mbtest::fixtures_dir() + "/grad/sps_step");
  const mb::ModelCounts from_tensors = mb::count_model(m, 20), from_config = mb::count_config(m.config, 20);
  CHECK(from_tensors.total_params() == from_config.total_params());
  CHECK(from_tensors.flops() == doctest::Approx(from_config.flops()).epsilon(1e-12));
}

TEST_CASE("a swapped layer's attention scores are the transpose of its source layer's") {
  const mb::BertModel m = mb::BertModel::load(mbtest::fixtures_dir() + "/grad/sps_step");
  REQUIRE(m.layers.size() == 4);
  REQUIRE(m.layers[2].kind == mb::LayerKind::Shared);
  REQUIRE(m.layers[2].swap_qk);
  const int64_t T = 11, H = m.config.hidden_size, heads = m.layers[0].num_heads, dh = m.head_dim();
  mb::Rng rng(3);
  mb::Tensor xt = mb::Tensor::empty({T, H});
  mb::fill_normal(xt.f32(), T * H, 1.0, rng);
  const mb::Var x(xt);
  mb::NoGrad no_grad;
  const auto [q, k] = mb::query_key(m.layers[0], x);
  const auto [qs, ks] = mb::query_key(m.layers[2], x);
  // S[h][i][j] = q_i·k_j over head h's dimensions.
  auto score = [&](const mb::Var& a, const mb::Var& b, int64_t h, int64_t i, int64_t j) {
    double s = 0;
    for (int64_t d = h * dh; d < (h + 1) * dh; ++d) s += double(a.data()[i * H + d]) * double(b.data()[j * H + d]);
    return s;
  };
  double worst = 0, scale = 0;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) {
        worst = std::max(worst, std::fabs(score(qs, ks, h, i, j) - score(q, k, h, j, i)));
        scale = std::max(scale, std::fabs(score(q, k, h, j, i)));
      }
  CHECK(scale > 0.1);  // the scores are not trivially zero
  CHECK(worst <= 1e-5 * scale);
  // ... and differ from the unswapped scores (the projections are not symmetric).
  double asym = 0;
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) asym = std::max(asym, std::fabs(score(qs, ks, 0, i, j) - score(q, k, 0, i, j)));
  CHECK(asym > 1e-3 * scale);
}

TEST_CASE("gradients from both uses of a shared tensor add up, as in PyTorch") {
  const std::string root = mbtest::fixtures_dir() + "/grad/sps_step";
  const mb::BertModel m = mb::BertModel::load(root);
  const mb::SafeTensorsFile batch_file = mb::read_safetensors(root + "/batch.safetensors");
  const mb::SafeTensorsFile grads = mb::read_safetensors(root + "/grads.safetensors");
  const mb::Batch b = mbtest::fixture_batch(batch_file);
  const std::vector<int32_t> labels = mbtest::fixture_ints(batch_file, "labels");

  // The shared layers own no tensors: each parameter appears once, under its source layer.
  const auto params = m.named_parameters();
  for (const auto& [name, v] : params) {
    const auto& name_ = name;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
    CAPTURE(name_);
    CHECK(name.find("encoder.layer.2.") == std::string::npos);
    CHECK(name.find("encoder.layer.3.") == std::string::npos);
  }
  CHECK(m.layers[2].q_w.same(m.layers[0].q_w));
  CHECK(m.layers[3].ffn_out_w.same(m.layers[1].ffn_out_w));

  m.set_requires_grad(true);
  const mb::Var logits = m.classifier_logits(m.pooled_output(b, m.hidden_states(b)));
  const mb::Var loss = mb::cross_entropy(logits, labels);
  CHECK(rel_error(logits.data(), grads.tensors.at("logits").f32(), logits.numel()) < 1e-4);
  CHECK(std::fabs(loss.data()[0] - grads.tensors.at("loss").f32()[0]) < 1e-5);
  mb::backward(loss);
  for (const auto& [name, v] : params) {
    const auto& name_ = name;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
    CAPTURE(name_);
    REQUIRE(grads.tensors.count(name));
    const mb::Tensor& want = grads.tensors.at(name);
    REQUIRE(v.has_grad());
    CHECK(rel_error(v.grad().f32(), want.f32(), want.numel()) < 1e-3);
  }
  // The key bias of a plain layer gets no gradient (softmax ignores a per-row constant); here it
  // also serves as the swapped layer's query bias, so it must have one, equal to PyTorch's.
  const mb::Tensor& kb = grads.tensors.at("bert.encoder.layer.0.attention.self.key.bias");
  double norm = 0;
  for (int64_t i = 0; i < kb.numel(); ++i) norm += double(kb.f32()[i]) * kb.f32()[i];
  CHECK(std::sqrt(norm) > 1e-6);
}

TEST_CASE("an SPS model is saved with its tensors once and reloads shared") {
  const mb::BertModel m = mb::BertModel::load(mbtest::fixtures_dir() + "/grad/sps_step");
  const std::string dir = mbtest::scratch_dir("sps_save") + "/model";
  m.save(dir);
  const mb::SafeTensorsFile f = mb::read_safetensors(dir + "/model.safetensors");
  for (const auto& [name, t] : f.tensors) {
    const auto& name_ = name;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
    CAPTURE(name_);
    CHECK(name.find("encoder.layer.2.") == std::string::npos);
    CHECK(name.find("encoder.layer.3.") == std::string::npos);
  }
  const nlohmann::json cfg = nlohmann::json::parse(mbtest::read_file(dir + "/config.json"));
  CHECK(cfg["num_hidden_layers"] == 4);
  CHECK(cfg["minibridge"]["layers"][2] == nlohmann::json({{"kind", "shared"}, {"source", 0}, {"swap_qk", true}}));

  const mb::BertModel again = mb::BertModel::load(dir);
  CHECK(again.layers[2].kind == mb::LayerKind::Shared);
  CHECK(again.layers[3].k_w.same(again.layers[1].k_w));
  mb::Batch b;
  b.add({101, 7, 8, 9, 102}, {0, 0, 0, 1, 1});
  const mb::Tensor h1 = m.encode(b), h2 = again.encode(b);
  CHECK(rel_error(h2.f32(), h1.f32(), h1.numel()) == 0.0);
}

TEST_CASE("a malformed shared layer is one clear error naming the config") {
  auto config_with = [](const nlohmann::json& third) {
    nlohmann::json layers = nlohmann::json::array();
    layers.push_back({{"kind", "encoder"}, {"num_heads", 2}, {"intermediate_size", 8}});
    layers.push_back({{"kind", "bridge"}, {"rank", 2}});
    layers.push_back(third);
    return nlohmann::json{{"vocab_size", 50}, {"hidden_size", 8}, {"num_hidden_layers", 3},
                          {"num_attention_heads", 2}, {"intermediate_size", 8}, {"minibridge", {{"layers", layers}}}};
  };
  auto error_of = [](const nlohmann::json& j) {
    try {
      mb::read_layer_structure(mb::bert_config_from_json(j, "cfg.json"), "cfg.json");
    } catch (const mb::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string later = error_of(config_with({{"kind", "shared"}, {"source", 2}, {"swap_qk", true}}));
  CHECK_MESSAGE(later.find("cfg.json") == 0, later);
  CHECK_MESSAGE(later.find("\"source\"") != std::string::npos, later);
  const std::string bridge = error_of(config_with({{"kind", "shared"}, {"source", 1}}));
  CHECK_MESSAGE(bridge.find("not an encoder layer") != std::string::npos, bridge);
  const std::string swap = error_of(config_with({{"kind", "shared"}, {"source", 0}, {"swap_qk", "yes"}}));
  CHECK_MESSAGE(swap.find("swap_qk") != std::string::npos, swap);
  CHECK(error_of(config_with({{"kind", "shared"}, {"source", 0}, {"swap_qk", true}})).empty());
}
