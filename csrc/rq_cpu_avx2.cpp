// AVX2+FMA instantiation of the residual-quantization block kernel (rq_cpu_kernel.h).
// Compiled with -mavx2 -mfma -mf16c; only called after the run-time check in rq_cpu.cpp.
#include <immintrin.h>

#include <cstdint>

#include "rq_cpu_plan.h"

namespace {

struct Isa {
  static constexpr int W = 8;
  using V = __m256;
  using VI = __m256i;
  using M = __m256;  // all-ones lanes where true
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline V set1(float f) { return _mm256_set1_ps(f); }
  static inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static inline float hsum(V a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
  }
  static inline float hmin(V a) {
    __m128 h = _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_min_ps(h, _mm_movehl_ps(h, h));
    h = _mm_min_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
  }
  static inline V min(V a, V b) { return _mm256_min_ps(a, b); }
  static inline M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static inline M le(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
  static inline M eq(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static inline V blend(M m, V a, V b) { return _mm256_blendv_ps(a, b, m); }
  static inline VI blendi(M m, VI a, VI b) {
    return _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), m));
  }
  static inline VI loadi(const int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static inline void storei(int32_t* p, VI v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
  static inline VI iota(int32_t base) {
    return _mm256_add_epi32(_mm256_set1_epi32(base), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline unsigned movemask(M m) { return static_cast<unsigned>(_mm256_movemask_ps(m)); }
};
// 6 rows x 2 panels of 8 codes: 12 ymm accumulators + 2 panel rows + 1 broadcast.
constexpr int kRowsMax = 6;
constexpr int kPanelsMax = 2;

}  // namespace

#include "rq_cpu_kernel.h"

namespace pysid {
namespace rqcpu {
void rq_block_avx2(const Plan& plan, int64_t i0, int64_t m, float* scratch) {
  block_impl(plan, i0, m, scratch);
}
void rq_assign_bounded_avx2(const Plan& plan, Bounds& b, int64_t i0, int64_t i1, float* scratch) {
  assign_bounded(plan, b, i0, i1, scratch);
}
int64_t rq_tile_rows_avx2() { return tile_rows(); }
int64_t rq_lanes_avx2() { return W; }
}  // namespace rqcpu
}  // namespace pysid
