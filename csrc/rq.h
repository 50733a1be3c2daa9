// pysid native kernels: residual codeword search. No torch headers: raw
// pointers and sizes only; the Python layer validates every input.
#pragma once
#include <cstdint>

namespace pysid {

enum Status : int {
  kOk = 0,
  kBadArgument = 1,   // a size or option the kernel cannot take
  kOutOfMemory = 2,
  kCudaError = 3,
};

// Residual quantization, CPU.
//   x          [n, d]        float32, row-major, contiguous
//   codebooks  [sum_k, d]    float32, row-major; level l owns rows
//                            offsets[l] .. offsets[l+1]-1 (k_l = offsets[l+1]-offsets[l] >= 1)
//   offsets    [levels + 1]  int64, offsets[0] == 0
//   beam_width >= 1          1: greedy; >1: keep the best beam_width partial encodings
//                            (ties by score, beam rank, code); rows where the greedy
//                            encoding ends strictly lower take it (never worse than greedy)
// Outputs (fully written on kOk):
//   quantized  [n, d]        float32: sum of the chosen codewords (may be null when
//                            beam_width == 1: not written, e.g. for k-means assignment)
//   distances  [n, levels]   float32: ||x - sum_{j<=l} c_j||^2 after each level
//   codes      [n, levels]   int32:   chosen row within each level (0-based)
// Ties: greedy picks the lowest index. Threads: OpenMP over rows.
int rq_encode_cpu(const float* x, int64_t n, int64_t d,
                  const float* codebooks, const int64_t* offsets, int64_t levels,
                  int64_t beam_width,
                  float* quantized, float* distances, int32_t* codes);

// Nearest centroid of every row (k-means assignment), skipping the search where bounds
// prove the code cannot change: codes and distances are bit-identical to rq_encode_cpu
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

// Name of the SIMD path the CPU dispatcher chose ("avx512", "avx2", "scalar").
const char* cpu_isa();

}  // namespace pysid
