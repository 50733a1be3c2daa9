// k-means on the CPU (issue 3): argument checks, the counting sort of rows by
// code, the fixed chunking that makes the sums independent of the thread count,
// run-time ISA dispatch and the OpenMP loops. The row kernels are
// kmeans_cpu_kernel.h, compiled three times: here without ISA flags (portable
// "scalar" path, also the one used off x86), and in kmeans_cpu_avx2.cpp /
// kmeans_cpu_avx512.cpp with their -m flags. The path is the one cpu_isa_level()
// names (cpu_isa.h: the hardware's best, lowered by PYSID_CPU_ISA). Also the driver of
// the bounded assignment (kmeans_assign_bounded_cpu) over rq_cpu_kernel.h's level kernel.
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "aligned_buf.h"
#include "cpu_isa.h"
#include "kmeans.h"
#include "kmeans_cpu_plan.h"
#include "rq_cpu_plan.h"

#include "simd_scalar.h"

#include "kmeans_cpu_kernel.h"  // the portable path: km_update_scalar, km_pp_scalar
#include "kmeans_seed_kernel.h"  // km_seed_scalar

namespace pysid {

namespace {

using kmcpu::PPArgs;
using kmcpu::PPFn;
using kmcpu::UpdateArgs;
using kmcpu::UpdateFn;

// Fixed chunk sizes: part of the summation order, so never derived from the thread count.
constexpr int64_t kUpdateChunkRows = 2048;  // rows of one cluster summed by one thread
constexpr int64_t kPPChunkRows = 1024;      // rows per partial potential
constexpr int64_t kParallelMinBytes = 1 << 18;  // below this much of x, one thread
constexpr int64_t kBoundedChunk = 2048;  // rows per unit of OpenMP work in the bounded assignment
constexpr double kBoundedParallelMinWork = 2.0e6;  // multiply-adds below which threads are not woken
constexpr int64_t kTopmScoreBudget = 1 << 16;  // floats of a top-m block's scores (256 KiB, in L2)
constexpr int64_t kCandChunk = 256;  // rows per unit of OpenMP work in the restricted assignment

void pick(UpdateFn* upd, PPFn* pp) {
  const int level = cpu_isa_level();
  *upd = PYSID_BY_ISA(level, kmcpu::km_update);
  *pp = PYSID_BY_ISA(level, kmcpu::km_pp);
}

bool known_dtype(int t) { return t == kFloat32 || t == kFloat16 || t == kBFloat16; }

// The plan of one greedy level over k centroids packed in panels of width W (pofs = {0, panels}):
// the assignment passes of k-means (bounded and top-m) share it.
rqcpu::Plan one_level_plan(const float* x, int64_t n, int64_t d, const float* centroids, const int64_t* offsets,
                    int32_t* codes, float* distances, const AlignedBuf& packed, const int64_t* pofs, int64_t W) {
  static const int64_t kOneBeam = 1;
  rqcpu::Plan plan{};
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
  plan.nbeams = &kOneBeam;
  plan.bcap = 1;
  return plan;
}

int threads_for(int64_t x_bytes, int64_t tasks) {
  int nthreads = omp_get_max_threads();
  if (x_bytes < kParallelMinBytes) nthreads = 1;
  if (nthreads > tasks) nthreads = static_cast<int>(tasks < 1 ? 1 : tasks);
  return nthreads;
}

}  // namespace

// ------------------------------------------------------------ bounded assignment
// The row kernel is the greedy level kernel of rq_cpu_kernel.h (rq_assign_bounded_<isa>,
// which also keeps each row's second-best score); this is its driver.
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
  Plan plan = one_level_plan(x, n, d, centroids, offsets, codes, distances, packed, pofs, W);
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
  if (nchunks < 2 || static_cast<double>(n) * k * d < kBoundedParallelMinWork) nthreads = 1;
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

// ------------------------------------------------- assignment with candidate lists
int kmeans_assign_topm_cpu(const float* x, int64_t n, int64_t d, const float* centroids, int64_t k, int64_t m,
                           int32_t* codes, float* distances, int32_t* cand) {
  using namespace rqcpu;
  if (n < 0 || d < 1 || k < 1 || k > INT32_MAX || m < 1 || m > k) return kBadArgument;
  if (n == 0) return kOk;
  if (!x || !centroids || !codes || !distances || !cand) return kBadArgument;
  const Kernels kern = pick_kernels();
  const int64_t W = kern.W;
  int64_t pofs[2] = {0, (k + W - 1) / W};
  const int64_t offsets[2] = {0, k};
  AlignedBuf packed;
  if (!pack_codebooks(centroids, offsets, 1, d, W, pofs, packed)) return kOutOfMemory;
  Plan plan = one_level_plan(x, n, d, centroids, offsets, codes, distances, packed, pofs, W);
  int64_t rows = kBlockBeamRows - kBlockBeamRows % kern.tile;
  if (rows * plan.kpad_max > kTopmScoreBudget) rows = kTopmScoreBudget / plan.kpad_max;
  if (rows < 1) rows = 1;
  if (rows > n) rows = n;
  plan.block_rows = rows;
  plan.second = nullptr;
  const int64_t nblocks = (n + rows - 1) / rows;
  int nthreads = omp_get_max_threads();
  if (nblocks < 2 || static_cast<double>(n) * k * d < kBoundedParallelMinWork) nthreads = 1;
  if (nthreads > nblocks) nthreads = static_cast<int>(nblocks);
  const int64_t per_thread = rq_round_up(topm_scratch_floats(plan, m), kAlign);
  AlignedBuf scratch;
  if (!scratch.alloc(static_cast<int64_t>(sizeof(float)) * per_thread * nthreads)) return kOutOfMemory;
  float* sbase = static_cast<float*>(scratch.p);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    float* sc = sbase + per_thread * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t i0 = b * rows;
      kern.topm(plan, i0, (n - i0 < rows) ? n - i0 : rows, sc, m, cand);
    }
  }
  return kOk;
}

