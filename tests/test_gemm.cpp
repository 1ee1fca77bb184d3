// sgemm on every back-end of this build, every transpose combination, alpha and beta, and strided
// operands, against a float64 reference; the shapes include those where the oneDNN back-end splits
// C's rows between the threads itself (engine/gemm.cpp). And gemm_weight, the matmul on an unpacked
// weight that linear_forward picks for some shapes, with and without a bias.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "engine/cpu.h"
#include "engine/dtype.h"
#include "engine/gemm.h"
#include "engine/lru_cache.h"
#include "engine/packed_gemm_own.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/test_util.h"
#include "engine/threads.h"

namespace {

// Largest |got − want| over C's M×N block, relative to the size of what is summed.
double worst_error(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const std::vector<float>& A,
                   int64_t lda, const std::vector<float>& B, int64_t ldb, float beta, const std::vector<float>& C0,
                   const std::vector<float>& C, int64_t ldc) {
  double worst = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double dot = 0, scale = 1;
      for (int64_t k = 0; k < K; ++k) {
        const double a = ta ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)];
        const double b = tb ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)];
        dot += a * b;
        scale += std::fabs(a * b);
      }
      const double want = alpha * dot + beta * double(C0[size_t(i * ldc + j)]);
      worst = std::max(worst, std::fabs(double(C[size_t(i * ldc + j)]) - want) / scale);
    }
  return worst;
}

}  // namespace

namespace {

struct GemmShape {
  int64_t M, N, K;
};

// Every GEMM back-end × shape × transpose × beta (0, 1), with row strides past the rows' ends (the
// product must read and write only its block): product(ta, tb, shape, A, Ah, lda, B, Bh, ldb, beta,
// C, ldc) updates C; checked against float64 on A and B as given (bf16: rounded to bf16 first, their
// bits in Ah and Bh) and for untouched padding.
template <class Product>
void check_products(const std::vector<GemmShape>& shapes, bool bf16, float alpha, Product product) {
  const mb::GemmBackend saved = mb::gemm_backend();
  auto operand = [bf16](size_t n, uint64_t seed, std::vector<uint16_t>& bits) {
    std::vector<float> v = mbtest::random_normals(n, seed);
    if (bf16) {
      bits.resize(n);
      for (size_t i = 0; i < n; ++i) v[i] = mb::bf16_to_f32(bits[i] = mb::f32_to_bf16(v[i]));
    }
    return v;
  };
  for (mb::GemmBackend backend : mb::available_gemm_backends()) {
    mb::set_gemm_backend(backend);
    for (const GemmShape& s : shapes)
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (float beta : {0.0f, 1.0f}) {
            CAPTURE(mb::gemm_backend_name(backend));
            CAPTURE(s.M);
            CAPTURE(s.N);
            CAPTURE(s.K);
            CAPTURE(ta);
            CAPTURE(tb);
            CAPTURE(beta);
            const int64_t lda = (ta ? s.M : s.K) + 3, ldb = (tb ? s.K : s.N) + 2, ldc = s.N + 5;
            std::vector<uint16_t> Ah, Bh;
            const std::vector<float> A = operand(size_t((ta ? s.K : s.M) * lda), 1, Ah);
            const std::vector<float> B = operand(size_t((tb ? s.N : s.K) * ldb), 2, Bh);
            const std::vector<float> C0 = mbtest::random_normals(size_t(s.M * ldc), 3);
            std::vector<float> C = C0;
            product(ta, tb, s, A, Ah, lda, B, Bh, ldb, beta, C, ldc);
            CHECK(worst_error(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C0, C, ldc) < 1e-5);
            bool padding_untouched = true;
            for (int64_t i = 0; i < s.M; ++i)
              for (int64_t j = s.N; j < ldc; ++j) padding_untouched &= C[size_t(i * ldc + j)] == C0[size_t(i * ldc + j)];
            CHECK(padding_untouched);
          }
  }
  mb::set_gemm_backend(saved);
}

}  // namespace

