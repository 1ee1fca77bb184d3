// Multi-head self-attention over packed sequences: per (sequence, head),
//   P = softmax(Q·Kᵀ/√d),  ctx = (P ⊙ keep)·V,
// with keep the attention-dropout scale (absent at inference). No padding is ever computed.
#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "engine/error.h"
#include "engine/functional.h"
#include "engine/ops.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mb {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Rows = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using RowsOut = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
using Square = Eigen::Map<RowMat>;
using ConstSquare = Eigen::Map<const RowMat>;

// Start of each sequence's probability block (heads·L² floats per sequence).
std::vector<int64_t> probs_offsets(const int32_t* offsets, int64_t num_seqs, int64_t heads) {
  std::vector<int64_t> start(size_t(num_seqs) + 1, 0);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t L = offsets[s + 1] - offsets[s];
    start[size_t(s) + 1] = start[size_t(s)] + heads * L * L;
  }
  return start;
}


#if defined(__AVX512F__)
// Register-blocked kernels for the two per-head products (head sizes that are multiples of 16).
// Eigen's general product packs both operands and blocks for caches on every call; at attention's
// sizes (128 × 128 × 64 per head) that overhead held it to ~80 GFLOP/s a core. These keep a block
// of output rows in registers and stream the other operand once per block.

// Lanes [0, left) of a 16-wide vector, for a row's last columns.
__mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : left > 0 ? __mmask16((1u << left) - 1) : __mmask16(0);
}

// The last rows of a block-of-R loop: f(std::integral_constant<int, rows>) for 0 < rows < R, so
// that the kernel's row count stays a compile-time constant (registers, unrolled loops).
template <int R, class F>
void with_rows(int64_t rows, F&& f) {
  if constexpr (R > 1) {
    if (rows == R - 1) f(std::integral_constant<int, R - 1>{});
    else with_rows<R - 1>(rows, f);
  }
}

// C[R, 16·V] = A[R, K] · B[K, 16·V] (row strides lda, ldb, ldc) with the output block in registers:
// per k, V vector loads of B and R broadcasts of A feed R·V FMAs. The first `cols` columns of
// each output row are stored (B may be padded past them), or added to C with `accumulate`.
template <int R, int V>
void block_product(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t K,
                   int64_t cols, const float* row_scale = nullptr, bool accumulate = false) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < V; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[V];
    for (int j = 0; j < V; ++j) bv[j] = _mm512_loadu_ps(b + k * ldb + 16 * j);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
      for (int j = 0; j < V; ++j) acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
    }
  }
  if (row_scale)
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < V; ++j) acc[r][j] = _mm512_mul_ps(acc[r][j], _mm512_set1_ps(row_scale[r]));
  for (int j = 0; j < V; ++j) {
    const __mmask16 m = tail_mask(cols - 16 * j);
    for (int r = 0; r < R; ++r) {
      float* at = c + r * ldc + 16 * j;
      _mm512_mask_storeu_ps(at, m, accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, at), acc[r][j]) : acc[r][j]);
    }
  }
}

// 16 rows of 16 floats transposed in registers: r[i] = column i on return. Two rounds of in-lane
// shuffles and two of 128-bit lane shuffles; this replaced one 16-lane gather per column, which
// are slow on AMD's cores (and a profile put a fifth of attention's time on them).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);  // per 128-bit lane: a0 b0 a1 b1
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // per lane: column c of rows i..i+3
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int base : {0, 8}) {
    for (int c = 0; c < 4; ++c) {
      t[base + c] = _mm512_shuffle_f32x4(r[base + c], r[base + 4 + c], 0x88);      // lanes 0, 2
      t[base + 4 + c] = _mm512_shuffle_f32x4(r[base + c], r[base + 4 + c], 0xdd);  // lanes 1, 3
    }
  }
  for (int c = 0; c < 8; ++c) {
    r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
  }
}

