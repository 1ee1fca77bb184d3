// Element-wise add, scale, per-column bias and mask, and dropout.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/cpu_kernels.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/ops.h"
#include "engine/threads.h"

namespace mb {

void fill_dropout_mask(float* keep, int64_t n, float p, Rng& rng, DrawSlice slice) {
  if (slice.total < 0) slice = {0, n};
  MB_CHECK(slice.first >= 0 && n <= slice.total - slice.first,
           "dropout: draws " + std::to_string(slice.first) + "+" + std::to_string(n) + " are outside a block of " +
               std::to_string(slice.total));
  const uint64_t base = rng.skip(uint64_t(slice.total)) + uint64_t(slice.first) * Rng::kGamma;
  const float s = 1.0f / (1.0f - p);
  // Draw i is dropped when uniform_of(u) = (u >> 11)·2⁻⁵³ < p, i.e. when the integer u >> 11 is
  // below ⌈p·2⁵³⌉ (exact: p·2⁵³ only moves p's exponent). In integers and without a branch the
  // loop can vectorise, where the double compare and its 10 %-taken branch ran one draw at a time:
  // 2.6 % of a BERT-base training step.
  const uint64_t below = uint64_t(std::ceil(std::ldexp(double(p), 53)));
  // The draws hashed at the CPU level's width (engine/cpu_kernels.h; the same masks at every level):
  // compiled for the baseline, which has no 64-bit vector multiply, GCC left the loop one draw at
  // a time (3.6 % of a BERT-base bf16 training step on the AMX Xeon).
  const auto kernel = cpu_kernels().dropout_mask;
  parallel_chunks(n, 16384, [&](int64_t a, int64_t b) {
    kernel(keep + a, b - a, base + uint64_t(a + 1) * Rng::kGamma, below, s);  // draw a is the (a + 1)-th
  });
}

Var add(const Var& a, const Var& b) {
  MB_CHECK(a.shape() == b.shape(), "add: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " differ");
  const bool rec = needs_grad({&a, &b});
  Var out = make_output(Tensor::empty(a.shape()), rec);
  const int64_t n = a.numel();
  const float *pa = a.data(), *pb = b.data();
  float* po = out.mutable_data();
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
  if (rec)
    record_backward([a, b, out, n] {
      if (!out.has_grad()) return;
      const float* g = out.grad().f32();
      for (const Var* v : {&a, &b}) {
        if (!v->requires_grad()) continue;
        float* d = v->grad().f32();
        for (int64_t i = 0; i < n; ++i) d[i] += g[i];
      }
    });
  return out;
}

Var scale(const Var& x, float s) {
  const bool rec = needs_grad({&x});
  Var out = make_output(Tensor::empty(x.shape()), rec);
  const int64_t n = x.numel();
  const float* xd = x.data();
  float* o = out.mutable_data();
  for (int64_t i = 0; i < n; ++i) o[i] = xd[i] * s;
  if (rec)
    record_backward([x, out, s, n] {
      if (!out.has_grad()) return;
      float* d = x.grad().f32();
      const float* g = out.grad().f32();
      for (int64_t i = 0; i < n; ++i) d[i] += g[i] * s;
    });
  return out;
}

Var add_bias(const Var& x, const Var& b) {
  MB_CHECK(x.shape().size() == 2 && b.shape().size() == 1 && b.dim(0) == x.dim(1),
           "add_bias: shapes " + shape_str(x.shape()) + " and " + shape_str(b.shape()) + " do not fit");
  const bool rec = needs_grad({&x, &b});
  const int64_t T = x.dim(0), C = x.dim(1);
  Var out = make_output(Tensor::empty(x.shape()), rec);
  const float *px = x.data(), *pb = b.data();
  float* po = out.mutable_data();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) po[t * C + c] = px[t * C + c] + pb[c];
  if (rec)
    record_backward([x, b, out, T, C] {
      if (!out.has_grad()) return;
      const float* g = out.grad().f32();
      if (x.requires_grad()) {
        float* d = x.grad().f32();
        for (int64_t i = 0; i < T * C; ++i) d[i] += g[i];
      }
      if (b.requires_grad()) {
        float* d = b.grad().f32();
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < C; ++c) d[c] += g[t * C + c];
      }
    });
  return out;
}

Var mask_columns(const Var& x, const Var& m) {
  MB_CHECK(x.shape().size() == 2 && m.shape().size() == 1 && m.dim(0) == x.dim(1),
           "mask_columns: shapes " + shape_str(x.shape()) + " and " + shape_str(m.shape()) + " do not fit");
  const bool rec = needs_grad({&x, &m});
  const int64_t T = x.dim(0), C = x.dim(1);
  Var out = make_output(Tensor::empty(x.shape()), rec);
  const float *px = x.data(), *pm = m.data();
  float* po = out.mutable_data();
#pragma omp parallel for if (T * C > 65536)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) po[t * C + c] = px[t * C + c] * pm[c];
  if (rec)
    record_backward([x, m, out, T, C] {
      if (!out.has_grad()) return;
      const float *g = out.grad().f32(), *px = x.data(), *pm = m.data();
      float* dx = x.requires_grad() ? x.grad().f32() : nullptr;
      float* dm = m.requires_grad() ? m.grad().f32() : nullptr;
      // Blocks of columns over the threads, rows in order within each: every sum runs in the same
      // order whatever the thread count. dm is summed in double over the rows: scores are sums of
      // many small products.
      std::vector<double> acc(dm ? size_t(C) : 0, 0.0);
      parallel_chunks(C, std::max<int64_t>(64, 65536 / std::max<int64_t>(T, 1)), [&](int64_t c0, int64_t c1) {
        for (int64_t t = 0; t < T; ++t) {
          if (dx)
            for (int64_t c = c0; c < c1; ++c) dx[t * C + c] += g[t * C + c] * pm[c];
          if (dm)
            for (int64_t c = c0; c < c1; ++c) acc[size_t(c)] += double(g[t * C + c]) * double(px[t * C + c]);
        }
      });
      if (dm)
        for (int64_t c = 0; c < C; ++c) dm[c] += float(acc[size_t(c)]);
    });
  return out;
}

Var dropout(const Var& x, float p, bool train, Rng* rng, DrawSlice slice) {
  if (!train || p <= 0.0f) return x;
  MB_CHECK(p < 1.0f, "dropout probability must be below 1");
  MB_CHECK(rng, "dropout needs a random generator");
  const bool rec = needs_grad({&x});
  const int64_t n = x.numel();
  Tensor keep = Tensor::empty(x.shape());
  fill_dropout_mask(keep.f32(), n, p, *rng, slice);
  Var out = make_output(Tensor::empty(x.shape()), rec);
  const float *k = keep.f32(), *xd = x.data();
  float* o = out.mutable_data();
  parallel_chunks(n, 16384, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) o[i] = xd[i] * k[i];
  });
  if (rec)
    record_backward([x, out, keep, n] {
      if (!out.has_grad()) return;
      float* d = x.grad().f32();
      const float *g = out.grad().f32(), *k = keep.f32();
      for (int64_t i = 0; i < n; ++i) d[i] += g[i] * k[i];
    });
  return out;
}

}  // namespace mb
