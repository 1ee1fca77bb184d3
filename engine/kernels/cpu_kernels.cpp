// The engine's hand-written SIMD kernels, written once on engine/kernels/simd.h and compiled once
// per CPU level (CMakeLists.txt: MB_KERNEL_NS, MB_KERNEL_LEVEL and that level's -m flags). The
// table at the end is what engine/cpu.cpp hands out (engine/cpu_kernels.h).
//
// Nothing here may come from a template or inline function outside this file's own namespaces
// (no Eigen, no std:: algorithms or containers): the linker keeps one copy of such a function for
// the whole program, and the copy it kept could be one compiled for a level this CPU lacks. The
// test kernel_objects_self_contained checks each level's object for such (weak) symbols.
#include "engine/cpu_kernels.h"
#include "engine/kernels/simd.h"

#ifndef MB_KERNEL_LEVEL
#error "MB_KERNEL_LEVEL (0 baseline, 1 avx2, 2 avx512) must be defined by the build"
#endif

namespace mb {
namespace MB_KERNEL_NS {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Register blocking of the two per-head products: R rows of the output by V vectors of columns
// stay in registers (R·V accumulators, V loads of the streamed operand, one broadcast), within
// the 32 vector registers of AVX-512 and NEON or the 16 of AVX2 and SSE2.
#if MB_SIMD_AVX512 || MB_SIMD_NEON
constexpr int kScoreRows = 8, kScoreVecs = 2, kContextRows = 6, kContextVecs = 4;
#elif MB_SIMD_AVX2
constexpr int kScoreRows = 6, kScoreVecs = 2, kContextRows = 6, kContextVecs = 2;
#else
constexpr int kScoreRows = 4, kScoreVecs = 2, kContextRows = 4, kContextVecs = 2;
#endif
// Rows per softmax block: a block's scores are still in L1 for its softmax and context product.
constexpr int kBlock = 24;

// A compile-time row count (this file's own, see the header comment).
template <int N>
struct Rows {
  static constexpr int value = N;
};

// The last rows of a block-of-R loop: f(Rows<rows>) for 0 < rows < R, so that the kernel's row
// count stays a compile-time constant (registers, unrolled loops).
template <int R, class F>
void with_rows(int64_t rows, F&& f) {
  if constexpr (R > 1) {
    if (rows == R - 1) f(Rows<R - 1>{});
    else with_rows<R - 1>(rows, f);
  }
}

// Eigen's general product packs both operands and blocks for caches on every call; at attention's
// sizes (128 × 128 × 64 per head) that held it to ~80 GFLOP/s a core (AVX-512). This kernel keeps a
// block of output rows in registers and streams the other operand once per block:
// C[R, kLanes·V] = A[R, K] · B[K, kLanes·V] (row strides lda, ldb, ldc) with the output block in
// registers: per k, V vector loads of B and R broadcasts of A feed R·V FMAs. The first `cols`
// columns of each output row are stored (B may be padded past them), or added to C with
// `accumulate`; each row times row_scale[r] when given.
template <int R, int V>
void block_product(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t K,
                   int64_t cols, const float* row_scale, bool accumulate) {
  vf acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < V; ++j) acc[r][j] = vzero();
  for (int64_t k = 0; k < K; ++k) {
    vf bv[V];
    for (int j = 0; j < V; ++j) bv[j] = vload(b + k * ldb + kLanes * j);
    for (int r = 0; r < R; ++r) {
      const vf av = vset1(a[r * lda + k]);
      for (int j = 0; j < V; ++j) acc[r][j] = vfmadd(av, bv[j], acc[r][j]);
    }
  }
  if (row_scale)
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < V; ++j) acc[r][j] = vmul(acc[r][j], vset1(row_scale[r]));
  for (int j = 0; j < V; ++j) {
    const int64_t n = cols - kLanes * j;
    if (n <= 0) break;
    for (int r = 0; r < R; ++r) {
      float* at = c + r * ldc + kLanes * j;
      if (n >= kLanes) vstore(at, accumulate ? vadd(vload(at), acc[r][j]) : acc[r][j]);
      else vstore_part(at, accumulate ? vadd(vload_part(at, n), acc[r][j]) : acc[r][j], n);
    }
  }
}