// out[cols, padded] (row stride ld_out) = scale · a[rows, cols]ᵀ (row stride ld_a), zero in the
// columns from rows to padded (≥ rows: an operand padded for the kernels), in 16×16 blocks.
void transpose(float* out, int64_t ld_out, const float* a, int64_t ld_a, int64_t rows, int64_t cols, int64_t padded,
               float scale = 1.0f) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i0 = 0; i0 < padded; i0 += 16) {
    const __mmask16 row_mask = tail_mask(padded - i0);
    for (int64_t j0 = 0; j0 < cols; j0 += 16) {
      const __mmask16 col_mask = tail_mask(cols - j0);
      __m512 r[16];
      for (int64_t i = 0; i < 16; ++i)
        r[i] = i0 + i < rows ? _mm512_maskz_loadu_ps(col_mask, a + (i0 + i) * ld_a + j0) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t c = 0; c < 16 && j0 + c < cols; ++c)
        _mm512_mask_storeu_ps(out + (j0 + c) * ld_out + i0, row_mask, _mm512_mul_ps(r[c], s));
    }
  }
}

// Rows i0..i0+R of S[L, L] = Q · kt, kt = scale · Kᵀ [dh, Lp].
template <int R>
void scores_rows(float* S, const float* q, int64_t ld_q, const float* kt, int64_t Lp, int64_t L, int64_t dh,
                 int64_t i0) {
  int64_t j0 = 0;
  for (; j0 + 32 <= Lp; j0 += 32)
    block_product<R, 2>(S + i0 * L + j0, L, q + i0 * ld_q, ld_q, kt + j0, Lp, dh, std::min<int64_t>(32, L - j0));
  if (j0 < Lp) block_product<R, 1>(S + i0 * L + j0, L, q + i0 * ld_q, ld_q, kt + j0, Lp, dh, L - j0);
}

// exp(x) for x <= 0 (softmax's x − max): x = n·ln2 + r with n = round(x/ln2), |r| <= ln2/2;
// e^r by its Taylor series to r⁷ (truncation < 4e-9 relative), times 2ⁿ by vscalefps, which
// also handles underflow. ln2 is split in two (Cody–Waite) so that r stays exact. Below -104
// exp underflows to 0 in f32; the clamp keeps −∞ from turning into NaN, and a NaN passes
// through it (vmaxps returns its second operand when one is NaN). Measured against double exp
// over [-110, 0]: max relative error 7.7e-8 (Eigen's pexp, used before: 2.9e-7).
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// Softmax of rows [i0, i1) of S [·, L] in place: exp(x − max) by exp_nonpositive, then either
// normalised (the probabilities are kept or dropped out) or left unnormalised with 1/sum in
// inv_sum[i − i0], for the context product to apply to its output.
void softmax_rows(float* S, int64_t L, int64_t i0, int64_t i1, float* inv_sum) {
  for (int64_t i = i0; i < i1; ++i) {
    float* row = S + i * L;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < L; j += 16)
      mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask(L - j), row + j));
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < L; j += 16) {
      const __mmask16 t = tail_mask(L - j);
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, row + j), m));
      sum = _mm512_mask_add_ps(sum, t, sum, e);
      _mm512_mask_storeu_ps(row + j, t, e);
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(sum);
    if (inv_sum) {
      inv_sum[i - i0] = inv;
    } else {
      const __m512 v = _mm512_set1_ps(inv);
      for (int64_t j = 0; j < L; j += 16) {
        const __mmask16 t = tail_mask(L - j);
        _mm512_mask_storeu_ps(row + j, t, _mm512_mul_ps(_mm512_maskz_loadu_ps(t, row + j), v));
      }
    }
  }
}

// Rows i0..i0+R of out[L, dh] (row stride ld_out) = P[L, L] · V[L, dh] (row stride ld_v), each
// output row times row_scale[r] when given.
template <int R>
void context_rows(float* out, int64_t ld_out, const float* P, const float* v, int64_t ld_v, int64_t L, int64_t dh,
                  int64_t i0, const float* row_scale, bool accumulate = false) {
  int64_t c0 = 0;
  for (; c0 + 64 <= dh; c0 += 64)
    block_product<R, 4>(out + i0 * ld_out + c0, ld_out, P + i0 * L, L, v + c0, ld_v, L, 64, row_scale, accumulate);
  for (; c0 < dh; c0 += 16)
    block_product<R, 1>(out + i0 * ld_out + c0, ld_out, P + i0 * L, L, v + c0, ld_v, L, 16, row_scale, accumulate);
}

