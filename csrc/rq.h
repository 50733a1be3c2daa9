// pysid native kernels: residual codeword search. No torch headers: raw
// pointers and sizes only; the Python layer validates every input.
#pragma once
#include <cstdint>

#include "status.h"  // Status codes (kOk, kBadArgument, ...)

namespace pysid {

// Residual quantization, CPU.
//   x          [n, d]        float32, row-major, contiguous
//   codebooks  [sum_k, d]    float32, row-major; level l owns rows
//                            offsets[l] .. offsets[l+1]-1 (k_l = offsets[l+1]-offsets[l] >= 1)
//   offsets    [levels + 1]  int64, offsets[0] == 0
//   beam_width >= 1          1: greedy; >1: keep the best beam_width partial encodings
//                            (ties by score, beam rank, code), then per row the greedy
//                            encoding where it ends strictly lower (never worse than greedy;
//                            the op applies the same rule to kernels that search beams only)
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

// Name of the SIMD path the CPU dispatcher chose ("avx512", "avx2", "scalar").
const char* cpu_isa();

}  // namespace pysid
