// The portable SIMD wrappers ("scalar" path): a "vector" of 8 floats whose fixed-size
// loops the compiler maps onto the baseline target's SIMD (SSE2 on x86-64, NEON on
// aarch64). Included by the translation units compiled without ISA flags (rq_cpu.cpp,
// kmeans_cpu.cpp) right before a kernel header (rq_cpu_kernel.h, kmeans_cpu_kernel.h).
//
// Every simd_<isa>.h defines the same `struct Isa` (same members, same meaning) in an
// anonymous namespace: internal linkage, so code compiled with AVX-512 flags can never
// be picked by the linker for another path. A translation unit includes exactly one, and
// it defines PYSID_ISA, the suffix of the entry points the kernel headers then define.
//
//   kLevel                   the IsaLevel of cpu_isa.h (the kernels' tuning tables key on it)
//   W                        lanes (floats) per vector
//   V, VI, M                 float vector, int32 vector, comparison mask
//   zero load store set1     V = 0, V <- p[0 .. W), p[0 .. W) <- V, every lane = f
//   add sub fmadd            a + b, a - b, a * b + c (fused on AVX2 / AVX-512)
//   hsum hmin                horizontal sum / min (fixed order)
//   min(a, b)                b < a ? b : a per lane (NaN b keeps a)
//   lt le eq                 ordered comparisons -> M
//   blend(m, a, b) blendi    m ? b : a per lane (float / int32)
//   loadi storei iota        int32 lanes; iota(b) = b, b + 1, ..., b + W - 1
//   movemask(m)              bit i = lane i of m
//   load_f16 load_bf16       W float16 / bfloat16 values -> float32, exact
#pragma once
#include <cstdint>

#include "cpu_isa.h"

#include "half.h"

// The suffix of this path's kernel entry points (rq_block_scalar, km_pp_scalar, ...).
#define PYSID_ISA scalar

namespace {

struct Isa {
  static constexpr int kLevel = pysid::kIsaScalar;  // cpu_isa.h
  static constexpr int W = 8;
  struct V { float v[8]; };
  struct VI { int32_t v[8]; };
  struct M { bool v[8]; };
  static inline V zero() { V r; for (int i = 0; i < 8; ++i) r.v[i] = 0.0f; return r; }
  static inline V load(const float* p) { V r; for (int i = 0; i < 8; ++i) r.v[i] = p[i]; return r; }
  static inline void store(float* p, V a) { for (int i = 0; i < 8; ++i) p[i] = a.v[i]; }
  static inline V set1(float f) { V r; for (int i = 0; i < 8; ++i) r.v[i] = f; return r; }
  static inline V fmadd(V a, V b, V c) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i]; return r; }
  static inline V add(V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] + b.v[i]; return r; }
  static inline V sub(V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] - b.v[i]; return r; }
  static inline float hsum(V a) {
    float t[4];
    for (int i = 0; i < 4; ++i) t[i] = a.v[i] + a.v[i + 4];
    return (t[0] + t[2]) + (t[1] + t[3]);
  }
  static inline float hmin(V a) {
    float m = a.v[0];
    for (int i = 1; i < 8; ++i) m = a.v[i] < m ? a.v[i] : m;
    return m;
  }
  static inline V min(V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = b.v[i] < a.v[i] ? b.v[i] : a.v[i]; return r; }
  static inline M lt(V a, V b) { M r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] < b.v[i]; return r; }
  static inline M le(V a, V b) { M r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] <= b.v[i]; return r; }
  static inline M eq(V a, V b) { M r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] == b.v[i]; return r; }
  static inline V blend(M m, V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = m.v[i] ? b.v[i] : a.v[i]; return r; }
  static inline VI blendi(M m, VI a, VI b) { VI r; for (int i = 0; i < 8; ++i) r.v[i] = m.v[i] ? b.v[i] : a.v[i]; return r; }
  static inline VI loadi(const int32_t* p) { VI r; for (int i = 0; i < 8; ++i) r.v[i] = p[i]; return r; }
  static inline void storei(int32_t* p, VI a) { for (int i = 0; i < 8; ++i) p[i] = a.v[i]; }
  static inline VI iota(int32_t base) { VI r; for (int i = 0; i < 8; ++i) r.v[i] = base + i; return r; }
  static inline unsigned movemask(M m) { unsigned r = 0; for (int i = 0; i < 8; ++i) r |= unsigned(m.v[i]) << i; return r; }
  static inline V load_f16(const uint16_t* p) { V r; for (int i = 0; i < 8; ++i) r.v[i] = km_half_to_float(p[i]); return r; }
  static inline V load_bf16(const uint16_t* p) { V r; for (int i = 0; i < 8; ++i) r.v[i] = km_bf16_to_float(p[i]); return r; }
};

}  // namespace
