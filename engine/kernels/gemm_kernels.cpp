// The packed GEMM's register-tile kernels (engine/cpu_kernels.h has the layouts), compiled once per
// CPU level like cpu_kernels.cpp and under the same rule: nothing from a template or inline
// function outside this file's namespaces.
//
// One tile is C[mr, nr] += A[mr, kc] · B[kc, nr] with the mr × nr outputs in registers (two
// vectors per row): per step of k, two vector loads of the B panel and one broadcast of A per row
// feed 2 · mr multiply-adds. The panel (kc × nr) stays in L1 while the tiles of a block of rows go
// by. What differs between precisions is only the step:
//   f32   one k: FMA;
//   bf16  with AVX512-BF16, two k: vdpbf16ps on the bf16 pairs as they are; elsewhere each B panel
//         widened to f32 once (exact) and the f32 step;
//   int8  four k: with VNNI, vpdpbusd (u8 · s8, so A is packed + 128 and the kernel subtracts
//         128 · Σ_k W at the end); with Arm's dot product, sdot; otherwise each B panel split once
//         into int16 pairs and pmaddwd. All exact in int32: |Σ| <= 127² · K stays far below 2³¹.
#include "engine/cpu.h"
#include "engine/cpu_kernels.h"
#include "engine/kernels/simd.h"

namespace mb {
namespace MB_KERNEL_NS {
namespace {

constexpr int kNr = 2 * kLanes;  // columns per panel

// Integer vectors of the same width as vf, for the int8 products and the bf16 widening.
inline int32_t load_i32(const void* p) {  // 4 bytes from anywhere (A's packed quads and pairs)
  int32_t x;
  std::memcpy(&x, p, 4);
  return x;
}
#if MB_SIMD_AVX512
using vi = __m512i;
inline vi iload(const void* p) { return _mm512_loadu_si512(p); }
inline vi ibcast(const void* p) { return _mm512_set1_epi32(load_i32(p)); }
inline vi izero() { return _mm512_setzero_si512(); }
inline vi iadd(vi a, vi b) { return _mm512_add_epi32(a, b); }
inline vi isub(vi a, vi b) { return _mm512_sub_epi32(a, b); }
inline vi imadd16(vi a, vi b) { return _mm512_madd_epi16(a, b); }
inline vi ieven8(vi x) { return _mm512_srai_epi16(_mm512_slli_epi16(x, 8), 8); }  // bytes 0, 2 of each lane as int16
inline vi iodd8(vi x) { return _mm512_srai_epi16(x, 8); }                        // bytes 1, 3
inline vf bf16_even(vi x) { return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)); }
inline vf bf16_odd(vi x) { return _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(int32_t(0xFFFF0000u)))); }
inline vf itof(vi x) { return _mm512_cvtepi32_ps(x); }
inline vf as_f(vi x) { return _mm512_castsi512_ps(x); }
inline vi as_i(vf x) { return _mm512_castps_si512(x); }
#elif MB_SIMD_AVX2
using vi = __m256i;
inline vi iload(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline vi ibcast(const void* p) { return _mm256_set1_epi32(load_i32(p)); }
inline vi izero() { return _mm256_setzero_si256(); }
inline vi iadd(vi a, vi b) { return _mm256_add_epi32(a, b); }
inline vi isub(vi a, vi b) { return _mm256_sub_epi32(a, b); }
inline vi imadd16(vi a, vi b) { return _mm256_madd_epi16(a, b); }
inline vi ieven8(vi x) { return _mm256_srai_epi16(_mm256_slli_epi16(x, 8), 8); }
inline vi iodd8(vi x) { return _mm256_srai_epi16(x, 8); }
inline vf bf16_even(vi x) { return _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)); }
inline vf bf16_odd(vi x) { return _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(int32_t(0xFFFF0000u)))); }
inline vf itof(vi x) { return _mm256_cvtepi32_ps(x); }
inline vf as_f(vi x) { return _mm256_castsi256_ps(x); }
inline vi as_i(vf x) { return _mm256_castps_si256(x); }
#elif MB_SIMD_SSE2
using vi = __m128i;
inline vi iload(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline vi ibcast(const void* p) { return _mm_set1_epi32(load_i32(p)); }
inline vi izero() { return _mm_setzero_si128(); }
inline vi iadd(vi a, vi b) { return _mm_add_epi32(a, b); }
inline vi isub(vi a, vi b) { return _mm_sub_epi32(a, b); }
inline vi imadd16(vi a, vi b) { return _mm_madd_epi16(a, b); }
inline vi ieven8(vi x) { return _mm_srai_epi16(_mm_slli_epi16(x, 8), 8); }
inline vi iodd8(vi x) { return _mm_srai_epi16(x, 8); }
inline vf bf16_even(vi x) { return _mm_castsi128_ps(_mm_slli_epi32(x, 16)); }
inline vf bf16_odd(vi x) { return _mm_castsi128_ps(_mm_and_si128(x, _mm_set1_epi32(int32_t(0xFFFF0000u)))); }
inline vf itof(vi x) { return _mm_cvtepi32_ps(x); }
inline vf as_f(vi x) { return _mm_castsi128_ps(x); }
inline vi as_i(vf x) { return _mm_castps_si128(x); }
#else  // NEON
using vi = int32x4_t;
inline vi iload(const void* p) { return vld1q_s32(static_cast<const int32_t*>(p)); }
inline vi izero() { return vdupq_n_s32(0); }
inline vi iadd(vi a, vi b) { return vaddq_s32(a, b); }
inline vi isub(vi a, vi b) { return vsubq_s32(a, b); }
inline vf bf16_even(vi x) { return vreinterpretq_f32_s32(vshlq_n_s32(x, 16)); }
inline vf bf16_odd(vi x) { return vreinterpretq_f32_s32(vandq_s32(x, vdupq_n_s32(int32_t(0xFFFF0000u)))); }
inline vf itof(vi x) { return vcvtq_f32_s32(x); }
inline vf as_f(vi x) { return vreinterpretq_f32_s32(x); }
inline vi as_i(vf x) { return vreinterpretq_s32_f32(x); }
#endif

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// n <= kLanes floats of p (the row's last columns when n < kLanes).
inline vf load_n(const float* p, int64_t n) { return n >= kLanes ? vload(p) : vload_part(p, n); }
inline void store_n(float* p, vf v, int64_t n) {
  if (n >= kLanes) vstore(p, v);
  else vstore_part(p, v, n);
}

// Writes a finished f32 tile (rows × cols of it): added to C unless this is K's first block, the
// bias added on its last.
template <int MR>
inline void store_f32(const GemmBlock& g, vf (&acc)[MR][2], float* c, int rows, int64_t cols, const float* bias) {
  // Conditions rather than early exits: loops of a constant count unroll fully, so that acc stays
  // in registers (an array GCC cannot unroll away goes to the stack, and the kernel runs at a third).
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v) {
      const int64_t n = cols - v * kLanes;
      if (r >= rows || n <= 0) continue;
      float* p = c + r * g.ldc + v * kLanes;
      vf x = acc[r][v];
      if (!g.first) x = vadd(x, load_n(p, n));
      if (g.last && bias) x = vadd(x, load_n(bias + v * kLanes, n));
      store_n(p, x, n);
    }
  }
}

