// Row-wise L2 normalisation, y = x / max(‖x‖₂, eps) per row, as PyTorch's F.normalize(x, p=2,
// dim=-1). Pea-KD's patience loss compares L2-normalised [CLS] vectors of teacher and student.
// Rows are short (hidden size) and few (one per sequence), so this stays serial; the norms run in
// double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/error.h"
#include "engine/functional.h"

namespace mb {

Var l2_normalize_rows(const Var& x, float eps) {
  MB_CHECK(x.shape().size() == 2, "l2_normalize_rows: needs a matrix, got " + shape_str(x.shape()));
  const int64_t R = x.dim(0), C = x.dim(1);
  const bool rec = needs_grad({&x});
  Var out = make_output(Tensor::empty(x.shape()), rec);
  // 1 / max(‖x_r‖, eps) per row, and whether the norm was clamped (then y = x/eps is linear in x).
  std::vector<float> inv(static_cast<size_t>(R));
  std::vector<char> clamped(static_cast<size_t>(R));
  const float* xd = x.data();
  float* y = out.mutable_data();
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(xd[r * C + c]) * double(xd[r * C + c]);
    const double norm = std::sqrt(ss);
    clamped[size_t(r)] = norm <= double(eps);
    inv[size_t(r)] = float(1.0 / std::max(norm, double(eps)));
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = xd[r * C + c] * inv[size_t(r)];
  }
  if (rec)
    record_backward([x, out, inv, clamped, R, C] {
      if (!out.has_grad()) return;
      // y = x/n with n = ‖x‖: dx = (dy − y·(y·dy)) / n. When n was clamped to eps: dx = dy/eps.
      const float* g = out.grad().f32();
      const float* yd = out.data();
      float* d = x.grad().f32();
      for (int64_t r = 0; r < R; ++r) {
        const float* gr = g + r * C;
        const float* yr = yd + r * C;
        double dot = 0;
        if (!clamped[size_t(r)])
          for (int64_t c = 0; c < C; ++c) dot += double(yr[c]) * double(gr[c]);
        for (int64_t c = 0; c < C; ++c) d[r * C + c] += (gr[c] - yr[c] * float(dot)) * inv[size_t(r)];
      }
    });
  return out;
}

}  // namespace mb
