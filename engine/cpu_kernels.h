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
};

// Padded length the attention kernels' transposed operands use: L rounded up to 16 floats (the
// widest vector of any level).
inline int64_t attention_pad(int64_t L) { return (L + 15) / 16 * 16; }

// The table of the level in use (cpu_level()).
const CpuKernels& cpu_kernels();
// The table of one level; null where this build has no kernels for it or the CPU cannot run them.
const CpuKernels* cpu_kernels_at(CpuLevel level);

}  // namespace mb
