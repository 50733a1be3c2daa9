// AVX-512 instantiation of the k-means row kernels (kmeans_cpu_kernel.h).
// Compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma -mf16c; only
// called after the run-time check behind cpu_isa() (rq_cpu.cpp).
// GCC 12 warns spuriously inside its own AVX-512 intrinsics (GCC PR105593); the
// warning is silenced for this header only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif

#include <cstdint>

#include "kmeans_cpu_plan.h"

namespace {

struct Isa {
  static constexpr int W = 16;
  using V = __m512;
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  // Eight accumulators -> eight sums: two 256-bit halves, then 128-bit chunks, then
  // lanes, combined pairwise (15 shuffles, 8 adds instead of 8 horizontal sums).
  // Every source is summed as ((c0 + c2) + (c1 + c3)) over its four 128-bit chunks,
  // then (l0 + l2) + (l1 + l3) over the lanes of that, whatever its slot.
  static inline void reduce8(const V* a, float* out) {
    V s[4], q[2];
    for (int p = 0; p < 4; ++p)
      s[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0x44),
                           _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0xEE));
    for (int p = 0; p < 2; ++p)  // chunk j of q[p] = source 4p + j
      q[p] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * p], s[2 * p + 1], 0x88),
                           _mm512_shuffle_f32x4(s[2 * p], s[2 * p + 1], 0xDD));
    // chunk j: [src j (l0+l2), src j (l1+l3), src j+4 (l0+l2), src j+4 (l1+l3)]
    const V u = _mm512_add_ps(_mm512_shuffle_ps(q[0], q[1], 0x44), _mm512_shuffle_ps(q[0], q[1], 0xEE));
    const V v = _mm512_add_ps(u, _mm512_permute_ps(u, 0xB1));  // lane 4j: src j, 4j+2: src j+4
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm256_storeu_ps(out, _mm512_castps512_ps256(_mm512_permutexvar_ps(idx, v)));
  }
  static inline V load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static inline V load_bf16(const uint16_t* p) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
  }
};
// 3 rows x 8 candidates: 24 zmm accumulators + 3 row blocks + 2 temporaries.
constexpr int kGroup = 8;
constexpr int kRows = 3;

}  // namespace

#include "kmeans_cpu_kernel.h"

namespace pysid {
namespace kmcpu {
void km_update_avx512(const UpdateArgs& a, int64_t j0, int64_t j1, double* acc, double* cnt,
                      float* rowbuf) {
  km_update_any(a, j0, j1, acc, cnt, rowbuf);
}
void km_pp_avx512(const PPArgs& a, int64_t i0, int64_t i1, double* pot) { km_pp_any(a, i0, i1, pot); }
}  // namespace kmcpu
}  // namespace pysid
