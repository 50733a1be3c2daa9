// Residual quantization on the CPU: argument checks, run-time ISA dispatch,
// codebook packing, per-thread scratch and the OpenMP loop over row blocks.
// The compute itself is rq_cpu_kernel.h, compiled three times: here without
// ISA flags (portable "scalar" path, also the one used off x86), and in
// rq_cpu_avx2.cpp / rq_cpu_avx512.cpp with their -m flags.
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "rq.h"
#include "rq_cpu_plan.h"

namespace {

// Portable "vector" of 8 floats; the compiler maps the fixed-size loops onto
// whatever SIMD the baseline target has (SSE2 on x86-64, NEON on aarch64).
struct Isa {
  static constexpr int W = 8;
  struct V { float v[8]; };
  struct VI { int32_t v[8]; };
  struct M { bool v[8]; };
  static inline V zero() { V r; for (int i = 0; i < 8; ++i) r.v[i] = 0.0f; return r; }
  static inline V load(const float* p) { V r; for (int i = 0; i < 8; ++i) r.v[i] = p[i]; return r; }
  static inline void store(float* p, V a) { for (int i = 0; i < 8; ++i) p[i] = a.v[i]; }
  static inline V set1(float f) { V r; for (int i = 0; i < 8; ++i) r.v[i] = f; return r; }
  static inline V fmadd(V a, V b, V c) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i]; return r; }
  static inline V add(V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] + b.v[i]; return r; }
  static inline V sub(V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] - b.v[i]; return r; }
  static inline float hsum(V a) {
    float t[4];
    for (int i = 0; i < 4; ++i) t[i] = a.v[i] + a.v[i + 4];
    return (t[0] + t[2]) + (t[1] + t[3]);
  }
  static inline float hmin(V a) {
    float m = a.v[0];
    for (int i = 1; i < 8; ++i) m = a.v[i] < m ? a.v[i] : m;
    return m;
  }
  static inline V min(V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = b.v[i] < a.v[i] ? b.v[i] : a.v[i]; return r; }
  static inline M lt(V a, V b) { M r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] < b.v[i]; return r; }
  static inline M le(V a, V b) { M r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] <= b.v[i]; return r; }
  static inline M eq(V a, V b) { M r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] == b.v[i]; return r; }
  static inline V blend(M m, V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = m.v[i] ? b.v[i] : a.v[i]; return r; }
  static inline VI blendi(M m, VI a, VI b) { VI r; for (int i = 0; i < 8; ++i) r.v[i] = m.v[i] ? b.v[i] : a.v[i]; return r; }
  static inline VI loadi(const int32_t* p) { VI r; for (int i = 0; i < 8; ++i) r.v[i] = p[i]; return r; }
  static inline void storei(int32_t* p, VI a) { for (int i = 0; i < 8; ++i) p[i] = a.v[i]; }
  static inline VI iota(int32_t base) { VI r; for (int i = 0; i < 8; ++i) r.v[i] = base + i; return r; }
  static inline unsigned movemask(M m) { unsigned r = 0; for (int i = 0; i < 8; ++i) r |= unsigned(m.v[i]) << i; return r; }
};
constexpr int kRowsMax = 4;
constexpr int kPanelsMax = 1;

}  // namespace

#include "rq_cpu_kernel.h"

