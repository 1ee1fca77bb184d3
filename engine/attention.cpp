#include <Eigen/Core>
#include <cmath>
#include <vector>

#include "engine/ops.h"

namespace mb {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using StridedRows = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using StridedRowsOut = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

void attention_forward(float* ctx, const float* qkv, int64_t ld_qkv, const int32_t* offsets, int64_t num_seqs,
                       int64_t heads, int64_t head_dim) {
  const int64_t H = heads * head_dim;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  // One task per (sequence, head): each is independent and touches only its own ctx columns.
#pragma omp parallel
  {
    std::vector<float> scores;  // per-thread L×L scratch, reused across tasks
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < num_seqs * heads; ++task) {
      const int64_t s = task / heads, h = task % heads;
      const int64_t begin = offsets[s], L = offsets[s + 1] - offsets[s];
      if (L == 0) continue;
      const float* base = qkv + begin * ld_qkv + h * head_dim;
      StridedRows q(base, L, head_dim, Eigen::OuterStride<>(ld_qkv));
      StridedRows k(base + H, L, head_dim, Eigen::OuterStride<>(ld_qkv));
      StridedRows v(base + 2 * H, L, head_dim, Eigen::OuterStride<>(ld_qkv));
      scores.resize(size_t(L * L));
      Eigen::Map<RowMat> p(scores.data(), L, L);
      p.noalias() = (q * scale) * k.transpose();
      softmax_forward(scores.data(), L, L);
      StridedRowsOut out(ctx + begin * H + h * head_dim, L, head_dim, Eigen::OuterStride<>(H));
      out.noalias() = p * v;
    }
  }
}

}  // namespace mb
