// AdamW, gradient clipping and the LR schedule against PyTorch (tests/reference/adamw_reference.py),
// and optimizer state checkpointing.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <map>

#include "engine/cpu.h"
#include "engine/cpu_kernels.h"
#include "engine/error.h"
#include "engine/optim.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

using namespace mb;

namespace {

Tensor random_tensor(Rng& rng, Shape shape, double scale) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal() * scale);
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// A small model for the checkpoint tests: names that hit both param groups.
struct Toy {
  std::vector<std::string> names{"enc.weight", "enc.bias", "enc.LayerNorm.weight", "emb.weight"};
  std::vector<Shape> shapes{{4, 3}, {4}, {4}, {5, 3}};
  std::vector<Tensor> values, grads;
  std::vector<ParamRef> refs() {
    std::vector<ParamRef> r;
    for (size_t i = 0; i < names.size(); ++i) r.push_back({names[i], &values[i], &grads[i]});
    return r;
  }
  explicit Toy(uint64_t seed) {
    Rng rng(seed);
    for (auto& s : shapes) values.push_back(random_tensor(rng, s, 0.5));
    grads.resize(names.size());
  }
  // Deterministic grads per step; "emb.weight" gets none on every third step.
  void set_grads(int64_t k) {
    Rng rng(1000 + uint64_t(k));
    for (size_t i = 0; i < names.size(); ++i)
      grads[i] = (i == 3 && k % 3 == 1) ? Tensor() : random_tensor(rng, shapes[i], k % 2 ? 2.0 : 0.1);
  }
};

void train(Toy& toy, AdamW& opt, int64_t from, int64_t to) {
  for (int64_t k = from; k < to; ++k) {
    toy.set_grads(k);
    clip_grad_norm(toy.refs(), 1.0);
    opt.step(linear_warmup_decay(k, 3, 30, 1e-2));
  }
}

}  // namespace

TEST_CASE("AdamW + clip_grad_norm + linear warm-up follow torch 1.13 step by step") {
  const std::string dir = mbtest::scratch_dir("adamw_reference");
  const std::string cmd = "/usr/bin/python3 " + std::string(MB_SOURCE_DIR) + "/tests/reference/adamw_reference.py " + dir;
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "reference script failed: " << cmd);
  const nlohmann::json meta = read_json_file(dir + "/adamw.json");
  const auto ref = read_safetensors(dir + "/adamw.safetensors").tensors;
  auto at = [&](const std::string& key) -> const Tensor& {
    auto it = ref.find(key);
    REQUIRE_MESSAGE(it != ref.end(), "missing " << key);
    return it->second;
  };

  const auto names = meta["names"].get<std::vector<std::string>>();
  std::vector<Tensor> values(names.size()), grads(names.size());
  std::vector<ParamRef> params;
  for (size_t i = 0; i < names.size(); ++i) {
    values[i] = at("init." + names[i]).clone();
    params.push_back({names[i], &values[i], &grads[i]});
  }
  AdamW opt(params, {.weight_decay = meta["weight_decay"].get<double>()});

  double worst = 0;
  int clipped = 0, skipped = 0;
  for (int k = 0; k < meta["steps"].get<int>(); ++k) {
    for (size_t i = 0; i < names.size(); ++i) {
      auto it = ref.find("grad." + std::to_string(k) + "." + names[i]);
      grads[i] = it == ref.end() ? Tensor() : it->second.clone();  // clone: clipping writes into it
      skipped += it == ref.end();
    }
    const double norm = clip_grad_norm(params, meta["max_norm"].get<double>());
    CHECK(norm == doctest::Approx(meta["norm"][k].get<double>()).epsilon(1e-6));
    clipped += norm > meta["max_norm"].get<double>();
    const double lr = linear_warmup_decay(k, meta["warmup"], meta["total"], meta["base_lr"]);
    CHECK(lr == doctest::Approx(meta["lr"][k].get<double>()).epsilon(1e-12));
    opt.step(lr);
    for (size_t i = 0; i < names.size(); ++i) {
      const Tensor& want = at("param." + std::to_string(k) + "." + names[i]);
      for (int64_t j = 0; j < want.numel(); ++j) {
        const double err = std::fabs(double(values[i].f32()[j]) - want.f32()[j]) / std::max(1e-2, std::fabs(double(want.f32()[j])));
        worst = std::max(worst, err);
      }
    }
  }
  MESSAGE("worst relative parameter error vs torch: " << worst);
  CHECK(worst < 1e-6);
  CHECK(clipped > 0);   // the fixture exercises both clipped and unclipped steps,
  CHECK(skipped > 0);   // and missing grads
  CHECK(opt.step_count() == meta["steps"].get<int>());

  // Final moments too (names as the checkpoint writes them).
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : opt.state_tensors("")) state[name] = t;
  for (const auto& n : names)
    for (const char* what : {"exp_avg", "exp_avg_sq"}) {
      const Tensor& want = at(std::string(what) + "." + n);
      const Tensor& got = state.at(n + "." + what);
      for (int64_t j = 0; j < want.numel(); ++j)
        CHECK(got.f32()[j] == doctest::Approx(want.f32()[j]).epsilon(1e-5).scale(1e-6));
    }
}

