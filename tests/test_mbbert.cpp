// MiniBridgeBERT: the Low-Rank Bridge block (PyTorch parity, save/reload, CLI), the paper's
// #Params column from the engine's counter, the regression init, the progressive teacher chain
// and the ablations end to end, all on tiny models; the regression init, a progressive KD step's
// loss, gradients and updates, and step 2 distilling from step 1's student against the PyTorch
// oracle (tests/reference/make_kd_fixtures.py).
#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "compress/distill.h"
#include "compress/low_rank_fit.h"
#include "compress/mbbert.h"
#include "engine/functional.h"
#include "engine/rng.h"
#include "io/config.h"
#include "io/data_dir.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "models/bridge.h"
#include "models/counting.h"
#include "models/layer_structure.h"
#include "models/shipped_configs.h"
#include "tests/kd_oracle_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

mb::BertConfig shipped(const std::string& name) {
  return mb::bert_config_from_json(json::parse(mb::shipped_configs().at(name)), name);
}

// A small classifier config over the real vocabulary (so the CLI can tokenize for it).
mb::BertConfig tiny_config(int layers = 4) {
  mb::BertConfig c = shipped("tiny");
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.intermediate_size = 64;
  c.num_hidden_layers = layers;
  c.max_position_embeddings = 128;
  c.raw["hidden_size"] = 32;
  return c;
}

// A random model whose weights are larger than BERT's init, so that every layer changes its input
// a lot (a bridge then has something to fit).
mb::BertModel random_model(const mb::BertConfig& c, uint64_t seed) {
  mb::BertModel m = mb::BertModel::init_random(c, seed);
  mb::Rng rng(seed + 100);
  for (const auto& [name, v] : m.named_parameters()) {
    if (name.find("LayerNorm") != std::string::npos || name.find("embeddings") != std::string::npos) continue;
    float* p = v.mutable_data();
    const double stddev = 1.0 / std::sqrt(double(v.dim(-1 + int(v.shape().size()))));
    for (int64_t i = 0; i < v.numel(); ++i) p[i] = float(rng.normal() * stddev);
  }
  return m;
}

std::vector<mb::Batch> random_batches(int n, int seqs, int64_t vocab, uint64_t seed) {
  mb::Rng rng(seed);
  std::vector<mb::Batch> out;
  for (int i = 0; i < n; ++i) {
    mb::Batch b;
    for (int s = 0; s < seqs; ++s) {
      std::vector<int32_t> ids(size_t(4 + rng.below(20)));
      for (auto& id : ids) id = int32_t(1000 + rng.below(uint64_t(vocab - 1000)));
      b.add(ids, {});
    }
    out.push_back(std::move(b));
  }
  return out;
}

double max_abs_diff(const float* a, const float* b, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  return worst;
}

double mse(const mb::Tensor& a, const mb::Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += std::pow(double(a.f32()[i]) - b.f32()[i], 2);
  return s / double(a.numel());
}

bool same_weights(const mb::BertModel& a, const mb::BertModel& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (pa[i].first != pb[i].first || pa[i].second.shape() != pb[i].second.shape()) return false;
    if (!std::equal(pa[i].second.data(), pa[i].second.data() + pa[i].second.numel(), pb[i].second.data())) return false;
  }
  return true;
}

using mbtest::small_glue;

// A random 4-layer SST-2 "teacher" directory (a classifier with the task's labels).
std::string tiny_teacher(const std::string& name) {
  mb::BertConfig c = tiny_config(4);
  c.id2label = {"0", "1"};
  c.raw["finetuning_task"] = "SST-2";
  const std::string dir = mbtest::scratch_dir(name) + "/teacher";
  random_model(c, 3).save(dir, mb::DType::F32, mb::default_vocab_dir());
  return dir;
}

}  // namespace

TEST_CASE("the engine's counter reproduces the paper's #Params column (BERT-base, r = 256)") {
  const mb::BertConfig base = shipped("base");
  const std::vector<int> blocks = mb::mbbert_blocks(12, 6, true);
  CHECK(blocks == std::vector<int>{11, 9, 7, 5, 3, 1});  // 1-based 12, 10, ..., 2
  CHECK(mb::mbbert_blocks(12, 6, false) == std::vector<int>{1, 3, 5, 7, 9, 11});
  CHECK(mbtest::error_of([] { mb::mbbert_blocks(12, 7, true); }).find("--steps must be in [1, 6]") != std::string::npos);

  const double paper[7] = {109.5, 102.8, 96.1, 89.4, 82.7, 76.0, 69.3};
  for (mb::BridgeForm form : {mb::BridgeForm::ResidualLayerNorm, mb::BridgeForm::Linear}) {
    for (int k = 0; k <= 6; ++k) {
      const std::vector<int> replaced(blocks.begin(), blocks.begin() + k);
      const mb::ModelCounts c = mb::count_config(mb::config_with_bridges(base, replaced, 256, form), 128);
      CAPTURE(k);
      CHECK(std::round(double(c.total_params()) / 1e5) / 10 == doctest::Approx(paper[k]));
      // Each replacement: −7,087,872 + 2·768·256 + 768 (+ 2·768 for the LayerNorm).
      const int64_t bridge = 2 * 768 * 256 + 768 + (form == mb::BridgeForm::ResidualLayerNorm ? 2 * 768 : 0);
      CHECK(c.total_params() == 109483778 - int64_t(k) * (7087872 - bridge));
      // FLOPs: the replaced layers' heads and neurons are gone, the bridges' 4·s·d·r added.
      CHECK(c.flops() == doctest::Approx(22347251712.0 - k * (12 * mb::flops_per_head(128, 768, 64) +
                                                              3072 * mb::flops_per_neuron(128, 768)) +
                                         k * 4.0 * 128 * 768 * 256));
    }
  }
}

