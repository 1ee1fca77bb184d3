// Element-wise activations used by BERT: GELU (exact and tanh form) and tanh (pooler).
#include <cmath>

#include "engine/functional.h"
#include "engine/ops.h"

namespace mb {

namespace {
constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr float kSqrt2OverPi = 0.79788456080286535588f;
}  // namespace

void gelu_forward(float* x, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  // d/dx x·Φ(x) = Φ(x) + x·φ(x)
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float cdf = 0.5f * (1.0f + std::erf(x * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * std::exp(-0.5f * x * x);
    dinp[i] += dout[i] * (cdf + x * pdf);
  }
}

void gelu_tanh_forward(float* x, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}

void gelu_tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + 0.044715f * x * x * x);
    const float th = std::tanh(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du);
  }
}

void tanh_forward(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

void tanh_backward(float* dinp, const float* out, const float* dout, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dinp[i] += dout[i] * (1.0f - out[i] * out[i]);
}

namespace {

// y = f(x) element-wise; backward from the saved input (GELUs) or output (tanh).
template <class Fwd, class Bwd>
Var unary(const Var& x, Fwd fwd, Bwd bwd, bool backward_from_output) {
  const bool rec = needs_grad({&x});
  Var out = make_output(x.value().clone(), rec);
  fwd(out.mutable_data(), out.numel());
  if (rec)
    record_backward([x, out, bwd, backward_from_output] {
      if (!out.has_grad()) return;
      bwd(x.grad().f32(), backward_from_output ? out.data() : x.data(), out.grad().f32(), out.numel());
    });
  return out;
}

}  // namespace

Var gelu(const Var& x) { return unary(x, gelu_forward, gelu_backward, false); }
Var gelu_tanh(const Var& x) { return unary(x, gelu_tanh_forward, gelu_tanh_backward, false); }
Var tanh(const Var& x) { return unary(x, tanh_forward, tanh_backward, true); }

}  // namespace mb
