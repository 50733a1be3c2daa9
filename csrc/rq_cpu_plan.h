// Shared, ISA-neutral description of one rq_encode_cpu call (or of one bounded k-means
// assignment, kmeans_cpu.cpp), passed from the dispatcher to the per-ISA block kernels
// (rq_cpu_kernel.h instantiated in rq_cpu.cpp / rq_cpu_avx2.cpp / rq_cpu_avx512.cpp).
//
// Only plain data and `static` functions live here: every translation unit
// gets its own copy, so no inline function compiled with -mavx512f can be
// picked by the linker for the scalar path (the classic multi-ISA ODR trap).
#pragma once
#include <cstdint>

namespace pysid {

struct AlignedBuf;  // aligned_buf.h (included by the dispatchers only: no ISA-flagged copy)

namespace rqcpu {

constexpr int64_t kBlockBeamRows = 96;  // beam rows (input rows x live beams) per block
constexpr int64_t kAlign = 16;  // floats (64 bytes): every scratch sub-buffer starts on a cache line

struct Plan {
  // inputs / outputs of the call
  const float* x;
  int64_t n, d, levels;
  const float* cb;       // [sum_k, d] row-major (original layout, used for residual updates)
  const int64_t* off;    // [levels + 1]
  float* q;
  float* dist;
  int32_t* codes;
  // packed codebooks: level l owns panels pofs[l] .. pofs[l+1]-1; panel p is
  // [d][W] floats at panels + p*d*W (lane t = code p_local*W + t of the level),
  // its squared norms at pnorms + p*W (+inf for padding lanes).
  const float* panels;
  const float* pnorms;
  const int64_t* pofs;   // [levels + 1]
  int64_t W;             // panel width of the chosen ISA
  int64_t kpad_max;      // max over levels of panels * W
  // beam bookkeeping
  int64_t beam;          // requested beam width (1 = greedy)
  const int64_t* nbeams; // [levels]: live beams after level l = min(beam, nbeams[l-1] * k_l)
  int64_t bcap;          // max live beams (nbeams[levels-1]); 1 for greedy
  int64_t block_rows;    // input rows per block (a block = one unit of OpenMP work)
  // greedy, one level only (k-means assignment with bounds): when non-null, also the
  // second-lowest score ||c||^2 - 2 x.c over all codes of each row ([n] floats)
  float* second;
};

// Hamerly/Elkan bounds of one bounded k-means assignment (rq_assign_bounded_*).
// Distances here are Euclidean (not squared), in float64, over rows [i0, i1).
struct Bounds {
  const double* shift;   // [k] ||c_new - c_old|| since the bounds were set; null: search every row
  const double* half;    // [k] half the distance from centre j to its nearest other centre
  double cmax;           // max_j ||c_j||
  double shift_max, shift_max2;  // largest shift and the largest of the others
  int64_t shift_arg;     // centre with the largest shift
  double* lower;         // [n] <= distance to every other centre
  double* xnorm2;        // [n] ||x_i||^2 (written on a search, read otherwise)
  int64_t searched;      // out: rows that needed the full search
};

// Scratch layout of one thread (all sizes in 4-byte words, each rounded up to kAlign).
struct Scratch {
  int64_t res[2], rn[2], hc[2], hd[2], minv, minv2, mini, gather, qacc, scores, cand, total;
};

static inline int64_t rq_round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// Scratch floats of one thread of rq_assign_topm_* (scores of a block, two rows, three
// score-row buffers).
static inline int64_t topm_scratch_floats(const Plan& p, int64_t mc) {
  (void)mc;
  return rq_round_up(p.block_rows * p.kpad_max, kAlign) + 2 * rq_round_up(p.d, kAlign) +
         3 * rq_round_up(p.kpad_max, kAlign);
}

static inline Scratch rq_scratch_layout(const Plan& p) {
  Scratch s;
  const int64_t T = p.block_rows * p.bcap;  // beam rows per block
  int64_t o = 0;
  const int nbuf = (p.beam > 1) ? 2 : 1;  // beam search double-buffers the beams' state
  s.res[1] = s.rn[1] = s.hc[1] = s.hd[1] = 0;
  for (int b = 0; b < nbuf; ++b) { s.res[b] = o; o += rq_round_up(T * p.d, kAlign); }
  for (int b = 0; b < nbuf; ++b) { s.rn[b] = o; o += rq_round_up(T, kAlign); }
  for (int b = 0; b < nbuf; ++b) { s.hc[b] = o; o += rq_round_up(T * p.levels, kAlign); }
  for (int b = 0; b < nbuf; ++b) { s.hd[b] = o; o += rq_round_up(T * p.levels, kAlign); }
  s.minv = o; o += rq_round_up(T * 16, kAlign);
  s.minv2 = o; o += p.second ? rq_round_up(T * 16, kAlign) : 0;
  s.gather = o; o += p.second ? rq_round_up(T * (p.d + 5), kAlign) : 0;  // rows, ids (int64), code, dist, second
  s.mini = o; o += rq_round_up(T * 16, kAlign);
  s.qacc = o; o += (p.beam == 1) ? rq_round_up(T * p.d, kAlign) : 0;
  s.scores = o; o += (p.beam > 1) ? rq_round_up(T * p.kpad_max, kAlign) : 0;
  s.cand = o; o += (p.beam > 1) ? rq_round_up(3 * T, kAlign) : 0;
  s.total = o;
  return s;
}

// Per-ISA block kernels: encode input rows [i0, i0 + m) with m <= plan.block_rows,
// using `scratch` (rq_scratch_layout(plan).total words, 64-byte aligned).
// rq_lanes_*: panel width W the kernel expects the codebooks packed with;
// rq_tile_rows_*: rows of its register tile (block sizes are chosen as multiples).
void rq_block_scalar(const Plan& plan, int64_t i0, int64_t m, float* scratch);
// Bounded greedy assignment of rows [i0, i1) against the one level of `plan` (whose
// `second` is non-null; codes/dist hold the previous codes on entry when b.shift is set).
void rq_assign_bounded_scalar(const Plan& plan, Bounds& b, int64_t i0, int64_t i1, float* scratch);
int64_t rq_tile_rows_scalar();
// k-means assignment with candidate lists (kmeans.h: kmeans_assign_topm_cpu /
// kmeans_assign_candidates_cpu): one block of rows [i0, i0 + m) of a one-level plan, also
// keeping each row's mc lowest-score codes in cand [n, mc]; scratch: topm_scratch_floats.
// And the restricted search of rows [i0, i1) among their candidates (cnorm: the centroids'
// canonical squared norms, cbound: {an upper bound of max ||c_k||, max cnorm}; codes of the
// canonical score).
void rq_assign_topm_scalar(const Plan& plan, int64_t i0, int64_t m, float* scratch, int64_t mc, int32_t* cand);
void rq_assign_cand_scalar(const float* x, int64_t i0, int64_t i1, int64_t d, const float* cb, const float* cnorm,
                           const float* cbound, const int32_t* cand, int64_t mc, int32_t* codes, float* dist);
int64_t rq_lanes_scalar();
#if defined(PYSID_X86)
void rq_block_avx2(const Plan& plan, int64_t i0, int64_t m, float* scratch);
void rq_block_avx512(const Plan& plan, int64_t i0, int64_t m, float* scratch);
void rq_assign_bounded_avx2(const Plan& plan, Bounds& b, int64_t i0, int64_t i1, float* scratch);
void rq_assign_bounded_avx512(const Plan& plan, Bounds& b, int64_t i0, int64_t i1, float* scratch);
int64_t rq_tile_rows_avx2();
void rq_assign_topm_avx2(const Plan&, int64_t, int64_t, float*, int64_t, int32_t*);
void rq_assign_topm_avx512(const Plan&, int64_t, int64_t, float*, int64_t, int32_t*);
void rq_assign_cand_avx2(const float*, int64_t, int64_t, int64_t, const float*, const float*, const float*,
                         const int32_t*, int64_t, int32_t*, float*);
void rq_assign_cand_avx512(const float*, int64_t, int64_t, int64_t, const float*, const float*, const float*,
                           const int32_t*, int64_t, int32_t*, float*);
int64_t rq_tile_rows_avx512();
int64_t rq_lanes_avx2();
int64_t rq_lanes_avx512();
#endif

// The chosen ISA's kernels and its panel width / register tile rows (rq_cpu.cpp; the
// path cpu_isa_level() names).
struct Kernels {
  void (*block)(const Plan&, int64_t, int64_t, float*);
  void (*bounded)(const Plan&, Bounds&, int64_t, int64_t, float*);
  int64_t W, tile;
  void (*topm)(const Plan&, int64_t, int64_t, float*, int64_t, int32_t*);
  void (*cand)(const float*, int64_t, int64_t, int64_t, const float*, const float*, const float*, const int32_t*,
               int64_t, int32_t*, float*);
};
Kernels pick_kernels();

// Codebooks packed for the kernels (rq_cpu.cpp): panel p = [d][W] transposed codewords,
// zero-padded, then the panels' squared norms (+inf padding); pofs [levels + 1] panel
// offsets. False when out of memory.
bool pack_codebooks(const float* codebooks, const int64_t* offsets, int64_t levels, int64_t d,
                    int64_t W, const int64_t* pofs, AlignedBuf& packed);

}  // namespace rqcpu
}  // namespace pysid
