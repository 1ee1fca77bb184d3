// Gradient parity with PyTorch (tests/reference/make_grad_fixtures.py, float64 autograd) for
// every op BERT uses and for a whole BERT classification step; gradient accumulation on shared
// tensors; no tape without gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/cpu.h"
#include "engine/ops.h"
#include "engine/functional.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "tests/test_util.h"

namespace {

// ‖got − want‖ / ‖want‖ (absolute when want is all zeros).
double rel_err(const mb::Tensor& got, const mb::Tensor& want) {
  REQUIRE(got.numel() == want.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double d = double(got.f32()[i]) - double(want.f32()[i]);
    num += d * d;
    den += double(want.f32()[i]) * double(want.f32()[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct OpFixture {
  mb::SafeTensorsFile file = mb::read_safetensors(mbtest::fixtures_dir() + "/grad/ops.safetensors");
  const mb::Tensor& t(const std::string& name) const {
    auto it = file.tensors.find(name);
    REQUIRE_MESSAGE(it != file.tensors.end(), "fixture lacks " << name);
    return it->second;
  }
  mb::Var input(const std::string& name) const { return mb::Var(t(name).clone(), true); }
  std::vector<int32_t> ints(const std::string& name) const {
    const mb::Tensor& x = t(name);
    return std::vector<int32_t>(x.data<int32_t>(), x.data<int32_t>() + x.numel());
  }
  // Runs backward from `out` (upstream "dout" when the op has one) and checks the output and
  // the gradients of `inputs` against PyTorch.
  void check(const std::string& op, const mb::Var& out, const std::vector<std::pair<std::string, mb::Var>>& inputs) const {
    CAPTURE(op);
    CHECK(rel_err(out.value(), t(op + ".out")) < 1e-5);
    if (file.tensors.count(op + ".dout")) mb::backward(out, t(op + ".dout"));
    else mb::backward(out);
    for (const auto& [name, v] : inputs) {
      const auto& name_ = name;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
      CAPTURE(name_);
      CHECK(rel_err(v.grad(), t(op + ".d" + name)) < 1e-4);
    }
  }
};

}  // namespace

TEST_CASE("op gradients match PyTorch") {
  const OpFixture f;
  SUBCASE("linear") {
    mb::Var x = f.input("linear.x"), W = f.input("linear.W"), b = f.input("linear.b");
    f.check("linear", mb::linear(x, W, b), {{"x", x}, {"W", W}, {"b", b}});
  }
  SUBCASE("layernorm with fused residual") {
    mb::Var x = f.input("layernorm.x"), r = f.input("layernorm.residual"), w = f.input("layernorm.w"),
            b = f.input("layernorm.b");
    f.check("layernorm", mb::layernorm(x, w, b, 1e-12f, r), {{"x", x}, {"residual", r}, {"w", w}, {"b", b}});
  }
  SUBCASE("gelu, gelu_tanh, tanh") {
    mb::Var a = f.input("gelu.x"), b = f.input("gelu_tanh.x"), c = f.input("tanh.x");
    f.check("gelu", mb::gelu(a), {{"x", a}});
    f.check("gelu_tanh", mb::gelu_tanh(b), {{"x", b}});
    f.check("tanh", mb::tanh(c), {{"x", c}});
  }
  SUBCASE("add_bias, mask_columns (K-prune's masks)") {
    mb::Var x = f.input("add_bias.x"), b = f.input("add_bias.b");
    f.check("add_bias", mb::add_bias(x, b), {{"x", x}, {"b", b}});
    mb::Var y = f.input("mask_columns.x"), m = f.input("mask_columns.m");
    f.check("mask_columns", mb::mask_columns(y, m), {{"x", y}, {"m", m}});
  }
  SUBCASE("embedding with repeated ids (scatter-add)") {
    mb::Var table = f.input("embedding.table");
    f.check("embedding", mb::embedding(table, f.ints("embedding.ids")), {{"table", table}});
  }
  SUBCASE("attention over packed sequences") {
    mb::Var q = f.input("attention.q"), k = f.input("attention.k"), v = f.input("attention.v");
    f.check("attention", mb::attention(q, k, v, f.ints("attention.offsets"), 3), {{"q", q}, {"k", k}, {"v", v}});
  }
  SUBCASE("cross-entropy with ignored labels") {
    mb::Var z = f.input("cross_entropy.z");
    f.check("cross_entropy", mb::cross_entropy(z, f.ints("cross_entropy.labels")), {{"z", z}});
  }
  SUBCASE("mse") {
    mb::Var p = f.input("mse.p");
    f.check("mse", mb::mse_loss(p, f.t("mse.target")), {{"p", p}});
  }
  SUBCASE("KL divergence with temperature") {
    mb::Var s = f.input("kl.s");
    f.check("kl", mb::kl_div_with_temperature(s, f.t("kl.teacher"), 2.0f), {{"s", s}});
  }
  SUBCASE("L2-normalised rows, and Pea-KD's patience term built from them") {
    mb::Var x = f.input("l2_normalize.x");
    f.check("l2_normalize", mb::l2_normalize_rows(x), {{"x", x}});
    mb::Var s = f.input("patience.s");
    const mb::Tensor t = mb::l2_normalize_rows(mb::Var(f.t("patience.teacher").clone(), false)).value();
    f.check("patience", mb::mse_loss(mb::l2_normalize_rows(s), t), {{"s", s}});
  }
}

TEST_CASE("a whole BERT classification step matches PyTorch's gradients") {
  const std::string dir = mbtest::fixtures_dir() + "/grad/bert_step";
  const mb::BertModel model = mb::BertModel::load(dir);
  const mb::SafeTensorsFile batch_file = mb::read_safetensors(dir + "/batch.safetensors");
  const mb::SafeTensorsFile grads = mb::read_safetensors(dir + "/grads.safetensors");
  const mb::Batch batch = mbtest::fixture_batch(batch_file);
  const std::vector<int32_t> labels = mbtest::fixture_ints(batch_file, "labels");

  model.set_requires_grad(true);
  mb::Rng rng(0);
  const mb::ForwardOptions train{true, &rng};  // dropout probabilities are 0 in this config
  const mb::Var hidden = model.hidden_states(batch, train);
  const mb::Var loss = mb::cross_entropy(model.classifier_logits(model.pooled_output(batch, hidden), train), labels);
  CHECK(loss.data()[0] == doctest::Approx(grads.tensors.at("loss").f32()[0]).epsilon(1e-5));
  mb::backward(loss);
  int checked = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    const auto& name_ = name;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
    CAPTURE(name_);
    REQUIRE(grads.tensors.count(name));
    REQUIRE(p.has_grad());
    // The key bias gets an exactly-zero gradient (softmax ignores a per-row constant): PyTorch's
    // float64 gives ~1e-17 and ours float32 rounding noise, so tiny gradients are compared absolutely.
    const double ref_norm = rel_err(grads.tensors.at(name), mb::Tensor::zeros(p.shape()));
    if (ref_norm > 1e-6) CHECK(rel_err(p.grad(), grads.tensors.at(name)) < 1e-3);
    else CHECK(rel_err(p.grad(), mb::Tensor::zeros(p.shape())) < 1e-6);
    ++checked;
  }
  CHECK(checked == int(grads.tensors.size()) - 1);
  CHECK(mb::tape_size() == 0);
}

namespace {

// One classification step of the bert_step fixture at the current linear precision: the loss and
// every parameter's gradient by name.
std::pair<double, std::map<std::string, mb::Tensor>> bert_step_gradients() {
  const std::string dir = mbtest::fixtures_dir() + "/grad/bert_step";
  const mb::BertModel model = mb::BertModel::load(dir);
  const mb::SafeTensorsFile batch_file = mb::read_safetensors(dir + "/batch.safetensors");
  const mb::Batch batch = mbtest::fixture_batch(batch_file);
  model.set_requires_grad(true);
  mb::Rng rng(0);
  const mb::ForwardOptions train{true, &rng};
  const mb::Var loss = mb::cross_entropy(
      model.classifier_logits(model.pooled_output(batch, model.hidden_states(batch, train)), train),
      mbtest::fixture_ints(batch_file, "labels"));
  mb::backward(loss);
  std::map<std::string, mb::Tensor> grads;
  for (const auto& [name, p] : model.named_parameters()) grads[name] = p.grad().clone();
  return {loss.data()[0], grads};
}

}  // namespace

TEST_CASE("bf16 mixed precision: a whole BERT step's gradients within 5 % of PyTorch's float64") {
  const std::string dir = mbtest::fixtures_dir() + "/grad/bert_step";
  const mb::SafeTensorsFile want = mb::read_safetensors(dir + "/grads.safetensors");
  std::pair<double, std::map<std::string, mb::Tensor>> bf16;
  {
    const mb::LinearPrecisionScope precision(mb::Precision::BF16);
    bf16 = bert_step_gradients();
  }
  CHECK(mb::linear_precision() == mb::Precision::F32);  // the scope restores it
  const auto f32 = bert_step_gradients();
  // bfloat16 keeps 8 bits of mantissa: each product's operands are off by up to 2^-9 relative, and
  // gradients that are sums of cancelling terms lose more. Measured here (|Δ| / |g| per tensor):
  // loss 9.7e-4; gradients 2.7e-2 at worst (layer 0's query and key weights), most under 2e-2.
  CHECK(std::fabs(bf16.first / want.tensors.at("loss").f32()[0] - 1) < 5e-3);
  double worst = 0, worst_f32 = 0;
  for (const auto& [name, g] : bf16.second) {
    const auto& name_ = name;
    CAPTURE(name_);
    const mb::Tensor& ref = want.tensors.at(name);
    const double ref_norm = rel_err(ref, mb::Tensor::zeros(g.shape()));
    if (ref_norm > 1e-6) {  // not the key bias, whose gradient is exactly 0 (rounding noise here)
      const double e = rel_err(g, ref);
      CHECK(e < 5e-2);
      worst = std::max(worst, e);
      worst_f32 = std::max(worst_f32, rel_err(f32.second.at(name), ref));
    } else {
      CHECK(rel_err(g, mb::Tensor::zeros(g.shape())) < 1e-4);
    }
  }
  MESSAGE("worst gradient error: bf16 " << worst << ", f32 " << worst_f32);
  // The products did run in bf16: f32 is (3.3e-6) three orders of magnitude closer.
  CHECK(worst > 20 * worst_f32);
  CHECK(mb::tape_size() == 0);
}

TEST_CASE("bf16 mixed precision: oneDNN's bf16 kernel and the widened-f32 products give the same gradients") {
  const mb::GemmBackend saved = mb::gemm_backend();
  const mb::LinearPrecisionScope precision(mb::Precision::BF16);
  const auto native = bert_step_gradients();
  for (mb::GemmBackend backend : mb::available_gemm_backends()) {
    mb::set_gemm_backend(backend);
    const auto other = bert_step_gradients();
    CAPTURE(mb::gemm_backend_name(backend));
    CHECK(std::fabs(other.first / native.first - 1) < 1e-5);
    // Only the order of the f32 sums differs, and with it, rarely, which way an activation rounds
    // to bf16 in the next product.
    for (const auto& [name, g] : native.second) {
      const auto& name_ = name;
      CAPTURE(name_);
      if (rel_err(g, mb::Tensor::zeros(g.shape())) > 1e-6) CHECK(rel_err(other.second.at(name), g) < 1e-3);
    }
  }
  mb::set_gemm_backend(saved);
}

TEST_CASE("exact GELU and its backward at every CPU level against float64, tails included") {
  // x from −12 to 12 in steps of 1/64 (odd count: every vector tail length), plus ±0, +∞ and NaN.
  std::vector<float> x;
  for (int i = -12 * 64; i <= 12 * 64; ++i) x.push_back(float(i) / 64.0f + 1.0f / 1024);
  for (float v : {0.0f, -0.0f, INFINITY, NAN}) x.push_back(v);
  const int64_t n = int64_t(x.size()), finite = n - 4;
  std::vector<float> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) g[size_t(i)] = 1.0f + 0.25f * float(i % 7);
  const mb::CpuLevel saved = mb::cpu_level();
  for (mb::CpuLevel level : mb::supported_cpu_levels()) {
    mb::set_cpu_level(level);
    CAPTURE(mb::cpu_level_name(level));
    std::vector<float> y = x, dx(size_t(n), 0.0f);
    mb::gelu_forward(y.data(), n);
    mb::gelu_backward(dx.data(), x.data(), g.data(), n);
    // Relative errors, the slope Φ + xφ's (0 near x = −0.75) against its two terms' size; within
    // |x| <= 6 (Φ(x) >= 1e-9) and beyond. The lower tail's error grows as x²·2⁻²⁴ from rounding
    // exp's argument −x²/2 (measured: 2.6e-6 at |x| <= 6, 1.2e-5 beyond); Eigen's 1 + erf(x/√2),
    // used before, kept no digit at all below x = −5.5.
    double worst[2][2] = {{0, 0}, {0, 0}};
    for (int64_t i = 0; i < finite; ++i) {
      const double v = x[size_t(i)], cdf = 0.5 * std::erfc(-v / std::sqrt(2.0));
      const double pdf = std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI);
      const int tail = std::fabs(v) > 6;
      worst[tail][0] = std::max(worst[tail][0], std::fabs(y[size_t(i)] - v * cdf) / std::fabs(v * cdf));
      worst[tail][1] = std::max(worst[tail][1], std::fabs(dx[size_t(i)] / g[size_t(i)] - (cdf + v * pdf)) / (cdf + std::fabs(v) * pdf));
    }
    MESSAGE(std::string(mb::cpu_level_name(level)) << ": worst relative error |x| <= 6: GELU " << worst[0][0] << ", slope "
                                                   << worst[0][1] << "; |x| > 6: " << worst[1][0] << ", " << worst[1][1]);
    CHECK(worst[0][0] < 5e-6);
    CHECK(worst[0][1] < 2e-6);
    CHECK(worst[1][0] < 3e-5);
    CHECK(worst[1][1] < 3e-5);
    CHECK(y[size_t(n - 4)] == 0.0f);
    CHECK(std::signbit(y[size_t(n - 3)]));  // GELU(−0) = −0
    CHECK(y[size_t(n - 2)] == INFINITY);
    CHECK(std::isnan(y[size_t(n - 1)]));
    CHECK(dx[size_t(n - 4)] == doctest::Approx(0.5 * g[size_t(n - 4)]));  // slope 1/2 at 0
    // The backward adds to dinp.
    const std::vector<float> once = dx;
    mb::gelu_backward(dx.data(), x.data(), g.data(), finite);
    for (int64_t i = 0; i < finite; ++i) CHECK(dx[size_t(i)] == 2 * once[size_t(i)]);
  }
  mb::set_cpu_level(saved);
}

TEST_CASE("bf16: a FrozenWeightsBf16Scope converts each frozen weight once, with the same results") {
  mb::Rng rng(11);
  auto random = [&](std::vector<int64_t> shape) {
    mb::Tensor t = mb::Tensor::empty(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal());
    return t;
  };
  const mb::Var W(random({16, 24})), W2(random({32, 16})), b(random({16})), b2(random({32}));
  const mb::Tensor dout = random({5, 32});
  const mb::LinearPrecisionScope precision(mb::Precision::BF16);
  // x → linear(W) → linear_gelu(W2), the input's gradient through both.
  auto run = [&](const mb::Var& w) {
    mb::Var x(random({5, 24}), true);
    const mb::Var y = mb::linear_gelu(mb::linear(x, w, b), W2, b2);
    const mb::Tensor out = y.value().clone();
    mb::backward(y, dout);
    return std::make_pair(out, x.grad().clone());
  };
  rng = mb::Rng(5);
  const auto plain = run(W);
  rng = mb::Rng(5);
  mb::FrozenWeightsBf16Scope once;
  const auto cached = run(W);
  CHECK(once.conversions() == 2);
  CHECK(rel_err(cached.first, plain.first) == 0);  // bit for bit
  CHECK(rel_err(cached.second, plain.second) == 0);
  run(W);
  CHECK(once.conversions() == 2);  // reused, not converted again
  const mb::Var replaced(W.value().clone());  // a new tensor: its own copy
  run(replaced);
  CHECK(once.conversions() == 3);
  const mb::Var trained(W.value(), true);  // a weight being trained is converted every call
  run(trained);
  CHECK(once.conversions() == 3);
  {
    mb::FrozenWeightsBf16Scope inner;  // nested: the innermost scope is used
    run(W);
    CHECK(inner.conversions() == 2);
  }
  run(W);
  CHECK(once.conversions() == 3);
  CHECK(mb::tape_size() == 0);
}

TEST_CASE("a tensor used twice receives the sum of both gradients") {
  mb::Var x = mb::Var(mb::Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}), true);
  mb::Var W = mb::Var(mb::Tensor::from_vector({0.5f, -1, 2, 1, 0, -0.25f}, {2, 3}), true);
  mb::Var b = mb::Var(mb::Tensor::from_vector({0.1f, 0.2f}, {2}), true);
  const mb::Tensor dout = mb::Tensor::from_vector({1, -2, 0.5f, 3}, {2, 2});
  mb::backward(mb::linear(x, W, b), dout);
  const mb::Tensor once = W.grad().clone();
  W.zero_grad();
  mb::backward(mb::add(mb::linear(x, W, b), mb::linear(x, W, b)), dout);
  for (int64_t i = 0; i < once.numel(); ++i) CHECK(W.grad().f32()[i] == doctest::Approx(2 * once.f32()[i]));
}

