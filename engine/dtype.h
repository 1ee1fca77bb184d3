// Element types: f32 is the compute type; bf16/f16 are storage types converted on load (or, in a
// quantized model, packed as they are); i8 holds a quantized model's int8 weights; i32/i64 carry
// token ids.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace mb {

enum class DType { F32, F16, BF16, I32, I64, I8 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);  // safetensors spelling: "F32", "F16", "BF16", "I32", "I64", "I8"
bool dtype_from_name(const std::string& name, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of src (dtype dt, one of F32/F16/BF16) to f32.
void convert_to_f32(const void* src, DType dt, float* dst, size_t n);
// n floats to bfloat16 as f32_to_bf16 rounds them (on the CPU's own conversion where it has
// AVX512-BF16), split between the threads for large n.
void convert_f32_to_bf16(const float* src, uint16_t* dst, size_t n);

}  // namespace mb