// out[L, dh] (row stride ld_out) += P[L, L] · V[L, dh] (row stride ld_v), all rows.
void accumulate_product(float* out, int64_t ld_out, const float* P, const float* v, int64_t ld_v, int64_t L,
                        int64_t dh) {
  constexpr int kRows = 6;
  int64_t i0 = 0;
  for (; i0 + kRows <= L; i0 += kRows) context_rows<kRows>(out, ld_out, P, v, ld_v, L, dh, i0, nullptr, true);
  with_rows<kRows>(L - i0, [&](auto rows) {
    context_rows<decltype(rows)::value>(out, ld_out, P, v, ld_v, L, dh, i0, nullptr, true);
  });
}

// One (sequence, head): P = softmax(Q·Kᵀ·scale) [L, L], out = (P ⊙ keep)·V. Rows go through in
// blocks of 24 (three score blocks of 8, four context blocks of 6), so that a block's scores are
// still in L1 for its softmax and context. kt: dh·Lp floats of scratch; dropped: L² floats when
// keep is given.
void attention_head(float* out, int64_t ld_out, float* P, const float* q, int64_t ld_q, const float* k, int64_t ld_k,
                    const float* v, int64_t ld_v, int64_t L, int64_t dh, float scale, const float* keep,
                    float* dropped, float* kt, bool keep_probs) {
  const int64_t Lp = (L + 15) / 16 * 16;
  transpose(kt, Lp, k, ld_k, L, dh, Lp, scale);  // kt = scale · Kᵀ [dh, Lp]
  // Normalised probabilities are needed when they are kept or dropped out; otherwise the 1/sum
  // is folded into the context rows.
  const bool normalise = keep_probs || keep;
  constexpr int kScoreRows = 8, kContextRows = 6, kBlock = 24;
  float inv_sum[kBlock];
  for (int64_t b0 = 0; b0 < L; b0 += kBlock) {
    const int64_t b1 = std::min(L, b0 + kBlock);
    int64_t i0 = b0;
    for (; i0 + kScoreRows <= b1; i0 += kScoreRows) scores_rows<kScoreRows>(P, q, ld_q, kt, Lp, L, dh, i0);
    with_rows<kScoreRows>(b1 - i0, [&](auto rows) { scores_rows<decltype(rows)::value>(P, q, ld_q, kt, Lp, L, dh, i0); });
    softmax_rows(P, L, b0, b1, normalise ? nullptr : inv_sum);
    const float* weights = P;
    if (keep) {
      for (int64_t j = b0 * L; j < b1 * L; ++j) dropped[j] = P[j] * keep[j];
      weights = dropped;
    }
    i0 = b0;
    auto row_scale = [&] { return normalise ? nullptr : inv_sum + (i0 - b0); };
    for (; i0 + kContextRows <= b1; i0 += kContextRows)
      context_rows<kContextRows>(out, ld_out, weights, v, ld_v, L, dh, i0, row_scale());
    with_rows<kContextRows>(b1 - i0, [&](auto rows) {
      context_rows<decltype(rows)::value>(out, ld_out, weights, v, ld_v, L, dh, i0, row_scale());
    });
  }
}

