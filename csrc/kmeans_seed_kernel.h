// The k-means|| seeding assignment in bfloat16 (kmeans.h: kmeans_assign_bf16_cpu): each row's
// nearest candidate by dot products of bfloat16-rounded values, accumulated in float32 in the
// order of AVX512_BF16's vdpbf16ps (per pair of elements: the odd product, then the even one).
//
// Included after one of simd_scalar.h / simd_avx2.h / simd_avx512.h (the `Isa` wrappers and
// PYSID_ISA): without PYSID_SEED_BF16 it defines km_seed_<isa>, the emulation (two float32
// multiply-adds per pair; each product of two bfloat16 values is exact, so FMA or not gives the
// same bits); with PYSID_SEED_BF16 (kmeans_cpu_bf16.cpp, compiled with -mavx512bf16) it defines
// km_seed_avx512bf16 over vdpbf16ps. Both give the same codes and distances bit for bit
// (tests/test_kmeans_cpu_kernels.py checks it on the machine that runs them).
//
// Per block of rows: the rows are rounded once; panel groups outer (their candidates stay in
// L1), row tiles inner; each tile keeps a per-lane running (min, argmin) over the panels in
// code order with a strict compare, so a lane keeps its lowest code among equal scores, and
// the row's code is the lowest among the lanes holding the minimum.

namespace {

using pysid::kmcpu::SeedArgs;
constexpr int kSP = pysid::kmcpu::kSeedPanel;

#if defined(PYSID_SEED_BF16)
constexpr int kSeedR = 12, kSeedP = 2;  // 24 zmm accumulators + 2 panel rows + 1 broadcast
#else
// emulation tiles: AVX-512 8 x 2 panels (16 accumulators + 4 panel rows), AVX2 4 x 1 panel of
// 2 ymm (8 + 4), portable 4 x 1
constexpr int kSeedR = Isa::kLevel == pysid::kIsaAvx512 ? 8 : 4;
constexpr int kSeedP = Isa::kLevel == pysid::kIsaAvx512 ? 2 : 1;
#endif
constexpr int kSeedNV = kSP / Isa::W;  // vectors per panel row
static_assert(pysid::kmcpu::kSeedBlockRows % kSeedR == 0, "whole tiles per full block");

// scores s = cn - 2 acc (-2 acc is exact: the same bits fused or not) into the rows' lane minima
template <int R, int P>
inline void seed_epilogue(Isa::V (&acc)[R][P * kSeedNV], const float* cn, float* minv, int32_t* mini,
                          int32_t k0) {
  const Isa::V m2 = Isa::set1(-2.0f);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kSeedNV; ++v) {
      Isa::V mv = Isa::load(minv + r * kSP + v * Isa::W);
      Isa::VI mi = Isa::loadi(mini + r * kSP + v * Isa::W);
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) {
        const Isa::V s = Isa::fmadd(acc[r][p * kSeedNV + v], m2, Isa::load(cn + p * kSP + v * Isa::W));
        const Isa::M lt = Isa::lt(s, mv);
        mv = Isa::blend(lt, mv, s);
        mi = Isa::blendi(lt, mi, Isa::iota(k0 + p * kSP + v * Isa::W));
      }
      Isa::store(minv + r * kSP + v * Isa::W, mv);
      Isa::storei(mini + r * kSP + v * Isa::W, mi);
    }
  }
}

#if defined(PYSID_SEED_BF16)
// xw: R rows of d2 words (stride d2); cw: P panels [d2][16] words (stride d2 * 16)
template <int R, int P>
void seed_micro(const void* xrows, int64_t d2, const SeedArgs& a, int64_t pg, float* minv, int32_t* mini) {
  const uint32_t* xw = static_cast<const uint32_t*>(xrows);
  const uint32_t* cw = a.cw + pg * d2 * kSP;
  Isa::V acc[R][P];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) acc[r][p] = Isa::zero();
  for (int64_t g = 0; g < d2; ++g) {
    __m512bh pv[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) pv[p] = (__m512bh)_mm512_loadu_si512(cw + p * d2 * kSP + g * kSP);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(static_cast<int>(xw[r * d2 + g]));
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], xb, pv[p]);
    }
  }
  seed_epilogue<R, P>(acc, a.cn + pg * kSP, minv, mini, static_cast<int32_t>(pg * kSP));
}
#else
// xf: R rows of 2 * d2 floats (odd, even per pair); cf: P panels [d2][2][16] floats
template <int R, int P>
void seed_micro(const void* xrows, int64_t d2, const SeedArgs& a, int64_t pg, float* minv, int32_t* mini) {
  const float* xf = static_cast<const float*>(xrows);
  const float* cf = a.cf + pg * d2 * 2 * kSP;
  constexpr int Q = P * kSeedNV;
  Isa::V acc[R][Q];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) acc[r][q] = Isa::zero();
  for (int64_t g = 0; g < d2; ++g) {
    Isa::V po[Q], pe[Q];
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) {
      const float* c = cf + (q / kSeedNV) * d2 * 2 * kSP + g * 2 * kSP + (q % kSeedNV) * Isa::W;
      po[q] = Isa::load(c);
      pe[q] = Isa::load(c + kSP);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const Isa::V xo = Isa::set1(xf[r * 2 * d2 + 2 * g]);
      const Isa::V xe = Isa::set1(xf[r * 2 * d2 + 2 * g + 1]);
#pragma GCC unroll 4
      for (int q = 0; q < Q; ++q) {
        acc[r][q] = Isa::fmadd(xo, po[q], acc[r][q]);  // exact products: fused or not, the same sum
        acc[r][q] = Isa::fmadd(xe, pe[q], acc[r][q]);
      }
    }
  }
  seed_epilogue<R, P>(acc, a.cn + pg * kSP, minv, mini, static_cast<int32_t>(pg * kSP));
}
#endif

