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
  static inline V set1(float a) { return _mm512_set1_ps(a); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static inline V load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static inline V load_bf16(const uint16_t* p) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
  }
};
// 2 panels (32 rows = 2 zmm) x 8 candidates: 16 zmm accumulators + 2 row vectors + temporaries.
constexpr int kGroup = 8;
constexpr int kPanels = 2;

}  // namespace

#include "kmeans_cpu_kernel.h"

namespace pysid {
namespace kmcpu {
void km_update_avx512(const UpdateArgs& a, int64_t j0, int64_t j1, double* acc, double* cnt,
                      float* rowbuf) {
  km_update_any(a, j0, j1, acc, cnt, rowbuf);
}
void km_pp_avx512(const PPArgs& a, int64_t i0, int64_t i1, double* pot, float* scratch) {
  km_pp_any(a, i0, i1, pot, scratch);
}
}  // namespace kmcpu
}  // namespace pysid