TEST_CASE("count_config agrees with counting the tensors of a bridged model") {
  for (mb::BridgeForm form : {mb::BridgeForm::ResidualLayerNorm, mb::BridgeForm::Linear}) {
    const mb::BertConfig c = mb::config_with_bridges(tiny_config(4), {1, 3}, 8, form);
    const mb::BertModel m = mb::BertModel::init_random(c, 1);
    REQUIRE(m.layers[1].kind == mb::LayerKind::Bridge);
    REQUIRE(m.layers[2].kind == mb::LayerKind::Encoder);
    const mb::ModelCounts a = mb::count_model(m, 37), b = mb::count_config(c, 37);
    CHECK(a.total_params() == b.total_params());
    CHECK(a.flops() == doctest::Approx(b.flops()).epsilon(1e-12));
    REQUIRE(a.layers.size() == b.layers.size());
    for (size_t l = 0; l < a.layers.size(); ++l) {
      CHECK(a.layers[l].params == b.layers[l].params);
      CHECK(a.layers[l].bridge_rank == b.layers[l].bridge_rank);
      CHECK(a.layers[l].bridge_flops == doctest::Approx(b.layers[l].bridge_flops));
    }
    CHECK(a.layers[1].bridge_flops == doctest::Approx(4.0 * 37 * 32 * 8));
  }
}

TEST_CASE("bridge forward and gradients match PyTorch") {
  const std::string root = mbtest::fixtures_dir() + "/bridge";
  const mb::BertModel m = mb::BertModel::load(root + "/model");
  REQUIRE(m.layers[1].kind == mb::LayerKind::Bridge);
  REQUIRE(m.layers[1].bridge_form == mb::BridgeForm::ResidualLayerNorm);
  REQUIRE(m.layers[2].bridge_form == mb::BridgeForm::Linear);
  const mb::SafeTensorsFile batch = mb::read_safetensors(root + "/batch.safetensors");
  const mb::SafeTensorsFile want = mb::read_safetensors(root + "/expected.safetensors");
  const mb::Batch b = mbtest::fixture_batch(batch);

  const std::vector<mb::ParamRef> params = mb::trainable_params(m);
  const mb::Var hidden = m.hidden_states(b);
  const mb::Var logits = m.classifier_logits(m.pooled_output(b, hidden));
  const mb::Var loss = mb::cross_entropy(logits, mbtest::fixture_ints(batch, "labels"));
  CHECK(max_abs_diff(hidden.data(), want.tensors.at("hidden").f32(), hidden.numel()) < 1e-4);
  CHECK(max_abs_diff(logits.data(), want.tensors.at("logits").f32(), logits.numel()) < 1e-5);
  CHECK(loss.data()[0] == doctest::Approx(want.tensors.at("loss").f32()[0]).epsilon(1e-5));
  mb::backward(loss);
  int bridge_grads = 0;
  for (const auto& [name, v] : m.named_parameters()) {
    const mb::Tensor& g = want.tensors.at("grad." + name);
    double num = 0, den = 0;
    for (int64_t i = 0; i < g.numel(); ++i) {
      num += std::pow(double(v.grad().f32()[i]) - g.f32()[i], 2);
      den += std::pow(double(g.f32()[i]), 2);
    }
    const auto& name_ = name;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
    CAPTURE(name_);
    if (name.find("attention.self.key.bias") != std::string::npos) continue;  // exactly zero in theory
    CHECK(std::sqrt(num / std::max(den, 1e-30)) < 1e-4);
    bridge_grads += name.find(".bridge.") != std::string::npos;
  }
  CHECK(bridge_grads == 8);  // 5 tensors of the residual_layernorm bridge + 3 of the linear one
}

TEST_CASE("bridged models save and reload exactly; plain models keep no minibridge key") {
  const std::string dir = mbtest::scratch_dir("mbbert_roundtrip");
  mb::BertModel m = random_model(tiny_config(4), 7);
  m.save(dir + "/plain", mb::DType::F32, mb::default_vocab_dir());
  CHECK_FALSE(mb::read_json_file(dir + "/plain/config.json").contains("minibridge"));

  mb::Rng rng(9);
  m.layers[2] = mb::make_bridge_layer(32, 6, mb::BridgeForm::ResidualLayerNorm);
  m.layers[3] = mb::make_bridge_layer(32, 5, mb::BridgeForm::Linear);
  for (int l : {2, 3})
    for (mb::Var* v : {&m.layers[size_t(l)].bridge_down_w, &m.layers[size_t(l)].bridge_up_w, &m.layers[size_t(l)].bridge_up_b})
      mb::fill_normal(v->mutable_data(), v->numel(), 0.2, rng);
  m.save(dir + "/bridged", mb::DType::F32, mb::default_vocab_dir());
  const json cfg = mb::read_json_file(dir + "/bridged/config.json");
  REQUIRE(cfg.contains("minibridge"));
  const json& layers = cfg["minibridge"]["layers"];
  REQUIRE(layers.size() == 4);
  CHECK(layers[0] == json({{"kind", "encoder"}, {"num_heads", 4}, {"intermediate_size", 64}}));
  CHECK(layers[2] == json({{"kind", "bridge"}, {"rank", 6}, {"form", "residual_layernorm"}}));
  CHECK(layers[3] == json({{"kind", "bridge"}, {"rank", 5}, {"form", "linear"}}));
  const mb::SafeTensorsFile f = mb::read_safetensors(dir + "/bridged/model.safetensors");
  CHECK(f.tensors.at("bert.encoder.layer.2.bridge.down.weight").shape() == mb::Shape{6, 32});
  CHECK(f.tensors.at("bert.encoder.layer.2.bridge.up.weight").shape() == mb::Shape{32, 6});
  CHECK(f.tensors.count("bert.encoder.layer.2.bridge.LayerNorm.weight"));
  CHECK_FALSE(f.tensors.count("bert.encoder.layer.3.bridge.LayerNorm.weight"));
  CHECK_FALSE(f.tensors.count("bert.encoder.layer.2.attention.self.query.weight"));

  const mb::BertModel r = mb::BertModel::load(dir + "/bridged");
  CHECK(same_weights(m, r));
  mb::Batch b;
  b.add({101, 7592, 2088, 102}, {});
  b.add({101, 2023, 2003, 1037, 3231, 102}, {});
  const mb::Tensor h1 = m.encode(b), h2 = r.encode(b);
  CHECK(std::equal(h1.f32(), h1.f32() + h1.numel(), h2.f32()));
  // The bridge really runs: different from the plain model.
  const mb::Tensor hp = mb::BertModel::load(dir + "/plain").encode(b);
  CHECK(max_abs_diff(h1.f32(), hp.f32(), h1.numel()) > 1e-3);

  // The CLI runs it like any model.
  const std::string lines = "a fine film\nnot good at all\n";
  mbtest::CliRun c = mbtest::run_cli("classify --model " + dir + "/bridged", lines);
  REQUIRE(c.status == 0);
  const auto cls = mbtest::json_lines(c.out);
  REQUIRE(cls.size() == 2);
  const mb::Tokenizer tok = mb::Tokenizer::from_model_dir(dir + "/bridged");
  mb::Batch first;
  const mb::Encoding e = tok.encode("a fine film", 512);
  first.add(e.input_ids, e.token_type_ids);
  const mb::Tensor z = r.classify(r.pool(first, r.encode(first)));
  CHECK(cls[0]["logits"][0].get<float>() == doctest::Approx(z.f32()[0]).epsilon(1e-4));
  c = mbtest::run_cli("encode --model " + dir + "/bridged", lines);
  CHECK(c.status == 0);
  CHECK(mbtest::json_lines(c.out).size() == 2);
  c = mbtest::run_cli("info --json --model " + dir + "/bridged");
  REQUIRE(c.status == 0);
  const json info = json::parse(c.out);
  CHECK(info["params"]["total"] == mb::count_model(r, 128).total_params());
  CHECK(info["layers"][2]["kind"] == "bridge");
  CHECK(info["layers"][2]["rank"] == 6);
  for (const char* bench : {"bench --batch 2 --seq 16 --threads 1 --warmup 1 --iters 2",
                            "bench --batch 2 --seq 8 --train --threads 1 --warmup 0 --iters 2"}) {
    c = mbtest::run_cli(std::string(bench) + " --model " + dir + "/bridged");
    CAPTURE(c.err);
    CHECK(c.status == 0);
  }
}

