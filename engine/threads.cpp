#include "engine/threads.h"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "engine/error.h"

#ifdef MB_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
#endif

namespace mb {

namespace {
// 0 until set. Atomic, and the default applied once: the first calls may come from several of the
// caller's threads at once (tests/test_threads.cpp).
std::atomic<int> g_threads{0};
std::once_flag g_default_once;
}  // namespace

int default_num_threads() {
  if (const char* env = std::getenv("MB_NUM_THREADS"); env && *env) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    MB_CHECK(end && *end == '\0' && v > 0 && v <= 4096,
             std::string("MB_NUM_THREADS must be a positive integer, got '") + env + "'");
    return int(v);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(hw) : 1;
}

void set_num_threads(int n) {
  if (n <= 0) n = default_num_threads();
  g_threads.store(n, std::memory_order_relaxed);
  omp_set_num_threads(n);
#ifdef MB_HAVE_OPENBLAS
  openblas_set_num_threads(n);
#endif
}

int num_threads() {
  if (const int n = g_threads.load(std::memory_order_relaxed); n > 0) return n;
  std::call_once(g_default_once, [] {
    if (g_threads.load(std::memory_order_relaxed) == 0) set_num_threads(0);
  });
  return g_threads.load(std::memory_order_relaxed);
}

GemmThreads::GemmThreads(int64_t M, int64_t N, int64_t K) {
  constexpr double kMinFlopsPerThread = 4e6;
  const int threads = num_threads();
  const int want = int(std::clamp<double>(2.0 * double(M) * double(N) * double(K) / kMinFlopsPerThread, 1.0, threads));
  if (want < threads && !omp_in_parallel()) {
    saved_ = omp_get_max_threads();
    omp_set_num_threads(want);
  }
}

GemmThreads::~GemmThreads() {
  if (saved_ > 0) omp_set_num_threads(saved_);
}

}  // namespace mb
