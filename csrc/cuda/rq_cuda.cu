// pysid CUDA kernels: residual codeword search (greedy). No torch headers.
//
// One launch per level, all on the caller's stream (never synchronised here).
// A block owns kRows rows for the whole level; the residual of those rows lives in
// the `quantized` output buffer (float32 [n, d], each block touches only its own
// rows), so any d works with fixed shared memory. Per level:
//   1. codebook tiles of kTileK codewords x kTileD dims and the matching residual
//      tile are staged in shared memory; each thread accumulates float32 FMA dot
//      products for 1 row x kPerThread codewords (and warp 0 the tile's ||c||^2);
//   2. score = ||c||^2 - 2 r.c; each thread keeps its running (min, index) with a
//      strict '<' over increasing indices, then the 8 threads of a row reduce
//      (score, index) lexicographically: exact ties go to the lowest index;
//   3. the row's 8 threads subtract the chosen codeword, write the new residual
//      (or, on the last level, quantized = x - residual) and the squared norm.
// The first level reads x (float32 / float16 / bfloat16) instead of the buffer.
// Scores are the canonical ones (kernels/residual_quantize.py): the dot and ||c||^2 are each
// one fmaf chain over d ascending (the accumulators carry across the kTileD stages), the score
// cn - 2 dot, exact ties to the lowest index: the same codes as the C++ and Triton kernels.
// Beam search (beam_width > 1) is not implemented here: kBadArgument.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/rq_cuda.h"
#include "status.h"

namespace pysid {
namespace {

constexpr int kThreads = 256;
constexpr int kRows = 32;                         // rows per block
constexpr int kLanesPerRow = kThreads / kRows;    // 8 threads per row (consecutive lanes)
constexpr int kPerThread = 4;                     // codewords per thread per tile
constexpr int kTileK = kLanesPerRow * kPerThread; // 32 codewords per tile
constexpr int kTileD = 32;                        // dims per shared-memory stage

// x[i] as float32 (16-bit types read as raw bits: no struct copies)
__device__ __forceinline__ float load_x(const float* x, int64_t i) { return x[i]; }
__device__ __forceinline__ float load_x(const __half* x, int64_t i) {
  return __half2float(__ushort_as_half(reinterpret_cast<const unsigned short*>(x)[i]));
}
__device__ __forceinline__ float load_x(const __nv_bfloat16* x, int64_t i) {
  return __bfloat162float(__ushort_as_bfloat16(reinterpret_cast<const unsigned short*>(x)[i]));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
rq_level_kernel(const T* __restrict__ x, int64_t n, int64_t d,
                const float* __restrict__ cb,  // this level's codebook [k, d]
                int64_t k,
                float* q,                      // residual in / out (quantized on the last level)
                float* __restrict__ dist,      // &distances[0][level], row stride `levels`
                int32_t* __restrict__ codes,   // &codes[0][level], row stride `levels`
                int64_t levels, bool first, bool last) {
  __shared__ float rs[kRows][kTileD + 1];   // +1: conflict-free column reads
  __shared__ float cs[kTileK][kTileD + 1];
  __shared__ float cn[kTileK];

  const int tid = threadIdx.x;
  const int row_local = tid / kLanesPerRow;
  const int kg = tid % kLanesPerRow;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t row = row0 + row_local;
  const bool row_ok = row < n;

  float best_s = INFINITY;  // all-infinite (or NaN) scores leave index 0
  int best_k = 0;

  for (int64_t k0 = 0; k0 < k; k0 += kTileK) {
    float acc[kPerThread];
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) acc[j] = 0.f;

    for (int64_t d0 = 0; d0 < d; d0 += kTileD) {
      __syncthreads();  // previous stage fully consumed
      for (int e = tid; e < kRows * kTileD; e += kThreads) {
        const int rr = e / kTileD, dd = e % kTileD;
        const int64_t gr = row0 + rr, gd = d0 + dd;
        float v = 0.f;
        if (gr < n && gd < d) v = first ? load_x(x, gr * d + gd) : __ldcg(q + gr * d + gd);
        rs[rr][dd] = v;
      }
      for (int e = tid; e < kTileK * kTileD; e += kThreads) {
        const int kk = e / kTileD, dd = e % kTileD;
        const int64_t gk = k0 + kk, gd = d0 + dd;
        cs[kk][dd] = (gk < k && gd < d) ? cb[gk * d + gd] : 0.f;
      }
      __syncthreads();
      if (tid < kTileK) {
        float s = d0 == 0 ? 0.f : cn[tid];  // only warp 0 touches cn until the barrier below
#pragma unroll 8
        for (int dd = 0; dd < kTileD; ++dd) s = fmaf(cs[tid][dd], cs[tid][dd], s);
        cn[tid] = s;
      }
#pragma unroll 8
      for (int dd = 0; dd < kTileD; ++dd) {
        const float rv = rs[row_local][dd];
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) acc[j] = fmaf(rv, cs[kg + j * kLanesPerRow][dd], acc[j]);
      }
    }
    __syncthreads();  // cn complete (written by warp 0)
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int kk = kg + j * kLanesPerRow;  // increasing in j: strict '<' keeps the lowest index
      const int64_t gk = k0 + kk;
      if (gk < k) {
        const float s = cn[kk] - 2.f * acc[j];
        if (s < best_s) {
          best_s = s;
          best_k = static_cast<int>(gk);
        }
      }
    }
  }

