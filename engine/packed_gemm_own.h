// The engine's own packed GEMM: a weight reordered once into the panels of the CPU level's register-
// tile kernels (engine/cpu_kernels.h has the layouts, engine/kernels/gemm_kernels.cpp the kernels),
// each product's A packed on the fly, the work blocked for the caches and split between threads.
// engine/packed_gemm.cpp runs it wherever oneDNN has no fast kernel for a precision: every
// precision in builds without oneDNN (the static binary), and the CPU levels below AVX-512.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/gemm.h"

namespace mb {

struct OwnPackedWeight;

// W [N, K] packed for the level in use; null when that level has no kernel for the precision.
// W's rows are f32, or already in the precision (gemm.h: WeightRows).
std::shared_ptr<OwnPackedWeight> own_pack_weight(const WeightRows& W, int64_t N, int64_t K, Precision precision);
size_t own_packed_bytes(const OwnPackedWeight& w);
// C[M, N] (row stride ldc) = A[M, K]·Wᵀ (+ bias[N]), in the weight's precision as gemm.h describes.
void own_gemm(const OwnPackedWeight& w, int64_t M, const float* A, const float* bias, float* C, int64_t ldc);

// Dynamic quantisation of a product's A: one symmetric scale for all n values (max|A| / 127), the
// values rounded to nearest even into q (resized to n when smaller). Returns the scale.
float quantize_source(const float* A, int64_t n, std::vector<int8_t>& q);

}  // namespace mb
