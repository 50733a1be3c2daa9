// k-means row kernels, written once over a tiny SIMD "traits" type and compiled
// once per ISA (kmeans_cpu.cpp: scalar, kmeans_cpu_avx2.cpp, kmeans_cpu_avx512.cpp).
// Include it from a .cpp that, before the include, defines inside an anonymous
// namespace:
//
//   struct Isa {
//     static constexpr int W;                        // lanes (floats) per vector, <= kPad
//     using V;                                       // float vector
//     V zero(); V load(const float*); void store(float*, V);
//     V sub(V, V); V fmadd(V a, V b, V c);           // a*b + c
//     void reduce8(const V* a, float* out);          // out[j] = sum of a[j]'s lanes, j < 8,
//                                                    // the same lane order for every j
//     V load_f16(const uint16_t*); V load_bf16(const uint16_t*);  // W values -> float32, exact
//   };
//   constexpr int kGroup;   // candidates scored per pass over the rows (<= 8)
//   constexpr int kRows;    // rows scored together (kRows * kGroup accumulators in registers)
//
// Everything here has internal linkage (anonymous namespace, no std:: templates),
// so code compiled with AVX-512 flags can never be shared with the scalar path.
//
// kmeans_update rows: gathered by sorted row id (software-prefetched ahead), widened
// to float64 and added; each product w * x is exact in float64, so the result does
// not depend on FMA contraction or on the vector width.
// kmeanspp rows: kRows rows at a time, vectors along d; the rows' W-blocks are loaded
// (and converted) once per group of kGroup candidates, each (row, candidate) keeping
// one accumulator, so dist[i][j] depends only on x[i], cand[j] and the ISA path.

namespace {

using pysid::kmcpu::PPArgs;
using pysid::kmcpu::UpdateArgs;

using V = Isa::V;
constexpr int W = Isa::W;
static_assert(pysid::kmcpu::kPad % W == 0, "candidate padding must be a multiple of W");

template <int DT>
inline V km_loadx(const char* p) {
  if constexpr (DT == 0) return Isa::load(reinterpret_cast<const float*>(p));
  else if constexpr (DT == 1) return Isa::load_f16(reinterpret_cast<const uint16_t*>(p));
  else return Isa::load_bf16(reinterpret_cast<const uint16_t*>(p));
}

template <int DT>
inline float km_scalar_x(const char* row, int64_t j) {
  if constexpr (DT == 0) return reinterpret_cast<const float*>(row)[j];
  else if constexpr (DT == 1) return km_half_to_float(reinterpret_cast<const uint16_t*>(row)[j]);
  else return km_bf16_to_float(reinterpret_cast<const uint16_t*>(row)[j]);
}

template <int DT>
constexpr int64_t km_esize() { return DT == 0 ? 4 : 2; }

template <int DT>
inline void km_convert_row(const char* row, int64_t d, float* __restrict dst) {
  int64_t j = 0;
  for (; j + W <= d; j += W) Isa::store(dst + j, km_loadx<DT>(row + j * km_esize<DT>()));
  for (; j < d; ++j) dst[j] = km_scalar_x<DT>(row, j);
}

inline void km_prefetch_row(const char* p, int64_t bytes) {
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
  if (bytes > 0) __builtin_prefetch(p + bytes - 1, 0, 3);
}

// ------------------------------------------------------------------ kmeans_update
constexpr int64_t kAhead = 8;  // rows prefetched ahead of the one being added

template <int DT, bool WEIGHTED>
void km_update_impl(const UpdateArgs& a, int64_t j0, int64_t j1, double* __restrict acc,
                    double* cnt, float* __restrict rowbuf) {
  const int64_t d = a.d;
  const int64_t rowbytes = d * km_esize<DT>();
  const char* x = static_cast<const char*>(a.x);
  const int64_t* idx = a.idx;
  const float* w = a.w;
  for (int64_t k = 0; k < d; ++k) acc[k] = 0.0;
  double c = 0.0;
  for (int64_t j = j0; j < j1 && j < j0 + kAhead; ++j) km_prefetch_row(x + idx[j] * rowbytes, rowbytes);
  for (int64_t j = j0; j < j1; ++j) {
    if (j + kAhead < j1) km_prefetch_row(x + idx[j + kAhead] * rowbytes, rowbytes);
    const int64_t i = idx[j];
    const float* __restrict xr;
    if constexpr (DT == 0) {
      xr = reinterpret_cast<const float*>(x + i * rowbytes);
    } else {
      km_convert_row<DT>(x + i * rowbytes, d, rowbuf);
      xr = rowbuf;
    }
    if constexpr (WEIGHTED) {
      const double wi = static_cast<double>(w[i]);
      c += wi;
      for (int64_t k = 0; k < d; ++k) acc[k] += wi * static_cast<double>(xr[k]);
    } else {
      c += 1.0;
      for (int64_t k = 0; k < d; ++k) acc[k] += static_cast<double>(xr[k]);
    }
  }
  *cnt = c;
}

template <int DT>
void km_update_dt(const UpdateArgs& a, int64_t j0, int64_t j1, double* acc, double* cnt,
                  float* rowbuf) {
  if (a.w) km_update_impl<DT, true>(a, j0, j1, acc, cnt, rowbuf);
  else km_update_impl<DT, false>(a, j0, j1, acc, cnt, rowbuf);
}

void km_update_any(const UpdateArgs& a, int64_t j0, int64_t j1, double* acc, double* cnt,
                   float* rowbuf) {
  if (a.dtype == 1) km_update_dt<1>(a, j0, j1, acc, cnt, rowbuf);
  else if (a.dtype == 2) km_update_dt<2>(a, j0, j1, acc, cnt, rowbuf);
  else km_update_dt<0>(a, j0, j1, acc, cnt, rowbuf);
}

// --------------------------------------------------------------- kmeanspp_candidates
// R rows (xr[r]; tails[r]: that row's last d % W values, zero padded, or nullptr when
// d % W == 0) against NT candidates (rows cg, cg + dp, ...): nfull whole W-blocks read
// from the rows themselves, then the tail block. One accumulator per (row, candidate),
// each candidate block loaded once for the R rows; the accumulators are reduced eight
// at a time by Isa::reduce8 (the same lane order for every slot), so the result
// depends only on the row, the candidate and the ISA path.
// Writes dist[r * T + t] and adds w_r * min(mind_r, dist) to pot[t] (rows in order).
template <int DT, int NT, int R>
inline void km_score_rows(const char* const* xr, int64_t nfull, const float* const* tails,
                          const float* __restrict cg, int64_t dp, const float* mind,
                          const float* w, int64_t T, float* __restrict dist,
                          double* __restrict pot) {
  constexpr int NA = R * NT, NP = (NA + 7) / 8 * 8;
  V acc[NP];
#pragma GCC unroll 16
  for (int a = 0; a < NP; ++a) acc[a] = Isa::zero();
  for (int64_t b = 0; b < nfull; ++b) {
    V xv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) xv[r] = km_loadx<DT>(xr[r] + b * W * km_esize<DT>());
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const V cv = Isa::load(cg + t * dp + b * W);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const V df = Isa::sub(xv[r], cv);
        acc[r * NT + t] = Isa::fmadd(df, df, acc[r * NT + t]);
      }
    }
  }
  if (tails[0]) {
    V xv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) xv[r] = Isa::load(tails[r]);
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const V cv = Isa::load(cg + t * dp + nfull * W);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const V df = Isa::sub(xv[r], cv);
        acc[r * NT + t] = Isa::fmadd(df, df, acc[r * NT + t]);
      }
    }
  }
  alignas(64) float sums[NP];
