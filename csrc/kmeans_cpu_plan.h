// Shared between the k-means dispatcher (kmeans_cpu.cpp) and its per-ISA kernel
// translation units (kmeans_cpu_kernel.h compiled three times).
#pragma once
#include <cstdint>

namespace pysid {
namespace kmcpu {

constexpr int64_t kPad = 16;  // candidate rows are padded with zeros to a multiple of this

struct UpdateArgs {
  const void* x;
  int dtype;           // 0 f32, 1 f16, 2 bf16
  int64_t d;
  const int64_t* idx;  // row ids sorted (stably) by code
  const float* w;      // nullptr: all ones
};

struct PPArgs {
  const void* x;
  int dtype;
  int64_t n;           // rows of x (prefetching stops there)
  int64_t d;
  int64_t dp;          // d rounded up to kPad
  const float* cand;   // [t][dp], zero padded
  int64_t t;
  const float* mind;
  const float* w;      // nullptr: all ones
  float* dist;         // [n][t]
};

// Sum rows idx[j0 .. j1) (in that order) into acc[0 .. d) (overwritten) and their
// weights into *cnt. rowbuf: d floats of scratch.
using UpdateFn = void (*)(const UpdateArgs&, int64_t j0, int64_t j1, double* acc, double* cnt,
                          float* rowbuf);
// Score rows [i0, i1) against every candidate; pot[0 .. t) (overwritten) gets this
// chunk's sum of w * min(mind, dist) in row order.
using PPFn = void (*)(const PPArgs&, int64_t i0, int64_t i1, double* pot);

void km_update_scalar(const UpdateArgs&, int64_t, int64_t, double*, double*, float*);
void km_pp_scalar(const PPArgs&, int64_t, int64_t, double*);
#if defined(PYSID_X86)
void km_update_avx2(const UpdateArgs&, int64_t, int64_t, double*, double*, float*);
void km_pp_avx2(const PPArgs&, int64_t, int64_t, double*);
void km_update_avx512(const UpdateArgs&, int64_t, int64_t, double*, double*, float*);
void km_pp_avx512(const PPArgs&, int64_t, int64_t, double*);
#endif

}  // namespace kmcpu
}  // namespace pysid

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
