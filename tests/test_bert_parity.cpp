// BERT forward parity against PyTorch (tests/reference/make_bert_fixtures.py): random-weight
// models at tiny, odd (H=96 A=4, H=84 A=6) and base shapes, F32/F16/BF16 checkpoints, classifier,
// legacy (gamma/beta, no prefix) and sharded layouts, every GEMM back-end.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/gemm.h"
#include "engine/threads.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "tests/test_util.h"

namespace {

float max_abs_diff(const mb::Tensor& got, const mb::Tensor& want) {
  REQUIRE(got.shape() == want.shape());
  float m = 0;
  for (int64_t i = 0; i < got.numel(); ++i) m = std::max(m, std::fabs(got.f32()[i] - want.f32()[i]));
  return m;
}

struct Case {
  const char* name;
  float tol;
};

void check_case(const Case& c) {
  const std::string dir = mbtest::fixtures_dir() + "/bert/" + c.name;
  mb::BertModel model = mb::BertModel::load(dir);
  const mb::SafeTensorsFile expected = mb::read_safetensors(dir + "/expected.safetensors");
  const auto& e = expected.tensors;
  const mb::Batch batch = mbtest::fixture_batch(expected);

  // Every GEMM back-end, on the weights as they are and then packed for inference where it packs
  // f32 (engine/packed_gemm.cpp: oneDNN's kernel with oneDNN from AVX-512 on, else the engine's own).
  for (mb::GemmBackend backend : mb::available_gemm_backends())
    for (bool packed : {false, true}) {
      mb::set_gemm_backend(backend);
      if (packed && !mb::packed_gemm_available(mb::Precision::F32)) continue;
      if (packed) {
        model.pack_for_inference();
        CHECK(model.packed_bytes() > 0);
      }
      const std::string backend_name = std::string(mb::gemm_backend_name(backend)) + (packed ? "+packed" : "");
      CAPTURE(backend_name);
      const mb::Tensor hidden = model.encode(batch);
      const float diff = max_abs_diff(hidden, e.at("hidden"));
      std::printf("parity %-10s %-14s max|diff| hidden %.2e\n", c.name, backend_name.c_str(), double(diff));
      CHECK(diff <= c.tol);
      const mb::Tensor pooled = model.pool(batch, hidden);
      CHECK(max_abs_diff(pooled, e.at("pooled")) <= c.tol);
      if (e.count("logits")) {
        REQUIRE(model.has_classifier());
        CHECK(max_abs_diff(model.classify(pooled), e.at("logits")) <= c.tol);
      } else {
        CHECK_FALSE(model.has_classifier());
      }
      if (packed) model.unpack();
    }
  mb::set_gemm_backend(mb::available_gemm_backends().front());
}

}  // namespace

TEST_CASE("BERT forward matches PyTorch") {
  mb::set_num_threads(0);
  for (const Case& c : {Case{"tiny_f32", 1e-4f}, Case{"odd_f32", 1e-4f}, Case{"odd6_f32", 1e-4f},
                        Case{"tiny_bf16", 2e-3f}, Case{"odd_f16", 2e-3f}, Case{"base_f32", 1e-4f}}) {
    SUBCASE(c.name) { check_case(c); }
  }
}

TEST_CASE("F32 weights are zero-copy views of the mapped file; F16/BF16 are converted") {
  const mb::BertModel f32 = mb::BertModel::load(mbtest::fixtures_dir() + "/bert/tiny_f32");
  CHECK(f32.word_emb.value().is_view());
  CHECK(f32.layers[1].ffn_out_w.value().is_view());
  const mb::BertModel bf16 = mb::BertModel::load(mbtest::fixtures_dir() + "/bert/tiny_bf16");
  CHECK_FALSE(bf16.word_emb.value().is_view());
  CHECK(bf16.word_emb.value().dtype() == mb::DType::F32);
}

TEST_CASE("results do not depend on the thread count or on how sequences are batched") {
  const std::string dir = mbtest::fixtures_dir() + "/bert/odd6_f32";
  const mb::BertModel model = mb::BertModel::load(dir);
  mb::Batch together, alone;
  std::vector<int32_t> a = {101, 2023, 2003, 1037, 3231, 102}, b = {101, 7592, 102};
  together.add(a, {});
  together.add(b, {0, 0, 0});
  alone.add(b, {});
  mb::set_num_threads(1);
  const mb::Tensor h_together = model.encode(together);
  mb::set_num_threads(2);
  const mb::Tensor h_alone = model.encode(alone);
  for (int64_t i = 0; i < h_alone.numel(); ++i)
    CHECK(h_alone.f32()[i] == doctest::Approx(h_together.f32()[6 * 84 + i]).epsilon(1e-5));
  mb::set_num_threads(0);
}