// out[cols, padded] (row stride ld_out) = scale · a[rows, cols]ᵀ (row stride ld_a), zero in the
// columns from rows to padded (≥ rows: an operand padded for the kernels), in kLanes² blocks
// transposed in registers.
void transpose(float* out, int64_t ld_out, const float* a, int64_t ld_a, int64_t rows, int64_t cols, int64_t padded,
               float scale) {
  const vf s = vset1(scale);
  for (int64_t i0 = 0; i0 < padded; i0 += kLanes) {
    for (int64_t j0 = 0; j0 < cols; j0 += kLanes) {
      vf r[kLanes];
      for (int64_t i = 0; i < kLanes; ++i)
        r[i] = i0 + i < rows ? vload_part(a + (i0 + i) * ld_a + j0, cols - j0) : vzero();
      vtranspose(r);
      for (int64_t c = 0; c < kLanes && j0 + c < cols; ++c)
        vstore_part(out + (j0 + c) * ld_out + i0, vmul(r[c], s), padded - i0);
    }
  }
}

// Rows i0..i0+R of S[L, L] = Q · kt, kt = scale · Kᵀ [dh, ·] with row stride ld_kt, its columns
// zero from L to round_up(L, kLanes).
template <int R>
void scores_rows(float* S, const float* q, int64_t ld_q, const float* kt, int64_t ld_kt, int64_t L, int64_t dh,
                 int64_t i0) {
  constexpr int64_t kWide = kScoreVecs * kLanes;
  const int64_t Lv = round_up(L, kLanes);
  int64_t j0 = 0;
  for (; j0 + kWide <= Lv; j0 += kWide)
    block_product<R, kScoreVecs>(S + i0 * L + j0, L, q + i0 * ld_q, ld_q, kt + j0, ld_kt, dh, imin(kWide, L - j0),
                                 nullptr, false);
  for (; j0 < Lv; j0 += kLanes)
    block_product<R, 1>(S + i0 * L + j0, L, q + i0 * ld_q, ld_q, kt + j0, ld_kt, dh, L - j0, nullptr, false);
}

// exp(x − max) of rows [i0, i1) of S [·, L] in place, unnormalised, with 1/sum in inv_sum[i − i0].
void softmax_rows(float* S, int64_t L, int64_t i0, int64_t i1, float* inv_sum) {
  const float kNegInf = -__builtin_inff();
  for (int64_t i = i0; i < i1; ++i) {
    float* row = S + i * L;
    vf mx = vset1(kNegInf);
    int64_t j = 0;
    for (; j + kLanes <= L; j += kLanes) mx = vmax(mx, vload(row + j));
    if (j < L) mx = vmax(mx, vload_part_or(row + j, L - j, kNegInf));
    const vf m = vset1(vreduce_max(mx));
    vf sum = vzero();
    for (j = 0; j + kLanes <= L; j += kLanes) {
      const vf e = vexp_nonpositive(vsub(vload(row + j), m));
      sum = vadd(sum, e);
      vstore(row + j, e);
    }
    if (j < L) {
      const vf e = vkeep_first(vexp_nonpositive(vsub(vload_part(row + j, L - j), m)), L - j);
      sum = vadd(sum, e);
      vstore_part(row + j, e, L - j);
    }
    inv_sum[i - i0] = 1.0f / vreduce_add(sum);
  }
}

// Rows [i0, i1) of S [·, L] times inv_sum[i − i0]: the probabilities themselves.
void scale_rows(float* S, int64_t L, int64_t i0, int64_t i1, const float* inv_sum) {
  for (int64_t i = i0; i < i1; ++i) {
    float* row = S + i * L;
    const vf v = vset1(inv_sum[i - i0]);
    int64_t j = 0;
    for (; j + kLanes <= L; j += kLanes) vstore(row + j, vmul(vload(row + j), v));
    if (j < L) vstore_part(row + j, vmul(vload_part(row + j, L - j), v), L - j);
  }
}

