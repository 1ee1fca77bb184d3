#include <cmath>

#include "engine/ops.h"

namespace mb {

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* residual, const float* w,
                       const float* b, int64_t T, int64_t C, float eps) {
#pragma omp parallel for if (T * C > 32768)
  for (int64_t t = 0; t < T; ++t) {
    const float* x = inp + t * C;
    float* y = out + t * C;
    if (residual) {
      const float* r = residual + t * C;
      for (int64_t c = 0; c < C; ++c) y[c] = x[c] + r[c];
      x = y;
    }
    // Two passes (mean, then centred variance): as accurate as PyTorch's Welford in f32.
    float m = 0.0f;
    for (int64_t c = 0; c < C; ++c) m += x[c];
    m /= float(C);
    float v = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      float d = x[c] - m;
      v += d * d;
    }
    v /= float(C);
    const float s = 1.0f / std::sqrt(v + eps);
    for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - m) * s * w[c] + b[c];
    if (mean) mean[t] = m;
    if (rstd) rstd[t] = s;
  }
}

}  // namespace mb