TEST_CASE("sgemm: every back-end and transpose against a float64 reference") {
  // (600, 96, 96) and (600, 64, 80): large enough for two threads, where oneDNN's back-end splits
  // the rows itself for Aᵀ·B and for A·Bᵀ with a square B.
  check_products({{7, 5, 3}, {600, 96, 96}, {600, 64, 80}, {130, 40, 200}}, false, 0.5f,
                 [](bool ta, bool tb, const GemmShape& s, const std::vector<float>& A, const std::vector<uint16_t>&,
                    int64_t lda, const std::vector<float>& B, const std::vector<uint16_t>&, int64_t ldb, float beta,
                    std::vector<float>& C, int64_t ldc) {
                   mb::sgemm(ta, tb, s.M, s.N, s.K, 0.5f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
                 });
}

TEST_CASE("bf16 products: oneDNN's kernel only where the CPU's bf16 arithmetic beats widening to f32") {
  // (AVX512-BF16, AMX in use, Intel) → the CPU's own bf16 products.
  CHECK(mb::bf16_products_beat_widening(true, true, true));     // Sapphire Rapids with AMX
  CHECK(mb::bf16_products_beat_widening(true, false, false));   // Zen 4, Zen 5
  CHECK_FALSE(mb::bf16_products_beat_widening(true, false, true));    // Cooper Lake; AMX unusable
  CHECK_FALSE(mb::bf16_products_beat_widening(false, false, false));  // no bf16 instructions
  CHECK_FALSE(mb::bf16_products_beat_widening(false, false, true));
}

TEST_CASE("gemm_bf16: every back-end and transpose against a float64 reference on the bf16 values") {
  // oneDNN's bf16 kernel where the CPU's bf16 products are fast; every other back-end (and CPU)
  // widens the same values to f32.
  const mb::GemmBackend saved = mb::gemm_backend();
  const mb::CpuFeatures& f = mb::cpu_features();
  for (mb::GemmBackend backend : mb::available_gemm_backends()) {
    mb::set_gemm_backend(backend);
    const bool native = backend == mb::GemmBackend::OneDNN && mb::cpu_level() == mb::CpuLevel::AVX512 &&
                        mb::bf16_products_beat_widening(f.avx512bf16, mb::onednn_uses_amx(), f.intel);
    CHECK(mb::gemm_bf16_kernel() == std::string(native ? "onednn" : "emulated"));
  }
  mb::set_gemm_backend(saved);
  // Products of bf16 values are exact in f32: only the f32 sums round.
  check_products({{7, 5, 3}, {600, 96, 96}, {130, 40, 200}, {64, 768, 33}}, true, 1.0f,
                 [](bool ta, bool tb, const GemmShape& s, const std::vector<float>&, const std::vector<uint16_t>& Ah,
                    int64_t lda, const std::vector<float>&, const std::vector<uint16_t>& Bh, int64_t ldb, float beta,
                    std::vector<float>& C, int64_t ldc) {
                   mb::gemm_bf16(ta, tb, s.M, s.N, s.K, Ah.data(), lda, Bh.data(), ldb, beta, C.data(), ldc);
                 });
}

TEST_CASE("gemm_weight and linear_forward: x·Wᵀ + b on the unpacked weight") {
  // Rows and shapes on both sides of linear_forward's choice between the matmul kernel and sgemm.
  struct Shape {
    int64_t T, K, N;
  };
  for (const Shape& s : std::vector<Shape>{{5, 48, 16}, {300, 64, 192}, {600, 192, 64}, {600, 64, 64}}) {
    for (bool with_bias : {false, true}) {
      CAPTURE(s.T);
      CAPTURE(s.K);
      CAPTURE(s.N);
      CAPTURE(with_bias);
      const std::vector<float> x = mbtest::random_normals(size_t(s.T * s.K), 4);
      const std::vector<float> W = mbtest::random_normals(size_t(s.N * s.K), 5);
      const std::vector<float> b = mbtest::random_normals(size_t(s.N), 6);
      const float* bias = with_bias ? b.data() : nullptr;
      std::vector<float> want(size_t(s.T * s.N));
      for (int64_t t = 0; t < s.T; ++t)
        for (int64_t n = 0; n < s.N; ++n) {
          double dot = with_bias ? b[size_t(n)] : 0.0;
          for (int64_t k = 0; k < s.K; ++k) dot += double(x[size_t(t * s.K + k)]) * W[size_t(n * s.K + k)];
          want[size_t(t * s.N + n)] = float(dot);
        }
      auto worst = [&](const std::vector<float>& got, int64_t ld) {
        double m = 0;
        for (int64_t t = 0; t < s.T; ++t)
          for (int64_t n = 0; n < s.N; ++n)
            m = std::max(m, double(std::fabs(got[size_t(t * ld + n)] - want[size_t(t * s.N + n)])));
        return m;
      };
      for (const int64_t ld : {s.N, s.N + 7}) {  // also a strided output, as the fused QKV buffer has
        CAPTURE(ld);
        std::vector<float> out(size_t(s.T * ld), 42.0f);
        // Where oneDNN has no fast kernel for a product, gemm_weight declines and leaves C alone.
        const bool ran = mb::gemm_weight(W.data(), s.N, s.K, s.T, x.data(), bias, out.data(), ld);
        if (ran) {
          CHECK(worst(out, ld) < 1e-4);
          if (ld > s.N) CHECK(out[size_t(s.N)] == 42.0f);  // past the first row's end: untouched
        } else {
          CHECK(std::all_of(out.begin(), out.end(), [](float v) { return v == 42.0f; }));
        }
        // oneDNN's brgemm kernel (AVX-512, where weights can be packed) takes every dense output
        // here (a strided one it may decline).
        if (mb::gemm_backend() == mb::GemmBackend::OneDNN && mb::packed_gemm_kernel(mb::Precision::F32) == std::string("onednn") &&
            ld == s.N)
          CHECK(ran);
        // Asked again (the answer is cached either way): the same.
        std::vector<float> again(out.size(), 42.0f);
        CHECK(mb::gemm_weight(W.data(), s.N, s.K, s.T, x.data(), bias, again.data(), ld) == ran);
        if (ran) CHECK(again == out);

        std::fill(out.begin(), out.end(), 42.0f);
        mb::linear_forward(out.data(), x.data(), W.data(), bias, s.T, s.K, s.N, ld);
        CHECK(worst(out, ld) < 1e-4);
        if (ld > s.N) CHECK(out[size_t(s.N)] == 42.0f);
      }
    }
  }
}

TEST_CASE("LruCache: the most recently used entries, within its capacity") {
  mb::LruCache<int, int> cache(2);
  int made = 0;
  auto get = [&](int key) {
    return cache.get_or_make(key, [&] {
      ++made;
      return 10 * key;
    });
  };
  CHECK(get(1) == 10);
  CHECK(get(2) == 20);
  CHECK(get(1) == 10);  // a hit: 1 is now more recent than 2
  CHECK(made == 2);
  CHECK(get(3) == 30);  // full: 2, the least recently used, goes
  CHECK(cache.size() == 2);
  CHECK(cache.contains(1));
  CHECK_FALSE(cache.contains(2));
  CHECK(cache.contains(3));
  CHECK(made == 3);
  CHECK_THROWS(cache.get_or_make(4, []() -> int { throw std::runtime_error("no"); }));
  CHECK(cache.size() == 2);  // a failed make() drops nothing
  CHECK(cache.contains(1));
  CHECK(cache.contains(3));
  using IntCache = mb::LruCache<int, int>;
  CHECK_THROWS_AS(IntCache(0), mb::Error);
}

namespace {

// What a packed product of the precision computes, in float64: f32 as it is; bf16 on A and W rounded
// to bfloat16; int8 as the integers the quantisation gives (one scale for A, one per row of W,
// rounded as gemm.h says) times the scales. Only the accumulation order and the final scaling may
// differ from this.
std::vector<double> packed_reference(mb::Precision p, int64_t M, int64_t N, int64_t K, const std::vector<float>& A,
                                     const std::vector<float>& W, const float* bias, std::vector<double>* magnitude) {
  std::vector<double> a(A.begin(), A.end()), w(W.begin(), W.end()), row_scale(size_t(N), 1.0);
  double a_scale = 1.0;
  if (p == mb::Precision::BF16) {
    for (double& x : a) x = mb::bf16_to_f32(mb::f32_to_bf16(float(x)));
    for (double& x : w) x = mb::bf16_to_f32(mb::f32_to_bf16(float(x)));
  } else if (p == mb::Precision::Int8) {
    float amax = 0;
    for (float x : A) amax = std::max(amax, std::fabs(x));
    const float s = amax > 0 ? amax / 127.0f : 1.0f, inv = 1.0f / s;
    a_scale = s;
    for (size_t i = 0; i < A.size(); ++i) a[i] = double(std::lrint(A[i] * inv));
    for (int64_t j = 0; j < N; ++j) {
      float wmax = 0;
      for (int64_t k = 0; k < K; ++k) wmax = std::max(wmax, std::fabs(W[size_t(j * K + k)]));
      const float ws = wmax > 0 ? wmax / 127.0f : 1.0f, winv = 1.0f / ws;
      row_scale[size_t(j)] = ws;
      for (int64_t k = 0; k < K; ++k) w[size_t(j * K + k)] = double(std::lrint(W[size_t(j * K + k)] * winv));
    }
  }
  std::vector<double> out(size_t(M * N));
  magnitude->assign(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double dot = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double t = a[size_t(i * K + k)] * w[size_t(j * K + k)];
        dot += t;
        mag += std::fabs(t);
      }
      const double s = a_scale * row_scale[size_t(j)];
      out[size_t(i * N + j)] = dot * s + (bias ? bias[j] : 0.0);
      (*magnitude)[size_t(i * N + j)] = mag * s + (bias ? std::fabs(bias[j]) : 0.0) + 1.0;
    }
  return out;
}

}  // namespace