// Rows i0..i0+R of out[L, dh] (row stride ld_out) = P[L, L] · V[L, dh] (row stride ld_v), each
// output row times row_scale[r] when given, or added to out with `accumulate`.
template <int R>
void context_rows(float* out, int64_t ld_out, const float* P, const float* v, int64_t ld_v, int64_t L, int64_t dh,
                  int64_t i0, const float* row_scale, bool accumulate) {
  constexpr int64_t kWide = kContextVecs * kLanes;
  int64_t c0 = 0;
  for (; c0 + kWide <= dh; c0 += kWide)
    block_product<R, kContextVecs>(out + i0 * ld_out + c0, ld_out, P + i0 * L, L, v + c0, ld_v, L, kWide, row_scale,
                                   accumulate);
  for (; c0 < dh; c0 += kLanes)
    block_product<R, 1>(out + i0 * ld_out + c0, ld_out, P + i0 * L, L, v + c0, ld_v, L, kLanes, row_scale, accumulate);
}

// out[L, dh] (row stride ld_out) += P[L, L] · V[L, dh] (row stride ld_v), all rows.
void accumulate_product(float* out, int64_t ld_out, const float* P, const float* v, int64_t ld_v, int64_t L,
                        int64_t dh) {
  int64_t i0 = 0;
  for (; i0 + kContextRows <= L; i0 += kContextRows)
    context_rows<kContextRows>(out, ld_out, P, v, ld_v, L, dh, i0, nullptr, true);
  with_rows<kContextRows>(L - i0, [&](auto rows) {
    context_rows<decltype(rows)::value>(out, ld_out, P, v, ld_v, L, dh, i0, nullptr, true);
  });
}

void attention_head(float* out, int64_t ld_out, float* P, const float* q, int64_t ld_q, const float* k, int64_t ld_k,
                    const float* v, int64_t ld_v, int64_t L, int64_t dh, float scale, const float* keep,
                    float* dropped, float* kt, bool keep_probs) {
  const int64_t ld_kt = attention_pad(L);
  transpose(kt, ld_kt, k, ld_k, L, dh, round_up(L, kLanes), scale);  // kt = scale · Kᵀ [dh, ·]
  // The context is (e ⊙ keep)·V with each row times 1/sum, e = exp(x − max) unnormalised, so that
  // one pass over the block suffices; the kept probabilities are normalised after it. Inference and
  // training thus compute the same context, to the bit.
  float inv_sum[kBlock];
  for (int64_t b0 = 0; b0 < L; b0 += kBlock) {
    const int64_t b1 = imin(L, b0 + kBlock);
    int64_t i0 = b0;
    for (; i0 + kScoreRows <= b1; i0 += kScoreRows) scores_rows<kScoreRows>(P, q, ld_q, kt, ld_kt, L, dh, i0);
    with_rows<kScoreRows>(b1 - i0, [&](auto rows) {
      scores_rows<decltype(rows)::value>(P, q, ld_q, kt, ld_kt, L, dh, i0);
    });
    softmax_rows(P, L, b0, b1, inv_sum);
    const float* weights = P;
    if (keep) {
      for (int64_t j = b0 * L; j < b1 * L; ++j) dropped[j] = P[j] * keep[j];
      weights = dropped;
    }
    for (i0 = b0; i0 + kContextRows <= b1; i0 += kContextRows)
      context_rows<kContextRows>(out, ld_out, weights, v, ld_v, L, dh, i0, inv_sum + (i0 - b0), false);
    with_rows<kContextRows>(b1 - i0, [&](auto rows) {
      context_rows<decltype(rows)::value>(out, ld_out, weights, v, ld_v, L, dh, i0, inv_sum + (i0 - b0), false);
    });
    if (keep_probs) scale_rows(P, L, b0, b1, inv_sum);
  }
}