namespace pysid {
namespace rqcpu {
void rq_block_scalar(const Plan& plan, int64_t i0, int64_t m, float* scratch) {
  block_impl(plan, i0, m, scratch);
}
void rq_assign_bounded_scalar(const Plan& plan, Bounds& b, int64_t i0, int64_t i1, float* scratch) {
  assign_bounded(plan, b, i0, i1, scratch);
}
int64_t rq_tile_rows_scalar() { return tile_rows(); }
int64_t rq_lanes_scalar() { return W; }
}  // namespace rqcpu

namespace {

enum IsaLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

int hardware_level() {
#if defined(PYSID_X86) && (defined(__GNUC__) || defined(__clang__))
  static const int level = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
      return static_cast<int>(kAvx512);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return static_cast<int>(kAvx2);
    return static_cast<int>(kScalar);
  }();
  return level;
#else
  return kScalar;
#endif
}

// The hardware's best path, lowered (never raised) by PYSID_CPU_ISA=avx512|avx2|scalar.
// Read on every call so that tests can switch paths inside one process.
int chosen_level() {
  int level = hardware_level();
  if (const char* env = std::getenv("PYSID_CPU_ISA")) {
    int want = level;
    if (std::strcmp(env, "scalar") == 0) want = kScalar;
    else if (std::strcmp(env, "avx2") == 0) want = kAvx2;
    else if (std::strcmp(env, "avx512") == 0) want = kAvx512;
    if (want < level) level = want;
  }
  return level;
}

const char* level_name(int level) {
  return level == kAvx512 ? "avx512" : level == kAvx2 ? "avx2" : "scalar";
}

struct AlignedBuf {
  void* p = nullptr;
  bool alloc(int64_t bytes) {
    if (bytes <= 0) bytes = 64;
    if (posix_memalign(&p, 64, static_cast<size_t>(bytes)) != 0) p = nullptr;
    return p != nullptr;
  }
  ~AlignedBuf() { std::free(p); }
};

constexpr int64_t kBlockBeamRows = 96;         // beam rows (input rows x live beams) per block
constexpr int64_t kScoreBudget = 1 << 18;       // floats of beam score buffer per thread (1 MiB)
constexpr int64_t kResidualBudget = 1 << 19;    // floats of residuals per thread and buffer (2 MiB)
constexpr double kParallelMinWork = 2.0e6;      // multiply-adds below which threads are not woken

// The chosen ISA's kernels and its panel width / register tile rows.
struct Kernels {
  void (*block)(const rqcpu::Plan&, int64_t, int64_t, float*);
  void (*bounded)(const rqcpu::Plan&, rqcpu::Bounds&, int64_t, int64_t, float*);
  int64_t W, tile;
};

Kernels pick_kernels() {
  using namespace rqcpu;
  Kernels k{rq_block_scalar, rq_assign_bounded_scalar, rq_lanes_scalar(), rq_tile_rows_scalar()};
#if defined(PYSID_X86)
  const int level = chosen_level();
  if (level == kAvx512)
    k = {rq_block_avx512, rq_assign_bounded_avx512, rq_lanes_avx512(), rq_tile_rows_avx512()};
  else if (level == kAvx2)
    k = {rq_block_avx2, rq_assign_bounded_avx2, rq_lanes_avx2(), rq_tile_rows_avx2()};
#endif
  return k;
}

// The canonical squared norms of one panel's W codewords (the same routine in every backend:
// Triton's codeword_sqnorms, the CUDA kernel): one float32 FMA chain per codeword over d
// ascending. The W chains are independent (the compiler interleaves them); on x86 an FMA
// clone is chosen at load time, elsewhere fmaf is the hardware instruction or libm's.
#if defined(PYSID_X86) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("fma", "default")))
#endif
void panel_sqnorms(const float* pan, int64_t d, int64_t W, float* out) {
  float s[64];
  for (int64_t t = 0; t < W; ++t) s[t] = 0.0f;
  for (int64_t j = 0; j < d; ++j)
    for (int64_t t = 0; t < W; ++t) s[t] = __builtin_fmaf(pan[j * W + t], pan[j * W + t], s[t]);
  for (int64_t t = 0; t < W; ++t) out[t] = s[t];
}

// Codebooks packed for the kernels: panel p = [d][W] transposed codewords, zero-padded,
// then the panels' squared norms (+inf padding); pofs [levels + 1] panel offsets.
bool pack_codebooks(const float* codebooks, const int64_t* offsets, int64_t levels, int64_t d,
                    int64_t W, const int64_t* pofs, AlignedBuf& packed) {
  const int64_t npanels = pofs[levels];
  if (!packed.alloc(static_cast<int64_t>(sizeof(float)) * npanels * W * (d + 1))) return false;
  float* panels = static_cast<float*>(packed.p);
  float* pnorms = panels + npanels * W * d;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t k = offsets[l + 1] - offsets[l];
    for (int64_t p = pofs[l]; p < pofs[l + 1]; ++p) {
      float* pan = panels + p * d * W;
      for (int64_t t = 0; t < W; ++t) {
        const int64_t code = (p - pofs[l]) * W + t;
        if (code < k) {
          const float* c = codebooks + (offsets[l] + code) * d;
          for (int64_t j = 0; j < d; ++j) pan[j * W + t] = c[j];
        } else {
          for (int64_t j = 0; j < d; ++j) pan[j * W + t] = 0.0f;
        }
      }
      panel_sqnorms(pan, d, W, pnorms + p * W);
      for (int64_t t = 0; t < W; ++t)
        if ((p - pofs[l]) * W + t >= k) pnorms[p * W + t] = __builtin_inff();
    }
  }
  return true;
}