TEST_CASE("gemm_weight and gemm_bf16 stay right over more shapes than their primitive caches keep") {
  // One primitive per output stride here: 1,100 strides pass the caches' 1,024 entries, so the
  // first ones are dropped and made again on the second round.
  const int64_t M = 3, K = 64, N = 32, shapes = 1100;
  const std::vector<float> x = mbtest::random_normals(size_t(M * K), 7);
  const std::vector<float> W = mbtest::random_normals(size_t(N * K), 8);
  std::vector<uint16_t> xh(x.size()), wh(W.size());
  mb::convert_f32_to_bf16(x.data(), xh.data(), x.size());
  mb::convert_f32_to_bf16(W.data(), wh.data(), W.size());
  std::vector<double> magnitude;
  const std::vector<double> want = packed_reference(mb::Precision::F32, M, N, K, x, W, nullptr, &magnitude);
  const std::vector<double> want_h = packed_reference(mb::Precision::BF16, M, N, K, x, W, nullptr, &magnitude);
  int64_t wrong = 0, wrong_h = 0;
  for (int round = 0; round < 2; ++round)
    for (int64_t i = 0; i < shapes; ++i) {
      const int64_t ld = N + i;
      std::vector<float> out(size_t(M * ld), 0.0f), out_h(size_t(M * ld), 0.0f);
      const bool ran = mb::gemm_weight(W.data(), N, K, M, x.data(), nullptr, out.data(), ld);
      // W as B = Wᵀ: [K, N] read transposed from the [N, K] rows.
      mb::gemm_bf16(false, true, M, N, K, xh.data(), K, wh.data(), K, 0.0f, out_h.data(), ld);
      for (int64_t t = 0; t < M; ++t)
        for (int64_t n = 0; n < N; ++n) {
          if (ran && std::fabs(out[size_t(t * ld + n)] - want[size_t(t * N + n)]) > 1e-4) ++wrong;
          if (std::fabs(out_h[size_t(t * ld + n)] - want_h[size_t(t * N + n)]) > 1e-4) ++wrong_h;
        }
    }
  CHECK(wrong == 0);
  CHECK(wrong_h == 0);
}

