// Exact scalar float16 / bfloat16 -> float32 conversions, for the CPU kernels
// (the k-means kernels and the scalar SIMD wrappers of simd_scalar.h).
#pragma once
#include <cstdint>
// Exact scalar conversions of one float16 / bfloat16 value (internal linkage: every
// translation unit, whatever its ISA flags, gets its own copy).
#include <cstring>
namespace {

inline float km_half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp == 0) {
    if (man == 0) {
      bits = sign;  // +-0
    } else {  // subnormal: man * 2^-24, exact in float32
      const float f = static_cast<float>(man) * 5.9604644775390625e-8f;
      return sign ? -f : f;
    }
  } else {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float km_bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace
