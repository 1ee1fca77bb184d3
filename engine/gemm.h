// Single-precision GEMM with a back-end chosen at build time (which ones exist) and at run time
// (which one runs): oneDNN, OpenBLAS or Eigen.
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C     (row-major; op = transpose or not)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mb {

enum class GemmBackend { OneDNN, OpenBLAS, Eigen };

// The back-ends compiled into this build, fastest first.
std::vector<GemmBackend> available_gemm_backends();
const char* gemm_backend_name(GemmBackend b);
// Parses "onednn" / "openblas" / "eigen"; throws mb::Error for an unknown or unavailable name.
GemmBackend parse_gemm_backend(const std::string& name);

// oneDNN chooses its kernels from the CPU by itself; when MB_CPU forces a level below the CPU's
// best, oneDNN is capped to that level too, so that MB_CPU=avx2 runs what an AVX2 CPU would. Called
// before oneDNN's first use (the GEMM back-end's initialisation does); later calls do nothing, and
// set_cpu_level() afterwards switches the engine's own kernels only.
void onednn_follow_cpu_level();

// Process-wide selection. Default: MB_GEMM env var if set, else the first available back-end.
GemmBackend gemm_backend();
void set_gemm_backend(GemmBackend b);

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// C[M, N] += Aᵀ·B in double, from A [K, M] and B [K, N] (row-major, leading dimensions lda, ldb;
// C row-major, ldc): normal equations such as K-prune's AᵀA and AᵀR. lower: only C[i, j] with
// j <= i is wanted (AᵀA's lower triangle; whole tiles above the diagonal are skipped, entries above
// it inside a tile on the diagonal are computed too). Each entry is summed in the same order
// whatever the thread count. The level's kernel (engine/cpu_kernels.h), threaded
// over blocks of C.
void gemm_tn_f64(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb,
                 double* C, int64_t ldc, bool lower = false);

// bfloat16 products for mixed-precision training (engine/linear.cpp): C[M, N] = op(A)·op(B) + beta·C
// with A and B given as bfloat16 bits (row-major, leading dimensions as sgemm's), beta 0 or 1. Each
// product of two bf16 values is exact in f32 and the sums are f32. It runs on oneDNN's bf16 matmul
// where that beats f32 (bf16_products_beat_widening); elsewhere it widens the operands to f32 and
// runs sgemm: the same operands, f32's speed, sums in another order.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
// Which of the two gemm_bf16 runs here: "onednn" or "emulated".
const char* gemm_bf16_kernel();
// Whether the CPU's own bf16 products outrun sgemm on the same values widened to f32, given what it
// has: AVX512-BF16, AMX tiles that oneDNN uses, and the vendor. AMX: by far. AVX512-BF16 alone: on
// AMD's cores (Zen 4/5 issue vdpbf16ps at twice FMA's multiply rate; Zen 5, BERT-base's training
// products at 1,024 rows: 1.55-1.63x f32's), but not on Intel's (Cooper Lake, or Sapphire Rapids
// where AMX is unusable), whose vdpbf16ps multiplies no faster than FMA: there oneDNN's bf16 matmul
// ran at 0.55-0.65x sgemm's rate, and the widened operands at 0.9-1.0x.
bool bf16_products_beat_widening(bool avx512bf16, bool amx, bool intel);
// Whether oneDNN runs its AMX kernels here (the CPU and OS allow them and ONEDNN_MAX_CPU_ISA does not
// rule them out); false in builds without oneDNN.
bool onednn_uses_amx();

// A weight W [N, K] (PyTorch's [out, in]) reordered once into the layout of a matmul kernel, for
// inference: products with few rows then skip the packing sgemm redoes on every call
// (engine/packed_gemm.cpp has the measurements). The kernel is oneDNN's where it has a fast one
// for the precision (brgemm from AVX-512 on; int8 with VNNI), else the engine's own
// (engine/packed_gemm_own.cpp: every precision at every CPU level, int8 on Arm with the dot
// product), so that the static binary, built without oneDNN, runs every precision too. The packed
// copy does not follow later changes to W.
struct PackedWeight;
// What a packed weight holds and the kernel computes in (inference only; outputs are f32):
//   F32   the weights as they are;
//   BF16  weights rounded once to bfloat16, every product's A rounded to bfloat16 (round to
//         nearest even), accumulated in f32: with AVX512-BF16 about 2× the f32 kernel's speed,
//         elsewhere half the weights' memory at the f32 kernel's speed, at bfloat16's 8-bit mantissa;
//   Int8  dynamic int8: W quantised once, symmetric per output row; every product quantises
//         its A with one scale (max|A| / 127), sums the int8 products exactly in int32 (VNNI,
//         AVX2's pmaddwd or Arm's sdot) and scales the sums back to f32.
enum class Precision { F32, BF16, Int8 };
const char* precision_name(Precision p);  // "f32", "bf16", "int8"
// Null when there is no packed kernel for this precision (a back-end other than oneDNN, or none
// for this CPU).
std::shared_ptr<PackedWeight> pack_weight(const float* W, int64_t N, int64_t K, Precision precision = Precision::F32);
// A weight W [N, K] as a quantized model file stores it (models/quantize.h): f32, bfloat16 (the
// bits of f32_to_bf16), or int8 with one scale per output row (quantize_weight_rows' scheme).
struct WeightRows {
  Precision form = Precision::F32;
  const void* values = nullptr;   // [N, K] floats, bf16 bits (uint16) or int8
  const float* scale = nullptr;   // Int8: [N]
};
// Packs stored rows in `precision`: f32 rows in any precision, as pack_weight does; bf16 and int8
// rows only in their own, where the packed copy is bit for bit the one pack_weight makes from the
// f32 weights they were quantised from (null for another precision, or no kernel).
std::shared_ptr<PackedWeight> pack_weight(const WeightRows& W, int64_t N, int64_t K, Precision precision);
// A weight W [N, K] quantised symmetrically per output row j: W[j, :] ≈ scale[j] · q[j, :] with
// scale[j] = max|W[j, :]| / 127 (1 for an all-zero row, which stays 0), q[j, i] = W[j, i] · (1 /
// scale[j]) rounded to nearest even. scale: N floats, q: N·K. The packed int8 weights and the
// quantized model files both use it.
void quantize_weight_rows(const float* W, int64_t N, int64_t K, float* scale, int8_t* q);
Precision packed_weight_precision(const PackedWeight& w);
// Whether pack_weight gives packed weights of this precision here (back-end, CPU and level).
bool packed_gemm_available(Precision precision);
// Why it does not, for an error message: "int8 has no kernel on this CPU (<cpu_summary>); int8 needs
// x86-64 or Arm's dot product (ARMv8.2 dotprod)" (the hint for int8 only).
std::string packed_gemm_missing(Precision precision);
// Whose kernel runs them: "onednn" (oneDNN 2.6 has packed f32 and bf16 kernels, brgemm, from
// AVX-512 on, and int8 ones wherever it has VNNI), "engine" (the engine's own), or "" (none).
const char* packed_gemm_kernel(Precision precision);
size_t packed_weight_bytes(const PackedWeight& w);
// What the packed GEMM applies to each output after the bias, in the kernel (oneDNN post-ops):
// GELU with the exact erf (Gelu) or its tanh approximation (GeluTanh); oneDNN's kernels only (the
// engine's own decline a product with an epilogue). linear_gelu does not use
// it: on Zen 5, oneDNN 2.6's erf post-op costs twice a separate GELU pass (engine/activations.cpp);
// engine_bench's BM_gemm_packed times the post-op (its fourth argument) for other CPUs.
enum class Epilogue { None = 0, Gelu = 1, GeluTanh = 2 };
// C[M, N] (row stride ldc) = epilogue(A[M, K]·Wᵀ (+ bias[N] on every row when bias is not null)). Returns
// false, leaving C untouched, when the packed kernel does not take this product (then use sgemm).
// Any row count: the packed copy is then the only one a forward pass reads, so the originals' pages
// stay out of memory.
bool gemm_packed(const PackedWeight& w, int64_t M, const float* A, const float* bias, float* C, int64_t ldc,
                 Epilogue epilogue = Epilogue::None);
// The same product on a weight W [N, K] as it is, unpacked (training changes it every step): oneDNN's
// matmul kernel packs blocks of it on the fly, with the bias added in the kernel. Returns false
// where that kernel is not available (then use sgemm). linear_forward picks it over sgemm for
// the shapes where it measured faster (engine/linear.cpp).
bool gemm_weight(const float* W, int64_t N, int64_t K, int64_t M, const float* A, const float* bias, float* C,
                 int64_t ldc);

}  // namespace mb