TEST_CASE("the engine's own packed GEMM: every precision at every CPU level against float64") {
  // Shapes with partial tiles and panels, several blocks of K for every precision (a block holds
  // 256 f32, 512 bf16 or 1024 int8 values of K), more work items than threads, and a single row.
  struct Shape {
    int64_t M, N, K;
  };
  const std::vector<Shape> shapes = {{1, 1, 1}, {7, 5, 3}, {13, 37, 77}, {1, 300, 257}, {130, 100, 600},
                                     {50, 40, 2100}, {200, 192, 64}};
  const mb::CpuLevel saved = mb::cpu_level();
  for (mb::CpuLevel level : mb::supported_cpu_levels()) {
    mb::set_cpu_level(level);
    CAPTURE(mb::cpu_level_name(level));
    for (mb::Precision p : {mb::Precision::F32, mb::Precision::BF16, mb::Precision::Int8}) {
      CAPTURE(mb::precision_name(p));
      for (const Shape& s : shapes)
        for (bool with_bias : {false, true}) {
          CAPTURE(s.M);
          CAPTURE(s.N);
          CAPTURE(s.K);
          CAPTURE(with_bias);
          const std::vector<float> A = mbtest::random_normals(size_t(s.M * s.K), 7);
          const std::vector<float> W = mbtest::random_normals(size_t(s.N * s.K), 8);
          const std::vector<float> b = mbtest::random_normals(size_t(s.N), 9);
          const float* bias = with_bias ? b.data() : nullptr;
          const std::shared_ptr<mb::OwnPackedWeight> w = mb::own_pack_weight(mb::WeightRows{mb::Precision::F32, W.data(), nullptr}, s.N, s.K, p);
          if (!w) {  // only Arm without the dot product has no int8 kernel
            CHECK(p == mb::Precision::Int8);
            CHECK(!mb::cpu_features().dotprod);
            continue;
          }
          std::vector<double> magnitude;
          const std::vector<double> want = packed_reference(p, s.M, s.N, s.K, A, W, bias, &magnitude);
          const int64_t ldc = s.N + 3;  // a strided output: the padding stays untouched
          std::vector<float> C(size_t(s.M * ldc), 42.0f);
          mb::own_gemm(*w, s.M, A.data(), bias, C.data(), ldc);
          double worst = 0;
          bool padding_untouched = true;
          for (int64_t i = 0; i < s.M; ++i) {
            for (int64_t j = 0; j < s.N; ++j)
              worst = std::max(worst, std::fabs(C[size_t(i * ldc + j)] - want[size_t(i * s.N + j)]) /
                                          magnitude[size_t(i * s.N + j)]);
            for (int64_t j = s.N; j < ldc; ++j) padding_untouched &= C[size_t(i * ldc + j)] == 42.0f;
          }
          CHECK(worst < 2e-6);
          CHECK(padding_untouched);
        }
    }
  }
  mb::set_cpu_level(saved);
}

