// AVX-512 instantiation of the residual-quantization block kernel (rq_cpu_kernel.h).
// Compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma; only called
// after the run-time check in rq_cpu.cpp.
// GCC 12 warns spuriously inside its own AVX-512 intrinsics (_mm512_undefined_ps,
// GCC PR105593); the warning is silenced for this header only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif

#include <cstdint>

#include "rq_cpu_plan.h"

namespace {

struct Isa {
  static constexpr int W = 16;
  using V = __m512;
  using VI = __m512i;
  using M = __mmask16;
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static inline V set1(float f) { return _mm512_set1_ps(f); }
  static inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static inline float hsum(V a) {  // (GCC 12's _mm512_reduce_add_ps trips -Wmaybe-uninitialized)
    a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, 0x4E));
    a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, 0xB1));
    __m128 h = _mm512_castps512_ps128(a);
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
  }
  static inline float hmin(V a) {
    a = _mm512_min_ps(a, _mm512_shuffle_f32x4(a, a, 0x4E));
    a = _mm512_min_ps(a, _mm512_shuffle_f32x4(a, a, 0xB1));
    __m128 h = _mm512_castps512_ps128(a);
    h = _mm_min_ps(h, _mm_movehl_ps(h, h));
    h = _mm_min_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
  }
  static inline V min(V a, V b) {  // b < a ? b : a, as the scalar path (no _mm512_min_ps: GCC PR105593)
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(b, a, _CMP_LT_OQ), a, b);
  }
  static inline M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static inline M le(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static inline M eq(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static inline V blend(M m, V a, V b) { return _mm512_mask_blend_ps(m, a, b); }
  static inline VI blendi(M m, VI a, VI b) { return _mm512_mask_blend_epi32(m, a, b); }
  static inline VI loadi(const int32_t* p) { return _mm512_loadu_si512(p); }
  static inline void storei(int32_t* p, VI v) { _mm512_storeu_si512(p, v); }
  static inline VI iota(int32_t base) {
    return _mm512_add_epi32(_mm512_set1_epi32(base),
                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  }
  static inline unsigned movemask(M m) { return static_cast<unsigned>(m); }
};
// 12 rows x 2 panels of 16 codes: 24 zmm accumulators + 2 panel rows + 1 broadcast.
constexpr int kRowsMax = 12;
constexpr int kPanelsMax = 2;

}  // namespace

#include "rq_cpu_kernel.h"

namespace pysid {
namespace rqcpu {
void rq_block_avx512(const Plan& plan, int64_t i0, int64_t m, float* scratch) {
  block_impl(plan, i0, m, scratch);
}
void rq_assign_bounded_avx512(const Plan& plan, Bounds& b, int64_t i0, int64_t i1, float* scratch) {
  assign_bounded(plan, b, i0, i1, scratch);
}
int64_t rq_tile_rows_avx512() { return tile_rows(); }
int64_t rq_lanes_avx512() { return W; }
}  // namespace rqcpu
}  // namespace pysid