#pragma GCC unroll 4
  for (int g = 0; g < NP; g += 8) Isa::reduce8(acc + g, sums + g);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const float m = mind[r];
    const double wr = w ? static_cast<double>(w[r]) : 1.0;
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const float v = sums[r * NT + t];
      dist[r * T + t] = v;
      pot[t] += wr * static_cast<double>(v < m ? v : m);
    }
  }
}

template <int DT, int R>
inline void km_score_group(int nt, const char* const* xr, int64_t nfull, const float* const* tails,
                           const float* cg, int64_t dp, const float* mind, const float* w,
                           int64_t T, float* dist, double* pot) {
  static_assert(kGroup <= 8, "km_score_group instantiates up to 8 candidates");
#define KM_CASE(n) \
  case n: if constexpr (kGroup >= n) km_score_rows<DT, n, R>(xr, nfull, tails, cg, dp, mind, w, T, dist, pot); break;
  switch (nt) {
    KM_CASE(1) KM_CASE(2) KM_CASE(3) KM_CASE(4) KM_CASE(5) KM_CASE(6) KM_CASE(7) KM_CASE(8)
    default: break;
  }
#undef KM_CASE
}

constexpr int64_t kPPAhead = 8;  // rows prefetched ahead of the ones being scored

template <int DT>
void km_pp_dt(const PPArgs& a, int64_t i0, int64_t i1, double* __restrict pot) {
  constexpr int R = kRows;  // rows scored together
  const int64_t d = a.d, dp = a.dp, T = a.t;
  const int64_t rowbytes = d * km_esize<DT>();
  const int64_t nfull = d / W, rem = d % W;
  const char* x = static_cast<const char*>(a.x);
  alignas(64) float tailbuf[R][W];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < W; ++j) tailbuf[r][j] = 0.0f;
  for (int64_t t = 0; t < T; ++t) pot[t] = 0.0;
  for (int64_t i = i0; i < i1;) {
    const int rows = i1 - i >= R ? R : 1;  // R rows at a time, the last few one by one
    // sequential rows, but each takes long enough to score that the hardware prefetcher
    // alone does not run far enough ahead: ask for the rows kPPAhead rows ahead too
    for (int r = 0; r < rows; ++r)
      if (i + kPPAhead + r < a.n) km_prefetch_row(x + (i + kPPAhead + r) * rowbytes, rowbytes);
    const char* xr[R];
    const float* tails[R];
    for (int r = 0; r < rows; ++r) {
      xr[r] = x + (i + r) * rowbytes;
      tails[r] = rem ? tailbuf[r] : nullptr;
      for (int64_t j = 0; j < rem; ++j) tailbuf[r][j] = km_scalar_x<DT>(xr[r], nfull * W + j);
    }
    const float* w = a.w ? a.w + i : nullptr;
    for (int64_t t0 = 0; t0 < T; t0 += kGroup) {
      const int nt = static_cast<int>(T - t0 < kGroup ? T - t0 : kGroup);
      if (rows == R)
        km_score_group<DT, R>(nt, xr, nfull, tails, a.cand + t0 * dp, dp, a.mind + i, w, T,
                              a.dist + i * T + t0, pot + t0);
      else
        km_score_group<DT, 1>(nt, xr, nfull, tails, a.cand + t0 * dp, dp, a.mind + i, w, T,
                              a.dist + i * T + t0, pot + t0);
    }
    i += rows;
  }
}

void km_pp_any(const PPArgs& a, int64_t i0, int64_t i1, double* pot) {
  if (a.dtype == 1) km_pp_dt<1>(a, i0, i1, pot);
  else if (a.dtype == 2) km_pp_dt<2>(a, i0, i1, pot);
  else km_pp_dt<0>(a, i0, i1, pot);
}

}  // namespace
