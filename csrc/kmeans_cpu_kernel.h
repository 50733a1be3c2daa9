// k-means row kernels, written once over a tiny SIMD "traits" type and compiled
// once per ISA (kmeans_cpu.cpp: scalar, kmeans_cpu_avx2.cpp, kmeans_cpu_avx512.cpp).
// Include it from a .cpp right after one of simd_scalar.h / simd_avx2.h / simd_avx512.h
// (the `Isa` wrappers and PYSID_ISA); it defines the entry points km_update_<isa> and
// km_pp_<isa> (kmeans_cpu_plan.h).
//
// Everything here has internal linkage (anonymous namespace, no std:: templates),
// so code compiled with AVX-512 flags can never be shared with the scalar path.
//
// kmeans_update rows: gathered by sorted row id (software-prefetched ahead), widened
// to float64 and added; each product w * x is exact in float64, so the result does
// not depend on FMA contraction or on the vector width.
// kmeanspp rows: transposed row panels, one lane per (row, candidate) (see below).

namespace {

using pysid::kmcpu::PPArgs;
using pysid::kmcpu::UpdateArgs;

using V = Isa::V;
constexpr int W = Isa::W;

// Candidates scored per pass over the rows (<= 8) and 16-row panels scored together
// (kPanels * 16 / W * kGroup accumulators in registers), per path: AVX-512 8 x 2 (16 zmm
// accumulators + 2 row vectors + temporaries), AVX2 and portable 4 x 1 (8 ymm + 2 + ...).
constexpr int kGroup = Isa::kLevel == pysid::kIsaAvx512 ? 8 : 4;
constexpr int kPanels = Isa::kLevel == pysid::kIsaAvx512 ? 2 : 1;

template <int DT>
inline V km_loadx(const char* p) {
  if constexpr (DT == pysid::kFloat32) return Isa::load(reinterpret_cast<const float*>(p));
  else if constexpr (DT == pysid::kFloat16)
    return Isa::load_f16(reinterpret_cast<const uint16_t*>(p));
  else return Isa::load_bf16(reinterpret_cast<const uint16_t*>(p));
}

template <int DT>
inline float km_scalar_x(const char* row, int64_t j) {
  if constexpr (DT == pysid::kFloat32) return reinterpret_cast<const float*>(row)[j];
  else if constexpr (DT == pysid::kFloat16)
    return km_half_to_float(reinterpret_cast<const uint16_t*>(row)[j]);
  else return km_bf16_to_float(reinterpret_cast<const uint16_t*>(row)[j]);
}

template <int DT>
constexpr int64_t km_esize() { return DT == pysid::kFloat32 ? 4 : 2; }

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
    if constexpr (DT == pysid::kFloat32) {
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
  if (a.dtype == pysid::kFloat16) km_update_dt<pysid::kFloat16>(a, j0, j1, acc, cnt, rowbuf);
  else if (a.dtype == pysid::kBFloat16) km_update_dt<pysid::kBFloat16>(a, j0, j1, acc, cnt, rowbuf);
  else km_update_dt<pysid::kFloat32>(a, j0, j1, acc, cnt, rowbuf);
}

// ------------------------------------------------------------------ k-means++ scoring
// Rows are scored kUnit = kPanels * 16 at a time from row panels: 16 consecutive rows
// transposed (panel[j * 16 + l] = x[row0 + l][j]), so one vector load reads element j
// of W rows and no horizontal sum is ever needed. Every (row, candidate) distance is
// accumulated in its own lane over j = 0, 1, ..., d - 1 in order:
//   acc = fmadd(x_j - c_j, x_j - c_j, acc)
// so it depends only on the row and the candidate (and, on the scalar path, which
// rounds the product separately, on the path): AVX2 and AVX-512 give the same bits,
// pre-packed panels (the fused k-means++ loop) and rows packed on the fly (the
// one-step kernel) give the same bits.
constexpr int kUnit = kPanels * pysid::kmcpu::kPanelRows;
constexpr int64_t kAheadLines = 256;  // software prefetch distance in panel lines (2 panels at d = 128)
constexpr int kNV = kUnit / W;  // vectors across one unit of rows
static_assert(kUnit <= pysid::kmcpu::kUnitMax && kGroup <= pysid::kmcpu::kGroupMax, "scratch sizes");
static_assert(pysid::kmcpu::kPanelRows % W == 0, "a panel row slice is whole vectors");

// p: kPanels consecutive panels (d * 16 floats each); c: NT candidates [NT][d]. Rows
// r < rows of the unit (global row i + r) get dist[(i + r) * ld_row + t * ld_cand] and
// add w * min(mind, dist) to lanes[t * 16 + r % 16] (the product is exact in float64).
template <int NT>
inline void km_unit_score(const float* __restrict p, int64_t d, const float* __restrict c,
                          const PPArgs& a, int64_t i, int64_t rows, int64_t t0,
                          double* __restrict lanes) {
  constexpr int P = pysid::kmcpu::kPanelRows;
  V acc[NT * kNV];
#pragma GCC unroll 16
  for (int a = 0; a < NT * kNV; ++a) acc[a] = Isa::zero();
  for (int64_t j = 0; j < d; ++j) {
    // one 64-byte line per panel per j: ask for the line kAheadLines ahead (into the next
    // units' panels near the end) into L2, which the hardware prefetcher alone does not reach.
    // Far enough to cover memory latency at the streaming rate: 32 lines into L1 left the
    // panel loads waiting (a third of this kernel's samples), 256 into L2 runs ~10 % faster.
#pragma GCC unroll 4
    for (int q = 0; q < kPanels; ++q) __builtin_prefetch(p + q * d * P + (j + kAheadLines) * P, 0, 2);
    V xv[kNV];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) xv[v] = Isa::load(p + (v * W / P) * d * P + j * P + (v * W) % P);
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const V cb = Isa::set1(c[t * d + j]);
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) {
        const V df = Isa::sub(xv[v], cb);
        acc[t * kNV + v] = Isa::fmadd(df, df, acc[t * kNV + v]);
      }
    }
  }
  alignas(64) float out[NT * kUnit];