int kmeans_assign_candidates_cpu(const float* x, int64_t n, int64_t d, const float* centroids, int64_t k,
                                 const int32_t* cand, int64_t m, int32_t* codes, float* distances) {
  using namespace rqcpu;
  if (n < 0 || d < 1 || k < 1 || k > INT32_MAX || m < 1) return kBadArgument;
  if (n == 0) return kOk;
  if (!x || !centroids || !codes || !distances || !cand) return kBadArgument;
  for (int64_t i = 0; i < n * m; ++i)
    if (cand[i] < 0 || cand[i] >= k) return kBadArgument;
  AlignedBuf nb;
  if (!nb.alloc(static_cast<int64_t>(sizeof(float)) * k)) return kOutOfMemory;
  float* cnorm = static_cast<float*>(nb.p);  // the canonical squared norms (rq_cpu.cpp: panel_sqnorms' chain)
  float cbound[2] = {0.0f, 0.0f};            // the error bound's max ||c_k|| (an upper bound) and max cnorm
  for (int64_t j = 0; j < k; ++j) {
    float s = 0.0f;
    for (int64_t e = 0; e < d; ++e) s = __builtin_fmaf(centroids[j * d + e], centroids[j * d + e], s);
    cnorm[j] = s;
    cbound[1] = s > cbound[1] ? s : cbound[1];
  }
  cbound[0] = static_cast<float>(1.01 + static_cast<double>(d) * 0x1p-24) * __builtin_sqrtf(cbound[1]);
  const Kernels kern = pick_kernels();
  const int64_t nchunks = (n + kCandChunk - 1) / kCandChunk;
  int nthreads = omp_get_max_threads();
  if (nchunks < 2 || static_cast<double>(n) * m * d < kBoundedParallelMinWork) nthreads = 1;
  if (nthreads > nchunks) nthreads = static_cast<int>(nchunks);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t i0 = c * kCandChunk;
    kern.cand(x, i0, (n - i0 < kCandChunk) ? n : i0 + kCandChunk, d, centroids, cnorm, cbound, cand, m, codes,
              distances);
  }
  return kOk;
}

// ------------------------------------------------- k-means|| seeding assignment (bfloat16)
namespace {
kmcpu::SeedFn pick_seed() {
#if defined(PYSID_X86) && defined(PYSID_BF16)
  if (cpu_bf16_dot()) return kmcpu::km_seed_avx512bf16;
#endif
  const int level = cpu_isa_level();
  return PYSID_BY_ISA(level, kmcpu::km_seed);
}
}  // namespace