TEST_CASE("no-decay predicate: biases and LayerNorm weights") {
  CHECK(default_no_decay("bert.encoder.layer.0.output.dense.bias"));
  CHECK(default_no_decay("bert.embeddings.LayerNorm.weight"));
  CHECK(default_no_decay("encoder.layer_norm.weight"));
  CHECK_FALSE(default_no_decay("bert.encoder.layer.0.output.dense.weight"));
  CHECK_FALSE(default_no_decay("classifier.biased_weight"));

  // An overriding predicate: decay everything. With lr 1 and a zero grad only the decay moves p.
  Tensor w = Tensor::from_vector({2.0f}, {1}), g = Tensor::zeros({1});
  AdamW everything({{"x.bias", &w, &g}}, {.weight_decay = 0.5}, [](const std::string&) { return false; });
  everything.step(1.0);
  CHECK(w.f32()[0] == doctest::Approx(1.0));
  Tensor w2 = Tensor::from_vector({2.0f}, {1});
  AdamW by_default({{"x.bias", &w2, &g}}, {.weight_decay = 0.5});
  by_default.step(1.0);
  CHECK(w2.f32()[0] == 2.0f);
}

TEST_CASE("linear warm-up / decay schedule (HF get_linear_schedule_with_warmup)") {
  CHECK(linear_warmup_decay(0, 4, 24, 1.0) == 0.0);
  CHECK(linear_warmup_decay(2, 4, 24, 1.0) == 0.5);
  CHECK(linear_warmup_decay(4, 4, 24, 2.0) == 2.0);
  CHECK(linear_warmup_decay(14, 4, 24, 1.0) == 0.5);
  CHECK(linear_warmup_decay(24, 4, 24, 1.0) == 0.0);
  CHECK(linear_warmup_decay(30, 4, 24, 1.0) == 0.0);  // never negative
  CHECK(linear_warmup_decay(0, 0, 10, 1.0) == 1.0);   // no warm-up
  CHECK(linear_warmup_decay(5, 0, 10, 1.0) == 0.5);
}

TEST_CASE("clip_grad_norm") {
  Tensor g1 = Tensor::from_vector({3.0f}, {1}), g2 = Tensor::from_vector({4.0f}, {1}), none, v = Tensor::zeros({1});
  std::vector<ParamRef> ps{{"a", &v, &g1}, {"b", &v, &g2}, {"c", &v, &none}};
  CHECK(clip_grad_norm(ps, 10.0) == 5.0);  // below the limit: untouched
  CHECK(g1.f32()[0] == 3.0f);
  CHECK(clip_grad_norm(ps, 1.0) == 5.0);   // returns the norm before clipping
  CHECK(g1.f32()[0] == doctest::Approx(0.6).epsilon(1e-6));
  CHECK(g2.f32()[0] == doctest::Approx(0.8).epsilon(1e-6));

  g1.f32()[0] = INFINITY;
  CHECK(std::isinf(clip_grad_norm(ps, 1.0)));  // reported, grads left for the caller to skip
  CHECK(g2.f32()[0] == doctest::Approx(0.8).epsilon(1e-6));
}