TEST_CASE("bad minibridge structure in config.json: one error naming the file") {
  const std::string dir = mbtest::scratch_dir("mbbert_bad_config") + "/m";
  mb::BertModel m = random_model(tiny_config(2), 1);
  m.layers[1] = mb::make_bridge_layer(32, 4, mb::BridgeForm::ResidualLayerNorm);
  m.save(dir, mb::DType::F32, mb::default_vocab_dir());
  const json good = mb::read_json_file(dir + "/config.json");
  auto error_with = [&](const std::function<void(json&)>& edit) {
    json j = good;
    edit(j);
    mbtest::write_file(dir + "/config.json", j.dump());
    return mbtest::error_of([&] { mb::BertModel::load(dir); });
  };
  std::string msg = error_with([](json& j) { j["minibridge"]["layers"].erase(0); });
  CHECK(msg.find(dir + "/config.json") != std::string::npos);
  CHECK(msg.find("has 1 entries, num_hidden_layers is 2") != std::string::npos);
  CHECK(error_with([](json& j) { j["minibridge"]["layers"][1]["kind"] = "mystery"; }).find("\"mystery\" is not supported") !=
        std::string::npos);
  CHECK(error_with([](json& j) { j["minibridge"]["layers"][1].erase("rank"); }).find("\"rank\" must be an integer") !=
        std::string::npos);
  CHECK(error_with([](json& j) { j["minibridge"]["layers"][1]["form"] = "cubic"; }).find("unknown bridge form") !=
        std::string::npos);
  // A rank that disagrees with the stored tensors.
  CHECK(error_with([](json& j) { j["minibridge"]["layers"][1]["rank"] = 5; }).find("config.json implies [5, 32]") !=
        std::string::npos);
}