TEST_CASE("no tape without gradients") {
  mb::Var x = mb::Var(mb::Tensor::from_vector({1, 2, 3, 4}, {2, 2}), true);
  mb::Var w = mb::Var(mb::Tensor::from_vector({1, 0, 0, 1}, {2, 2}));
  {
    mb::NoGrad guard;
    const mb::Var y = mb::linear(x, w, mb::Var());
    CHECK_FALSE(y.requires_grad());
    CHECK(mb::tape_size() == 0);
  }
  const mb::Var z = mb::linear(mb::Var(x.value()), w, mb::Var());  // nothing requires a gradient
  CHECK_FALSE(z.requires_grad());
  CHECK(mb::tape_size() == 0);
  const mb::Var y = mb::linear(x, w, mb::Var());
  CHECK(y.requires_grad());
  CHECK(mb::tape_size() == 1);
  mb::clear_tape();
}

TEST_CASE("dropout: identity at inference, inverted scaling and matching gradient in training") {
  mb::Var x = mb::Var(mb::Tensor::from_vector(std::vector<float>(10000, 1.0f), {100, 100}), true);
  mb::Rng rng(3);
  CHECK(mb::dropout(x, 0.1f, false, &rng).same(x));
  const mb::Var y = mb::dropout(x, 0.1f, true, &rng);
  int64_t zeros = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    const float v = y.data()[i];
    CHECK((v == 0.0f || v == doctest::Approx(1.0f / 0.9f)));
    zeros += v == 0.0f;
  }
  CHECK(zeros == doctest::Approx(1000).epsilon(0.15));
  mb::backward(y, mb::Tensor::from_vector(std::vector<float>(10000, 1.0f), {100, 100}));
  for (int64_t i = 0; i < y.numel(); ++i) CHECK(x.grad().f32()[i] == y.data()[i]);
}

