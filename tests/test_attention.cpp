// attention_forward's register-blocked kernels against a float64 reference and against the
// Eigen path they replace, at every CPU level this machine has: every sequence length tail (rows and
// columns past a block), head sizes with one, several and a partial group of vectors, strided
// Q/K/V (the fused QKV buffer), and the training forms (probabilities kept, dropout scale applied).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/cpu.h"
#include "engine/cpu_kernels.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/test_util.h"

namespace {

// ctx and probs in float64 from the definition: per (sequence, head) P = softmax(QKᵀ/√d), ctx = (P⊙keep)V.
void reference(std::vector<double>& ctx, std::vector<double>& probs, const float* q, const float* k, const float* v,
               int64_t ld, const std::vector<int32_t>& offsets, int64_t heads, int64_t dh, const float* keep) {
  const int64_t W = heads * dh;
  ctx.assign(size_t(offsets.back() * W), 0.0);
  probs.clear();
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    const int64_t b = offsets[s], L = offsets[s + 1] - offsets[s];
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < L; ++i) {
        std::vector<double> row(static_cast<size_t>(L));
        for (int64_t j = 0; j < L; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < dh; ++d) dot += double(q[(b + i) * ld + h * dh + d]) * double(k[(b + j) * ld + h * dh + d]);
          row[size_t(j)] = dot / std::sqrt(double(dh));
        }
        const double mx = *std::max_element(row.begin(), row.end());
        double sum = 0;
        for (double& x : row) sum += (x = std::exp(x - mx));
        for (double& x : row) x /= sum;
        for (int64_t j = 0; j < L; ++j) {
          const size_t at = probs.size();
          probs.push_back(row[size_t(j)]);
          const double w = row[size_t(j)] * (keep ? double(keep[at]) : 1.0);
          for (int64_t d = 0; d < dh; ++d) ctx[size_t((b + i) * W + h * dh + d)] += w * double(v[(b + j) * ld + h * dh + d]);
        }
      }
    }
  }
}

// dq, dk, dv in float64 from the definition, given the kept probabilities P and dctx:
// dV += (P⊙keep)ᵀ·dctx, dP = (dctx·Vᵀ)⊙keep, dS = P⊙(dP − rowsum(dP⊙P))/√d, dQ += dS·K, dK += dSᵀ·Q.
void reference_backward(std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv, const float* g,
                        const float* q, const float* k, const float* v, const float* probs, const float* keep,
                        const std::vector<int32_t>& offsets, int64_t heads, int64_t dh) {
  const int64_t W = heads * dh;
  for (auto* d : {&dq, &dk, &dv}) d->assign(size_t(offsets.back() * W), 0.0);
  size_t at = 0;
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    const int64_t b = offsets[s], L = offsets[s + 1] - offsets[s];
    for (int64_t h = 0; h < heads; ++h, at += size_t(L * L)) {
      auto P = [&](int64_t i, int64_t j) { return double(probs[at + size_t(i * L + j)]); };
      auto K = [&](int64_t i, int64_t j) { return keep ? double(keep[at + size_t(i * L + j)]) : 1.0; };
      auto x = [&](const float* m, int64_t i, int64_t d) { return double(m[(b + i) * W + h * dh + d]); };
      auto out = [&](std::vector<double>& m, int64_t i, int64_t d) -> double& { return m[size_t((b + i) * W + h * dh + d)]; };
      std::vector<double> dS(size_t(L * L));
      for (int64_t i = 0; i < L; ++i) {
        double dot = 0;
        for (int64_t j = 0; j < L; ++j) {
          double dP = 0;
          for (int64_t d = 0; d < dh; ++d) dP += x(g, i, d) * x(v, j, d);
          dS[size_t(i * L + j)] = dP * K(i, j);
          dot += dS[size_t(i * L + j)] * P(i, j);
        }
        for (int64_t j = 0; j < L; ++j) dS[size_t(i * L + j)] = P(i, j) * (dS[size_t(i * L + j)] - dot) / std::sqrt(double(dh));
      }
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j)
          for (int64_t d = 0; d < dh; ++d) {
            out(dv, j, d) += P(i, j) * K(i, j) * x(g, i, d);
            out(dq, i, d) += dS[size_t(i * L + j)] * x(k, j, d);
            out(dk, j, d) += dS[size_t(i * L + j)] * x(q, i, d);
          }
    }
  }
}