TEST_CASE("AdamW::step(lr, scale, zero_grads) == clip_grad_norm, step(lr), zeroing: bit for bit") {
  // Tensors longer than the optimizer's parallel pieces (65,536), so that pieces and threads split them.
  std::vector<std::string> names{"a.weight", "a.bias", "b.weight"};
  std::vector<Shape> shapes{{300, 700}, {700}, {5, 3}};
  std::vector<Tensor> v1, v2, g1, g2;
  Rng rng(5);
  for (const Shape& s : shapes) {
    v1.push_back(random_tensor(rng, s, 0.5));
    v2.push_back(v1.back().clone());
    g1.push_back(Tensor());
    g2.push_back(Tensor());
  }
  std::vector<ParamRef> p1, p2;
  for (size_t i = 0; i < names.size(); ++i) {
    p1.push_back({names[i], &v1[i], &g1[i]});
    p2.push_back({names[i], &v2[i], &g2[i]});
  }
  AdamW o1(p1, {.weight_decay = 0.01}), o2(p2, {.weight_decay = 0.01});
  for (int k = 0; k < 4; ++k) {
    Rng gr(100 + uint64_t(k));
    for (size_t i = 0; i < names.size(); ++i) {
      g1[i] = random_tensor(gr, shapes[i], k % 2 ? 1.0 : 1e-4);  // clipped on odd steps only
      g2[i] = g1[i].clone();
    }
    const double n1 = clip_grad_norm(p1, 1.0);
    o1.step(1e-3);
    const double n2 = grad_norm(p2);
    CHECK(n2 == doctest::Approx(n1).epsilon(1e-12));
    CHECK((clip_coefficient(n2, 1.0) < 1.0f) == (k % 2 == 1));
    o2.step(1e-3, clip_coefficient(n2, 1.0), true);
    for (size_t i = 0; i < names.size(); ++i) {
      CHECK(same_bits(v1[i], v2[i]));
      bool zero = true;
      for (int64_t j = 0; j < g2[i].numel(); ++j) zero = zero && g2[i].f32()[j] == 0.0f;
      CHECK(zero);
    }
  }
  CHECK(clip_coefficient(INFINITY, 1.0) == 1.0f);
  CHECK(clip_coefficient(NAN, 1.0) == 1.0f);
  CHECK(clip_coefficient(0.5, 1.0) == 1.0f);
  CHECK(clip_coefficient(4.0, 1.0) == doctest::Approx(0.25));
}

TEST_CASE("AdamW's update and the gradient norm: the same bits at every CPU level") {
  // Odd lengths (every vector tail), a piece boundary (65,536), weight decay and bias correction.
  const std::vector<Shape> shapes{{300, 701}, {701}, {5, 3}};
  const CpuLevel saved = cpu_level();
  std::vector<std::vector<Tensor>> finals;
  std::vector<std::vector<double>> norms;
  for (CpuLevel level : supported_cpu_levels()) {
    set_cpu_level(level);
    CAPTURE(cpu_level_name(level));
    std::vector<Tensor> v, g(shapes.size());
    Rng rng(9);
    for (const Shape& sh : shapes) v.push_back(random_tensor(rng, sh, 0.5));
    std::vector<ParamRef> ps;
    for (size_t i = 0; i < shapes.size(); ++i) ps.push_back({std::string("p") + std::to_string(i) + ".weight", &v[i], &g[i]});
    AdamW opt(ps, {.weight_decay = 0.01});
    norms.emplace_back();
    for (int k = 0; k < 3; ++k) {
      Rng gr(40 + uint64_t(k));
      for (size_t i = 0; i < shapes.size(); ++i) g[i] = random_tensor(gr, shapes[i], 1.0);
      norms.back().push_back(grad_norm(ps));
      opt.step(1e-3, k == 1 ? 0.375f : 1.0f, true);
    }
    finals.push_back(v);
  }
  set_cpu_level(saved);
  for (size_t l = 1; l < finals.size(); ++l) {
    CAPTURE(l);
    for (size_t i = 0; i < shapes.size(); ++i) CHECK(same_bits(finals[l][i], finals[0][i]));
    CHECK(norms[l] == norms[0]);
  }
  // Each piece's Σ g², bit for bit.
  Rng rng(4);
  const Tensor g = random_tensor(rng, {1, 1000}, 3.0);
  for (int64_t n : {0, 1, 31, 32, 33, 999, 1000}) {
    const double want = cpu_kernels_at(CpuLevel::Baseline)->sum_squares(g.f32(), n);
    for (CpuLevel level : supported_cpu_levels()) CHECK(cpu_kernels_at(level)->sum_squares(g.f32(), n) == want);
  }
}

TEST_CASE("grad_norm: the same bits whatever the thread count") {
  // Many pieces (65,536 floats each) of different sizes, so that threads take different shares.
  Rng rng(12);
  std::vector<Tensor> v, g;
  for (int64_t n : {1000003, 70001, 5, 300000}) {
    v.push_back(Tensor::zeros({n}));
    g.push_back(random_tensor(rng, {n}, 1.0));
  }
  std::vector<ParamRef> ps;
  for (size_t i = 0; i < v.size(); ++i) ps.push_back({std::string("p") + std::to_string(i), &v[i], &g[i]});
  const int saved = num_threads();
  set_num_threads(1);
  const double one = grad_norm(ps);
  for (int t : {2, 3}) {  // (5 and 8 left libomp thread structures that LeakSanitizer reported)
    set_num_threads(t);
    CHECK_MESSAGE(grad_norm(ps) == one, t << " threads");
  }
  set_num_threads(saved);
}