TEST_CASE("reduced-rank regression: exact on low-rank data, optimal among rank-r fits") {
  const int64_t n = 400, d_in = 12, d_out = 10, r = 3;
  mb::Rng rng(4);
  auto randn = [&](int64_t rows, int64_t cols, double s) {
    mb::Tensor t = mb::Tensor::empty({rows, cols});
    mb::fill_normal(t.f32(), t.numel(), s, rng);
    return t;
  };
  const mb::Tensor X = randn(n, d_in, 1.0), U = randn(d_in, r, 1.0), V = randn(r, d_out, 1.0), bias = randn(1, d_out, 1.0);
  auto apply = [&](const mb::Tensor& A, const mb::Tensor& B, const float* b, const mb::Tensor& x) {
    mb::Tensor out = mb::Tensor::zeros({x.dim(0), B.dim(1)});
    for (int64_t i = 0; i < x.dim(0); ++i)
      for (int64_t o = 0; o < B.dim(1); ++o) {
        double s = b[o];
        for (int64_t k = 0; k < A.dim(1); ++k) {
          double xa = 0;
          for (int64_t j = 0; j < x.dim(1); ++j) xa += double(x.f32()[i * x.dim(1) + j]) * A.f32()[j * A.dim(1) + k];
          s += xa * B.f32()[k * B.dim(1) + o];
        }
        out.f32()[i * B.dim(1) + o] = float(s);
      }
    return out;
  };
  const mb::Tensor T = apply(U, V, bias.f32(), X);
  mb::ReducedRankRegression exact(d_in, d_out);
  exact.add(X, T);
  const auto fit = exact.solve(r);
  CHECK(fit.A.shape() == mb::Shape{d_in, r});
  CHECK(fit.B.shape() == mb::Shape{r, d_out});
  CHECK(mse(apply(fit.A, fit.B, fit.b.f32(), X), T) < 1e-6 * mse(T, mb::Tensor::zeros(T.shape())));

  // Noisy full-rank targets on anisotropic inputs. Batches accumulate like one big batch; more
  // rank never fits worse; and the rank-r fit is the reduced-rank regression optimum, at least as
  // good as truncating the full least-squares solution's own SVD (the naive alternative).
  mb::Tensor Xs = X.clone();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d_in; ++j) Xs.f32()[i * d_in + j] *= float(0.2 + 0.4 * double(j));
  const mb::Tensor W = randn(d_in, d_out, 1.0), noise = randn(n, d_out, 0.5);
  mb::Tensor eye = mb::Tensor::zeros({d_out, d_out});
  for (int64_t i = 0; i < d_out; ++i) eye.f32()[i * d_out + i] = 1;
  mb::Tensor Y = apply(W, eye, bias.f32(), Xs);
  for (int64_t i = 0; i < Y.numel(); ++i) Y.f32()[i] += noise.f32()[i];
  auto rows = [](const mb::Tensor& t, int64_t from, int64_t to) {
    const int64_t c = t.dim(1);
    return mb::Tensor::from_vector(std::vector<float>(t.f32() + from * c, t.f32() + to * c), {to - from, c});
  };
  mb::ReducedRankRegression one(d_in, d_out), split(d_in, d_out);
  one.add(Xs, Y);
  split.add(rows(Xs, 0, 150), rows(Y, 0, 150));
  split.add(rows(Xs, 150, n), rows(Y, 150, n));
  CHECK(split.rows() == n);
  std::vector<double> xm(size_t(d_in), 0.0), ym(size_t(d_out), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d_in; ++j) xm[size_t(j)] += Xs.f32()[i * d_in + j] / double(n);
    for (int64_t j = 0; j < d_out; ++j) ym[size_t(j)] += Y.f32()[i * d_out + j] / double(n);
  }
  const auto full = one.solve(d_out);  // A = U Σ^½, B = Σ^½ Vᵀ with Σ descending
  double previous = 1e300;
  for (int64_t k = 1; k <= d_out; ++k) {
    CAPTURE(k);
    const auto a = one.solve(k), b = split.solve(k);
    CHECK(max_abs_diff(a.b.f32(), b.b.f32(), d_out) < 1e-3);
    const double err = mse(apply(a.A, a.B, a.b.f32(), Xs), Y);
    CHECK(err <= previous * (1 + 1e-6));
    previous = err;
    // Naive: the first k SVD factors of the full solution, with the same intercept rule.
    mb::Tensor An = mb::Tensor::empty({d_in, k}), Bn = mb::Tensor::empty({k, d_out});
    for (int64_t i = 0; i < d_in; ++i)
      for (int64_t j = 0; j < k; ++j) An.f32()[i * k + j] = full.A.f32()[i * d_out + j];
    for (int64_t j = 0; j < k; ++j)
      for (int64_t o2 = 0; o2 < d_out; ++o2) Bn.f32()[j * d_out + o2] = full.B.f32()[j * d_out + o2];
    std::vector<float> bn(static_cast<size_t>(d_out), 0.0f);
    for (int64_t o2 = 0; o2 < d_out; ++o2) {
      double s = ym[size_t(o2)];
      for (int64_t i = 0; i < d_in; ++i)
        for (int64_t j = 0; j < k; ++j) s -= xm[size_t(i)] * An.f32()[i * k + j] * Bn.f32()[j * d_out + o2];
      bn[size_t(o2)] = float(s);
    }
    const double naive = mse(apply(An, Bn, bn.data(), Xs), Y);
    CHECK(err <= naive * (1 + 1e-5));
    if (k == 2) CHECK(err < naive);  // strictly better when the inputs are anisotropic
  }
  CHECK(mbtest::error_of([&] { one.solve(11); }).find("rank 11 is outside [1, 10]") != std::string::npos);
}

TEST_CASE("layer_pre_layernorm_output is the layer's output before its last LayerNorm") {
  const mb::BertModel m = random_model(tiny_config(3), 2);
  const mb::Batch b = random_batches(1, 3, m.config.vocab_size, 5)[0];
  mb::NoGrad no_grad;
  const mb::Var x = m.layer_forward(m.layers[0], m.embed(b), b);
  const mb::Var pre = mb::layer_pre_layernorm_output(m, 1, x, b);
  const mb::Var y = mb::layernorm(pre, m.layers[1].ffn_ln_w, m.layers[1].ffn_ln_b, float(m.config.layer_norm_eps));
  const mb::Var want = m.layer_forward(m.layers[1], x, b);
  CHECK(max_abs_diff(y.data(), want.data(), y.numel()) < 1e-5);
}

TEST_CASE("regression init reproduces the replaced block better than skip-init") {
  const mb::BertModel m = random_model(tiny_config(4), 11);
  const std::vector<mb::Batch> fit = random_batches(6, 8, m.config.vocab_size, 12);
  const int layer = 2;
  for (mb::BridgeForm form : {mb::BridgeForm::ResidualLayerNorm, mb::BridgeForm::Linear}) {
    const std::string form_name = mb::bridge_form_name(form);
    CAPTURE(form_name);
    auto error_of_bridge = [&](const mb::BertLayer& bridge) {
      double total = 0;
      for (const mb::Batch& b : fit) {
        mb::NoGrad no_grad;
        mb::Var x = m.embed(b);
        for (int l = 0; l < layer; ++l) x = m.layer_forward(m.layers[size_t(l)], x, b);
        total += mse(mb::bridge_forward(bridge, x, m.config).value(), m.layer_forward(m.layers[layer], x, b).value());
      }
      return total / double(fit.size());
    };
    const mb::BertLayer reg8 = mb::fit_bridge(m, layer, fit, 8, form, true, 1);
    const mb::BertLayer reg32 = mb::fit_bridge(m, layer, fit, 32, form, true, 1);
    const mb::BertLayer skip = mb::fit_bridge(m, layer, fit, 8, form, false, 1);
    CHECK(reg8.bridge_down_w.shape() == mb::Shape{8, 32});
    CHECK(reg8.bridge_up_w.shape() == mb::Shape{32, 8});
    // Skip-init: B = 0, so the bridge starts as LN(x) (or 0 for the linear form).
    for (int64_t i = 0; i < skip.bridge_up_w.numel(); ++i) REQUIRE(skip.bridge_up_w.data()[i] == 0.0f);
    const double e_reg8 = error_of_bridge(reg8), e_reg32 = error_of_bridge(reg32), e_skip = error_of_bridge(skip);
    MESSAGE("fit MSE: regression r=8 " << e_reg8 << ", r=32 " << e_reg32 << ", skip " << e_skip);
    CHECK(e_reg8 < 0.5 * e_skip);
    CHECK(e_reg32 <= e_reg8 * 1.01);
  }
}

