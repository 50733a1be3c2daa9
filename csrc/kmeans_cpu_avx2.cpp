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
  static inline V set1(float a) { return _mm256_set1_ps(a); }
  static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline V load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static inline V load_bf16(const uint16_t* p) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
  }
};
// 1 panel (16 rows = 2 ymm) x 4 candidates: 8 ymm accumulators + 2 row vectors + temporaries.
constexpr int kGroup = 4;
constexpr int kPanels = 1;

}  // namespace

#include "kmeans_cpu_kernel.h"

namespace pysid {
namespace kmcpu {
void km_update_avx2(const UpdateArgs& a, int64_t j0, int64_t j1, double* acc, double* cnt,
                    float* rowbuf) {
  km_update_any(a, j0, j1, acc, cnt, rowbuf);
}
void km_pp_avx2(const PPArgs& a, int64_t i0, int64_t i1, double* pot, float* scratch) {
  km_pp_any(a, i0, i1, pot, scratch);
}
}  // namespace kmcpu
}  // namespace pysid