// The transposed operands (P⊙keep, dS, V) are written out first, so that all four products run
// on the forward's register-blocked kernels.
void attention_head_backward(float* dq, float* dk, float* dv, const float* g, const float* q, const float* k,
                             const float* v, int64_t ld, const float* P, const float* keep, int64_t L, int64_t dh,
                             float scale, float* scratch) {
  const int64_t ld_vt = attention_pad(L);
  float* pt = scratch;          // (P⊙keep)ᵀ, then dSᵀ
  float* dp = pt + L * L;       // dP, then dS
  float* weights = dp + L * L;  // P⊙keep
  float* vt = weights + L * L;  // Vᵀ [dh, ld_vt]
  const float* w = P;
  if (keep) {
    for (int64_t j = 0; j < L * L; ++j) weights[j] = P[j] * keep[j];
    w = weights;
  }
  transpose(pt, L, w, L, L, L, L, 1.0f);
  accumulate_product(dv, ld, pt, g, ld, L, dh);
  transpose(vt, ld_vt, v, ld, L, dh, round_up(L, kLanes), 1.0f);
  int64_t i0 = 0;
  for (; i0 + kScoreRows <= L; i0 += kScoreRows) scores_rows<kScoreRows>(dp, g, ld, vt, ld_vt, L, dh, i0);
  with_rows<kScoreRows>(L - i0, [&](auto rows) {
    scores_rows<decltype(rows)::value>(dp, g, ld, vt, ld_vt, L, dh, i0);
  });
  // dP ⊙ keep, then dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale, row by row.
  const vf s = vset1(scale);
  for (int64_t i = 0; i < L; ++i) {
    float* d = dp + i * L;
    const float* p = P + i * L;
    const float* kp = keep ? keep + i * L : nullptr;
    vf dot = vzero();
    for (int64_t j = 0; j < L; j += kLanes) {
      const int64_t n = L - j;  // partial loads are zero past the row
      vf x = vload_part(d + j, n);
      if (kp) x = vmul(x, vload_part(kp + j, n));
      vstore_part(d + j, x, n);
      dot = vfmadd(x, vload_part(p + j, n), dot);
    }
    const vf sum = vset1(vreduce_add(dot));
    for (int64_t j = 0; j < L; j += kLanes) {
      const int64_t n = L - j;
      const vf x = vsub(vload_part(d + j, n), sum);
      vstore_part(d + j, vmul(vmul(vload_part(p + j, n), x), s), n);
    }
  }
  accumulate_product(dq, ld, dp, k, ld, L, dh);
  transpose(pt, L, dp, L, L, L, L, 1.0f);
  accumulate_product(dk, ld, pt, q, ld, L, dh);
}

// f32 → bfloat16 rounded to nearest even, NaN kept quiet; written without branches so that the
// loop vectorises at every level.
inline uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;
  return uint16_t((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = to_bf16(src[i]);
}

#if MB_SIMD_AVX512
// The CPU's own conversion (the same rounding, NaN kept), for the AVX-512 CPUs that have
// AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4/5); chosen at start-up (kernel_table).
__attribute__((target("avx512bf16"))) void f32_to_bf16_native(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<const __m256i&>(h));
  }
  for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}
#endif

float abs_max(const float* x, int64_t n) {
  vf m0 = vzero(), m1 = vzero(), m2 = vzero(), m3 = vzero();  // four chains, for the latency
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    m0 = vmax(m0, vabs(vload(x + i)));
    m1 = vmax(m1, vabs(vload(x + i + kLanes)));
    m2 = vmax(m2, vabs(vload(x + i + 2 * kLanes)));
    m3 = vmax(m3, vabs(vload(x + i + 3 * kLanes)));
  }
  for (; i + kLanes <= n; i += kLanes) m0 = vmax(m0, vabs(vload(x + i)));
  float m = vreduce_max(vmax(vmax(m0, m1), vmax(m2, m3)));
  for (; i < n; ++i) {
    const float a = x[i] < 0 ? -x[i] : x[i];
    m = a > m ? a : m;
  }
  return m;
}

void quantize_s8(const float* x, int64_t n, float inv_scale, int8_t* out) {
  // Round to nearest even as lrint does, but vectorised: adding and subtracting 1.5·2²³ leaves
  // the rounded value of any |y| <= 127 (the build never reassociates or contracts float maths).
  constexpr float kRound = 12582912.0f;
  for (int64_t i = 0; i < n; ++i) out[i] = int8_t(int32_t((x[i] * inv_scale + kRound) - kRound));
}