TEST_CASE("progressive KD: step k's teacher is step k-1's kept student; resume skips complete steps") {
  const std::string teacher_dir = tiny_teacher("mbbert_chain");
  const std::string glue = small_glue("mbbert_chain_glue", 48, 16);
  const std::string out = mbtest::scratch_dir("mbbert_chain_out") + "/run";
  mb::MbbertOptions o;
  o.teacher_dir = teacher_dir;
  o.task = "SST-2";
  o.data_dir = glue;
  o.out_dir = out;
  o.steps = 2;
  o.rank = 4;
  o.train.batch_size = 16;
  o.train.lr = 1e-3;
  o.latency_examples = 2;
  o.progress = false;
  const mb::BertModel original = mb::BertModel::load(teacher_dir);
  int calls = 0;
  std::vector<uint64_t> teacher_prints, student_prints;
  o.on_step = [&](int k, const mb::BertModel* teacher, const mb::BertModel& student) {
    ++calls;
    REQUIRE(teacher != nullptr);
    const mb::BertModel expected = mb::BertModel::load(k == 1 ? teacher_dir : out + "/step_" + std::to_string(k - 1));
    CHECK(same_weights(*teacher, expected));  // the previous step's saved student, unchanged by training
    if (k > 1) CHECK_FALSE(same_weights(*teacher, original));
    CHECK(same_weights(student, mb::BertModel::load(out + "/step_" + std::to_string(k))));
    int bridges = 0;
    for (const auto& L : student.layers) bridges += L.kind == mb::LayerKind::Bridge;
    CHECK(bridges == k);
    teacher_prints.push_back(mb::weights_fingerprint(*teacher));
    student_prints.push_back(mb::weights_fingerprint(student));
  };
  const mb::MbbertSummary s = mb::run_mbbert(o);
  CHECK(calls == 2);
  REQUIRE(teacher_prints.size() == 2);
  CHECK(teacher_prints[1] == student_prints[0]);
  CHECK(teacher_prints[0] == mb::weights_fingerprint(original));

  const auto lines = mbtest::json_lines(mbtest::read_file(out + "/results.jsonl"));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["step"] == 0);
  CHECK(lines[0]["replaced_block"].is_null());
  CHECK(lines[1]["replaced_block"] == 3);  // top-down: 1-based block 4 first
  CHECK(lines[2]["replaced_block"] == 1);
  CHECK(lines[2]["teacher_fingerprint"] == lines[1]["student_fingerprint"]);
  CHECK(lines[1]["teacher_fingerprint"] == lines[0]["student_fingerprint"]);
  for (const char* key : {"step", "replaced_block", "params", "flops_seq128", "flops_mean_len", "metric", "seconds"})
    for (const auto& l : lines) CHECK(l.contains(key));
  CHECK(lines[1]["params"].get<int64_t>() < lines[0]["params"].get<int64_t>());
  CHECK(lines[2]["params"].get<int64_t>() < lines[1]["params"].get<int64_t>());
  CHECK(lines[2]["flops_seq128"].get<double>() < lines[1]["flops_seq128"].get<double>());
  CHECK(lines[2]["lorb"] == 2);
  CHECK(fs::exists(out + "/results.md"));
  CHECK(mbtest::read_file(out + "/results.md").find("#LoRB (Encoder)") != std::string::npos);

  // Resume: every step is complete, nothing is redone and the results stay the same.
  calls = 0;
  const auto before = fs::last_write_time(out + "/step_2/model.safetensors");
  mb::run_mbbert(o);
  CHECK(calls == 0);
  CHECK(fs::last_write_time(out + "/step_2/model.safetensors") == before);
  CHECK(mbtest::json_lines(mbtest::read_file(out + "/results.jsonl")) == lines);
  // Resume after losing step 2: only step 2 is redone, from step 1's saved student.
  fs::remove(out + "/step_2/step.json");
  mb::run_mbbert(o);
  CHECK(calls == 1);
  // Other options in the same directory are refused.
  o.rank = 5;
  CHECK(mbtest::error_of([&] { mb::run_mbbert(o); }).find("holds a run with other options") != std::string::npos);
}