// Greedy (beam_width == 1) or pure beam search; inputs already checked.
int encode(const float* x, int64_t n, int64_t d, const float* codebooks, const int64_t* offsets,
           int64_t levels, int64_t beam_width, float* quantized, float* distances, int32_t* codes) {
  using namespace rqcpu;

  const Kernels kern = pick_kernels();
  const int64_t W = kern.W, tile = kern.tile;

  // live beams after each level; bcap = the most ever live (the last level's count)
  AlignedBuf meta;
  if (!meta.alloc(static_cast<int64_t>(sizeof(int64_t)) * (2 * levels + 1))) return kOutOfMemory;
  int64_t* pofs = static_cast<int64_t*>(meta.p);
  int64_t* nbeams = pofs + levels + 1;
  int64_t nb = 1, kpad_max = 0, sum_k = 0;
  pofs[0] = 0;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t k = offsets[l + 1] - offsets[l];
    const int64_t np = (k + W - 1) / W;
    pofs[l + 1] = pofs[l] + np;
    if (np * W > kpad_max) kpad_max = np * W;
    sum_k += k;
    nb = (nb > beam_width / k) ? beam_width : (nb * k < beam_width ? nb * k : beam_width);
    nbeams[l] = beam_width == 1 ? 1 : nb;
  }
  const int64_t bcap = nbeams[levels - 1];

  AlignedBuf packed;
  if (!pack_codebooks(codebooks, offsets, levels, d, W, pofs, packed)) return kOutOfMemory;
  const int64_t npanels = pofs[levels];
  float* panels = static_cast<float*>(packed.p);
  float* pnorms = panels + npanels * W * d;

  Plan plan;
  plan.x = x;
  plan.n = n;
  plan.d = d;
  plan.levels = levels;
  plan.cb = codebooks;
  plan.off = offsets;
  plan.q = quantized;
  plan.dist = distances;
  plan.codes = codes;
  plan.panels = panels;
  plan.pnorms = pnorms;
  plan.pofs = pofs;
  plan.W = W;
  plan.kpad_max = kpad_max;
  plan.beam = beam_width;
  plan.nbeams = nbeams;
  plan.bcap = bcap;
  plan.second = nullptr;
  // input rows per block: a multiple of the register tile's rows when possible
  // (so that every level's beam rows fill whole tiles), within the score budget
  int64_t rows = kBlockBeamRows / bcap;
  if (rows >= tile) rows -= rows % tile;
  if (beam_width > 1 && rows * bcap * kpad_max > kScoreBudget) rows = kScoreBudget / (bcap * kpad_max);
  if (rows * bcap * d > kResidualBudget) rows = kResidualBudget / (bcap * d);
  if (rows < 1) rows = 1;
  if (rows > n) rows = n;
  plan.block_rows = rows;

  const int64_t nblocks = (n + rows - 1) / rows;
  const double work = static_cast<double>(n) * static_cast<double>(sum_k) * static_cast<double>(d) *
                      static_cast<double>(bcap);
  int nthreads = omp_get_max_threads();
  if (nblocks < 2 || work < kParallelMinWork) nthreads = 1;
  if (nthreads > nblocks) nthreads = static_cast<int>(nblocks);

  const int64_t per_thread = rq_round_up(rq_scratch_layout(plan).total, kAlign);
  AlignedBuf scratch;
  if (!scratch.alloc(static_cast<int64_t>(sizeof(float)) * per_thread * nthreads)) return kOutOfMemory;
  float* sbase = static_cast<float*>(scratch.p);

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    float* s = sbase + per_thread * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t i0 = b * rows;
      kern.block(plan, i0, (n - i0 < rows) ? n - i0 : rows, s);
    }
  }
  return kOk;
}

