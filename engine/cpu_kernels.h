// The engine's hand-written SIMD kernels, one table per CPU level (engine/cpu.h).
//
// engine/kernels/cpu_kernels.cpp is compiled once per level, each time with that level's
// instruction-set flags and into its own namespace (mb::kernels_avx512, mb::kernels_avx2,
// mb::kernels_baseline, mb::kernels_neon); cpu_kernels() hands out the table of the level in use.
// The rest of the library is compiled for the architecture's baseline and reaches these kernels
// only through the table, so no instruction the CPU lacks is ever executed.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/cpu.h"

namespace mb {

struct CpuFeatures;

// The engine's own packed GEMM (engine/packed_gemm_own.cpp packs, blocks and threads; the level's
// kernels in engine/kernels/gemm_kernels.cpp compute). C[M, N] = A[M, K] · Wᵀ with W [N, K] packed
// once: per block of K (kc), per panel of nr = 2 · lanes columns, the panel's kc × nr values in
// groups of g consecutive k per column ([kc / g][nr][g]): f32 g = 1, bf16 g = 2, int8 g = 4.
// A is packed per call, per block of K, in tiles of mr rows, in the form the kernel reads:
enum class PackForm : uint8_t {
  F32,        // f32 [kc][mr]
  Bf16AsF32,  // bf16 values widened to f32, [kc][mr] (kernels that widen B's bf16 pairs to f32)
  Bf16Pairs,  // bf16 pairs (k, k+1) in 32 bits, [kc / 2][mr] (AVX512-BF16's vdpbf16ps)
  S8Pairs16,  // int8 as two int16 pairs (k, k+2), (k+1, k+3) per quad, [kc / 4][mr][2] (pmaddwd)
  S8QuadsU8,  // int8 + 128 as uint8 quads, [kc / 4][mr] (VNNI's vpdpbusd; the kernel subtracts comp)
  S8QuadsS8,  // int8 quads, [kc / 4][mr] (Arm's sdot)
};
// Bytes of a packed A tile per (k, row).
inline int pack_form_bytes(PackForm f) {
  return f == PackForm::F32 || f == PackForm::Bf16AsF32 ? 4 : f == PackForm::S8QuadsU8 || f == PackForm::S8QuadsS8 ? 1 : 2;
}

// One call of a level's kernel: one block of K, `rows` rows of C (tiles of mr from a) by `cols`
// columns (panels of nr from b).
struct GemmBlock {
  const uint8_t* a;       // the first A tile of this K block; tiles a_tile_bytes apart
  int64_t a_tile_bytes;
  const uint8_t* b;       // the first B panel of this K block; panels b_panel_bytes apart
  int64_t b_panel_bytes;
  int64_t kc;             // K of this block, a multiple of the group (zero-padded)
  int64_t rows, cols;
  float* c;               // C's first row and column of this block
  int64_t ldc;
  bool first, last;       // first block of K: C is overwritten; last: C gets its final values
                          // (int8 keeps its exact int32 sums in C's bytes until then)
  const float* bias;      // last: + bias[j] (may be null); indexed from this block's first column
  const float* scale;     // int8, last: the sum times scale[j] (padded to whole panels)
  const int32_t* comp;    // int8 S8QuadsU8, last: minus comp[j] = 128 · Σ_k W[j, k] (padded)
};

struct PackedGemmKernel {
  int mr = 0;                              // rows per register tile
  PackForm a_form = PackForm::F32;          // how A is packed for it
  int64_t kc = 0;                          // K per block (a multiple of 4)
  void (*block)(const GemmBlock&) = nullptr;  // null: no kernel for this precision here
};

// One AdamW step's scalars for a tensor (engine/optim.cpp computes them in double, in torch's
// _single_tensor_adamw order): g' = g·grad_scale, w' = w·decay, m' = m·b1 + a1·g', v' = v·b2 + a2·g'·g',
// w'' = w' + −step_size·(m' / (√v' / bc2_sqrt + eps)); zero_grad: g = 0 once read.
struct AdamWScalars {
  float grad_scale, decay, b1, a1, b2, a2, step_size, bc2_sqrt, eps;
  bool zero_grad;
};

struct CpuKernels {
  CpuLevel level;
  const char* name;  // "avx512", "avx2", "baseline", "neon"
  int lanes;         // f32 lanes per vector; the attention kernels take head sizes that are multiples of it