const char* kmeans_seed_path() {
  if (cpu_bf16_dot()) return "avx512bf16";
  return cpu_isa_name(cpu_isa_level());
}

int kmeans_assign_bf16_cpu(const float* x, int64_t n, int64_t d, const float* cand, int64_t k, int32_t* codes,
                           float* dist) {
  using kmcpu::kSeedBlockRows;
  using kmcpu::kSeedPanel;
  if (n < 0 || d < 1 || k < 1 || k > INT32_MAX - kSeedPanel) return kBadArgument;
  if (n == 0) return kOk;
  if (!x || !cand || !codes || !dist) return kBadArgument;
  const bool hw = cpu_bf16_dot();
  const kmcpu::SeedFn fn = pick_seed();
  const int64_t d2 = (d + 1) / 2, np = (k + kSeedPanel - 1) / kSeedPanel;
  AlignedBuf cbuf, nbuf, tbuf;
  const int64_t cfloats = hw ? np * d2 * kSeedPanel : np * d2 * 2 * kSeedPanel;  // words or floats
  if (!cbuf.alloc(4 * cfloats) || !nbuf.alloc(4 * np * kSeedPanel) || !tbuf.alloc(4 * 2 * d2)) return kOutOfMemory;
  uint32_t* cw = static_cast<uint32_t*>(cbuf.p);
  float* cf = static_cast<float*>(cbuf.p);
  float* cn = static_cast<float*>(nbuf.p);
  float* row = static_cast<float*>(tbuf.p);
  for (int64_t j = 0; j < np * kSeedPanel; ++j) {
    const int64_t p = j / kSeedPanel, l = j % kSeedPanel;
    if (j < k) {
      kmcpu::seed_row(cand + j * d, d, d2, row);
      cn[j] = kmcpu::seed_sqnorm(row, d2);
    } else {
      for (int64_t t = 0; t < 2 * d2; ++t) row[t] = 0.0f;
      cn[j] = __builtin_inff();  // padding: never the minimum
    }
    for (int64_t g = 0; g < d2; ++g) {
      if (hw) {
        const uint32_t u = static_cast<uint32_t>(kmcpu::seed_bf16(row[2 * g])) << 16 | kmcpu::seed_bf16(row[2 * g + 1]);
        cw[(p * d2 + g) * kSeedPanel + l] = u;
      } else {
        cf[(p * d2 + g) * 2 * kSeedPanel + l] = row[2 * g];
        cf[(p * d2 + g) * 2 * kSeedPanel + kSeedPanel + l] = row[2 * g + 1];
      }
    }
  }
  kmcpu::SeedArgs args{x, d, d2, np, hw ? cw : nullptr, hw ? nullptr : cf, cn, codes, dist};
  const int64_t nblocks = (n + kSeedBlockRows - 1) / kSeedBlockRows;
  int nthreads = omp_get_max_threads();
  if (nblocks < 2 || static_cast<double>(n) * k * d < kBoundedParallelMinWork) nthreads = 1;
  if (nthreads > nblocks) nthreads = static_cast<int>(nblocks);
  const int64_t per_thread = (kmcpu::seed_scratch_floats(d2) + 15) / 16 * 16;
  AlignedBuf scratch;
  if (!scratch.alloc(static_cast<int64_t>(sizeof(float)) * per_thread * nthreads)) return kOutOfMemory;
  float* sbase = static_cast<float*>(scratch.p);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t i0 = b * kSeedBlockRows;
    fn(args, i0, n - i0 < kSeedBlockRows ? n - i0 : kSeedBlockRows, sbase + per_thread * omp_get_thread_num());
  }
  return kOk;
}

int64_t kmeans_update_chunk_rows() { return kUpdateChunkRows; }
int64_t kmeanspp_chunk_rows() { return kPPChunkRows; }