TEST_CASE("gemm_tn_f64: C += AᵀB in double at every CPU level, whole or lower triangle, any thread count") {
  // Partial register tiles and task blocks, several blocks of K (256 each), offsets into C.
  struct Shape {
    int64_t M, N, K;
  };
  const std::vector<Shape> shapes = {{1, 1, 1}, {7, 5, 3}, {13, 37, 77}, {70, 300, 257}, {130, 130, 600}};
  mb::Rng rng(21);
  const mb::CpuLevel saved = mb::cpu_level();
  const int saved_threads = mb::num_threads();
  for (const Shape& s : shapes) {
    CAPTURE(s.M);
    CAPTURE(s.N);
    CAPTURE(s.K);
    const int64_t lda = s.M + 3, ldb = s.N + 1, ldc = s.N + 2;
    std::vector<double> A(size_t(s.K * lda)), B(size_t(s.K * ldb)), C0(size_t(s.M * ldc));
    for (double& v : A) v = rng.normal();
    for (double& v : B) v = rng.normal();
    for (double& v : C0) v = rng.normal();
    std::vector<long double> want(C0.begin(), C0.end());
    for (int64_t i = 0; i < s.M; ++i)
      for (int64_t j = 0; j < s.N; ++j)
        for (int64_t t = 0; t < s.K; ++t) want[size_t(i * ldc + j)] += (long double)A[size_t(t * lda + i)] * B[size_t(t * ldb + j)];
    for (mb::CpuLevel level : mb::supported_cpu_levels()) {
      mb::set_cpu_level(level);
      CAPTURE(mb::cpu_level_name(level));
      std::vector<double> first;  // this level's, on one thread
      for (bool lower : {false, true})
        for (int threads : {1, 2}) {
          CAPTURE(lower);
          CAPTURE(threads);
          mb::set_num_threads(threads);
          std::vector<double> C = C0;
          mb::gemm_tn_f64(s.M, s.N, s.K, A.data(), lda, B.data(), ldb, C.data(), ldc, lower);
          double worst = 0;
          for (int64_t i = 0; i < s.M; ++i)
            for (int64_t j = 0; j < s.N; ++j) {
              const double c = C[size_t(i * ldc + j)];
              if (j <= i || !lower) worst = std::max(worst, std::fabs(c - double(want[size_t(i * ldc + j)])));
            }
          CHECK(worst < 1e-12 * double(s.K));
          for (int64_t i = 0; i < s.M; ++i)  // nothing outside C's M × N touched
            for (int64_t j = s.N; j < ldc; ++j) CHECK(C[size_t(i * ldc + j)] == C0[size_t(i * ldc + j)]);
          if (!lower && first.empty()) first = C;
          if (!lower && threads == 2) CHECK(C == first);  // the same sums in the same order on two threads
        }
    }
  }
  mb::set_num_threads(saved_threads);
  mb::set_cpu_level(saved);
}