// Gradients of one (sequence, head) from its kept probabilities P [L, L] and dctx [L, dh]:
//   dV += (P⊙keep)ᵀ·dctx,  dP = (dctx·Vᵀ)⊙keep,  dS = P⊙(dP − rowsum(dP⊙P))/√d,
//   dQ += dS·K,  dK += dSᵀ·Q.
// The transposed operands (P⊙keep, dS, V) are written out first, so that all four products run
// on the forward's register-blocked kernels. Scratch: 3·L² + dh·Lp floats.
void attention_head_backward(float* dq, float* dk, float* dv, const float* g, const float* q, const float* k,
                             const float* v, int64_t ld, const float* P, const float* keep, int64_t L, int64_t dh,
                             float scale, float* scratch) {
  const int64_t Lp = (L + 15) / 16 * 16;
  float* pt = scratch;          // (P⊙keep)ᵀ, then dSᵀ
  float* dp = pt + L * L;       // dP, then dS
  float* weights = dp + L * L;  // P⊙keep
  float* vt = weights + L * L;  // Vᵀ [dh, Lp]
  const float* w = P;
  if (keep) {
    for (int64_t j = 0; j < L * L; ++j) weights[j] = P[j] * keep[j];
    w = weights;
  }
  transpose(pt, L, w, L, L, L, L);
  accumulate_product(dv, ld, pt, g, ld, L, dh);
  transpose(vt, Lp, v, ld, L, dh, Lp);
  constexpr int kRows = 8;
  int64_t i0 = 0;
  for (; i0 + kRows <= L; i0 += kRows) scores_rows<kRows>(dp, g, ld, vt, Lp, L, dh, i0);
  with_rows<kRows>(L - i0, [&](auto rows) { scores_rows<decltype(rows)::value>(dp, g, ld, vt, Lp, L, dh, i0); });
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < L; ++i) {
    float* d = dp + i * L;
    const float* p = P + i * L;
    const float* kp = keep ? keep + i * L : nullptr;
    __m512 dot = _mm512_setzero_ps();
    for (int64_t j = 0; j < L; j += 16) {
      const __mmask16 t = tail_mask(L - j);
      __m512 x = _mm512_maskz_loadu_ps(t, d + j);
      if (kp) x = _mm512_mul_ps(x, _mm512_maskz_loadu_ps(t, kp + j));
      _mm512_mask_storeu_ps(d + j, t, x);
      dot = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(t, p + j), dot);
    }
    const __m512 sum = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
    for (int64_t j = 0; j < L; j += 16) {
      const __mmask16 t = tail_mask(L - j);
      const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(t, d + j), sum);
      _mm512_mask_storeu_ps(d + j, t, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(t, p + j), x), s));
    }
  }
  accumulate_product(dq, ld, dp, k, ld, L, dh);
  transpose(pt, L, dp, L, L, L, L);
  accumulate_product(dk, ld, pt, q, ld, L, dh);
}

constexpr bool kHaveAttentionKernels = true;
#else
constexpr bool kHaveAttentionKernels = false;
void attention_head(float*, int64_t, float*, const float*, int64_t, const float*, int64_t, const float*, int64_t,
                    int64_t, int64_t, float, const float*, float*, float*, bool) {}
void attention_head_backward(float*, float*, float*, const float*, const float*, const float*, const float*, int64_t,
                             const float*, const float*, int64_t, int64_t, float, float*) {}
#endif

std::atomic<bool> g_attention_kernels{true};

}  // namespace

bool attention_kernels_available() { return kHaveAttentionKernels; }
void set_attention_kernels(bool on) { g_attention_kernels = on; }

int64_t attention_probs_size(const int32_t* offsets, int64_t num_seqs, int64_t heads) {
  return probs_offsets(offsets, num_seqs, heads).back();
}