// Every sequence-length tail: rows and columns past a block, one token, a full 128.
const std::vector<std::vector<int32_t>> kLengthSets = {{1}, {7, 17}, {33, 8, 128}, {9, 1, 37, 20}};

std::vector<int32_t> offsets_of(const std::vector<int32_t>& lengths) {
  std::vector<int32_t> offsets{0};
  for (int32_t n : lengths) offsets.push_back(offsets.back() + n);
  return offsets;
}

// Attention-dropout scales for P probabilities (p = 0.25), from Rng(seed).
std::vector<float> keep_mask(int64_t P, uint64_t seed) {
  std::vector<float> keep(static_cast<size_t>(P));
  mb::Rng rng(seed);
  mb::fill_dropout_mask(keep.data(), P, 0.25f, rng);
  return keep;
}

double max_diff(const float* got, const std::vector<double>& want) {
  double m = 0;
  for (size_t i = 0; i < want.size(); ++i) m = std::max(m, std::fabs(double(got[i]) - want[i]));
  return m;
}

// The head sizes: multiples of 16 (every level's kernels), 24 (AVX2's 8 lanes and the 4 of SSE2 and
// NEON; AVX-512 runs the Eigen path), 12 (4 lanes only), 14 (the Eigen path everywhere).
const std::vector<int64_t> kHeadSizes = {16, 48, 64, 80, 24, 12, 14};

// Runs f once at every CPU level this machine supports (engine/cpu.h), the level captured.
template <class F>
void at_every_level(F f) {
  const mb::CpuLevel saved = mb::cpu_level();
  for (const mb::CpuLevel level : mb::supported_cpu_levels()) {
    mb::set_cpu_level(level);
    const std::string level_name = mb::cpu_level_name(level);
    CAPTURE(level_name);
    f();
  }
  mb::set_cpu_level(saved);
}

}  // namespace

TEST_CASE("attention kernels match a float64 reference and the Eigen path") {
  at_every_level([] {
  for (const int64_t dh : kHeadSizes) {
    for (const auto& lengths : kLengthSets) {
      const int64_t heads = 3, W = heads * dh, ld = 3 * W;  // Q, K, V side by side as in the fused buffer
      const std::vector<int32_t> offsets = offsets_of(lengths);
      const int64_t T = offsets.back(), n = int64_t(lengths.size());
      const std::vector<float> qkv = mbtest::random_normals(size_t(T * ld), uint64_t(dh * 100 + T));
      const float *q = qkv.data(), *k = q + W, *v = q + 2 * W;
      const int64_t P = mb::attention_probs_size(offsets.data(), n, heads);
      const std::vector<float> keep = keep_mask(P, 5);
      for (const bool train : {false, true}) {
        CAPTURE(dh);
        CAPTURE(T);
        CAPTURE(train);
        std::vector<double> want_ctx, want_probs;
        reference(want_ctx, want_probs, q, k, v, ld, offsets, heads, dh, train ? keep.data() : nullptr);
        std::vector<float> ctx_fast(size_t(T * W)), ctx_eigen(size_t(T * W)), probs(static_cast<size_t>(P));
        mb::set_attention_kernels(true);
        mb::attention_forward(ctx_fast.data(), q, ld, k, ld, v, ld, offsets.data(), n, heads, dh,
                              train ? probs.data() : nullptr, train ? keep.data() : nullptr);
        if (train) CHECK(max_diff(probs.data(), want_probs) < 1e-6);
        mb::set_attention_kernels(false);
        mb::attention_forward(ctx_eigen.data(), q, ld, k, ld, v, ld, offsets.data(), n, heads, dh, nullptr,
                              train ? keep.data() : nullptr);
        mb::set_attention_kernels(true);
        CHECK(max_diff(ctx_fast.data(), want_ctx) < 2e-5);
        CHECK(max_diff(ctx_eigen.data(), want_ctx) < 2e-5);
        // Keeping the probabilities (training without dropout) leaves the kernels' context as it is,
        // bitwise (the Eigen path's products vectorise differently with the buffers' alignment).
        if (!train && dh % mb::cpu_kernels().lanes == 0) {
          std::vector<float> ctx_kept(size_t(T * W));
          mb::attention_forward(ctx_kept.data(), q, ld, k, ld, v, ld, offsets.data(), n, heads, dh, probs.data(), nullptr);
          CHECK(ctx_kept == ctx_fast);
          CHECK(max_diff(probs.data(), want_probs) < 1e-6);
        }
      }
    }
  }
  });
}

