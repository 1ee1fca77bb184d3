// Tensors: dtype conversions (F16/BF16 rounding), views and copies, and the recycling allocator.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "engine/allocator.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/tensor.h"

TEST_CASE("F16 and BF16 conversions round to nearest even and keep specials") {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 3.14159265f}) {
    CHECK(mb::f16_to_f32(mb::f32_to_f16(v)) == doctest::Approx(v).epsilon(1e-3));
    CHECK(mb::bf16_to_f32(mb::f32_to_bf16(v)) == doctest::Approx(v).epsilon(1e-2));
  }
  CHECK(mb::f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);  // halfway: even mantissa stays
  CHECK(mb::f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);  // halfway: rounds up to even
  CHECK(std::isinf(mb::f16_to_f32(mb::f32_to_f16(1e6f))));
  CHECK(std::isnan(mb::f16_to_f32(mb::f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isnan(mb::bf16_to_f32(mb::f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(mb::f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80);  // halfway between bf16 neighbours: even
}

TEST_CASE("views, clones, reshapes, dtype round trips") {
  const mb::Tensor a = mb::Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  const mb::Tensor r = a.reshape({3, 2});
  CHECK(r.raw() == a.raw());
  const mb::Tensor c = a.clone();
  CHECK(c.raw() != a.raw());
  CHECK(std::memcmp(c.raw(), a.raw(), a.nbytes()) == 0);
  CHECK(a.to_f32().raw() == a.raw());  // F32 -> F32: no copy
  const mb::Tensor h = a.to_dtype(mb::DType::BF16);
  CHECK(h.dtype() == mb::DType::BF16);
  CHECK(h.to_f32().f32()[5] == 6.0f);
  CHECK_THROWS_AS(a.reshape({4, 2}), mb::Error);
  CHECK_THROWS_AS(h.f32(), mb::Error);
  CHECK(mb::Tensor().numel() == 0);
  CHECK_FALSE(mb::Tensor().defined());
}

TEST_CASE("large blocks are recycled, not returned to the system") {
  mb::tensor_cache_clear();
  const mb::Shape big{1024, 1024};  // 4 MiB
  void* first = nullptr;
  {
    mb::Tensor t = mb::Tensor::empty(big);
    first = t.raw();
    // From 2 MiB up a block is mapped in huge pages, so it starts on a 2 MiB boundary.
    CHECK(reinterpret_cast<uintptr_t>(first) % (uintptr_t(2) << 20) == 0);
    std::memset(t.raw(), 7, size_t(4) << 20);  // usable to the last byte
  }
  CHECK(mb::tensor_cache_bytes() >= 4u << 20);
  {
    mb::Tensor t = mb::Tensor::empty(big);
    CHECK(t.raw() == first);  // the same block again
    CHECK(mb::tensor_cache_bytes() == 0);
  }
  mb::tensor_cache_clear();
  CHECK(mb::tensor_cache_bytes() == 0);
}

TEST_CASE("small activations (bert-tiny's 64 KiB) are recycled too, smaller blocks are not") {
  mb::tensor_cache_clear();
  void* first = nullptr;
  {
    mb::Tensor t = mb::Tensor::empty({128, 128});
    first = t.raw();
  }
  CHECK(mb::tensor_cache_bytes() == 64u << 10);
  {
    mb::Tensor t = mb::Tensor::empty({128, 127});  // rounds up to the same capacity
    CHECK(t.raw() == first);
    CHECK(mb::tensor_cache_bytes() == 0);
  }
  { mb::Tensor t = mb::Tensor::empty({16, 16}); }  // 1 KiB: malloc's
  CHECK(mb::tensor_cache_bytes() == 64u << 10);
  mb::tensor_cache_clear();
}

TEST_CASE("a lower cache limit releases the largest blocks and caps what is kept") {
  mb::tensor_cache_clear();
  const size_t before = mb::tensor_cache_limit();
  {
    mb::Tensor a = mb::Tensor::empty({1024, 1024});  // 4 MiB
    mb::Tensor b = mb::Tensor::empty({256, 256});    // 256 KiB
  }
  CHECK(mb::tensor_cache_bytes() == (4u << 20) + (256u << 10));
  CHECK(mb::tensor_cache_set_limit(size_t(1) << 20) == before);  // 1 MiB: the 4 MiB block goes
  CHECK(mb::tensor_cache_limit() == size_t(1) << 20);
  CHECK(mb::tensor_cache_bytes() == 256u << 10);
  { mb::Tensor c = mb::Tensor::empty({1024, 1024}); }  // freed into a full cache: released
  CHECK(mb::tensor_cache_bytes() == 256u << 10);
  CHECK(mb::tensor_cache_set_limit(0) == size_t(1) << 20);
  CHECK(mb::tensor_cache_bytes() == 0);
  { mb::Tensor d = mb::Tensor::empty({256, 256}); }
  CHECK(mb::tensor_cache_bytes() == 0);
  {
    // A command's scope sets its own limit and restores the one before; with MB_TENSOR_CACHE_MB
    // set, it leaves the limit alone.
    const mb::TensorCacheLimitScope scoped(size_t(2) << 20);
    CHECK(mb::tensor_cache_limit() == (mb::tensor_cache_limit_from_env() ? 0 : size_t(2) << 20));
  }
  CHECK(mb::tensor_cache_limit() == 0);
  mb::tensor_cache_set_limit(before);
  { mb::Tensor e = mb::Tensor::empty({256, 256}); }
  CHECK(mb::tensor_cache_bytes() == 256u << 10);
  mb::tensor_cache_clear();
}

TEST_CASE("huge-page blocks start on a 2 MiB boundary and are usable to the last byte") {
  for (size_t bytes : {size_t(1), size_t(4096), (size_t(9) << 20) + 12345}) {
    auto* p = static_cast<unsigned char*>(mb::huge_page_alloc(bytes));
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % (uintptr_t(2) << 20) == 0);
    std::memset(p, 7, bytes);
    CHECK(p[0] == 7);
    CHECK(p[bytes - 1] == 7);
    mb::huge_page_free(p, bytes);
  }
}