void attention_forward(float* ctx, const float* q, int64_t ld_q, const float* k, int64_t ld_k, const float* v,
                       int64_t ld_v, const int32_t* offsets, int64_t num_seqs, int64_t heads, int64_t head_dim,
                       float* probs, const float* keep) {
  const int64_t W = heads * head_dim;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const std::vector<int64_t> pstart = probs_offsets(offsets, num_seqs, heads);
  const bool fast = kHaveAttentionKernels && head_dim % 16 == 0 && g_attention_kernels;
  // One task per (sequence, head): each is independent and touches only its own ctx columns.
#pragma omp parallel
  {
    // Per-thread L×L buffers when probs are not kept; 64-byte aligned so that the vectorised
    // softmax needs no scalar head. Kept by each (pooled) OpenMP thread between calls: allocating
    // and zero-filling them anew was 2% of a bert-tiny forward pass.
    static thread_local std::vector<float> scratch_storage;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < num_seqs * heads; ++task) {
      const int64_t s = task / heads, h = task % heads;
      const int64_t begin = offsets[s], L = offsets[s + 1] - offsets[s];
      if (L == 0) continue;
      Rows qh(q + begin * ld_q + h * head_dim, L, head_dim, Eigen::OuterStride<>(ld_q));
      Rows kh(k + begin * ld_k + h * head_dim, L, head_dim, Eigen::OuterStride<>(ld_k));
      Rows vh(v + begin * ld_v + h * head_dim, L, head_dim, Eigen::OuterStride<>(ld_v));
      const int64_t at = pstart[size_t(s)] + h * L * L;
      // Probabilities go to `probs` when kept for backward, else to scratch; the dropped copy
      // (training) always to scratch, and after it the kernels' scaled Kᵀ.
      const int64_t kt_size = fast ? head_dim * ((L + 15) / 16 * 16) : 0;
      const size_t need = size_t((probs ? 0 : L * L) + (keep ? L * L : 0) + kt_size) + 16;
      if (scratch_storage.size() < need) scratch_storage.resize(need);
      float* scratch = scratch_storage.data() + (16 - (reinterpret_cast<uintptr_t>(scratch_storage.data()) / 4) % 16) % 16;
      float* p = probs ? probs + at : scratch;
      float* dropped = keep ? scratch + (probs ? 0 : L * L) : nullptr;
      float* kt = scratch + (probs ? 0 : L * L) + (keep ? L * L : 0);
      float* out = ctx + begin * W + h * head_dim;
      if (fast) {
        attention_head(out, W, p, q + begin * ld_q + h * head_dim, ld_q, k + begin * ld_k + h * head_dim, ld_k,
                       v + begin * ld_v + h * head_dim, ld_v, L, head_dim, scale, keep ? keep + at : nullptr, dropped,
                       kt, probs != nullptr);
        continue;
      }
      Square pm(p, L, L);
      pm.noalias() = (qh * scale) * kh.transpose();
      softmax_forward(p, L, L);
      if (keep) Square(dropped, L, L) = pm.cwiseProduct(ConstSquare(keep + at, L, L));
      RowsOut(out, L, head_dim, Eigen::OuterStride<>(W)).noalias() = ConstSquare(keep ? dropped : p, L, L) * vh;
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dctx, const float* q, const float* k,
                        const float* v, const float* probs, const float* keep, const int32_t* offsets,
                        int64_t num_seqs, int64_t heads, int64_t head_dim) {
  const int64_t W = heads * head_dim;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const std::vector<int64_t> pstart = probs_offsets(offsets, num_seqs, heads);
  const bool fast = kHaveAttentionKernels && head_dim % 16 == 0 && g_attention_kernels;
#pragma omp parallel
  {
    static thread_local std::vector<float> buf;  // as scratch_storage above
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < num_seqs * heads; ++task) {
      const int64_t s = task / heads, h = task % heads;
      const int64_t begin = offsets[s], L = offsets[s + 1] - offsets[s];
      if (L == 0) continue;
      const int64_t col = begin * W + h * head_dim;
      const int64_t at = pstart[size_t(s)] + h * L * L;
      if (fast) {
        const size_t need = size_t(3 * L * L + head_dim * ((L + 15) / 16 * 16));
        if (buf.size() < need) buf.resize(need);
        attention_head_backward(dq + col, dk + col, dv + col, dctx + col, q + col, k + col, v + col, W, probs + at,
                                keep ? keep + at : nullptr, L, head_dim, scale, buf.data());
        continue;
      }
      const Eigen::OuterStride<> st(W);
      Rows qh(q + col, L, head_dim, st), kh(k + col, L, head_dim, st), vh(v + col, L, head_dim, st);
      Rows g(dctx + col, L, head_dim, st);
      ConstSquare p(probs + at, L, L);
      if (buf.size() < size_t(2 * L * L)) buf.resize(size_t(2 * L * L));
      Square dp(buf.data(), L, L), pd(buf.data() + L * L, L, L);
      if (keep) pd = p.cwiseProduct(ConstSquare(keep + at, L, L));
      else pd = p;
      RowsOut(dv + col, L, head_dim, st).noalias() += pd.transpose() * g;  // dV += (P⊙keep)ᵀ·dctx
      dp.noalias() = g * vh.transpose();                                  // d(P⊙keep)
      if (keep) dp = dp.cwiseProduct(ConstSquare(keep + at, L, L));
      // Softmax backward: dS = P ⊙ (dP − rowsum(dP ⊙ P)); fold in the 1/√d of the scores.
      for (int64_t i = 0; i < L; ++i) {
        const float dot = dp.row(i).dot(p.row(i));
        dp.row(i) = (p.row(i).array() * (dp.row(i).array() - dot) * scale).matrix();
      }
      RowsOut(dq + col, L, head_dim, st).noalias() += dp * kh;
      RowsOut(dk + col, L, head_dim, st).noalias() += dp.transpose() * qh;
    }
  }
}