TEST_CASE("packing stored bf16 and int8 rows gives what packing their f32 weights gives, bit for bit") {
  // A quantized model file stores the rows pack_weight would derive from the f32 weights; loading it
  // must compute exactly what loading the f32 model with --bf16 / --int8 computes.
  const int64_t M = 37, N = 70, K = 300;
  const std::vector<float> A = mbtest::random_normals(size_t(M * K), 11);
  std::vector<float> W = mbtest::random_normals(size_t(N * K), 12);
  std::fill(W.begin() + 5 * K, W.begin() + 6 * K, 0.0f);  // an all-zero row: scale 1, stays 0
  const std::vector<float> b = mbtest::random_normals(size_t(N), 13);
  std::vector<uint16_t> h(W.size());
  mb::convert_f32_to_bf16(W.data(), h.data(), W.size());
  std::vector<float> scale(static_cast<size_t>(N));
  std::vector<int8_t> q(W.size());
  mb::quantize_weight_rows(W.data(), N, K, scale.data(), q.data());
  CHECK(scale[5] == 1.0f);

  const mb::CpuLevel saved_level = mb::cpu_level();
  const mb::GemmBackend saved_backend = mb::gemm_backend();
  for (mb::GemmBackend backend : mb::available_gemm_backends()) {
    mb::set_gemm_backend(backend);
    for (mb::CpuLevel level : mb::supported_cpu_levels()) {
      mb::set_cpu_level(level);
      CAPTURE(mb::gemm_backend_name(backend));
      CAPTURE(mb::cpu_level_name(level));
      // The file scheme is the same bytes at every level: lrint(W · (1 / scale)), scale max|row| / 127.
      std::vector<float> level_scale(static_cast<size_t>(N));
      std::vector<int8_t> level_q(W.size());
      mb::quantize_weight_rows(W.data(), N, K, level_scale.data(), level_q.data());
      bool as_lrint = true;
      for (int64_t j = 0; j < N; ++j) {
        float amax = 0;
        for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(W[size_t(j * K + k)]));
        const float sj = amax > 0 ? amax / 127.0f : 1.0f, inv = 1.0f / sj;
        as_lrint &= level_scale[size_t(j)] == sj;
        for (int64_t k = 0; k < K; ++k) as_lrint &= level_q[size_t(j * K + k)] == int8_t(std::lrint(W[size_t(j * K + k)] * inv));
      }
      CHECK(as_lrint);
      for (mb::Precision p : {mb::Precision::BF16, mb::Precision::Int8}) {
        CAPTURE(mb::precision_name(p));
        const mb::WeightRows rows = p == mb::Precision::BF16 ? mb::WeightRows{p, h.data(), nullptr}
                                                             : mb::WeightRows{p, q.data(), scale.data()};
        const std::shared_ptr<mb::PackedWeight> from_f32 = mb::pack_weight(W.data(), N, K, p);
        const std::shared_ptr<mb::PackedWeight> from_rows = mb::pack_weight(rows, N, K, p);
        REQUIRE(bool(from_f32) == bool(from_rows));
        // Stored rows pack only in their own precision.
        CHECK(!mb::pack_weight(rows, N, K, p == mb::Precision::BF16 ? mb::Precision::Int8 : mb::Precision::BF16));
        CHECK(!mb::pack_weight(rows, N, K, mb::Precision::F32));
        if (!from_f32) continue;
        CHECK(mb::packed_weight_bytes(*from_f32) == mb::packed_weight_bytes(*from_rows));
        std::vector<float> c1(size_t(M * N)), c2(size_t(M * N), 1.0f);
        REQUIRE(mb::gemm_packed(*from_f32, M, A.data(), b.data(), c1.data(), N));
        REQUIRE(mb::gemm_packed(*from_rows, M, A.data(), b.data(), c2.data(), N));
        CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0);
      }
    }
  }
  mb::set_cpu_level(saved_level);
  mb::set_gemm_backend(saved_backend);
}
