// Element-wise activations used by BERT: GELU (exact and tanh form) and tanh (pooler).
#include <cmath>

#include "engine/ops.h"

namespace mb {

void gelu_forward(float* x, int64_t n) {
  const float inv_sqrt2 = 0.70710678118654752440f;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * inv_sqrt2));
}

void gelu_tanh_forward(float* x, int64_t n) {
  const float k = 0.79788456080286535588f;  // sqrt(2/pi)
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void tanh_forward(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

}  // namespace mb
