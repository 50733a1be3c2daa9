// The AVX-512 residual-quantization kernels: rq_cpu_kernel.h over simd_avx512.h.
// Compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma -mf16c (CMakeLists.txt); called only after
// the run-time check of cpu_isa.h.
#include <cstdint>

#include "rq_cpu_plan.h"
#include "simd_avx512.h"

#include "rq_cpu_kernel.h"
