// Shared between the k-means dispatcher (kmeans_cpu.cpp) and its per-ISA kernel
// translation units (kmeans_cpu_kernel.h compiled three times).
#pragma once
#include <cstdint>

#include "status.h"  // DType codes

namespace pysid {
namespace kmcpu {

constexpr int kPanelRows = 16;  // rows per k-means++ panel (x transposed 16 rows at a time)
constexpr int kUnitMax = 32;    // most rows any path scores together (2 panels)
constexpr int kGroupMax = 8;    // most candidates any path scores together
constexpr int kMaxCand = 64;    // == kmeanspp_max_candidates (kmeans.h)
// Scratch floats one thread of the k-means++ scoring needs for rows of d values: the
// per-lane potentials (kMaxCand x 16 doubles), then one unit of packed rows.
constexpr int64_t kLaneFloats = 2 * kPanelRows * kMaxCand;
inline int64_t pp_scratch_floats(int64_t d) { return kLaneFloats + kUnitMax * d; }

struct UpdateArgs {
  const void* x;
  int dtype;           // DType (status.h)
  int64_t d;
  const int64_t* idx;  // row ids sorted (stably) by code
  const float* w;      // nullptr: all ones
};

struct PPArgs {
  const void* x;         // [n][d] row-major (dtype): read when panels is nullptr
  int dtype;             // DType (status.h)
  const float* panels;   // or [ceil(n / 32) * 2][d][16] float32 panels (zero padded)
  int64_t n;
  int64_t d;
  const float* cand;     // [t][d]
  int64_t t;
  const float* mind;     // [n]
  const float* w;        // nullptr: all ones
  float* dist;           // distance of row i to candidate j: dist[i * ld_row + j * ld_cand]
  int64_t ld_row, ld_cand;
};

// Sum rows idx[j0 .. j1) (in that order) into acc[0 .. d) (overwritten) and their
// weights into *cnt. rowbuf: d floats of scratch.
using UpdateFn = void (*)(const UpdateArgs&, int64_t j0, int64_t j1, double* acc, double* cnt,
                          float* rowbuf);
// Score rows [i0, i1) (i0 a multiple of kUnitMax) against every candidate; pot[0 .. t)
// (overwritten) gets this range's sum of w * min(mind, dist): per lane i % 16 in row
// order, then the 16 lane sums in lane order (kmeans.h).
// scratch: pp_scratch_floats(d) floats, 64-byte aligned.
using PPFn = void (*)(const PPArgs&, int64_t i0, int64_t i1, double* pot, float* scratch);

void km_update_scalar(const UpdateArgs&, int64_t, int64_t, double*, double*, float*);
void km_pp_scalar(const PPArgs&, int64_t, int64_t, double*, float*);
#if defined(PYSID_X86)
void km_update_avx2(const UpdateArgs&, int64_t, int64_t, double*, double*, float*);
void km_pp_avx2(const PPArgs&, int64_t, int64_t, double*, float*);
void km_update_avx512(const UpdateArgs&, int64_t, int64_t, double*, double*, float*);
void km_pp_avx512(const PPArgs&, int64_t, int64_t, double*, float*);
#endif

}  // namespace kmcpu
}  // namespace pysid

#include "half.h"  // km_half_to_float, km_bf16_to_float (every translation unit its own copy)

namespace pysid {
namespace kmcpu {

// ---- the k-means|| seeding assignment in bfloat16 (kmeans_assign_bf16_cpu, kmeans.h) ----
constexpr int kSeedPanel = 16;     // candidates per panel
constexpr int kSeedBlockRows = 192;  // rows converted and searched together (a multiple of every tile)

// Candidates packed once per call. Pair g of a row is (x[2g], x[2g + 1]) rounded to bfloat16
// (seed_bf16 below; 0 past d). cw: [np][d2][16] uint32 words, low half the even element, high
// half the odd one (the vdpbf16ps layout); cf: [np][d2][2][16] floats, the odd element first
// (the emulation's order); cn: [np * 16] the candidates' seed_sqnorm, +inf on padding lanes.
struct SeedArgs {
  const float* x;  // [n][d] float32
  int64_t d, d2, np;
  const uint32_t* cw;  // hardware bf16 path
  const float* cf;     // emulation paths
  const float* cn;
  int32_t* codes;  // [n] out
  float* dist;     // [n] out
};
// Rows [i0, i0 + rows), rows <= kSeedBlockRows. scratch: seed_scratch_floats(d2) floats, 64-byte aligned.
using SeedFn = void (*)(const SeedArgs&, int64_t i0, int64_t rows, float* scratch);
inline int64_t seed_scratch_floats(int64_t d2) {
  // converted rows (2 * d2 floats each), per-lane running minima and codes, row norms
  return kSeedBlockRows * (2 * d2 + 2 * kSeedPanel + 1) + 64;
}

void km_seed_scalar(const SeedArgs&, int64_t, int64_t, float*);
#if defined(PYSID_X86)
void km_seed_avx2(const SeedArgs&, int64_t, int64_t, float*);
void km_seed_avx512(const SeedArgs&, int64_t, int64_t, float*);
void km_seed_avx512bf16(const SeedArgs&, int64_t, int64_t, float*);  // vdpbf16ps (kmeans_cpu_bf16.cpp, PYSID_BF16)
#endif

// x rounded to bfloat16 (round to nearest even), as the upper 16 bits of a float; |x| < 2^-56
// becomes 0, so that every product of two such values is exact in float32 and every sum of
// them is 0 or a normal float (no denormal ever reaches vdpbf16ps, which flushes them).
inline uint16_t seed_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) < 0x23800000u) return static_cast<uint16_t>((u >> 16) & 0x8000u);  // 2^-56
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float seed_bf16_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

inline float seed_lane_sum(const float* lane) {
  float s = lane[0];
  for (int l = 1; l < kSeedPanel; ++l) s += lane[l];
  return s;
}

// A row in the emulation's layout: 2 * d2 floats, a[2g] = the odd element x[2g + 1] and a[2g + 1]
// = the even one x[2g], both rounded by seed_bf16. seed_row converts a float32 row of d values.
inline void seed_row(const float* x, int64_t d, int64_t d2, float* a) {
  for (int64_t g = 0; g < d2; ++g) {
    a[2 * g] = 2 * g + 1 < d ? seed_bf16_float(seed_bf16(x[2 * g + 1])) : 0.0f;
    a[2 * g + 1] = seed_bf16_float(seed_bf16(x[2 * g]));
  }
}

// The squared norm of such a row: 16 lane sums, lane l over the pairs g = l, l + 16, ... in
// order (s_l += odd * odd, then s_l += even * even: vdpbf16ps of the row with itself, 16 pairs
// at a time), then s = s_0 + s_1 + ... + s_15 left to right. Each product is exact, each sum
// rounded once: the same bits with or without FMA contraction.
inline float seed_sqnorm(const float* a, int64_t d2) {
  float lane[kSeedPanel];
  for (int l = 0; l < kSeedPanel; ++l) lane[l] = 0.0f;
  for (int64_t g = 0; g < d2; ++g) {
    float& s = lane[g % kSeedPanel];
    s += a[2 * g] * a[2 * g];
    s += a[2 * g + 1] * a[2 * g + 1];
  }
  return seed_lane_sum(lane);
}

}  // namespace kmcpu
}  // namespace pysid