// The same for int32 sums: kept as int32 in C's bytes until K's last block, then less comp, times
// scale, plus the bias.
template <int MR>
inline void store_s32(const GemmBlock& g, vi (&acc)[MR][2], float* c, int rows, int64_t cols, const float* bias,
                      const float* scale, const int32_t* comp) {
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v) {
      const int64_t n = cols - v * kLanes;
      if (r >= rows || n <= 0) continue;
      float* p = c + r * g.ldc + v * kLanes;
      vi x = acc[r][v];
      if (!g.first) x = iadd(x, as_i(load_n(p, n)));
      if (!g.last) {
        store_n(p, as_f(x), n);
        continue;
      }
      if (comp) x = isub(x, iload(comp + v * kLanes));
      vf y = vmul(itof(x), vload(scale + v * kLanes));
      if (bias) y = vadd(y, load_n(bias + v * kLanes, n));
      store_n(p, y, n);
    }
  }
}

// K per block for a panel of B of about 16 KiB (32 KiB at AVX-512's 32 columns): with A's tile it
// stays in L1 while the block's row tiles go by.
constexpr int64_t block_k(int bytes_per_value) { return (kNr >= 32 ? 32768 : 16384) / (kNr * bytes_per_value); }

// A kernel is a struct with kMr (rows per tile), kForm (how A is packed), kKc (K per block), a
// Panel (scratch, empty for most) with panel(), which returns the B panel the tiles read (the
// packed one as it is, or a copy prepared once in the scratch), and tile(g, a, b, c, rows, cols,
// col0), which computes one tile and stores it. block() walks the panels (outer: the panel stays in
// L1) and the row tiles (inner: A's block comes from L2).
struct AsPacked {
  struct Panel {};
  static const uint8_t* panel(const uint8_t* b, int64_t, Panel&) { return b; }
};

