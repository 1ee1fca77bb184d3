#include "engine/dtype.h"

#include <cmath>

#include "engine/cpu_kernels.h"
#include "engine/error.h"
#include "engine/threads.h"

namespace mb {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::I8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::I8: return "I8";
  }
  return "?";
}

bool dtype_from_name(const std::string& name, DType* out) {
  static const struct { const char* name; DType dt; } table[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I32", DType::I32}, {"I64", DType::I64}, {"I8", DType::I8}};
  for (const auto& e : table)
    if (name == e.name) { *out = e.dt; return true; }
  return false;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = std::ldexp(float(mant), -24);
      std::memcpy(&bits, &f, 4);
      bits |= sign;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t absbits = bits & 0x7fffffffu;
  if (absbits > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (absbits >= 0x47800000u) return sign | 0x7c00u;  // overflow (>= 65536) -> inf
  if (absbits < 0x38800000u) {                        // below the smallest normal half
    // Subnormal half: round(|f| * 2^24) to nearest even.
    float a;
    std::memcpy(&a, &absbits, 4);
    float scaled = a * 16777216.0f;  // exact (power of two)
    float r = std::nearbyint(scaled);  // default rounding mode: nearest even
    return sign | uint16_t(r);
  }
  uint32_t exp = (absbits >> 23) - 112u;
  uint32_t mant = absbits & 0x7fffffu;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h += 1;  // may carry into exponent: fine
  return sign | uint16_t(h);
}

void convert_to_f32(const void* src, DType dt, float* dst, size_t n) {
  switch (dt) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    default:
      throw Error(std::string("cannot convert ") + dtype_name(dt) + " to F32");
  }
}

void convert_f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  const auto convert = cpu_kernels().f32_to_bf16;  // the level chosen outside the parallel region
  parallel_chunks(int64_t(n), int64_t(1) << 16, [&](int64_t b, int64_t e) { convert(src + b, dst + b, size_t(e - b)); });
}

}  // namespace mb
