// Element-wise activations used by BERT: GELU (exact and tanh form) and tanh (pooler), plus the
// bias + GELU pass that follows the FFN's first GEMM.
//
// Exact GELU and its backward run on the CPU level's kernels (engine/cpu_kernels.h: Φ through a
// vectorised erfc and exp, at the level's full width). The tanh form and tanh are Eigen array
// expressions (Eigen's vectorised tanh, at the baseline's width: rarely used), never libm's scalar
// calls, which cost ~10% of a BERT-base forward.
#include <Eigen/Core>

#include "engine/cpu_kernels.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/gemm.h"
#include "engine/ops.h"
#include "engine/threads.h"

namespace mb {

namespace {
constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr int64_t kGrain = 16384;  // elements per thread below which threading does not pay

using Arr = Eigen::Map<Eigen::ArrayXf>;
using ConstArr = Eigen::Map<const Eigen::ArrayXf>;

// The tanh approximation's argument u(x) = √(2/π)(x + 0.044715x³).
template <class X> auto tanh_arg(const X& x) { return kSqrt2OverPi * (x + 0.044715f * x.cube()); }
}  // namespace

void gelu_forward(float* x, int64_t n) {
  const auto kernel = cpu_kernels().gelu;
  parallel_chunks(n, kGrain, [&](int64_t a, int64_t b) { kernel(x + a, b - a); });
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  // d/dx x·Φ(x) = Φ(x) + x·φ(x)
  const auto kernel = cpu_kernels().gelu_backward;
  parallel_chunks(n, kGrain, [&](int64_t a, int64_t b) { kernel(dinp + a, inp + a, dout + a, b - a); });
}

void gelu_tanh_forward(float* x, int64_t n) {
  parallel_chunks(n, kGrain, [&](int64_t a, int64_t b) {
    Arr v(x + a, b - a);
    v = 0.5f * v * (1.0f + tanh_arg(v).tanh());
  });
}

void gelu_tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  parallel_chunks(n, kGrain, [&](int64_t a, int64_t b) {
    ConstArr x(inp + a, b - a), g(dout + a, b - a);
    const Eigen::ArrayXf th = tanh_arg(x).tanh();
    const auto du = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x.square());
    Arr(dinp + a, b - a) += g * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th.square()) * du);
  });
}

void tanh_forward(float* x, int64_t n) {
  parallel_chunks(n, kGrain, [&](int64_t a, int64_t b) {
    Arr v(x + a, b - a);
    v = v.tanh();
  });
}

void tanh_backward(float* dinp, const float* out, const float* dout, int64_t n) {
  parallel_chunks(n, kGrain, [&](int64_t a, int64_t b) {
    ConstArr y(out + a, b - a), g(dout + a, b - a);
    Arr(dinp + a, b - a) += g * (1.0f - y.square());
  });
}

void bias_gelu_forward(float* out, float* pre, const float* bias, int64_t T, int64_t N, bool tanh_form) {
  // Row by row: add the bias, keep the sum in `pre` when asked (backward needs it), activate.
  const auto exact = cpu_kernels().gelu;
  parallel_chunks(T, std::max<int64_t>(1, kGrain / std::max<int64_t>(N, 1)), [&](int64_t a, int64_t b) {
    ConstArr bv(bias, N);
    for (int64_t t = a; t < b; ++t) {
      Arr y(out + t * N, N);
      y += bv;
      if (pre) Arr(pre + t * N, N) = y;
      if (tanh_form) y = 0.5f * y * (1.0f + tanh_arg(y).tanh());
      else exact(out + t * N, N);
    }
  });
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

Var linear_gelu(const Var& x, const Var& W, const Var& b, bool tanh_form, const PackedWeight* packed) {
  const int64_t T = x.dim(0), K = x.dim(1), N = W.dim(0);
  MB_CHECK(W.dim(1) == K, "linear_gelu: input has " + std::to_string(K) + " features, weight expects " +
                              std::to_string(W.dim(1)));
  MB_CHECK(b.defined() && b.numel() == N, "linear_gelu: needs a bias of the output's size");
  const bool rec = needs_grad({&x, &W, &b});
  // The GEMM writes x·Wᵀ; one pass then adds the bias and applies GELU. Training keeps the
  // pre-activation for the backward pass. Inference on packed weights adds the bias in the GEMM
  // kernel and then runs GELU as its own pass: oneDNN's GELU post-op costs twice that pass
  // (FFN-in of BERT-base, 1,024 rows: +1.0 ms in the kernel against +0.5 ms as a pass).
  Var out = make_output(Tensor::empty({T, N}), rec);
  if (!rec && packed && gemm_packed(*packed, T, x.data(), b.data(), out.mutable_data(), N)) {
    (tanh_form ? gelu_tanh_forward : gelu_forward)(out.mutable_data(), T * N);
    return out;
  }
  MB_CHECK(W.value().dtype() == DType::F32, std::string("linear_gelu: the weight is stored in ") +
                                                dtype_name(W.value().dtype()) +
                                                " (a quantized model) and runs only on its packed kernel, which did not take this product");
  Tensor pre = rec ? Tensor::empty({T, N}) : Tensor();
  // bf16 mixed precision (linear_precision()): the product on bf16 copies of x and W, kept for the
  // backward pass; the bias, GELU and their gradients stay f32.
  const bool bf16 = linear_precision() == Precision::BF16;
  Tensor x_h, w_h;
  if (bf16) {
    x_h = x.value().to_dtype(DType::BF16);
    w_h = bf16_weight(W);
    linear_forward_bf16(out.mutable_data(), x_h.data<uint16_t>(), w_h.data<uint16_t>(), nullptr, T, K, N, N);
  } else {
    sgemm(false, true, T, N, K, 1.0f, x.data(), K, W.data(), K, 0.0f, out.mutable_data(), N);
  }
  bias_gelu_forward(out.mutable_data(), rec ? pre.f32() : nullptr, b.data(), T, N, tanh_form);
  if (rec)
    record_backward([x, W, b, out, pre, x_h, w_h, bf16, T, K, N, tanh_form] {
      if (!out.has_grad()) return;
      Tensor dpre = Tensor::zeros({T, N});
      (tanh_form ? gelu_tanh_backward : gelu_backward)(dpre.f32(), pre.f32(), out.grad().f32(), T * N);
      float* dx = x.requires_grad() ? x.grad().f32() : nullptr;
      float* dw = W.requires_grad() ? W.grad().f32() : nullptr;
      float* db = b.requires_grad() ? b.grad().f32() : nullptr;
      if (bf16)
        linear_backward_bf16(dx, dw, db, dpre.f32(), x_h.data<uint16_t>(), w_h.data<uint16_t>(), T, K, N);
      else
        linear_backward(dx, dw, db, dpre.f32(), x.data(), W.data(), T, K, N);
    });
  return out;
}

}  // namespace mb