TEST_CASE("compress mbbert and its ablations run end to end through the CLI") {
  const std::string teacher = tiny_teacher("mbbert_cli");
  const std::string glue = small_glue("mbbert_cli_glue", 40, 12);
  const std::string root = mbtest::scratch_dir("mbbert_cli_out");
  const std::string base = "compress mbbert --teacher " + teacher + " --task SST-2 --data " + glue;
  const std::string common = base + " --steps 2 --rank 4 --batch-size 16 --lr 1e-3 --threads 1 --latency-examples 1 --no-progress";
  const json teacher_line = [&] {
    const mbtest::CliRun r = mbtest::run_cli(common + " --out " + root + "/none");
    REQUIRE(r.status == 0);
    return mbtest::json_lines(r.out).at(0);
  }();
  CHECK(teacher_line["step"] == 0);
  for (const std::string ablation : {"no-kd", "one-shot", "distil-baseline"}) {
    CAPTURE(ablation);
    const std::string out = root + "/" + ablation;
    const mbtest::CliRun r = mbtest::run_cli(common + " --ablation " + ablation + " --out " + out);
    INFO(r.err);
    REQUIRE(r.status == 0);
    const auto lines = mbtest::json_lines(mbtest::read_file(out + "/results.jsonl"));
    CHECK(lines == mbtest::json_lines(r.out));
    CHECK(lines.front()["metric"] == teacher_line["metric"]);
    const std::string last = out + "/step_" + std::to_string(lines.back()["step"].get<int>());
    const mb::BertModel m = mb::BertModel::load(last);
    int bridges = 0;
    for (const auto& L : m.layers) bridges += L.kind == mb::LayerKind::Bridge;
    if (ablation == "no-kd") {
      CHECK(lines.size() == 3);
      CHECK(lines[2]["teacher_fingerprint"].is_null());
      CHECK(bridges == 2);
    } else if (ablation == "one-shot") {
      CHECK(lines.size() == 2);
      CHECK(lines[1]["replaced_block"] == json::array({1, 3}));
      CHECK(lines[1]["teacher_fingerprint"] == lines[0]["student_fingerprint"]);
      CHECK(bridges == 2);
    } else {
      CHECK(lines.size() == 2);
      CHECK(m.layers.size() == 2);  // blocks 2 and 4 (1-based) dropped, no bridges
      CHECK(bridges == 0);
      CHECK_FALSE(mb::read_json_file(last + "/config.json").contains("minibridge"));
    }
    // The model's dev metric, recomputed by `eval`, is the one recorded.
    const mbtest::CliRun ev = mbtest::run_cli("eval --model " + last + " --task SST-2 --data " + glue);
    REQUIRE(ev.status == 0);
    CHECK(json::parse(ev.out)["accuracy"].get<double>() == doctest::Approx(lines.back()["metric"].get<double>()));
  }

  // Bad input: one clear error, non-zero exit, nothing written.
  mbtest::CliRun r = mbtest::run_cli(base + " --steps 3 --out " + root + "/bad");
  CHECK(r.status != 0);
  CHECK(r.err.find("--steps must be in [1, 2]") != std::string::npos);
  CHECK_FALSE(fs::exists(root + "/bad/results.jsonl"));
  r = mbtest::run_cli("compress mbbert --teacher " + teacher + " --task CoLA --data " + glue + " --out " + root + "/bad2");
  CHECK(r.status != 0);
  CHECK(r.err.find("fine-tuned on SST-2, not CoLA") != std::string::npos);
}

TEST_CASE("compress mbbert: a run killed inside a step resumes from that step's checkpoint, exactly") {
  const std::string teacher = tiny_teacher("mbbert_kill");
  const std::string glue = small_glue("mbbert_kill_glue", 160, 12);
  const std::string root = mbtest::scratch_dir("mbbert_kill_out");
  const std::string common = "compress mbbert --teacher " + teacher + " --task SST-2 --data " + glue +
                             " --steps 2 --rank 4 --batch-size 8 --lr 1e-3 --epochs-per-step 2 --save-steps 3 --log-steps 1"
                             " --threads 1 --latency-examples 0 --no-progress";
  const mbtest::CliRun full = mbtest::run_cli(common + " --out " + root + "/full");
  REQUIRE_MESSAGE(full.status == 0, full.err);
  CHECK_FALSE(fs::exists(root + "/full/step_1/checkpoint"));  // removed once the step is complete
  CHECK(fs::exists(root + "/full/step_1/distill.json"));

  // Killed after step 1's first checkpoint (update 3 of 40), then the same command again.
  const std::string cut = root + "/cut";
  REQUIRE(mbtest::run_cli_killed_at(common + " --out " + cut, cut + "/step_1/checkpoint/state.json"));
  CHECK_FALSE(fs::exists(cut + "/step_1/step.json"));
  const mbtest::CliRun again = mbtest::run_cli(common + " --out " + cut);
  REQUIRE_MESSAGE(again.status == 0, again.err);
  CHECK_MESSAGE(again.err.find("resuming " + cut + "/step_1 at update ") != std::string::npos, again.err);
  const auto want = mbtest::json_lines(mbtest::read_file(root + "/full/results.jsonl"));
  const auto got = mbtest::json_lines(mbtest::read_file(cut + "/results.jsonl"));
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i]["student_fingerprint"] == want[i]["student_fingerprint"]);
    CHECK(got[i].value("teacher_fingerprint", json()) == want[i].value("teacher_fingerprint", json()));
    CHECK(got[i]["dev"] == want[i]["dev"]);
  }
  auto losses = [](const std::string& log) {
    std::vector<json> out;
    for (const json& l : mbtest::json_lines(mbtest::read_file(log)))
      if (l.contains("loss")) out.push_back({l["step"], l["loss"], l["ce"], l["kd"], l["hidden_mse"]});
    return out;
  };
  CHECK(losses(cut + "/step_1/train_log.jsonl") == losses(root + "/full/step_1/train_log.jsonl"));

  // A step whose distillation finished but whose step.json was not yet written is not redone.
  fs::remove(cut + "/step_2/step.json");
  const mbtest::CliRun last = mbtest::run_cli(common + " --out " + cut);
  REQUIRE_MESSAGE(last.status == 0, last.err);
  CHECK_MESSAGE(last.err.find(cut + "/step_2: distillation complete, not redone") != std::string::npos, last.err);
  CHECK(mbtest::json_lines(mbtest::read_file(cut + "/results.jsonl")).back()["student_fingerprint"] ==
        want.back()["student_fingerprint"]);

  // A damaged checkpoint state is one error naming it.
  const std::string bad = root + "/bad";
  REQUIRE(mbtest::run_cli_killed_at(common + " --out " + bad, bad + "/step_1/checkpoint/state.json"));
  json st = json::parse(mbtest::read_file(bad + "/step_1/checkpoint/state.json"));
  st["window"] = "x";
  mbtest::write_file(bad + "/step_1/checkpoint/state.json", st.dump());
  const mbtest::CliRun broken = mbtest::run_cli(common + " --out " + bad);
  CHECK(broken.status == 1);
  CHECK_MESSAGE(broken.err.find(bad + "/step_1/checkpoint/state.json: malformed distillation state") != std::string::npos,
                broken.err);
}

// ---- Against the PyTorch oracle (tests/reference/make_kd_fixtures.py, from docs/METHODS.md §1).

namespace {

const std::string kd_root() { return mbtest::fixtures_dir() + "/kd/mbbert"; }

// The layer's input for a batch: the embeddings through layers 0..layer-1 (eval mode).
mb::Tensor layer_input(const mb::BertModel& m, int layer, const mb::Batch& b) {
  mb::NoGrad no_grad;
  mb::Var x = m.embed(b);
  for (int l = 0; l < layer; ++l) x = m.layer_forward(m.layers[size_t(l)], x, b);
  return x.value();
}

}  // namespace