template <class Kernel>
void block(const GemmBlock& g) {
  constexpr int MR = Kernel::kMr;
  typename Kernel::Panel scratch;
  const int64_t tiles = (g.rows + MR - 1) / MR, panels = (g.cols + kNr - 1) / kNr;
  for (int64_t p = 0; p < panels; ++p) {
    const uint8_t* b = Kernel::panel(g.b + p * g.b_panel_bytes, g.kc, scratch);
    const int64_t cols = imin(kNr, g.cols - p * kNr);
    for (int64_t t = 0; t < tiles; ++t)
      Kernel::tile(g, g.a + t * g.a_tile_bytes, b, g.c + t * MR * g.ldc + p * kNr, int(imin(MR, g.rows - t * MR)),
                   cols, p * kNr);
  }
}

// Rows per tile: 2·MR accumulators, the B vectors and a broadcast within the 16 vector registers
// of AVX2 and SSE2 or the 32 of AVX-512 and NEON.
#if MB_SIMD_AVX512 || MB_SIMD_NEON
constexpr int kMrF32 = 12, kMrS8Pairs = 8;
#else
constexpr int kMrF32 = 6, kMrS8Pairs = 4;
#endif

struct F32Kernel : AsPacked {
  static constexpr int kMr = kMrF32;
  static constexpr PackForm kForm = PackForm::F32;
  static constexpr int64_t kKc = block_k(4);
  static void tile(const GemmBlock& g, const uint8_t* ap, const uint8_t* bp, float* c, int rows, int64_t cols,
                   int64_t col0) {
    const float* a = reinterpret_cast<const float*>(ap);
    const float* b = reinterpret_cast<const float*>(bp);
    vf acc[kMr][2];
#pragma GCC unroll 16
    for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = vzero();
    for (int64_t k = 0; k < g.kc; ++k, a += kMr, b += kNr) {
      const vf b0 = vload(b), b1 = vload(b + kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < kMr; ++r) {
        const vf x = vset1(a[r]);
        acc[r][0] = vfmadd(x, b0, acc[r][0]);
        acc[r][1] = vfmadd(x, b1, acc[r][1]);
      }
    }
    store_f32<kMr>(g, acc, c, rows, cols, g.bias ? g.bias + col0 : nullptr);
  }
};

// bf16 without the CPU's own bf16 products: each B panel is widened to f32 once (exact: a shift
// and a mask per pair of k) into a buffer that stays in L1, and the f32 kernel's tiles run on it.
// Widening inside the tile instead, on every tile, ran at 0.7× the f32 kernel (AVX2, Zen 3).
struct Bf16WidenKernel : F32Kernel {  // F32Kernel's tiles, on the widened panel
  static constexpr PackForm kForm = PackForm::Bf16AsF32;
  static constexpr int64_t kKc = 256;  // the widened panel is 8-32 KiB
  struct Panel {
    alignas(64) float v[kKc * kNr];
  };
  static const uint8_t* panel(const uint8_t* b, int64_t kc, Panel& out) {
    const uint32_t* pairs = reinterpret_cast<const uint32_t*>(b);
    for (int64_t k = 0; k < kc; k += 2, pairs += kNr)
      for (int v = 0; v < 2; ++v) {
        const vi x = iload(pairs + v * kLanes);
        vstore(out.v + k * kNr + v * kLanes, bf16_even(x));
        vstore(out.v + (k + 1) * kNr + v * kLanes, bf16_odd(x));
      }
    return reinterpret_cast<const uint8_t*>(out.v);
  }
};