// Exact GELU, x·Φ(x), in place; and its backward, dinp += dout·(Φ(x) + x·φ(x)).
void gelu(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const vf v = vload(x + i);
    vstore(x + i, vmul(v, vnormal_cdf(v)));
  }
  if (i < n) {
    const vf v = vload_part(x + i, n - i);
    vstore_part(x + i, vmul(v, vnormal_cdf(v)), n - i);
  }
}

inline vf gelu_slope(vf x) {  // Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π)
  const vf density = vmul(vset1(0.39894228040143268f), vexp_nonpositive(vmul(vset1(-0.5f), vmul(x, x))));
  return vfmadd(x, density, vnormal_cdf(x));
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vstore(dinp + i, vfmadd(vload(dout + i), gelu_slope(vload(inp + i)), vload(dinp + i)));
  if (i < n) {
    const int64_t m = n - i;
    vstore_part(dinp + i, vfmadd(vload_part(dout + i, m), gelu_slope(vload_part(inp + i, m)), vload_part(dinp + i, m)), m);
  }
}

// C[i, j] += Σ_t A[t, i] · B[t, j] in double (i < M, j < N; A [K, ·] and B [K, ·] row-major):
// K-prune's normal equations. A register tile of kGramRows rows of C by two vectors of columns,
// on GCC's generic vectors (lowered to the level's registers: 8 doubles in AVX-512, 4 in AVX2,
// 2 in SSE2 and NEON).
#if MB_SIMD_AVX512
constexpr int kGramLanes = 8, kGramRows = 8;
#elif MB_SIMD_AVX2
constexpr int kGramLanes = 4, kGramRows = 6;
#else
constexpr int kGramLanes = 2, kGramRows = 4;
#endif
constexpr int kGramCols = 2 * kGramLanes;
typedef double vd __attribute__((vector_size(8 * kGramLanes)));

// Splat and a·b + c, with the level's FMA (the build contracts nothing by itself).
#if MB_SIMD_AVX512 || MB_SIMD_AVX2
inline double sd_fmadd(double a, double b, double c) { return __builtin_fma(a, b, c); }  // one vfmadd
#else
inline double sd_fmadd(double a, double b, double c) { return a * b + c; }
#endif
#if MB_SIMD_AVX512
inline vd vd_splat(double x) { return vd(_mm512_set1_pd(x)); }
inline vd vd_fmadd(vd a, vd b, vd c) { return vd(_mm512_fmadd_pd(__m512d(a), __m512d(b), __m512d(c))); }
#elif MB_SIMD_AVX2
inline vd vd_splat(double x) { return vd(_mm256_set1_pd(x)); }
inline vd vd_fmadd(vd a, vd b, vd c) { return vd(_mm256_fmadd_pd(__m256d(a), __m256d(b), __m256d(c))); }
#else
inline vd vd_splat(double x) { return vd{x, x}; }
inline vd vd_fmadd(vd a, vd b, vd c) { return a * b + c; }
#endif

inline vd vd_load(const double* p) {
  vd v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void vd_store(double* p, vd v) { __builtin_memcpy(p, &v, sizeof v); }

void gram_f64(const double* A, int64_t lda, const double* B, int64_t ldb, int64_t K, int64_t M, int64_t N, double* C,
              int64_t ldc) {
  int64_t i0 = 0;
  for (; i0 + kGramRows <= M; i0 += kGramRows) {
    int64_t j0 = 0;
    for (; j0 + kGramCols <= N; j0 += kGramCols) {
      vd acc[kGramRows][2] = {};
      for (int64_t t = 0; t < K; ++t) {
        const double* a = A + t * lda + i0;
        const vd b0 = vd_load(B + t * ldb + j0), b1 = vd_load(B + t * ldb + j0 + kGramLanes);
        for (int r = 0; r < kGramRows; ++r) {
          const vd ar = vd_splat(a[r]);
          acc[r][0] = vd_fmadd(ar, b0, acc[r][0]);
          acc[r][1] = vd_fmadd(ar, b1, acc[r][1]);
        }
      }
      for (int r = 0; r < kGramRows; ++r) {
        double* c = C + (i0 + r) * ldc + j0;
        vd_store(c, vd_load(c) + acc[r][0]);
        vd_store(c + kGramLanes, vd_load(c + kGramLanes) + acc[r][1]);
      }
    }
    for (; j0 < N; ++j0)  // the last columns, one at a time, rounded as the tiles are
      for (int r = 0; r < kGramRows; ++r) {
        double s = 0;
        for (int64_t t = 0; t < K; ++t) s = sd_fmadd(A[t * lda + i0 + r], B[t * ldb + j0], s);
        C[(i0 + r) * ldc + j0] += s;
      }
  }
  for (; i0 < M; ++i0)  // the last rows, one at a time
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t t = 0; t < K; ++t) s = sd_fmadd(A[t * lda + i0], B[t * ldb + j], s);
      C[i0 * ldc + j] += s;
    }
}