TEST_CASE("the regression bridge init is the oracle's reduced-rank regression") {
  const mb::BertModel m = mb::BertModel::load(kd_root() + "/teacher");
  const mb::SafeTensorsFile f = mb::read_safetensors(kd_root() + "/fit.safetensors");
  const std::vector<mb::Batch> fit = {mbtest::fixture_batch(f, "fit0."), mbtest::fixture_batch(f, "fit1.")};
  const mb::Batch held = mbtest::fixture_batch(f, "held.");
  const int layer = 3, r = 8, H = int(m.config.hidden_size);
  REQUIRE(fit[0].num_tokens() + fit[1].num_tokens() == mbtest::fixture_ints(f, "fit_rows")[0]);
  const mb::BertLayer bridge = mb::fit_bridge(m, layer, fit, r, mb::BridgeForm::ResidualLayerNorm, true, 1);

  // A = down.weightᵀ [H, r], B = up.weightᵀ [r, H], b.
  using Mat = Eigen::MatrixXd;
  Mat A(H, r), B(r, H);
  Eigen::RowVectorXd b(H);
  for (int i = 0; i < H; ++i)
    for (int j = 0; j < r; ++j) {
      A(i, j) = bridge.bridge_down_w.data()[j * H + i];
      B(j, i) = bridge.bridge_up_w.data()[i * r + j];
    }
  for (int i = 0; i < H; ++i) b(i) = bridge.bridge_up_b.data()[i];
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const mb::Tensor& t = f.tensors.at(name);
    REQUIRE(t.numel() == rows * cols);
    Mat out(rows, cols);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) out(i, j) = t.f32()[i * cols + j];
    return out;
  };
  // The fitted branch X·A·B + b on held-out inputs (the oracle's X): the function is what the fit
  // determines (A·B has a free component along the one direction the LayerNorm'd inputs never take,
  // and b compensates it; A, B themselves are unique only up to signs).
  const Mat Xh = matrix("held_input", held.num_tokens(), H);
  const Mat branch = (Xh * A * B).rowwise() + b;
  const Mat want = matrix("held_branch", held.num_tokens(), H);
  const double e_branch = (branch - want).norm() / want.norm();
  // The reduced-rank solution's output subspace: the row space of B (the top-r principal directions
  // of the fitted values), not the truncated SVD of the full least-squares M.
  const Mat P = B.transpose() * (B * B.transpose()).inverse() * B;
  const Mat want_P = matrix("row_projector", H, H);
  const double e_proj = (P - want_P).norm() / want_P.norm();
  // Balanced factors: AᵀA = BBᵀ = Σ_r (diagonal).
  const Mat AtA = A.transpose() * A, BBt = B * B.transpose();
  const double e_balance = (AtA - BBt).norm() / BBt.norm();
  const double off_diag = (BBt - Mat(BBt.diagonal().asDiagonal())).norm() / BBt.norm();
  // The whole bridge, LN(x + x·A·B + b) with the replaced layer's output LayerNorm, on the engine's
  // own inputs.
  const mb::Var out = mb::bridge_forward(bridge, mb::Var(layer_input(m, layer, held), false), m.config);
  const double e_bridge = kdtest::rel_error(out.data(), f.tensors.at("held_bridge").f32(), out.numel());
  MESSAGE("bridge init: branch " << e_branch << ", row space " << e_proj << ", balance " << e_balance << ", off-diagonal "
                                 << off_diag << ", bridge output " << e_bridge);
  CHECK(e_branch < 1e-4);
  CHECK(e_proj < 1e-4);
  CHECK(e_balance < 1e-5);
  CHECK(off_diag < 1e-5);
  CHECK(e_bridge < 1e-5);
  for (int i = 0; i < H; ++i) {
    CHECK(bridge.bridge_ln_w.data()[i] == m.layers[size_t(layer)].ffn_ln_w.data()[i]);
    CHECK(bridge.bridge_ln_b.data()[i] == m.layers[size_t(layer)].ffn_ln_b.data()[i]);
  }
}

namespace {

struct ProgressiveFixture {
  mb::BertModel teacher = mb::BertModel::load(kd_root() + "/teacher");
  mb::SafeTensorsFile want = mb::read_safetensors(kd_root() + "/progressive.safetensors");
  json meta = json::parse(mbtest::read_file(kd_root() + "/progressive.json"));
  mb::Batch batch = mbtest::fixture_batch(want);
  std::vector<int32_t> labels = mbtest::fixture_ints(want, "labels");

  mb::DistillOptions options(int layer) const {
    mb::DistillOptions o;
    o.alpha = meta["alpha"];
    o.temperature = meta["temperature"];
    o.beta = meta["beta"];
    o.hidden_loss = mb::HiddenLoss::AllTokens;
    o.hidden_pairs = {{layer + 1, layer + 1}};  // as run_mbbert: the state right after the bridge
    o.train.lr = meta["lr"];
    o.train.warmup_steps = meta["warmup_steps"];
    o.train.weight_decay = meta["weight_decay"];
    o.train.max_grad_norm = meta["max_grad_norm"];
    return o;
  }
};

}  // namespace

