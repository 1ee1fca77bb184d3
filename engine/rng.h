// Deterministic random numbers, identical on every platform and standard library
// (std::normal_distribution is not), so a seed names one model everywhere.
#pragma once
#include <cmath>
#include <cstdint>

namespace mb {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}

  static constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;

  // splitmix64: small, fast, statistically solid for initialisation and sampling. The i-th draw
  // is a pure function of (state, i), which lets skip() hand a block of draws to many threads.
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t next_u64() { return mix(state_ += kGamma); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
  static double uniform_of(uint64_t u64) { return double(u64 >> 11) * 0x1.0p-53; }
  // Reserves the next n draws and returns the state before them: draw i (0-based) of the block is
  // mix(base + (i + 1)·kGamma), exactly what n calls of next_u64() would have returned.
  uint64_t skip(uint64_t n) {
    const uint64_t base = state_;
    state_ += n * kGamma;
    return base;
  }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return n ? next_u64() % n : 0; }
  // Standard normal by Box–Muller (both values used).
  double normal() {
    if (has_spare_) { has_spare_ = false; return spare_; }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }

  uint64_t state() const { return state_; }

  // The whole state (counter + the cached second Box–Muller value), for checkpoints: restoring
  // it continues exactly the same sequence.
  struct State {
    uint64_t counter = 0;
    double spare = 0.0;
    bool has_spare = false;
  };
  State full_state() const { return {state_, spare_, has_spare_}; }
  void restore(const State& s) { state_ = s.counter; spare_ = s.spare; has_spare_ = s.has_spare; }

 private:
  uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// A tensor's place in a larger one whose random draws are taken as one block: draws first …
// first + n − 1 of a block of total (total < 0: the tensor is the whole block). Data-parallel
// training draws dropout masks for the global batch and each process uses its part's slice, so the
// masks do not depend on how many processes share the batch (models/data_parallel.h).
struct DrawSlice {
  int64_t first = 0;
  int64_t total = -1;
};

// BERT's weight initialisation: n values ~ normal(0, stddev).
inline void fill_normal(float* p, int64_t n, double stddev, Rng& rng) {
  for (int64_t i = 0; i < n; ++i) p[i] = float(rng.normal() * stddev);
}

}  // namespace mb
