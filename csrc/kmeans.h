// pysid native kernels: the two passes over the data that k-means needs on the
// CPU (issue 3), and the bounded assignment step. No torch headers: raw pointers and
// sizes only. pysid/_native_kmeans.py validates shapes, dtypes and contiguity and
// allocates the outputs; these functions trust their inputs except where noted.
//
// x dtypes (x_dtype): the DType codes of status.h (kFloat32, kFloat16, kBFloat16). x is
// [n, d], row-major, contiguous; float16 and bfloat16 rows are converted to float32
// exactly before any arithmetic.
//
// Determinism: every kernel produces bit-identical results for any number of
// OpenMP threads (fixed partition of the work into chunks whose boundaries do
// not depend on the thread count; partial sums combined in chunk order).
// kmeans_update_cpu is moreover bit-identical across the SIMD paths (every
// product it forms is exact in float64).
#pragma once
#include <cstdint>

#include "status.h"  // Status codes (the k-means one: kCodeOutOfRange) and DType codes

namespace pysid {

// Per-cluster weighted sums (the M-step of Lloyd's algorithm).
//   x         [n, d]  float32 / float16 / bfloat16 (x_dtype), n >= 0, d >= 0
//   codes     [n]     int32, each in [0, k)
//   weights   [n]     float32 or nullptr (all ones); the caller ensures w >= 0
//   k >= 1
// Outputs (fully written on kOk, untouched on any error):
//   sums      [k, d]  float64: sums[c] = sum_{i: codes[i] == c} w_i * x_i
//   counts    [k]     float64: counts[c] = sum_{i: codes[i] == c} w_i
//   bad_row   [1]     int64 (may be nullptr): on kCodeOutOfRange, the first row whose code
//                     is out of range
// Empty clusters get sums 0 and counts 0. Method: a stable counting sort of the
// row ids by code (O(n + k)); then each cluster's rows, in increasing row order,
// are cut into fixed chunks of kmeans_update_chunk_rows() rows; one thread sums a
// chunk in float64 (row order), and a cluster's chunk sums are added in chunk order.
// Memory: O(n + k + chunks * d), never n * k.
int kmeans_update_cpu(const void* x, int x_dtype, int64_t n, int64_t d, const int32_t* codes,
                      const float* weights, int64_t k, double* sums, double* counts,
                      int64_t* bad_row);

// Scores of T candidate centres for greedy k-means++ (one streaming pass over x).
//   x         [n, d]  float32 / float16 / bfloat16 (x_dtype)
//   cand      [t, d]  float32, 1 <= t <= kmeanspp_max_candidates
//   mind      [n]     float32: each row's squared distance to its nearest chosen centre
//                     (+inf allowed)
//   weights   [n]     float32 or nullptr (all ones)
// Outputs (fully written on kOk):
//   dist      [n, t]  float32: dist[i][j] = sum over e = 0, 1, ..., d - 1 in order of
//                     (x[i][e] - cand[j][e])^2, each term added with one fused multiply-add
//                     on the AVX2 / AVX-512 paths (the same bits on both; the scalar path
//                     rounds the square first). From the differences, so no cancellation.
//   pot       [t]     float64: pot[j] = sum_i w_i * min(mind[i], dist[i][j]) (each term
//                     exact in float64), summed over fixed chunks of kmeanspp_chunk_rows()
//                     rows: inside a chunk one sum per lane l = i % 16 in row order, then
//                     the 16 lane sums in lane order; the chunk sums in chunk order.
// min(mind, dist) takes dist only when dist < mind (a NaN dist keeps mind).
constexpr int64_t kmeanspp_max_candidates = 64;
int kmeanspp_candidates_cpu(const void* x, int x_dtype, int64_t n, int64_t d, const float* cand,
                            int64_t t, const float* mind, const float* weights, float* dist,
                            double* pot);

// Whole greedy k-means++ runs on one process, steps in C++ (no per-step round trip).
// The rows are first packed once into float32 panels of 16 rows transposed:
//   kmeanspp_pack_cpu: panels [kmeanspp_panel_floats(n, d)] <- x [n, d] (x_dtype), zero padded.
// kmeanspp_run_cpu then runs centres c0 .. c0 + steps - 1, each exactly as the one-step
// kernels would (the same bits as the Python loop over kmeanspp_candidates_cpu and
// kmeanspp_commit_cpu):
//   draw     candidate j = the first row whose cum exceeds u[s][j] * cum[n - 1] (clamped
//            to n - 1; torch.searchsorted(right=True)); centre 0 draws one candidate
//   score    dist and pot as kmeanspp_candidates_cpu
//   choose   chosen[s] = the candidate of least pot (ties: the first)
//   commit   mind and cum as kmeanspp_commit_cpu
// State (updated in place): mind [n] float32 (+inf before the first centre) and cum [n]
// float64 (cumsum of w * mind; of w before the first centre). u: [steps, t] float64.
int64_t kmeanspp_panel_floats(int64_t n, int64_t d);
int kmeanspp_pack_cpu(const void* x, int x_dtype, int64_t n, int64_t d, float* panels);
int kmeanspp_run_cpu(const float* panels, int64_t n, int64_t d, const float* weights, int64_t t,
                     const double* u, int64_t c0, int64_t steps, float* mind, double* cum,
                     int64_t* chosen);

// The k-means++ step after a centre is chosen (one pass, one thread, row order):
//   mind[i] = min(mind[i], dist[i][best])          (in place; a NaN dist keeps mind)
//   cum[i]  = sum_{r <= i} (double)(w_r * mind[r])  (w_r * mind[r] rounded to float32 first)
// i.e. exactly torch.cumsum((w * torch.minimum(mind, dist[:, best])).double(), 0) for
// finite inputs: the sampling weights of the next draw.
int kmeanspp_commit_cpu(const float* dist, int64_t n, int64_t t, int64_t best, float* mind,
                        const float* weights, double* cum);

// Nearest centroid of every row (k-means assignment), skipping the search where bounds
// prove the code cannot change: codes and distances are bit-identical to rq_encode_cpu (rq.h)
// with the one level `centroids` (same ISA path).
//   x          [n, d]  float32;  centroids [k, d] float32
//   shift      [k]     float64 ||c_j - c_j_before|| since the call that set the bounds,
//                      or nullptr: search every row and set the bounds (first call)
//   codes      [n]     int32: in (previous codes, when shift is set) / out
//   distances  [n]     float32 out: ||x - c_code||^2 as rq_encode_cpu computes it
//   lower      [n]     float64 in/out: lower bound on each row's distance to every other centre
//   xnorm2     [n]     float64 in/out: ||x_i||^2 (written when shift is null)
//   searched   [1]     int64 out (may be null): rows that needed the full search
int kmeans_assign_bounded_cpu(const float* x, int64_t n, int64_t d, const float* centroids, int64_t k,
                              const double* shift, int32_t* codes, float* distances, double* lower,
                              double* xnorm2, int64_t* searched);

// Nearest centroid of every row and its m nearest candidates (k-means with candidate lists).
//   x [n, d] float32, centroids [k, d] float32, 1 <= m <= k
//   codes [n] int32, distances [n] float32: bit-identical to rq_encode_cpu (rq.h) with the one
//                level `centroids` (same ISA path)
//   cand [n, m] int32: the m codes of lowest kernel score ||c||^2 - 2 x.c (among equal scores
//                the lower codes), in increasing code order (codes[i] among them unless a
//                score is NaN; NaN scores never enter: a short list repeats codes[i])
int kmeans_assign_topm_cpu(const float* x, int64_t n, int64_t d, const float* centroids, int64_t k, int64_t m,
                           int32_t* codes, float* distances, int32_t* cand);

// The assignment restricted to each row's candidates (cand [n, m] int32, each in [0, k), else
// kBadArgument before anything is written): codes[i] = the candidate of least float32 score
// ||c||^2 - 2 x.c (the first in list order among equal scores), distances[i] = ||x_i - c||^2 summed
// from the differences. Independent of the thread count (one row at a time).
int kmeans_assign_candidates_cpu(const float* x, int64_t n, int64_t d, const float* centroids, int64_t k,
                                 const int32_t* cand, int64_t m, int32_t* codes, float* distances);

// The k-means|| seeding assignment: each row's nearest candidate by distances computed from
// bfloat16-rounded values (cheaper than the exact kernel; the distances only weight the random
// draws of the seeding and the candidates' weights).
//   x [n, d] float32, cand [k, d] float32 (1 <= k <= INT32_MAX - 16)
//   codes [n] int32: argmin_j s_j, s_j = cn_j - 2 x.c_j (ties: the lowest j), where every
//                value is rounded to bfloat16 (nearest even; |v| < 2^-56 -> 0) and each dot
//                product (and the squared norm cn_j) is accumulated in float32 over the pairs
//                (v[2g], v[2g + 1]), g = 0, 1, ...: s += odd product, then s += even product
//                (0 past d): vdpbf16ps's order, whose products are exact
//   dist  [n] float32: max(0, xn + s_code), xn the row's squared norm computed the same way
// The same bits on every path (the AVX512_BF16 instruction and the float32 emulation of the
// scalar / AVX2 / AVX-512 paths) and for any number of threads.
int kmeans_assign_bf16_cpu(const float* x, int64_t n, int64_t d, const float* cand, int64_t k, int32_t* codes,
                           float* dist);
// The path kmeans_assign_bf16_cpu takes now: "avx512bf16", "avx512", "avx2" or "scalar".
const char* kmeans_seed_path();

// The fixed chunk sizes (part of the summation-order contract above).
int64_t kmeans_update_chunk_rows();
int64_t kmeanspp_chunk_rows();

}  // namespace pysid
