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

// Greedy (beam_width == 1) or pure beam search; inputs already checked.
int encode(const float* x, int64_t n, int64_t d, const float* codebooks, const int64_t* offsets,
           int64_t levels, int64_t beam_width, float* quantized, float* distances, int32_t* codes) {
  using namespace rqcpu;

  const int level = chosen_level();
  void (*block_fn)(const Plan&, int64_t, int64_t, float*) = rq_block_scalar;
  int64_t W = rq_lanes_scalar(), tile = rq_tile_rows_scalar();
#if defined(PYSID_X86)
  if (level == kAvx512) {
    block_fn = rq_block_avx512;
    W = rq_lanes_avx512();
    tile = rq_tile_rows_avx512();
  } else if (level == kAvx2) {
    block_fn = rq_block_avx2;
    W = rq_lanes_avx2();
    tile = rq_tile_rows_avx2();
  }
#else
  (void)level;
#endif

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

  // pack: panel p = [d][W] transposed codewords, zero-padded; norms (+inf padding)
  const int64_t npanels = pofs[levels];
  AlignedBuf packed;
  if (!packed.alloc(static_cast<int64_t>(sizeof(float)) * npanels * W * (d + 1))) return kOutOfMemory;
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
          double s = 0.0;
          for (int64_t j = 0; j < d; ++j) {
            pan[j * W + t] = c[j];
            s += static_cast<double>(c[j]) * c[j];
          }
          pnorms[p * W + t] = static_cast<float>(s);
        } else {
          for (int64_t j = 0; j < d; ++j) pan[j * W + t] = 0.0f;
          pnorms[p * W + t] = __builtin_inff();
        }
      }
    }
  }

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
      block_fn(plan, i0, (n - i0 < rows) ? n - i0 : rows, s);
    }
  }
  return kOk;
}

}  // namespace

const char* cpu_isa() { return level_name(chosen_level()); }

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
