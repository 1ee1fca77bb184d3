// One thread setting for OpenMP, OpenBLAS and oneDNN (which runs on the OpenMP runtime).
#pragma once
#include <algorithm>
#include <cstdint>

namespace mb {

// n <= 0: MB_NUM_THREADS if set, else the number of hardware threads.
void set_num_threads(int n);
int num_threads();
// Resolves the default (MB_NUM_THREADS or hardware) without applying it.
int default_num_threads();

// Runs fn(begin, end) over [0, n) in one contiguous chunk per thread, but only as many threads as
// get at least min_per_thread items each: small element-wise ops stay on the calling thread,
// where waking a thread would cost more than the work.
template <class Fn>
void parallel_chunks(int64_t n, int64_t min_per_thread, Fn fn) {
  const int64_t threads = std::min<int64_t>(num_threads(), n / std::max<int64_t>(min_per_thread, 1));
  if (threads <= 1) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
#pragma omp parallel for num_threads(int(threads)) schedule(static, 1)
  for (int64_t i = 0; i < threads; ++i) fn(n * i / threads, n * (i + 1) / threads);
}

// For the scope of one GEMM of M×N×K: small products run on fewer threads, since waking a
// thread costs more than a few MFLOP of work. oneDNN and Eigen size their parallel regions from
// the OpenMP setting of the calling thread, which this lowers and then restores.
class GemmThreads {
 public:
  GemmThreads(int64_t M, int64_t N, int64_t K);
  ~GemmThreads();
  GemmThreads(const GemmThreads&) = delete;
  GemmThreads& operator=(const GemmThreads&) = delete;

 private:
  int saved_ = 0;  // > 0: the setting to restore
};

}  // namespace mb