int kmeans_update_cpu(const void* x, int x_dtype, int64_t n, int64_t d, const int32_t* codes,
                      const float* weights, int64_t k, double* sums, double* counts,
                      int64_t* bad_row) {
  if (!known_dtype(x_dtype) || n < 0 || d < 0 || k < 1) return kBadArgument;
  if (!counts || (d > 0 && !sums)) return kBadArgument;
  if (n > 0 && (!codes || (d > 0 && !x))) return kBadArgument;
  const int64_t esize = x_dtype == kFloat32 ? 4 : 2;

  // 1. histogram of the codes (and the range check, before anything is written)
  AlignedBuf start_buf, cursor_buf;
  if (!start_buf.alloc(static_cast<int64_t>(sizeof(int64_t)) * (k + 1)) ||
      !cursor_buf.alloc(static_cast<int64_t>(sizeof(int64_t)) * k))
    return kOutOfMemory;
  int64_t* start = static_cast<int64_t*>(start_buf.p);
  int64_t* cursor = static_cast<int64_t*>(cursor_buf.p);
  std::memset(start, 0, sizeof(int64_t) * static_cast<size_t>(k + 1));
  const uint64_t uk = static_cast<uint64_t>(k);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t c = static_cast<uint64_t>(static_cast<int64_t>(codes[i]));  // negatives wrap high
    if (c >= uk) {
      if (bad_row) *bad_row = i;
      return kCodeOutOfRange;
    }
    ++start[c + 1];
  }
  for (int64_t c = 0; c < k; ++c) start[c + 1] += start[c];

  // 2. stable counting sort of the row ids by code
  AlignedBuf idx_buf;
  if (!idx_buf.alloc(static_cast<int64_t>(sizeof(int64_t)) * n)) return kOutOfMemory;
  int64_t* idx = static_cast<int64_t*>(idx_buf.p);
  std::memcpy(cursor, start, sizeof(int64_t) * static_cast<size_t>(k));
  for (int64_t i = 0; i < n; ++i) idx[cursor[codes[i]]++] = i;

  // 3. work units: each non-empty cluster's sorted rows cut into chunks of kUpdateChunkRows;
  // a cluster's first chunk sums straight into its output row, later ones into partial slots
  int64_t units = 0, extra = 0;
  for (int64_t c = 0; c < k; ++c) {
    const int64_t nc = start[c + 1] - start[c];
    if (nc == 0) continue;
    const int64_t ch = (nc + kUpdateChunkRows - 1) / kUpdateChunkRows;
    units += ch;
    extra += ch - 1;
  }
  AlignedBuf unit_buf, part_buf, pcnt_buf, row_buf;
  if (!unit_buf.alloc(static_cast<int64_t>(sizeof(int64_t)) * 4 * units) ||
      !part_buf.alloc(static_cast<int64_t>(sizeof(double)) * extra * d) ||
      !pcnt_buf.alloc(static_cast<int64_t>(sizeof(double)) * extra))
    return kOutOfMemory;
  int64_t* unit = static_cast<int64_t*>(unit_buf.p);  // [units][4]: cluster, j0, j1, slot
  double* part = static_cast<double*>(part_buf.p);
  double* pcnt = static_cast<double*>(pcnt_buf.p);
  {
    int64_t u = 0, slot = 0;
    for (int64_t c = 0; c < k; ++c) {
      for (int64_t j0 = start[c]; j0 < start[c + 1]; j0 += kUpdateChunkRows) {
        const int64_t j1 = start[c + 1] - j0 < kUpdateChunkRows ? start[c + 1] : j0 + kUpdateChunkRows;
        unit[4 * u + 0] = c;
        unit[4 * u + 1] = j0;
        unit[4 * u + 2] = j1;
        unit[4 * u + 3] = j0 == start[c] ? -1 : slot++;
        ++u;
      }
    }
  }

  const int nthreads = threads_for(n * d * esize, units);
  // per thread: the chunk's float64 sums (private, so that small-d clusters summed by
  // different threads never share a cache line while rows are added) and a converted row
  const int64_t dpad = (d + 15) / 16 * 16 + 16;
  const int64_t per_thread = dpad * static_cast<int64_t>(sizeof(double) + sizeof(float));
  if (!row_buf.alloc(per_thread * nthreads)) return kOutOfMemory;

  // nothing can fail from here on: write the outputs
  for (int64_t c = 0; c < k; ++c) {
    if (start[c + 1] != start[c]) continue;
    counts[c] = 0.0;
    for (int64_t j = 0; j < d; ++j) sums[c * d + j] = 0.0;
  }

  UpdateFn fn;
  PPFn unused;
  pick(&fn, &unused);
  const UpdateArgs args{x, x_dtype, d, idx, weights};
  char* scratch = static_cast<char*>(row_buf.p);
  // many tiny units (large k): hand them out a few at a time
  int64_t grain = units / (16 * static_cast<int64_t>(nthreads));
  grain = grain < 1 ? 1 : grain > 64 ? 64 : grain;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    double* acc = reinterpret_cast<double*>(scratch + per_thread * omp_get_thread_num());
    float* rowbuf = reinterpret_cast<float*>(acc + dpad);
