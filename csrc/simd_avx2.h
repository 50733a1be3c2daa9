// The AVX2+FMA SIMD wrappers (members: simd_scalar.h). Include only from translation
// units compiled with -mavx2 -mfma -mf16c (CMakeLists.txt: rq_cpu_avx2.cpp,
// kmeans_cpu_avx2.cpp), which run only after the run-time check of cpu_isa.h.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "cpu_isa.h"

// The suffix of this path's kernel entry points (rq_block_avx2, km_pp_avx2, ...).
#define PYSID_ISA avx2

namespace {

struct Isa {
  static constexpr int kLevel = pysid::kIsaAvx2;  // cpu_isa.h
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
  static inline V load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static inline V load_bf16(const uint16_t* p) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
  }
};

}  // namespace
