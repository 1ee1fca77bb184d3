// Single-precision GEMM with a back-end chosen at build time (which ones exist) and at run time
// (which one runs): oneDNN, OpenBLAS or Eigen.
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C     (row-major; op = transpose or not)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mb {

enum class GemmBackend { OneDNN, OpenBLAS, Eigen };

// The back-ends compiled into this build, fastest first.
std::vector<GemmBackend> available_gemm_backends();
const char* gemm_backend_name(GemmBackend b);
// Parses "onednn" / "openblas" / "eigen"; throws mb::Error for an unknown or unavailable name.
GemmBackend parse_gemm_backend(const std::string& name);

// Process-wide selection. Default: MB_GEMM env var if set, else the first available back-end.
GemmBackend gemm_backend();
void set_gemm_backend(GemmBackend b);

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace mb