Var attention(const Var& q, const Var& k, const Var& v, const std::vector<int32_t>& offsets, int64_t heads, float p,
              bool train, Rng* rng) {
  const int64_t T = q.dim(0), W = q.dim(1);
  MB_CHECK(k.shape() == q.shape() && v.shape() == q.shape(), "attention: q, k and v shapes differ");
  MB_CHECK(heads > 0 && W % heads == 0, "attention: width " + std::to_string(W) + " is not a multiple of the head count");
  MB_CHECK(offsets.back() == T, "attention: offsets do not cover the tokens");
  const int64_t n = int64_t(offsets.size()) - 1, dh = W / heads;
  const bool rec = needs_grad({&q, &k, &v});
  const bool drop = train && p > 0.0f;
  MB_CHECK(!drop || rng, "attention: dropout needs a random generator");
  Tensor probs, keep;
  if (rec || drop) probs = Tensor::empty({attention_probs_size(offsets.data(), n, heads)});
  if (drop) {
    keep = Tensor::empty(probs.shape());
    fill_dropout_mask(keep.f32(), keep.numel(), p, *rng);
  }
  Var out = make_output(Tensor::empty({T, W}), rec);
  attention_forward(out.mutable_data(), q.data(), W, k.data(), W, v.data(), W, offsets.data(), n, heads, dh,
                    probs.defined() ? probs.f32() : nullptr, drop ? keep.f32() : nullptr);
  if (rec)
    record_backward([q, k, v, out, offsets, heads, dh, n, probs, keep, drop] {
      if (!out.has_grad()) return;
      // Each input may or may not need its gradient; scratch stands in for the ones that don't.
      Tensor scratch;
      auto grad_or_scratch = [&](const Var& x) -> float* {
        if (x.requires_grad()) return x.grad().f32();
        if (!scratch.defined()) scratch = Tensor::zeros(x.shape());
        return scratch.f32();
      };
      float *gq = grad_or_scratch(q), *gk = grad_or_scratch(k), *gv = grad_or_scratch(v);
      attention_backward(gq, gk, gv, out.grad().f32(), q.data(), k.data(), v.data(), probs.f32(),
                         drop ? keep.f32() : nullptr, offsets.data(), n, heads, dh);
    });
  return out;
}

Tensor attention_fused_qkv(const Tensor& qkv, const std::vector<int32_t>& offsets, int64_t heads, bool swap_qk) {
  const int64_t T = qkv.dim(0), W3 = qkv.dim(1), W = W3 / 3;
  MB_CHECK(W3 % 3 == 0 && heads > 0 && W % heads == 0, "attention_fused_qkv: width is not 3 × heads × head size");
  MB_CHECK(offsets.back() == T, "attention_fused_qkv: offsets do not cover the tokens");
  const float* first = qkv.f32();
  const float* second = first + W;
  const float* q = swap_qk ? second : first;
  const float* k = swap_qk ? first : second;
  Tensor out = Tensor::empty({T, W});
  attention_forward(out.f32(), q, W3, k, W3, first + 2 * W, W3, offsets.data(), int64_t(offsets.size()) - 1, heads,
                    W / heads, nullptr, nullptr);
  return out;
}

}  // namespace mb