constexpr int64_t kBoundedChunk = 2048;  // rows per unit of OpenMP work in the bounded assignment

}  // namespace

const char* cpu_isa() { return level_name(chosen_level()); }

int kmeans_assign_bounded_cpu(const float* x, int64_t n, int64_t d, const float* centroids, int64_t k,
                              const double* shift, int32_t* codes, float* distances, double* lower,
                              double* xnorm2, int64_t* searched) {
  using namespace rqcpu;
  if (n < 0 || d < 1 || k < 1 || k > INT32_MAX) return kBadArgument;
  if (searched) *searched = 0;
  if (n == 0) return kOk;
  if (!x || !centroids || !codes || !distances || !lower || !xnorm2) return kBadArgument;
  if (shift)
    for (int64_t i = 0; i < n; ++i)
      if (codes[i] < 0 || codes[i] >= k) return kBadArgument;
  const Kernels kern = pick_kernels();
  const int64_t W = kern.W;
  int64_t pofs[2] = {0, (k + W - 1) / W};
  const int64_t offsets[2] = {0, k};
  AlignedBuf packed;
  if (!pack_codebooks(centroids, offsets, 1, d, W, pofs, packed)) return kOutOfMemory;

  // centre geometry: the largest norm (float64), and half of a lower bound on the
  // distance from each centre to its nearest other centre (the centres searched
  // against themselves by the same kernel: its bound on "every code but the winner")
  double cmax = 0.0;
  for (int64_t j = 0; j < k; ++j) {
    double s = 0.0;
    for (int64_t e = 0; e < d; ++e) s += static_cast<double>(centroids[j * d + e]) * centroids[j * d + e];
    cmax = s > cmax ? s : cmax;
  }
  cmax = __builtin_sqrt(cmax) * (1.0 + 1e-12);
  AlignedBuf geo;
  if (!geo.alloc(static_cast<int64_t>(sizeof(double)) * 2 * k + 8 * k)) return kOutOfMemory;
  double* half = static_cast<double*>(geo.p);
  double* cn2 = half + k;
  int32_t* ccode = reinterpret_cast<int32_t*>(cn2 + k);
  float* cdist = reinterpret_cast<float*>(ccode + k);
  Bounds b0{};
  static float kSecondMarker;  // any non-null pointer: the scratch layout of the bounded pass
  Plan plan{};
  plan.x = x;
  plan.n = n;
  plan.d = d;
  plan.levels = 1;
  plan.cb = centroids;
  plan.off = offsets;
  plan.q = nullptr;
  plan.dist = distances;
  plan.codes = codes;
  plan.panels = static_cast<float*>(packed.p);
  plan.pnorms = plan.panels + pofs[1] * W * d;
  plan.pofs = pofs;
  plan.W = W;
  plan.kpad_max = pofs[1] * W;
  plan.beam = 1;
  const int64_t one = 1;
  plan.nbeams = &one;
  plan.bcap = 1;
  plan.block_rows = kBlockBeamRows - kBlockBeamRows % kern.tile;
  plan.second = &kSecondMarker;

  if (shift) {
    Plan cp = plan;  // the centres as rows: lower[j] bounds the distance to every centre but the winner
    cp.x = centroids;
    cp.n = k;
    cp.codes = ccode;
    cp.dist = cdist;
    AlignedBuf cs;
    if (!cs.alloc(static_cast<int64_t>(sizeof(float)) * rq_round_up(rq_scratch_layout(cp).total, kAlign)))
      return kOutOfMemory;
    Bounds cb{};
    cb.cmax = cmax;
    cb.lower = half;
    cb.xnorm2 = cn2;
    kern.bounded(cp, cb, 0, k, static_cast<float*>(cs.p));
    for (int64_t j = 0; j < k; ++j) half[j] *= 0.5;  // winner j: half the nearest other; else 0
    b0.shift_arg = 0;
    for (int64_t j = 0; j < k; ++j) {
      const double v = shift[j];
      if (!(v >= 0.0) || v == __builtin_inf()) return kBadArgument;
      if (v > b0.shift_max) {
        b0.shift_max2 = b0.shift_max;
        b0.shift_max = v;
        b0.shift_arg = j;
      } else if (v > b0.shift_max2) {
        b0.shift_max2 = v;
      }
    }
  }
  b0.shift = shift;
  b0.half = half;
  b0.cmax = cmax;
  b0.lower = lower;
  b0.xnorm2 = xnorm2;
  b0.searched = 0;

  const int64_t nchunks = (n + kBoundedChunk - 1) / kBoundedChunk;
  int nthreads = omp_get_max_threads();
  if (nchunks < 2 || static_cast<double>(n) * k * d < kParallelMinWork) nthreads = 1;
  if (nthreads > nchunks) nthreads = static_cast<int>(nchunks);
  const int64_t per_thread = rq_round_up(rq_scratch_layout(plan).total, kAlign);
  AlignedBuf scratch;
  if (!scratch.alloc(static_cast<int64_t>(sizeof(float)) * per_thread * nthreads)) return kOutOfMemory;
  float* sbase = static_cast<float*>(scratch.p);
  int64_t total = 0;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1) reduction(+ : total)
  {
    float* sc = sbase + per_thread * omp_get_thread_num();
    Bounds b = b0;
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t i0 = c * kBoundedChunk;
      kern.bounded(plan, b, i0, (n - i0 < kBoundedChunk) ? n : i0 + kBoundedChunk, sc);
    }
    total += b.searched;
  }
  if (searched) *searched = total;
  return kOk;
}