#if !MB_SIMD_NEON
// int8 without a dot product instruction: pmaddwd on int16 pairs. Each B panel's quads are split
// once into int16 pairs (k, k+2) and (k+1, k+3) per lane by shifts, into a buffer that stays in L1
// (per quad: even of both vectors, then odd); A comes packed that way already ([kc/4][mr][2]).
// Splitting inside the tile instead, on every tile, ran 0.8× as fast (AVX2, Zen 3).
struct S8PairsKernel {
  static constexpr int kMr = kMrS8Pairs;
  static constexpr PackForm kForm = PackForm::S8Pairs16;
  static constexpr int64_t kKc = 512;  // the split panel is 16-32 KiB
  struct Panel {
    alignas(64) int16_t v[kKc * kNr];
  };
  static const uint8_t* panel(const uint8_t* quads, int64_t kc, Panel& out) {
    int16_t* o = out.v;
    for (int64_t k = 0; k < kc; k += 4, quads += 4 * kNr, o += 4 * kNr) {
      const vi x0 = iload(quads), x1 = iload(quads + 4 * kLanes);
      vstore(reinterpret_cast<float*>(o), as_f(ieven8(x0)));
      vstore(reinterpret_cast<float*>(o + 2 * kLanes), as_f(ieven8(x1)));
      vstore(reinterpret_cast<float*>(o + 4 * kLanes), as_f(iodd8(x0)));
      vstore(reinterpret_cast<float*>(o + 6 * kLanes), as_f(iodd8(x1)));
    }
    return reinterpret_cast<const uint8_t*>(out.v);
  }
  static void tile(const GemmBlock& g, const uint8_t* a, const uint8_t* bp, float* c, int rows, int64_t cols,
                   int64_t col0) {
    const int16_t* b = reinterpret_cast<const int16_t*>(bp);
    vi acc[kMr][2];
#pragma GCC unroll 16
    for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = izero();
    for (int64_t k = 0; k < g.kc; k += 4, a += 8 * kMr, b += 4 * kNr) {
      const vi e0 = iload(b), e1 = iload(b + 2 * kLanes), o0 = iload(b + 4 * kLanes), o1 = iload(b + 6 * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < kMr; ++r) {
        const vi ae = ibcast(a + 8 * r), ao = ibcast(a + 8 * r + 4);
        acc[r][0] = iadd(acc[r][0], iadd(imadd16(e0, ae), imadd16(o0, ao)));
        acc[r][1] = iadd(acc[r][1], iadd(imadd16(e1, ae), imadd16(o1, ao)));
      }
    }
    store_s32<kMr>(g, acc, c, rows, cols, g.bias ? g.bias + col0 : nullptr, g.scale + col0, nullptr);
  }
};
#endif

#if MB_SIMD_AVX512
// AVX512-BF16: vdpbf16ps takes both bf16 pairs as they are (A packed as pairs, [kc/2][mr]).
struct Bf16PairsKernel : AsPacked {
  static constexpr PackForm kForm = PackForm::Bf16Pairs;
  static constexpr int64_t kKc = block_k(2);
  static constexpr int kMr = 12;
  __attribute__((target("avx512bf16"))) static void tile(const GemmBlock& g, const uint8_t* a, const uint8_t* b,
                                                         float* c, int rows, int64_t cols, int64_t col0) {
    vf acc[kMr][2];
#pragma GCC unroll 16
    for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = vzero();
    for (int64_t k = 0; k < g.kc; k += 2, a += 4 * kMr, b += 4 * kNr) {
      const __m512bh b0 = (__m512bh)iload(b), b1 = (__m512bh)iload(b + 4 * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < kMr; ++r) {
        const __m512bh x = (__m512bh)ibcast(a + 4 * r);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
      }
    }
    store_f32<kMr>(g, acc, c, rows, cols, g.bias ? g.bias + col0 : nullptr);
  }
};

// AVX-512 VNNI: vpdpbusd multiplies A's uint8 (int8 + 128) by B's int8 in quads; the 128 · Σ_k W
// it adds is taken off at the end (comp).
struct S8VnniKernel : AsPacked {
  static constexpr PackForm kForm = PackForm::S8QuadsU8;
  static constexpr int64_t kKc = block_k(1);
  static constexpr int kMr = 12;
  __attribute__((target("avx512vnni"))) static void tile(const GemmBlock& g, const uint8_t* a, const uint8_t* b,
                                                         float* c, int rows, int64_t cols, int64_t col0) {
    vi acc[kMr][2];
#pragma GCC unroll 16
    for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = izero();
    for (int64_t k = 0; k < g.kc; k += 4, a += 4 * kMr, b += 4 * kNr) {
      const vi b0 = iload(b), b1 = iload(b + 4 * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < kMr; ++r) {
        const vi x = ibcast(a + 4 * r);
        acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x, b0);
        acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x, b1);
      }
    }
    store_s32<kMr>(g, acc, c, rows, cols, g.bias ? g.bias + col0 : nullptr, g.scale + col0, g.comp + col0);
  }
};
#endif