#pragma omp for schedule(dynamic, grain)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t c = unit[4 * u], slot = unit[4 * u + 3];
      double* dst = slot < 0 ? sums + c * d : part + slot * d;
      double cnt;
      fn(args, unit[4 * u + 1], unit[4 * u + 2], acc, &cnt, rowbuf);
      for (int64_t j = 0; j < d; ++j) dst[j] = acc[j];
      (slot < 0 ? counts[c] : pcnt[slot]) = cnt;
    }
  }

  // 4. clusters of several chunks: add the later chunks' sums in chunk order
  for (int64_t u = 0; u < units; ++u) {
    const int64_t c = unit[4 * u], slot = unit[4 * u + 3];
    if (slot < 0) continue;
    double* s = sums + c * d;
    const double* p = part + slot * d;
    for (int64_t j = 0; j < d; ++j) s[j] += p[j];
    counts[c] += pcnt[slot];
  }
  return kOk;
}

static_assert(kmcpu::kMaxCand == kmeanspp_max_candidates, "scratch sized for every candidate");

namespace {

// Scores rows [0, n) against t candidates, in fixed chunks of kPPChunkRows rows spread
// over the threads; pot[j] = the chunk sums added in chunk order.
int pp_score(const kmcpu::PPArgs& args, int64_t esize, double* pot) {
  const int64_t n = args.n, d = args.d, t = args.t;
  const int64_t nch = (n + kPPChunkRows - 1) / kPPChunkRows;
  const int nthreads = threads_for(n * d * esize, nch);
  const int64_t per_thread = (kmcpu::pp_scratch_floats(d) + 15) / 16 * 16;  // floats, 64-byte multiple
  AlignedBuf part_buf, scratch_buf;
  if (!part_buf.alloc(static_cast<int64_t>(sizeof(double)) * nch * t) ||
      !scratch_buf.alloc(static_cast<int64_t>(sizeof(float)) * per_thread * nthreads))
    return kOutOfMemory;
  double* part = static_cast<double*>(part_buf.p);
  float* scratch = static_cast<float*>(scratch_buf.p);
  UpdateFn unused;
  PPFn fn;
  pick(&unused, &fn);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t ch = 0; ch < nch; ++ch) {
    const int64_t i0 = ch * kPPChunkRows;
    const int64_t i1 = n - i0 < kPPChunkRows ? n : i0 + kPPChunkRows;
    fn(args, i0, i1, part + ch * t, scratch + per_thread * omp_get_thread_num());
  }
  for (int64_t j = 0; j < t; ++j) {
    double s = 0.0;
    for (int64_t ch = 0; ch < nch; ++ch) s += part[ch * t + j];
    pot[j] = s;
  }
  return kOk;
}

// mind <- min(mind, dist_i) (dist_i = dist[i * stride]); cum <- prefix sums of w * mind.
void pp_commit(const float* dist, int64_t stride, int64_t n, float* mind, const float* weights,
               double* cum) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float d = dist[i * stride];
    const float m = d < mind[i] ? d : mind[i];
    mind[i] = m;
    s += static_cast<double>(weights ? weights[i] * m : m);
    cum[i] = s;
  }
}

}  // namespace

int kmeanspp_candidates_cpu(const void* x, int x_dtype, int64_t n, int64_t d, const float* cand,
                            int64_t t, const float* mind, const float* weights, float* dist,
                            double* pot) {
  if (!known_dtype(x_dtype) || n < 0 || d < 0 || t < 1 || t > kmeanspp_max_candidates) return kBadArgument;
  if (!pot || (d > 0 && !cand)) return kBadArgument;
  if (n > 0 && (!mind || !dist || (d > 0 && !x))) return kBadArgument;
  const kmcpu::PPArgs args{x, x_dtype, nullptr, n, d, cand, t, mind, weights, dist, t, 1};
  return pp_score(args, x_dtype == kFloat32 ? 4 : 2, pot);
}