int rq_encode_cpu(const float* x, int64_t n, int64_t d, const float* codebooks,
                  const int64_t* offsets, int64_t levels, int64_t beam_width, float* quantized,
                  float* distances, int32_t* codes) {
  if (n < 0 || d < 1 || levels < 1 || beam_width < 1 || offsets == nullptr) return kBadArgument;
  if (offsets[0] != 0) return kBadArgument;
  for (int64_t l = 0; l < levels; ++l)
    if (offsets[l + 1] <= offsets[l] || offsets[l + 1] - offsets[l] > INT32_MAX) return kBadArgument;
  if (n == 0) return kOk;
  if (!x || !codebooks || !distances || !codes || (!quantized && beam_width != 1)) return kBadArgument;
  if (beam_width == 1)
    return encode(x, n, d, codebooks, offsets, levels, 1, quantized, distances, codes);

  // Beam search alone can end above the greedy encoding (e.g. when a later level has few
  // codewords): encode greedily first (its quantized rows go to the output, overwritten by
  // the beam pass), then keep the greedy codes wherever their final distance is strictly lower.
  AlignedBuf greedy;
  if (!greedy.alloc(static_cast<int64_t>(sizeof(float)) * 2 * n * levels)) return kOutOfMemory;
  float* gdist = static_cast<float*>(greedy.p);
  int32_t* gcodes = reinterpret_cast<int32_t*>(gdist + n * levels);
  int status = encode(x, n, d, codebooks, offsets, levels, 1, quantized, gdist, gcodes);
  if (status != kOk) return status;
  status = encode(x, n, d, codebooks, offsets, levels, beam_width, quantized, distances, codes);
  if (status != kOk) return status;
  const int64_t L = levels;
#pragma omp parallel for schedule(static) if (n > 4096)
  for (int64_t i = 0; i < n; ++i) {
    if (!(gdist[i * L + L - 1] < distances[i * L + L - 1])) continue;
    float* q = quantized + i * d;
    for (int64_t j = 0; j < d; ++j) q[j] = 0.0f;
    for (int64_t l = 0; l < L; ++l) {  // the sum of the chosen codewords, in level order
      distances[i * L + l] = gdist[i * L + l];
      codes[i * L + l] = gcodes[i * L + l];
      const float* c = codebooks + (offsets[l] + gcodes[i * L + l]) * d;
      for (int64_t j = 0; j < d; ++j) q[j] += c[j];
    }
  }
  return kOk;
}

}  // namespace pysid
