#include "engine/gemm.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstdlib>

#include "engine/cpu.h"
#include "engine/cpu_kernels.h"
#include "engine/error.h"
#include "engine/threads.h"

#ifdef MB_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif
#ifdef MB_HAVE_OPENBLAS
extern "C" {
void cblas_sgemm(int order, int transa, int transb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc);
}
#endif

namespace mb {

std::vector<GemmBackend> available_gemm_backends() {
  std::vector<GemmBackend> v;
#ifdef MB_HAVE_ONEDNN
  v.push_back(GemmBackend::OneDNN);  // first: its speed does not depend on OPENBLAS_CORETYPE
#endif
#ifdef MB_HAVE_OPENBLAS
  v.push_back(GemmBackend::OpenBLAS);
#endif
  v.push_back(GemmBackend::Eigen);
  return v;
}

const char* gemm_backend_name(GemmBackend b) {
  switch (b) {
    case GemmBackend::OneDNN: return "onednn";
    case GemmBackend::OpenBLAS: return "openblas";
    case GemmBackend::Eigen: return "eigen";
  }
  return "?";
}

GemmBackend parse_gemm_backend(const std::string& name) {
  for (GemmBackend b : available_gemm_backends())
    if (name == gemm_backend_name(b)) return b;
  std::string have;
  for (GemmBackend b : available_gemm_backends()) have += std::string(have.empty() ? "" : ", ") + gemm_backend_name(b);
  throw Error("unknown or unavailable GEMM back-end '" + name + "' (this build has: " + have + ")");
}

void onednn_follow_cpu_level() {
#ifdef MB_HAVE_ONEDNN
  static const bool once = [] {
    if (const char* env = std::getenv("MB_CPU"); env && *env) {
      // cpu_level() has checked MB_CPU. Capped at AVX2 (with AVX-VNNI where present) or SSE4.1,
      // the x86-64 levels below AVX-512; oneDNN checks the CPU for each of those itself.
      const CpuLevel level = cpu_level();
      if (level != CpuLevel::AVX512)
        dnnl_set_max_cpu_isa(level == CpuLevel::AVX2 ? dnnl_cpu_isa_avx2_vnni : dnnl_cpu_isa_sse41);
    }
    return true;
  }();
  (void)once;
#endif
}

namespace {

GemmBackend initial_backend() {
  onednn_follow_cpu_level();
  if (const char* env = std::getenv("MB_GEMM"); env && *env) return parse_gemm_backend(env);
  return available_gemm_backends().front();
}
GemmBackend& current_backend() {
  static GemmBackend b = initial_backend();
  return b;
}

void sgemm_eigen(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<RowMat, 0, Stride> c(C, M, N, Stride(ldc));
  // A row-major matrix of shape [r, c] read transposed is a column-major one of shape [c, r].
  auto run = [&](const auto& a, const auto& b) {
    if (beta == 0.0f) c.noalias() = alpha * (a * b);
    else { c *= beta; c.noalias() += alpha * (a * b); }
  };
  using ColMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  if (!ta && !tb) run(Eigen::Map<const RowMat, 0, Stride>(A, M, K, Stride(lda)), Eigen::Map<const RowMat, 0, Stride>(B, K, N, Stride(ldb)));
  else if (!ta && tb) run(Eigen::Map<const RowMat, 0, Stride>(A, M, K, Stride(lda)), Eigen::Map<const ColMat, 0, Stride>(B, K, N, Stride(ldb)));
  else if (ta && !tb) run(Eigen::Map<const ColMat, 0, Stride>(A, M, K, Stride(lda)), Eigen::Map<const RowMat, 0, Stride>(B, K, N, Stride(ldb)));
  else run(Eigen::Map<const ColMat, 0, Stride>(A, M, K, Stride(lda)), Eigen::Map<const ColMat, 0, Stride>(B, K, N, Stride(ldb)));
}

#ifdef MB_HAVE_ONEDNN
// oneDNN's sgemm on two threads loses 5-20 % of its single-thread speed on some of training's
// shapes (where each thread waits for the other at the end). There each thread runs its own block
// of C's rows single-threaded. Measured on Zen 5, BERT-base at 1,024 tokens, GFLOP/s split vs
// whole: x·Wᵀ with a square W 322-335 vs 296-305; the weight gradients dYᵀ·X 289-293 vs 282-284
// (768²), 319-335 vs 298-312 (768 → 3072), 319-340 vs 318-339 (3072 → 768); elsewhere level or
// behind (x·Wᵀ to 3072 columns, dY·W).
bool split_rows_wins(bool ta, bool tb, int64_t N, int64_t K) { return (!ta && tb && N == K) || (ta && !tb); }

dnnl_status_t sgemm_split_rows(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                               int threads) {
  std::vector<dnnl_status_t> status(size_t(threads), dnnl_success);
#pragma omp parallel num_threads(threads)
  {
    const int i = omp_get_thread_num(), n = omp_get_num_threads();
    omp_set_num_threads(1);  // this thread's own setting, for the sgemm below
    const int64_t m0 = M * i / n, m1 = M * (i + 1) / n;
    if (m1 > m0)  // row m of op(A): row m of A, or column m of A when transposed
      status[size_t(i)] = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m1 - m0, N, K, alpha, ta ? A + m0 : A + m0 * lda,
                                     lda, B, ldb, beta, C + m0 * ldc, ldc);
  }
  for (dnnl_status_t st : status)
    if (st != dnnl_success) return st;
  return dnnl_success;
}
#endif

}  // namespace