#pragma GCC unroll 16
  for (int q = 0; q < NT * kNV; ++q) Isa::store(out + (q / kNV) * kUnit + (q % kNV) * W, acc[q]);
  float* dst = a.dist + i * a.ld_row + t0 * a.ld_cand;
  const float* m = a.mind + i;
  const float* w = a.w ? a.w + i : nullptr;
  if (rows == kUnit && a.ld_row == 1) {  // whole unit, candidate-major dist: plain loops over rows
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      float* dt = dst + t * a.ld_cand;
      const float* o = out + t * kUnit;
      double* pl = lanes + t * P;
      for (int r = 0; r < kUnit; ++r) dt[r] = o[r];
      for (int q = 0; q < kUnit; q += P) {
        if (w) {
          for (int l = 0; l < P; ++l) {
            const float v = o[q + l] < m[q + l] ? o[q + l] : m[q + l];
            pl[l] += static_cast<double>(w[q + l]) * static_cast<double>(v);
          }
        } else {
          for (int l = 0; l < P; ++l) pl[l] += static_cast<double>(o[q + l] < m[q + l] ? o[q + l] : m[q + l]);
        }
      }
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      const double wr = w ? static_cast<double>(w[r]) : 1.0;
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) {
        const float v = out[t * kUnit + r];
        dst[r * a.ld_row + t * a.ld_cand] = v;
        lanes[t * P + r % P] += wr * static_cast<double>(v < m[r] ? v : m[r]);
      }
    }
  }
}

