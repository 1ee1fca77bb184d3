#include <cmath>

#include "engine/ops.h"

namespace mb {

void softmax_forward(float* x, int64_t T, int64_t C) {
  for (int64_t t = 0; t < T; ++t) {
    float* r = x + t * C;
    float mx = r[0];
    for (int64_t c = 1; c < C; ++c) mx = r[c] > mx ? r[c] : mx;
    float sum = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      r[c] = std::exp(r[c] - mx);
      sum += r[c];
    }
    const float inv = 1.0f / sum;
    for (int64_t c = 0; c < C; ++c) r[c] *= inv;
  }
}

}  // namespace mb