using SeedMicro = void (*)(const void*, int64_t, const SeedArgs&, int64_t, float*, int32_t*);

template <int R, int P>
void seed_table(SeedMicro* t) {
  t[(R - 1) * kSeedP + (P - 1)] = &seed_micro<R, P>;
  if constexpr (P > 1) {
    seed_table<R, P - 1>(t);
  } else if constexpr (R > 1) {
    seed_table<R - 1, kSeedP>(t);
  }
}

void seed_block(const SeedArgs& a, int64_t i0, int64_t rows, float* scratch) {
  using pysid::kmcpu::seed_bf16;
  using pysid::kmcpu::seed_bf16_float;
  constexpr int64_t B = pysid::kmcpu::kSeedBlockRows;
  const int64_t d = a.d, d2 = a.d2;
  float* xr = scratch;                                        // [B][2 * d2] floats or [B][d2] words
  float* minv = xr + B * 2 * d2;                              // [B][16]
  int32_t* mini = reinterpret_cast<int32_t*>(minv + B * kSP);  // [B][16]
  float* xn = reinterpret_cast<float*>(mini + B * kSP);       // [B]
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.x + (i0 + r) * d;
#if defined(PYSID_SEED_BF16)
    // the row as bfloat16 (vcvtneps2bf16 rounds to nearest even; tiny values zeroed first, so
    // it never meets a denormal): word g = (x[2g + 1] << 16) | x[2g]; its norm by vdpbf16ps
    uint32_t* w = reinterpret_cast<uint32_t*>(xr) + r * d2;
    const __m512 tiny = _mm512_set1_ps(0x1p-56f);
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    __m512 nacc = _mm512_setzero_ps();
    for (int64_t e = 0; e < 2 * d2; e += 32) {
      const int64_t left = d - e;
      const __mmask16 m0 = left >= 16 ? 0xffff : left > 0 ? static_cast<__mmask16>((1u << left) - 1) : 0;
      const __mmask16 m1 = left >= 32 ? 0xffff : left > 16 ? static_cast<__mmask16>((1u << (left - 16)) - 1) : 0;
      __m512 v0 = _mm512_maskz_loadu_ps(m0, x + e);
      __m512 v1 = _mm512_maskz_loadu_ps(m1, x + e + 16);
      v0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_and_ps(v0, absmask), tiny, _CMP_GE_OQ), v0);
      v1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_and_ps(v1, absmask), tiny, _CMP_GE_OQ), v1);
      const __m512bh b = _mm512_cvtne2ps_pbh(v1, v0);  // v0 in the low half: element order kept
      nacc = _mm512_dpbf16_ps(nacc, b, b);
      const int64_t words = d2 - e / 2 < 16 ? d2 - e / 2 : 16;
      _mm512_mask_storeu_epi32(w + e / 2, static_cast<__mmask16>((1u << words) - 1), (__m512i)b);
    }
    alignas(64) float lane[kSP];
    _mm512_store_ps(lane, nacc);
    xn[r] = pysid::kmcpu::seed_lane_sum(lane);
#else
    float* f = xr + r * 2 * d2;
    for (int64_t g = 0; g < d2; ++g) {
      f[2 * g] = 2 * g + 1 < d ? seed_bf16_float(seed_bf16(x[2 * g + 1])) : 0.0f;
      f[2 * g + 1] = seed_bf16_float(seed_bf16(x[2 * g]));
    }
    xn[r] = pysid::kmcpu::seed_sqnorm(f, d2);
#endif
    for (int l = 0; l < kSP; ++l) {
      minv[r * kSP + l] = __builtin_inff();
      mini[r * kSP + l] = 0;
    }
  }
#if defined(PYSID_SEED_BF16)
  const int64_t ldx = d2;
  const uint32_t* xbase = reinterpret_cast<const uint32_t*>(xr);
#else
  const int64_t ldx = 2 * d2;
  const float* xbase = xr;
#endif
  SeedMicro tab[kSeedR * kSeedP];
  seed_table<kSeedR, kSeedP>(tab);
  for (int64_t pg = 0; pg < a.np; pg += kSeedP) {
    const int64_t P = a.np - pg < kSeedP ? a.np - pg : kSeedP;
    for (int64_t r0 = 0; r0 < rows; r0 += kSeedR) {
      const int64_t R = rows - r0 < kSeedR ? rows - r0 : kSeedR;
      tab[(R - 1) * kSeedP + (P - 1)](xbase + r0 * ldx, d2, a, pg, minv + r0 * kSP, mini + r0 * kSP);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {  // the lowest code among the lanes holding the minimum
    float best = minv[r * kSP];
    int32_t code = mini[r * kSP];
    for (int l = 1; l < kSP; ++l) {
      const float v = minv[r * kSP + l];
      const int32_t c = mini[r * kSP + l];
      if (v < best || (v == best && c < code)) {
        best = v;
        code = c;
      }
    }
    const float dd = xn[r] + best;
    a.codes[i0 + r] = code;
    a.dist[i0 + r] = dd > 0.0f ? dd : 0.0f;
  }
}

}  // namespace

namespace pysid {
namespace kmcpu {
#if defined(PYSID_SEED_BF16)
void km_seed_avx512bf16(const SeedArgs& a, int64_t i0, int64_t rows, float* scratch) {
  seed_block(a, i0, rows, scratch);
}
#else
void PYSID_ISA_FN(km_seed)(const SeedArgs& a, int64_t i0, int64_t rows, float* scratch) {
  seed_block(a, i0, rows, scratch);
}
#endif
}  // namespace kmcpu
}  // namespace pysid