GemmBackend gemm_backend() { return current_backend(); }
void set_gemm_backend(GemmBackend b) { current_backend() = b; }

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta * C; some back-ends reject K = 0
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  const GemmThreads limit(M, N, K);
  switch (current_backend()) {
#ifdef MB_HAVE_ONEDNN
    case GemmBackend::OneDNN: {
      const int threads = omp_get_max_threads();
      const bool split = threads > 1 && M >= 256 * threads && !omp_in_parallel() && split_rows_wins(ta, tb, N, K);
      const dnnl_status_t st = split ? sgemm_split_rows(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads)
                                     : dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      MB_CHECK(st == dnnl_success, "oneDNN sgemm failed with status " + std::to_string(int(st)));
      return;
    }
#endif
#ifdef MB_HAVE_OPENBLAS
    case GemmBackend::OpenBLAS:
      // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
      cblas_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb),
                  beta, C, int(ldc));
      return;
#endif
    default:
      sgemm_eigen(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
  }
}

void gemm_tn_f64(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb,
                 double* C, int64_t ldc, bool lower) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  // Tasks of 64 rows by 256 columns of C, over all of K in blocks of 256: a task's block of B
  // (256 × 256 doubles, 512 KiB) stays in L2 while its 64 rows of A stream past it.
  constexpr int64_t kRows = 64, kCols = 256, kDepth = 256;
  struct Task {
    int64_t i0, i1, j0, j1;
  };
  std::vector<Task> tasks;
  for (int64_t i0 = 0; i0 < M; i0 += kRows) {
    const int64_t i1 = std::min(M, i0 + kRows);
    for (int64_t j0 = 0; j0 < N; j0 += kCols) {
      const int64_t j1 = std::min({N, j0 + kCols, lower ? i1 : N});
      if (j1 > j0) tasks.push_back({i0, i1, j0, j1});
    }
  }
  const auto gram = cpu_kernels().gram_f64;
  const int64_t n_tasks = int64_t(tasks.size());
  const double flops = 2.0 * double(M) * double(N) * double(K) / (lower ? 2 : 1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads()) if (n_tasks > 1 && flops > 4e6)
  for (int64_t ti = 0; ti < n_tasks; ++ti) {
    const Task& t = tasks[size_t(ti)];
    for (int64_t k0 = 0; k0 < K; k0 += kDepth)
      gram(A + k0 * lda + t.i0, lda, B + k0 * ldb + t.j0, ldb, std::min(kDepth, K - k0), t.i1 - t.i0, t.j1 - t.j0,
           C + t.i0 * ldc + t.j0, ldc);
  }
}

}  // namespace mb