TEST_CASE("AdamW rejects memory listed twice (its parallel update would race)") {
  Tensor w = Tensor::zeros({4}), g1 = Tensor::zeros({4}), g2 = Tensor::zeros({4});
  CHECK_THROWS_AS(AdamW({{"a", &w, &g1}, {"b", &w, &g2}}), Error);
  Tensor v = Tensor::zeros({4});
  CHECK_NOTHROW(AdamW({{"a", &w, &g1}, {"b", &v, &g2}}));
}

TEST_CASE("AdamW state: save, restore into a fresh optimizer, continue == uninterrupted") {
  Toy a(7);
  AdamW opt_a(a.refs(), {.weight_decay = 0.01});
  train(a, opt_a, 0, 10);

  // Checkpoint the model and the optimizer together, as a trainer does.
  std::vector<std::pair<std::string, Tensor>> tensors = opt_a.state_tensors();
  for (size_t i = 0; i < a.names.size(); ++i) tensors.emplace_back("model." + a.names[i], a.values[i]);
  const std::string dir = mbtest::scratch_dir("optim_state") + "/ckpt";
  save_checkpoint(dir, tensors, {{"optimizer", opt_a.state_json()}});
  train(a, opt_a, 10, 20);

  const Checkpoint ck = load_checkpoint(dir);
  Toy b(99);  // different initial values: all must come from the checkpoint
  for (size_t i = 0; i < b.names.size(); ++i) b.values[i] = ck.tensors.at("model." + b.names[i]).clone();
  AdamW opt_b(b.refs(), {.beta1 = 0.5, .weight_decay = 0.3});  // hyper-parameters are restored too
  opt_b.load_state(ck.state["optimizer"], ck.tensors);
  CHECK(opt_b.step_count() == 10);
  CHECK(opt_b.config().beta1 == 0.9);
  CHECK(opt_b.config().weight_decay == 0.01);
  train(b, opt_b, 10, 20);

  for (size_t i = 0; i < a.names.size(); ++i) CHECK_MESSAGE(same_bits(a.values[i], b.values[i]), a.names[i]);
  auto sa = opt_a.state_tensors(), sb = opt_b.state_tensors();
  for (size_t i = 0; i < sa.size(); ++i) CHECK_MESSAGE(same_bits(sa[i].second, sb[i].second), sa[i].first);
  CHECK(opt_a.state_json() == opt_b.state_json());
}

TEST_CASE("AdamW load_state rejects mismatches with a clear message and changes nothing") {
  Toy a(1);
  AdamW opt(a.refs());
  train(a, opt, 0, 2);
  std::map<std::string, Tensor> good;
  for (auto& [n, t] : opt.state_tensors()) good[n] = t.clone();
  const nlohmann::json js = opt.state_json();

  Toy b(1);
  AdamW fresh(b.refs());
  auto missing = good;
  missing.erase("optimizer.enc.bias.exp_avg_sq");
  CHECK_THROWS_WITH_AS(fresh.load_state(js, missing), doctest::Contains("optimizer.enc.bias.exp_avg_sq"), Error);
  auto wrong_shape = good;
  wrong_shape["optimizer.emb.weight.exp_avg"] = Tensor::zeros({3, 5});
  CHECK_THROWS_WITH_AS(fresh.load_state(js, wrong_shape), doctest::Contains("[3, 5]"), Error);
  auto other_params = js;
  other_params["param_steps"].erase("enc.weight");
  other_params["param_steps"]["dec.weight"] = 2;
  CHECK_THROWS_WITH_AS(fresh.load_state(other_params, good), doctest::Contains("'enc.weight'"), Error);
  auto not_adamw = js;
  not_adamw["type"] = "SGD";
  CHECK_THROWS_WITH_AS(fresh.load_state(not_adamw, good), doctest::Contains("not an AdamW state"), Error);
  auto malformed = js;
  malformed["betas"] = "x";
  CHECK_THROWS_WITH_AS(fresh.load_state(malformed, good), doctest::Contains("malformed"), Error);
  CHECK(fresh.step_count() == 0);  // untouched by the failed loads
  CHECK(fresh.state_json()["param_steps"]["enc.weight"] == 0);

  Tensor i64 = Tensor::zeros({2}, DType::I64);
  CHECK_THROWS_AS(AdamW({{"ids", &i64, nullptr}}), Error);
  Tensor w = Tensor::zeros({2});
  CHECK_THROWS_WITH_AS(AdamW({{"w", &w, nullptr}, {"w", &w, nullptr}}), doctest::Contains("duplicate"), Error);
}