TEST_CASE("fill_dropout_mask: the values of n serial rng.uniform() draws, at every CPU level and thread count") {
  // Includes p whose p·2⁵³ is an integer (0.5, 0.25) and tiny and near-one p: the vectorised
  // integer compare must drop exactly where uniform() < p does.
  const mb::CpuLevel saved = mb::cpu_level();
  for (mb::CpuLevel level : mb::supported_cpu_levels())
  for (float p : {0.0f, 1e-9f, 0.1f, 0.25f, 0.5f, 0.999f}) {
    mb::set_cpu_level(level);
    CAPTURE(mb::cpu_level_name(level));
    const int64_t n = 100003;  // several threads' chunks and a ragged end
    std::vector<float> keep(size_t(n), -1.0f);
    mb::Rng rng(11), serial(11);
    mb::fill_dropout_mask(keep.data(), n, p, rng);
    int64_t differ = 0, dropped = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float want = serial.uniform() < double(p) ? 0.0f : 1.0f / (1.0f - p);
      differ += keep[size_t(i)] != want;
      dropped += keep[size_t(i)] == 0.0f;
    }
    CHECK_MESSAGE(differ == 0, "p = " << p);
    CHECK(rng.state() == serial.state());
    if (p == 0.5f) CHECK(dropped == doctest::Approx(n / 2).epsilon(0.02));
    // A slice of a block (attention's per-head draws) and odd lengths: every vector tail.
    for (int64_t len : {1, 7, 15, 17, 33}) {
      mb::Rng a(3), b(3);
      std::vector<float> part(size_t(len), -1.0f);
      mb::fill_dropout_mask(part.data(), len, p, a, {5, 64});
      b.skip(5);
      int64_t wrong = 0;
      for (int64_t i = 0; i < len; ++i) wrong += part[size_t(i)] != (b.uniform() < double(p) ? 0.0f : 1.0f / (1.0f - p));
      CHECK_MESSAGE(wrong == 0, "p = " << p << ", slice of " << len);
    }
  }
  mb::set_cpu_level(saved);
}

TEST_CASE("l2_normalize_rows: unit rows, and a zero row stays zero with a finite gradient") {
  mb::Var x(mb::Tensor::from_vector({3, 4, 0, 0}, {2, 2}), true);
  const mb::Var y = mb::l2_normalize_rows(x);
  CHECK(y.data()[0] == doctest::Approx(0.6));
  CHECK(y.data()[1] == doctest::Approx(0.8));
  CHECK(y.data()[2] == 0.0f);
  CHECK(y.data()[3] == 0.0f);
  mb::backward(y, mb::Tensor::from_vector({1, 0, 1, 1}, {2, 2}));
  // Row 1: d(x/‖x‖)/dx·[1, 0] = (e₀ − y·y₀)/‖x‖ = ([1, 0] − 0.6·[0.6, 0.8])/5.
  CHECK(x.grad().f32()[0] == doctest::Approx(0.64 / 5));
  CHECK(x.grad().f32()[1] == doctest::Approx(-0.48 / 5));
  // Row 2: the norm is clamped to eps, so y = x/eps and the gradient is dy/eps (PyTorch's too).
  CHECK(std::isfinite(x.grad().f32()[2]));
  CHECK(x.grad().f32()[2] == doctest::Approx(1e12));
}
