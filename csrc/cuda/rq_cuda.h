// pysid CUDA kernels: residual codeword search. No torch headers.
#pragma once
#include <cstdint>

#include "status.h"  // Status and DType codes (x_dtype)

namespace pysid {

// Residual quantization on the GPU, greedy only (beam_width != 1: kBadArgument; the op
// runs beams on Triton or the reference).
//   x          [n, d] device pointer, dtype x_dtype, row-major contiguous; accumulation in float32
//   codebooks  [sum_k, d] float32 device pointer, row-major; level l owns rows offsets[l]..offsets[l+1]-1
//   offsets    [levels + 1] int64 HOST pointer
//   quantized  [n, d] float32, distances [n, levels] float32, codes [n, levels] int32 (device)
//   stream     cudaStream_t of the caller (as an integer), never synchronised here
// Returns a pysid::Status (status.h); a launch error is kCudaError.
int rq_encode_cuda(const void* x, int x_dtype, int64_t n, int64_t d,
                   const float* codebooks, const int64_t* offsets, int64_t levels,
                   int64_t beam_width,
                   float* quantized, float* distances, int32_t* codes,
                   std::uintptr_t stream);

}  // namespace pysid
