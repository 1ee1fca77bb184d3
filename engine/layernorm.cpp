// LayerNorm over the last dimension, optionally fused with the residual add before it.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "engine/functional.h"
#include "engine/ops.h"
#include "engine/threads.h"

namespace mb {

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* residual, const float* w,
                       const float* b, int64_t T, int64_t C, float eps) {
  using Arr = Eigen::Map<Eigen::ArrayXf>;
  using ConstArr = Eigen::Map<const Eigen::ArrayXf>;
  const ConstArr wv(w, C), bv(b, C);
  parallel_chunks(T, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      Arr y(out + t * C, C);
      if (residual) y = ConstArr(inp + t * C, C) + ConstArr(residual + t * C, C);
      else y = ConstArr(inp + t * C, C);
      // Two passes (mean, then centred variance): as accurate as PyTorch's Welford in f32.
      const float m = y.sum() / float(C);
      const float s = 1.0f / std::sqrt((y - m).square().sum() / float(C) + eps);
      y = (y - m) * s * wv + bv;
      if (mean) mean[t] = m;
      if (rstd) rstd[t] = s;
    }
  });
}

void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int64_t T, int64_t C) {
  if (dinp) {
    // dx = rstd · (dn - mean(dn) - n·mean(dn·n)), with n the normalised input and dn = dy·w.
#pragma omp parallel for if (T * C > 32768)
    for (int64_t t = 0; t < T; ++t) {
      const float* x = inp + t * C;
      const float* g = dout + t * C;
      const float m = mean[t], s = rstd[t];
      float mean_dn = 0.0f, mean_dn_n = 0.0f;
      for (int64_t c = 0; c < C; ++c) {
        const float n = (x[c] - m) * s, dn = g[c] * w[c];
        mean_dn += dn;
        mean_dn_n += dn * n;
      }
      mean_dn /= float(C);
      mean_dn_n /= float(C);
      float* d = dinp + t * C;
      for (int64_t c = 0; c < C; ++c) {
        const float n = (x[c] - m) * s;
        d[c] += s * (g[c] * w[c] - mean_dn - n * mean_dn_n);
      }
    }
  }
  if (dw || db) {
    // Column sums, parallel over column blocks (no races, thread-count independent).
    const int64_t block = 64;
#pragma omp parallel for if (T * C > 32768)
    for (int64_t c0 = 0; c0 < C; c0 += block) {
      const int64_t c1 = std::min(C, c0 + block);
      float accw[64] = {0}, accb[64] = {0};
      for (int64_t t = 0; t < T; ++t) {
        const float* x = inp + t * C;
        const float* g = dout + t * C;
        for (int64_t c = c0; c < c1; ++c) {
          accw[c - c0] += g[c] * (x[c] - mean[t]) * rstd[t];
          accb[c - c0] += g[c];
        }
      }
      for (int64_t c = c0; c < c1; ++c) {
        if (dw) dw[c] += accw[c - c0];
        if (db) db[c] += accb[c - c0];
      }
    }
  }
}

Var layernorm(const Var& x, const Var& w, const Var& b, float eps, const Var& residual) {
  const int64_t C = x.shape().back(), T = x.numel() / C;
  MB_CHECK(w.numel() == C && b.numel() == C, "layernorm: weight/bias size differs from the normalised dimension");
  MB_CHECK(!residual.defined() || residual.shape() == x.shape(), "layernorm: residual shape differs from the input");
  const bool rec = needs_grad({&x, &w, &b, &residual});
  Var out = make_output(Tensor::empty(x.shape()), rec);
  if (!rec) {
    layernorm_forward(out.mutable_data(), nullptr, nullptr, x.data(), residual.defined() ? residual.data() : nullptr,
                      w.data(), b.data(), T, C, eps);
    return out;
  }
  Tensor mean = Tensor::empty({T}), rstd = Tensor::empty({T});
  // Backward needs the normalised input: with a residual that is the sum, kept separately.
  Tensor input = x.value();
  if (residual.defined()) {
    input = Tensor::empty(x.shape());
    const float *a = x.data(), *r = residual.data();
    float* s = input.f32();
    for (int64_t i = 0; i < T * C; ++i) s[i] = a[i] + r[i];
  }
  layernorm_forward(out.mutable_data(), mean.f32(), rstd.f32(), input.f32(), nullptr, w.data(), b.data(), T, C, eps);
  record_backward([x, w, b, residual, out, input, mean, rstd, T, C] {
    if (!out.has_grad()) return;
    // The gradient w.r.t. the sum goes to both x and the residual.
    const bool both = residual.defined() && residual.requires_grad() && x.requires_grad();
    Tensor dsum;
    float* dinp = nullptr;
    if (both) {
      dsum = Tensor::zeros(x.shape());
      dinp = dsum.f32();
    } else if (x.requires_grad()) {
      dinp = x.grad().f32();
    } else if (residual.defined() && residual.requires_grad()) {
      dinp = residual.grad().f32();
    }
    layernorm_backward(dinp, w.requires_grad() ? w.grad().f32() : nullptr, b.requires_grad() ? b.grad().f32() : nullptr,
                       out.grad().f32(), input.f32(), w.data(), mean.f32(), rstd.f32(), T, C);
    if (both) {
      float *gx = x.grad().f32(), *gr = residual.grad().f32();
      const float* d = dsum.f32();
      for (int64_t i = 0; i < T * C; ++i) {
        gx[i] += d[i];
        gr[i] += d[i];
      }
    }
  });
  return out;
}

}  // namespace mb
