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