  // One (sequence, head) of attention: P = softmax(Q·Kᵀ·scale) [L, L], out = (P ⊙ keep)·V [L, dh].
  // Rows go through in blocks small enough that their scores are still in L1 for the softmax and
  // the context product. keep (dropout scales, L² floats) and dropped (L² floats of scratch) may be
  // null; keep_probs: P must hold the normalised probabilities on return (training). kt: scratch of
  // dh · attention_pad(L) floats.
  void (*attention_head)(float* out, int64_t ld_out, float* P, const float* q, int64_t ld_q, const float* k,
                         int64_t ld_k, const float* v, int64_t ld_v, int64_t L, int64_t dh, float scale,
                         const float* keep, float* dropped, float* kt, bool keep_probs);
  // Its gradients from the kept probabilities P and dctx (g), all of Q, K, V, g, dq, dk, dv with row
  // stride ld: dV += (P⊙keep)ᵀ·g, dP = (g·Vᵀ)⊙keep, dS = P⊙(dP − rowsum(dP⊙P))·scale, dQ += dS·K,
  // dK += dSᵀ·Q. scratch: 3·L² + dh · attention_pad(L) floats.
  void (*attention_head_backward)(float* dq, float* dk, float* dv, const float* g, const float* q, const float* k,
                                  const float* v, int64_t ld, const float* P, const float* keep, int64_t L, int64_t dh,
                                  float scale, float* scratch);

  // n floats to bfloat16, rounded to nearest even, NaN kept (the CPU's own conversion where it has
  // AVX512-BF16).
  void (*f32_to_bf16)(const float* src, uint16_t* dst, size_t n);
  // max |x[i]| over n floats (0 for n = 0).
  float (*abs_max)(const float* x, int64_t n);
  // out[i] = x[i] · inv_scale rounded to nearest even, for |x[i] · inv_scale| <= 127.
  void (*quantize_s8)(const float* x, int64_t n, float inv_scale, int8_t* out);

  // Exact GELU x·Φ(x) on n floats in place (Φ the standard normal CDF, through erfc: relative
  // error ~1e-7 even in the lower tail); and its backward, dinp += dout·(Φ(x) + x·φ(x)).
  void (*gelu)(float* x, int64_t n);
  void (*gelu_backward)(float* dinp, const float* inp, const float* dout, int64_t n);
  // C[i, j] += Σ_t A[t, i] · B[t, j] for i < M, j < N, in double: A [K, ·] (row stride lda), B
  // [K, ·] (ldb), C row-major (ldc). Each sum runs over t in order, in one accumulator.
  void (*gram_f64)(const double* A, int64_t lda, const double* B, int64_t ldb, int64_t K, int64_t M, int64_t N,
                   double* C, int64_t ldc);

  // The training step's passes over every parameter and every activation, written once as plain
  // loops that the compiler vectorises at the level's width (the library's own code is compiled
  // for the baseline: SSE2's 4 lanes and no 64-bit vector multiply). Each gives the same bits at
  // every level: IEEE operations in the same order per element, integer hashing, and sums whose
  // lanes are fixed by the algorithm, not by the vector width.
  //
  // Dropout's keep scales: out[i] = 0 when splitmix64's mix(z0 + i·γ) >> 11 < below (draw i
  // dropped), else kept; γ = Rng::kGamma (engine/rng.h, whose mix() this repeats).
  void (*dropout_mask)(float* out, int64_t n, uint64_t z0, uint64_t below, float kept);
  // One AdamW update of n parameters in torch's order of float operations (engine/optim.cpp).
  void (*adamw)(float* w, float* g, float* m, float* v, int64_t n, const AdamWScalars& s);
  // Σ g[i]² in double over 32 interleaved partial sums (lane l takes i ≡ l mod 32), added in
  // lane order at the end.
  double (*sum_squares)(const float* g, int64_t n);

  // The packed GEMM's kernels by precision (mb::Precision: f32, bf16, int8), nr = 2 · lanes.
  PackedGemmKernel gemm[3];
};

// Padded length the attention kernels' transposed operands use: L rounded up to 16 floats (the
// widest vector of any level).
inline int64_t attention_pad(int64_t L) { return (L + 15) / 16 * 16; }

// The table of the level in use (cpu_level()).
const CpuKernels& cpu_kernels();
// The table of one level; null where this build has no kernels for it or the CPU cannot run them.
const CpuKernels* cpu_kernels_at(CpuLevel level);

}  // namespace mb
