#include <cstring>

#include "engine/gemm.h"
#include "engine/ops.h"

namespace mb {

void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t T, int64_t K, int64_t N,
                    int64_t ldo) {
  // Broadcast the bias into the output first and let the GEMM accumulate onto it (beta = 1):
  // this folds the bias add into the GEMM's single pass over C.
  if (b) {
#pragma omp parallel for if (T * N > 65536)
    for (int64_t t = 0; t < T; ++t) std::memcpy(out + t * ldo, b, size_t(N) * 4);
  }
  sgemm(false, true, T, N, K, 1.0f, inp, K, W, K, b ? 1.0f : 0.0f, out, ldo);
}

}  // namespace mb