#if MB_SIMD_NEON
// Arm's dot product (ARMv8.2 dotprod: Cortex-A55/A76 and later, Neoverse, Apple): sdot by lane
// takes four rows' int8 quads from one A register.
struct S8DotKernel : AsPacked {
  static constexpr PackForm kForm = PackForm::S8QuadsS8;
  static constexpr int64_t kKc = block_k(1);
  static constexpr int kMr = 8;
  __attribute__((target("arch=armv8.2-a+dotprod"))) static void tile(const GemmBlock& g, const uint8_t* a, const uint8_t* b,
                                                       float* c, int rows, int64_t cols, int64_t col0) {
    vi acc[kMr][2];
#pragma GCC unroll 16
    for (int r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = izero();
    for (int64_t k = 0; k < g.kc; k += 4, a += 4 * kMr, b += 4 * kNr) {
      const int8x16_t b0 = vld1q_s8(reinterpret_cast<const int8_t*>(b));
      const int8x16_t b1 = vld1q_s8(reinterpret_cast<const int8_t*>(b) + 16);
      const int8x16_t x0 = vld1q_s8(reinterpret_cast<const int8_t*>(a));
      const int8x16_t x1 = vld1q_s8(reinterpret_cast<const int8_t*>(a) + 16);
      acc[0][0] = vdotq_laneq_s32(acc[0][0], b0, x0, 0);
      acc[0][1] = vdotq_laneq_s32(acc[0][1], b1, x0, 0);
      acc[1][0] = vdotq_laneq_s32(acc[1][0], b0, x0, 1);
      acc[1][1] = vdotq_laneq_s32(acc[1][1], b1, x0, 1);
      acc[2][0] = vdotq_laneq_s32(acc[2][0], b0, x0, 2);
      acc[2][1] = vdotq_laneq_s32(acc[2][1], b1, x0, 2);
      acc[3][0] = vdotq_laneq_s32(acc[3][0], b0, x0, 3);
      acc[3][1] = vdotq_laneq_s32(acc[3][1], b1, x0, 3);
      acc[4][0] = vdotq_laneq_s32(acc[4][0], b0, x1, 0);
      acc[4][1] = vdotq_laneq_s32(acc[4][1], b1, x1, 0);
      acc[5][0] = vdotq_laneq_s32(acc[5][0], b0, x1, 1);
      acc[5][1] = vdotq_laneq_s32(acc[5][1], b1, x1, 1);
      acc[6][0] = vdotq_laneq_s32(acc[6][0], b0, x1, 2);
      acc[6][1] = vdotq_laneq_s32(acc[6][1], b1, x1, 2);
      acc[7][0] = vdotq_laneq_s32(acc[7][0], b0, x1, 3);
      acc[7][1] = vdotq_laneq_s32(acc[7][1], b1, x1, 3);
    }
    store_s32<kMr>(g, acc, c, rows, cols, g.bias ? g.bias + col0 : nullptr, g.scale + col0, nullptr);
  }
};
#endif

template <class Kernel>
PackedGemmKernel kernel() {
  return PackedGemmKernel{Kernel::kMr, Kernel::kForm, Kernel::kKc, &block<Kernel>};
}
}  // namespace

void packed_gemm_kernels(const CpuFeatures& cpu, PackedGemmKernel out[3]) {
  out[0] = kernel<F32Kernel>();
  out[1] = kernel<Bf16WidenKernel>();
#if MB_SIMD_AVX512
  // Intel's vdpbf16ps multiplies no faster than FMA (Cooper Lake, Sapphire Rapids): there the pairs
  // kernel ran at 0.74x this level's f32 kernel (BERT-base's 768 x 768 at 128 rows, 2 threads), and
  // the widened panels run the f32 kernel's tiles. AMD's (Zen 4/5) is twice FMA's rate.
  if (cpu.avx512bf16 && !cpu.intel) out[1] = kernel<Bf16PairsKernel>();
  out[2] = cpu.avx512vnni ? kernel<S8VnniKernel>() : kernel<S8PairsKernel>();
#elif MB_SIMD_NEON
  if (cpu.dotprod) out[2] = kernel<S8DotKernel>();
  else out[2] = PackedGemmKernel{};  // no int8 kernel without the dot product (see the docs)
#else
  out[2] = kernel<S8PairsKernel>();
  (void)cpu;
#endif
}

}  // namespace MB_KERNEL_NS
}  // namespace mb