inline void km_unit_group(int nt, const float* p, int64_t d, const float* c, const PPArgs& a,
                          int64_t i, int64_t rows, int64_t t0, double* lanes) {
  static_assert(kGroup <= 8, "km_unit_group instantiates up to 8 candidates");
#define KM_CASE(n) \
  case n: if constexpr (kGroup >= n) km_unit_score<n>(p, d, c, a, i, rows, t0, lanes); break;
  switch (nt) {
    KM_CASE(1) KM_CASE(2) KM_CASE(3) KM_CASE(4) KM_CASE(5) KM_CASE(6) KM_CASE(7) KM_CASE(8)
    default: break;
  }
#undef KM_CASE
}

// Rows [i0, i1) (i0 a multiple of kUnit) against every candidate: writes their
// distances and sets pot[t] to this range's sum of w * min(mind, dist): per lane
// l = i % 16 in row order, then the 16 lane sums in lane order (no dependence on the
// vector width). Panels come from a.panels, or are packed here from the row-major a.x
// into scratch (kmcpu::pp_scratch_floats(d) floats).
template <int DT>
void km_pp_dt(const PPArgs& a, int64_t i0, int64_t i1, double* __restrict pot,
              float* __restrict scratch) {
  constexpr int P = pysid::kmcpu::kPanelRows;
  const int64_t d = a.d, T = a.t;
  double* lanes = reinterpret_cast<double*>(scratch);  // [T][16]
  float* pack = scratch + pysid::kmcpu::kLaneFloats;  // [kPanels][d][16]
  const char* x = static_cast<const char*>(a.x);
  const int64_t rowbytes = d * km_esize<DT>();
  for (int64_t q = 0; q < T * P; ++q) lanes[q] = 0.0;
  for (int64_t i = i0; i < i1; i += kUnit) {
    const int64_t rows = i1 - i < kUnit ? i1 - i : kUnit;
    const float* p;
    if (a.panels) {
      p = a.panels + i * d;  // panel i / 16 starts at (i / 16) * d * 16
    } else {
      for (int64_t r = 0; r < kUnit; ++r) {
        float* dst = pack + (r / P) * d * P + r % P;
        if (r < rows) {
          const char* row = x + (i + r) * rowbytes;
          for (int64_t j = 0; j < d; ++j) dst[j * P] = km_scalar_x<DT>(row, j);
        } else {
          for (int64_t j = 0; j < d; ++j) dst[j * P] = 0.0f;
        }
      }
      p = pack;
    }
    for (int64_t t0 = 0; t0 < T; t0 += kGroup) {
      const int nt = static_cast<int>(T - t0 < kGroup ? T - t0 : kGroup);
      km_unit_group(nt, p, d, a.cand + t0 * d, a, i, rows, t0, lanes + t0 * P);
    }
  }
  for (int64_t t = 0; t < T; ++t) {
    double s = 0.0;
    for (int l = 0; l < P; ++l) s += lanes[t * P + l];
    pot[t] = s;
  }
}

void km_pp_any(const PPArgs& a, int64_t i0, int64_t i1, double* pot, float* scratch) {
  if (a.panels || a.dtype == pysid::kFloat32) km_pp_dt<pysid::kFloat32>(a, i0, i1, pot, scratch);
  else if (a.dtype == pysid::kFloat16) km_pp_dt<pysid::kFloat16>(a, i0, i1, pot, scratch);
  else km_pp_dt<pysid::kBFloat16>(a, i0, i1, pot, scratch);
}

}  // namespace

namespace pysid {
namespace kmcpu {
void PYSID_ISA_FN(km_update)(const UpdateArgs& a, int64_t j0, int64_t j1, double* acc, double* cnt,
                             float* rowbuf) {
  km_update_any(a, j0, j1, acc, cnt, rowbuf);
}
void PYSID_ISA_FN(km_pp)(const PPArgs& a, int64_t i0, int64_t i1, double* pot, float* scratch) {
  km_pp_any(a, i0, i1, pot, scratch);
}
}  // namespace kmcpu
}  // namespace pysid