int64_t kmeanspp_panel_floats(int64_t n, int64_t d) {
  return (n + kmcpu::kUnitMax - 1) / kmcpu::kUnitMax * kmcpu::kUnitMax * d;
}

int kmeanspp_pack_cpu(const void* x, int x_dtype, int64_t n, int64_t d, float* panels) {
  if (!known_dtype(x_dtype) || n < 0 || d < 0) return kBadArgument;
  if (n > 0 && d > 0 && (!x || !panels)) return kBadArgument;
  constexpr int64_t P = kmcpu::kPanelRows;
  const int64_t npan = kmeanspp_panel_floats(n, 1) / P;
  const int nthreads = threads_for(n * d * 4, npan);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t q = 0; q < npan; ++q) {
    float* dst = panels + q * d * P;
    for (int64_t l = 0; l < P; ++l) {
      const int64_t i = q * P + l;
      for (int64_t j = 0; j < d; ++j) {
        float v = 0.0f;
        if (i < n) {
          if (x_dtype == kFloat32) v = static_cast<const float*>(x)[i * d + j];
          else if (x_dtype == kFloat16) v = km_half_to_float(static_cast<const uint16_t*>(x)[i * d + j]);
          else v = km_bf16_to_float(static_cast<const uint16_t*>(x)[i * d + j]);
        }
        dst[j * P + l] = v;
      }
    }
  }
  return kOk;
}

int kmeanspp_run_cpu(const float* panels, int64_t n, int64_t d, const float* weights, int64_t t,
                     const double* u, int64_t c0, int64_t steps, float* mind, double* cum,
                     int64_t* chosen) {
  if (n < 1 || d < 0 || t < 1 || t > kmeanspp_max_candidates || c0 < 0 || steps < 0) return kBadArgument;
  if ((d > 0 && !panels) || !mind || !cum || (steps > 0 && (!u || !chosen))) return kBadArgument;
  if (steps == 0) return kOk;
  constexpr int64_t P = kmcpu::kPanelRows;
  const int64_t ldd = kmeanspp_panel_floats(n, 1);  // n rounded up to whole units
  AlignedBuf dist_buf, cand_buf;
  if (!dist_buf.alloc(static_cast<int64_t>(sizeof(float)) * t * ldd) ||
      !cand_buf.alloc(static_cast<int64_t>(sizeof(float)) * t * (d > 0 ? d : 1)))
    return kOutOfMemory;
  float* dist = static_cast<float*>(dist_buf.p);
  float* cand = static_cast<float*>(cand_buf.p);
  double pot[kmeanspp_max_candidates];
  int64_t idx[kmeanspp_max_candidates];
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t tt = c0 + s == 0 ? 1 : t;  // the first centre: one weighted draw
    // draws: the first row whose prefix sum exceeds u * total (torch.searchsorted(right=True))
    const double total = cum[n - 1];
    for (int64_t j = 0; j < tt; ++j) {
      const double v = u[s * t + j] * total;
      int64_t lo = 0, hi = n;
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > v) hi = mid;
        else lo = mid + 1;
      }
      idx[j] = lo < n ? lo : n - 1;
      const float* src = panels + (idx[j] / P) * d * P + idx[j] % P;
      for (int64_t e = 0; e < d; ++e) cand[j * d + e] = src[e * P];
    }
    const kmcpu::PPArgs args{nullptr, 0, panels, n, d, cand, tt, mind, weights, dist, 1, ldd};
    const int status = pp_score(args, 4, pot);
    if (status != kOk) return status;
    int64_t best = 0;  // ties: the first candidate
    for (int64_t j = 1; j < tt; ++j)
      if (pot[j] < pot[best]) best = j;
    chosen[s] = idx[best];
    pp_commit(dist + best * ldd, 1, n, mind, weights, cum);
  }
  return kOk;
}

int kmeanspp_commit_cpu(const float* dist, int64_t n, int64_t t, int64_t best, float* mind,
                        const float* weights, double* cum) {
  if (n < 0 || t < 1 || best < 0 || best >= t) return kBadArgument;
  if (n > 0 && (!dist || !mind || !cum)) return kBadArgument;
  if (n > 0) pp_commit(dist + best, t, n, mind, weights, cum);
  return kOk;
}

}  // namespace pysid