// Dropout's keep scales from splitmix64 draws (engine/rng.h's Rng::mix, repeated here: an inline
// function of a shared header compiled at this level's flags could stand in for the baseline's
// copy at link time). The 64-bit multiplies vectorise as AVX-512DQ's vpmullq, and at AVX2 from
// 32-bit products (vpmuludq); the baseline keeps them scalar.
void dropout_mask(float* out, int64_t n, uint64_t z0, uint64_t below, float kept) {
  constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = z0 + uint64_t(i) * kGamma;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    out[i] = (z >> 11) < below ? 0.0f : kept;
  }
}

void adamw(float* __restrict w, float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
           const AdamWScalars& s) {
  const float grad_scale = s.grad_scale, decay = s.decay, b1 = s.b1, a1 = s.a1, b2 = s.b2, a2 = s.a2;
  const float neg_step = -s.step_size, bc2_sqrt = s.bc2_sqrt, eps = s.eps;
  for (int64_t j = 0; j < n; ++j) {
    const float gj = g[j] * grad_scale;  // as torch's clip_grad_norm_ leaves it (g·coef in float); × 1 is exact
    const float wj = w[j] * decay;
    const float mj = m[j] * b1 + a1 * gj;
    const float vj = v[j] * b2 + a2 * gj * gj;
    m[j] = mj;
    v[j] = vj;
    w[j] = wj + neg_step * (mj / (__builtin_sqrtf(vj) / bc2_sqrt + eps));
  }
  if (s.zero_grad) __builtin_memset(g, 0, size_t(n) * sizeof(float));
}

double sum_squares(const float* g, int64_t n) {
  double acc[32] = {};
  int64_t j = 0;
  for (; j + 32 <= n; j += 32)
    for (int l = 0; l < 32; ++l) {
      const double x = g[j + l];
      acc[l] += x * x;
    }
  for (; j < n; ++j) acc[0] += double(g[j]) * double(g[j]);
  double s = 0.0;
  for (double a : acc) s += a;
  return s;
}

#if MB_KERNEL_LEVEL == 2
constexpr const char* kName = "avx512";
#elif MB_KERNEL_LEVEL == 1
constexpr const char* kName = "avx2";
#elif MB_SIMD_NEON
constexpr const char* kName = "neon";
#else
constexpr const char* kName = "baseline";
#endif

}  // namespace

void packed_gemm_kernels(const CpuFeatures& cpu, PackedGemmKernel out[3]);  // engine/kernels/gemm_kernels.cpp

// Filled in by the caller's storage (engine/cpu.cpp, once per level): a function-local static here
// would bring the C++ runtime's guard and unwinding symbols into the object.
void kernel_table(const CpuFeatures& cpu, CpuKernels* t) {
  *t = CpuKernels{CpuLevel(MB_KERNEL_LEVEL), kName, kLanes, attention_head, attention_head_backward, f32_to_bf16,
                  abs_max, quantize_s8, gelu, gelu_backward, gram_f64, dropout_mask, adamw, sum_squares, {}};
#if MB_SIMD_AVX512
  if (cpu.avx512bf16) t->f32_to_bf16 = f32_to_bf16_native;
#endif
  packed_gemm_kernels(cpu, t->gemm);
}

}  // namespace MB_KERNEL_NS
}  // namespace mb
