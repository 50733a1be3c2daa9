// Residual quantization on the CPU: argument checks, run-time ISA dispatch,
// codebook packing, per-thread scratch and the OpenMP loop over row blocks.
// The compute itself is rq_cpu_kernel.h, compiled three times: here without
// ISA flags (portable "scalar" path, also the one used off x86), and in
// rq_cpu_avx2.cpp / rq_cpu_avx512.cpp with their -m flags.
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "aligned_buf.h"
#include "cpu_isa.h"
#include "rq.h"
#include "rq_cpu_plan.h"

#include "simd_scalar.h"

#include "rq_cpu_kernel.h"  // the portable path: rq_block_scalar, ...

namespace pysid {
namespace rqcpu {

Kernels pick_kernels() {
  const int level = cpu_isa_level();
  return {PYSID_BY_ISA(level, rq_block), PYSID_BY_ISA(level, rq_assign_bounded),
          PYSID_BY_ISA(level, rq_lanes)(), PYSID_BY_ISA(level, rq_tile_rows)(),
          PYSID_BY_ISA(level, rq_assign_topm), PYSID_BY_ISA(level, rq_assign_cand)};
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

}  // namespace rqcpu

namespace {

using rqcpu::Kernels;
using rqcpu::kBlockBeamRows;
using rqcpu::pack_codebooks;
using rqcpu::pick_kernels;

constexpr int64_t kScoreBudget = 1 << 18;       // floats of beam score buffer per thread (1 MiB)
constexpr int64_t kResidualBudget = 1 << 19;    // floats of residuals per thread and buffer (2 MiB)
constexpr double kParallelMinWork = 2.0e6;      // multiply-adds below which threads are not woken

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

}  // namespace

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

  // The "never worse than greedy" rule, kept here rather than in the op (registry trait
  // "keeps_greedy_rows"): done in the op it costs a second output allocation and a full
  // [N, D] select, 14 % of a beam-5 call (0.26 -> 0.30 s, 100k x 128, 3 x 256). Encode
  // greedily first (its quantized rows go to the output, overwritten by the beam pass),
  // then keep the greedy codes wherever their final distance is strictly lower.
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