  // (score, index) lexicographic min over the row's 8 consecutive lanes
#pragma unroll
  for (int off = kLanesPerRow / 2; off > 0; off >>= 1) {
    const float os = __shfl_xor_sync(0xffffffffu, best_s, off, kLanesPerRow);
    const int ok = __shfl_xor_sync(0xffffffffu, best_k, off, kLanesPerRow);
    if (os < best_s || (os == best_s && ok < best_k)) {
      best_s = os;
      best_k = ok;
    }
  }

  // subtract the chosen codeword; squared norm of the new residual
  float part = 0.f;
  if (row_ok) {
    const float* c = cb + static_cast<int64_t>(best_k) * d;
    for (int64_t j = kg; j < d; j += kLanesPerRow) {
      const float xv = first || last ? load_x(x, row * d + j) : 0.f;
      const float rv = first ? xv : __ldcg(q + row * d + j);
      const float r = rv - c[j];
      part = fmaf(r, r, part);
      q[row * d + j] = last ? xv - r : r;
    }
  }
#pragma unroll
  for (int off = kLanesPerRow / 2; off > 0; off >>= 1) part += __shfl_xor_sync(0xffffffffu, part, off, kLanesPerRow);
  if (row_ok && kg == 0) {
    dist[row * levels] = part;
    codes[row * levels] = best_k;
  }
}

template <typename T>
int launch_all(const T* x, int64_t n, int64_t d, const float* codebooks, const int64_t* offsets,
               int64_t levels, float* quantized, float* distances, int32_t* codes, cudaStream_t stream) {
  const int64_t blocks = (n + kRows - 1) / kRows;
  if (blocks > 0x7fffffffLL) return kBadArgument;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t kbeg = offsets[l], kl = offsets[l + 1] - offsets[l];
    rq_level_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        x, n, d, codebooks + kbeg * d, kl, quantized, distances + l, codes + l, levels,
        l == 0, l == levels - 1);
    if (cudaGetLastError() != cudaSuccess) return kCudaError;
  }
  return kOk;
}

}  // namespace

int rq_encode_cuda(const void* x, int x_dtype, int64_t n, int64_t d,
                   const float* codebooks, const int64_t* offsets, int64_t levels,
                   int64_t beam_width,
                   float* quantized, float* distances, int32_t* codes,
                   std::uintptr_t stream) {
  if (n < 0 || d < 1 || levels < 1 || offsets == nullptr) return kBadArgument;
  if (beam_width != 1) return kBadArgument;  // beam search: not implemented in CUDA (use Triton / reference)
  if (offsets[0] != 0) return kBadArgument;
  for (int64_t l = 0; l < levels; ++l)
    if (offsets[l + 1] <= offsets[l] || offsets[l + 1] - offsets[l] > 0x7fffffffLL) return kBadArgument;
  if (n == 0) return kOk;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (x_dtype) {
    case kFloat32:
      return launch_all(static_cast<const float*>(x), n, d, codebooks, offsets, levels, quantized, distances, codes, s);
    case kFloat16:
      return launch_all(static_cast<const __half*>(x), n, d, codebooks, offsets, levels, quantized, distances, codes, s);
    case kBFloat16:
      return launch_all(static_cast<const __nv_bfloat16*>(x), n, d, codebooks, offsets, levels, quantized, distances, codes, s);
    default:
      return kBadArgument;
  }
}

}  // namespace pysid
