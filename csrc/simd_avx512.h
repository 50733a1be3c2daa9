// The AVX-512 SIMD wrappers (members: simd_scalar.h). Include only from translation
// units compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma -mf16c
// (CMakeLists.txt: rq_cpu_avx512.cpp, kmeans_cpu_avx512.cpp), which run only after the
// run-time check of cpu_isa.h.
// GCC 12 warns spuriously inside its own AVX-512 intrinsics (_mm512_undefined_ps,
// GCC PR105593); the warnings are silenced for this header only.
#pragma once
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

#include "cpu_isa.h"

// The suffix of this path's kernel entry points (rq_block_avx512, km_pp_avx512, ...).
#define PYSID_ISA avx512

namespace {

struct Isa {
  static constexpr int kLevel = pysid::kIsaAvx512;  // cpu_isa.h
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
  static inline V load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static inline V load_bf16(const uint16_t* p) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
  }
};

}  // namespace
