// attention_forward's register-blocked kernels against a float64 reference and against the
// Eigen path they replace: every sequence length tail (rows and columns past a block), head sizes
// with one, several and a partial group of 16-wide vectors, strided Q/K/V (the fused QKV buffer),
// and the training forms (probabilities kept, dropout scale applied).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

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

}  // namespace

TEST_CASE("attention kernels match a float64 reference and the Eigen path") {
  for (const int64_t dh : {16, 48, 64, 80, 24}) {  // 24: no kernel (not a multiple of 16), the Eigen path
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
      }
    }
  }
}

TEST_CASE("attention backward kernels match a float64 reference and the Eigen path") {
  for (const int64_t dh : {16, 48, 64, 80, 24}) {
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
}

TEST_CASE("the kernels are built where the CPU has AVX-512") {
#if defined(__AVX512F__)
  CHECK(mb::attention_kernels_available());
#else
  CHECK_FALSE(mb::attention_kernels_available());
#endif
}
