// AVX2+FMA instantiation of the k-means row kernels (kmeans_cpu_kernel.h).
// Compiled with -mavx2 -mfma -mf16c; only called after the run-time check behind
// cpu_isa() (rq_cpu.cpp).
#include <immintrin.h>

#include <cstdint>

#include "kmeans_cpu_plan.h"

namespace {

struct Isa {
  static constexpr int W = 8;
  using V = __m256;
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  // Eight accumulators -> eight sums, combined pairwise (15 shuffles, 7 adds). Every
  // source is summed as (c0 + c1) over its two 128-bit halves, then (l0 + l2) + (l1 + l3).
  static inline void reduce8(const V* a, float* out) {
    V s[4], q[2];
    for (int p = 0; p < 4; ++p)  // [src 2p, src 2p+1] half sums
      s[p] = _mm256_add_ps(_mm256_permute2f128_ps(a[2 * p], a[2 * p + 1], 0x20),
                           _mm256_permute2f128_ps(a[2 * p], a[2 * p + 1], 0x31));
    for (int p = 0; p < 2; ++p)
      q[p] = _mm256_add_ps(_mm256_shuffle_ps(s[2 * p], s[2 * p + 1], 0x44),
                           _mm256_shuffle_ps(s[2 * p], s[2 * p + 1], 0xEE));
    // r = [src 0, 2, 4, 6, 1, 3, 5, 7]
    const V r = _mm256_add_ps(_mm256_shuffle_ps(q[0], q[1], 0x88), _mm256_shuffle_ps(q[0], q[1], 0xDD));
    _mm256_storeu_ps(out, _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  static inline V load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static inline V load_bf16(const uint16_t* p) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
  }
};
// 3 rows x 4 candidates: 12 ymm accumulators + 3 row blocks + 1 temporary.
constexpr int kGroup = 4;
constexpr int kRows = 3;

}  // namespace

#include "kmeans_cpu_kernel.h"

namespace pysid {
namespace kmcpu {
void km_update_avx2(const UpdateArgs& a, int64_t j0, int64_t j1, double* acc, double* cnt,
                    float* rowbuf) {
  km_update_any(a, j0, j1, acc, cnt, rowbuf);
}
void km_pp_avx2(const PPArgs& a, int64_t i0, int64_t i1, double* pot) { km_pp_any(a, i0, i1, pot); }
}  // namespace kmcpu
}  // namespace pysid