TEST_CASE("a progressive KD step's loss and gradients match PyTorch") {
  const ProgressiveFixture fx;
  const mb::BertModel student = mb::BertModel::load(kd_root() + "/step1_student");
  const int layer = fx.meta["layer"];
  REQUIRE(student.layers[size_t(layer)].kind == mb::LayerKind::Bridge);
  std::vector<mb::Var> t_all;
  mb::Tensor t_logits;
  {
    mb::NoGrad no_grad;
    const mb::Var h = fx.teacher.hidden_states(fx.batch, {}, &t_all);
    t_logits = fx.teacher.classifier_logits(fx.teacher.pooled_output(fx.batch, h)).value();
  }
  student.set_requires_grad(true);
  const kdtest::KdLoss l = kdtest::kd_loss(student, fx.batch, fx.labels, t_logits, {t_all[size_t(layer + 1)].value()},
                                           {{layer + 1, layer + 1}}, false, 0.7, 2.0, 1.0);
  const double values[4] = {l.loss.data()[0], l.ce, l.kd, l.hidden};
  const char* names[4] = {"loss", "ce", "kd", "hidden_mse"};
  for (int i = 0; i < 4; ++i) {
    const std::string name_ = names[i];
    CAPTURE(name_);
    CHECK(kdtest::rel(values[i], fx.want.tensors.at(std::string("step1.") + names[i]).f32()[0]) < 1e-5);
  }
  mb::backward(l.loss);
  double worst = 0;
  int checked = 0, bridge_grads = 0;
  for (const auto& [name, v] : student.named_parameters()) {
    const auto& name_ = name;
    CAPTURE(name_);
    // A plain layer's key bias gets no gradient in exact arithmetic (softmax ignores a per-row
    // constant): both sides are rounding noise.
    if (name.find("attention.self.key.bias") != std::string::npos) continue;
    const mb::Tensor& g = fx.want.tensors.at("step1.grad." + name);
    const double e = kdtest::rel_error(v.grad().f32(), g.f32(), g.numel());
    CHECK(e < 1e-4);
    worst = std::max(worst, e);
    ++checked;
    bridge_grads += name.find(".bridge.") != std::string::npos;
  }
  CHECK(bridge_grads == 5);
  MESSAGE("MB-BERT step loss: " << checked << " gradients, worst rel. error " << worst);
}

TEST_CASE("progressive KD: the updates of step 1, and step 2 distilling from step 1's student, match PyTorch") {
  const ProgressiveFixture fx;
  const int layer = fx.meta["layer"], updates = fx.meta["updates"];
  const mb::DistillData data = kdtest::fixture_data(fx.batch, fx.labels);
  const std::string dir = mbtest::scratch_dir("mbbert_oracle_steps");

  // Step 1: distilled from the teacher.
  mb::BertModel s1 = mb::BertModel::load(kd_root() + "/step1_student");
  std::map<std::string, mb::Tensor> initial;
  for (const auto& [name, v] : s1.named_parameters()) initial[name] = v.value().clone();
  const kdtest::KdRun run = kdtest::run_distill(s1, &fx.teacher, data, fx.options(layer), updates, dir + "/step_1");
  REQUIRE(run.log.size() == size_t(updates));
  double worst_value = 0, worst_change = 0, worst_weight = 0;
  for (int k = 0; k < updates; ++k) {
    CAPTURE(k);
    const json& w = fx.meta["log"][size_t(k)];
    worst_value = std::max(worst_value, kdtest::check_logged_update(run.log[size_t(k)], w));
    for (const auto& [name, t] : run.weights[size_t(k)]) {
      const auto& name_ = name;
      CAPTURE(name_);
      const mb::Tensor& o_t = fx.want.tensors.at("step1.param." + std::to_string(k) + "." + name);
      // Key biases of plain layers: a zero gradient in exact arithmetic, which Adam turns into
      // steps of noise's sign (see the gradient test); only bounded by the learning rate.
      if (name.find("attention.self.key.bias") != std::string::npos) {
        for (int64_t i = 0; i < t.numel(); ++i)
          CHECK(std::fabs(t.f32()[i] - initial.at(name).f32()[i]) <= (k + 1) * fx.meta["lr"].get<double>() * 1.01);
        continue;
      }
      worst_weight = std::max(worst_weight, kdtest::rel_error(t.f32(), o_t.f32(), t.numel()));
      const double e = kdtest::change_error(t, o_t, initial.at(name));
      CHECK(e < 1e-3);
      worst_change = std::max(worst_change, e);
    }
  }
  CHECK(worst_weight < 1e-5);

  // Step 2, as run_mbbert builds it: the teacher is step 1's kept student read back from its
  // directory; the student is a copy of it with layer 1 bridged (the oracle's fixed bridge tensors).
  const mb::BertModel teacher2 = mb::BertModel::load(dir + "/step_1");
  CHECK(mb::weights_fingerprint(teacher2) == mb::weights_fingerprint(s1));
  const int l2 = fx.meta["step2"]["layer"];
  mb::BertModel s2 = mb::clone_model(teacher2);
  const int64_t H = s2.config.hidden_size, r = fx.meta["rank"];
  s2.layers[size_t(l2)] = mb::make_bridge_layer(H, r, mb::BridgeForm::ResidualLayerNorm);
  write_layer_structure(s2.config, s2.layer_structure());
  const mb::SafeTensorsFile bt = mb::read_safetensors(kd_root() + "/step2_bridge.safetensors");
  int copied = 0;
  for (const auto& [name, v] : s2.named_parameters())
    if (auto it = bt.tensors.find(name); it != bt.tensors.end()) {
      REQUIRE(it->second.numel() == v.numel());
      std::copy(it->second.f32(), it->second.f32() + v.numel(), v.mutable_data());
      ++copied;
    }
  REQUIRE(copied == 5);
  const kdtest::KdRun run2 = kdtest::run_distill(s2, &teacher2, data, fx.options(l2), 1, dir + "/step_2");
  REQUIRE(run2.log.size() == 1);
  const json& w2 = fx.meta["step2"];
  for (const char* key : {"loss", "ce", "kd", "hidden_mse"}) {
    const std::string key_ = key;
    CAPTURE(key_);
    const double e = kdtest::rel(run2.log[0][key].get<double>(), w2[key].get<double>());
    CHECK(e < 1e-4);
    worst_value = std::max(worst_value, e);
  }
  // The oracle's loss with the original teacher instead differs far beyond that tolerance.
  CHECK(kdtest::rel(run2.log[0]["loss"].get<double>(), w2["with_original_teacher"]["loss"].get<double>()) > 1e-2);
  MESSAGE("MB-BERT progressive: worst rel. error of logged values " << worst_value << ", of weights " << worst_weight
                                                                    << ", of weight changes " << worst_change);
}