TEST_CASE("attention backward kernels match a float64 reference and the Eigen path") {
  at_every_level([] {
  for (const int64_t dh : kHeadSizes) {
    for (const auto& lengths : kLengthSets) {
      const int64_t heads = 3, W = heads * dh;
      const std::vector<int32_t> offsets = offsets_of(lengths);
      const int64_t T = offsets.back(), n = int64_t(lengths.size());
      const std::vector<float> q = mbtest::random_normals(size_t(T * W), uint64_t(dh + T)),
                               k = mbtest::random_normals(size_t(T * W), uint64_t(dh + T + 1)),
                               v = mbtest::random_normals(size_t(T * W), uint64_t(dh + T + 2)),
                               g = mbtest::random_normals(size_t(T * W), uint64_t(dh + T + 3));
      const int64_t P = mb::attention_probs_size(offsets.data(), n, heads);
      const std::vector<float> keep = keep_mask(P, 9);
      std::vector<float> probs(static_cast<size_t>(P)), ctx(size_t(T * W));
      for (const bool train : {false, true}) {
        CAPTURE(dh);
        CAPTURE(T);
        CAPTURE(train);
        const float* kp = train ? keep.data() : nullptr;
        mb::attention_forward(ctx.data(), q.data(), W, k.data(), W, v.data(), W, offsets.data(), n, heads, dh,
                              probs.data(), kp);
        std::vector<double> want_dq, want_dk, want_dv;
        reference_backward(want_dq, want_dk, want_dv, g.data(), q.data(), k.data(), v.data(), probs.data(), kp, offsets,
                           heads, dh);
        for (const bool kernels : {true, false}) {
          CAPTURE(kernels);
          // Gradients accumulate: start from 1 and compare against 1 + the reference.
          std::vector<float> dq(size_t(T * W), 1.0f), dk(size_t(T * W), 1.0f), dv(size_t(T * W), 1.0f);
          mb::set_attention_kernels(kernels);
          mb::attention_backward(dq.data(), dk.data(), dv.data(), g.data(), q.data(), k.data(), v.data(), probs.data(),
                                 kp, offsets.data(), n, heads, dh);
          mb::set_attention_kernels(true);
          for (auto* want : {&want_dq, &want_dk, &want_dv})
            for (double& x : *want) x += 1.0;
          CHECK(max_diff(dq.data(), want_dq) < 1e-4);
          CHECK(max_diff(dk.data(), want_dk) < 1e-4);
          CHECK(max_diff(dv.data(), want_dv) < 1e-4);
          for (auto* want : {&want_dq, &want_dk, &want_dv})
            for (double& x : *want) x -= 1.0;
        }
      }
    }
  }
  });
}

TEST_CASE("every CPU level the CPU has runs, best first; MB_CPU names one") {
  const mb::CpuFeatures& f = mb::cpu_features();
  std::vector<mb::CpuLevel> want;
#if defined(__x86_64__)
  if (f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl) want.push_back(mb::CpuLevel::AVX512);
  if (f.avx2 && f.fma && f.f16c) want.push_back(mb::CpuLevel::AVX2);
#endif
  want.push_back(mb::CpuLevel::Baseline);
  CHECK(mb::supported_cpu_levels() == want);
  for (const mb::CpuLevel level : want) {
    CHECK(mb::parse_cpu_level(mb::cpu_level_name(level)) == level);
    REQUIRE(mb::cpu_kernels_at(level) != nullptr);
    CHECK(mb::cpu_kernels_at(level)->level == level);
    CHECK(std::string(mb::cpu_kernels_at(level)->name) == mb::cpu_level_name(level));
  }
  CHECK(mb::parse_cpu_level("baseline") == mb::CpuLevel::Baseline);
  CHECK_THROWS_WITH_AS(mb::parse_cpu_level("sse9"), doctest::Contains("unknown CPU level 'sse9'"), mb::Error);
#if defined(__x86_64__)
  if (!f.avx512f) {
    CHECK(mb::cpu_kernels_at(mb::CpuLevel::AVX512) == nullptr);
    CHECK_THROWS_WITH_AS(mb::parse_cpu_level("avx512"), doctest::Contains("this CPU lacks"), mb::Error);
  }
#endif
  // The level in use is MB_CPU's when set, else the best.
  const char* env = std::getenv("MB_CPU");
  CHECK(mb::cpu_level() == (env && *env ? mb::parse_cpu_level(env) : want.front()));
}
