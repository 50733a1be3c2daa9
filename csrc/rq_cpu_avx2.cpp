// The AVX2+FMA residual-quantization kernels: rq_cpu_kernel.h over simd_avx2.h.
// Compiled with -mavx2 -mfma -mf16c (CMakeLists.txt); called only after
// the run-time check of cpu_isa.h.
#include <cstdint>

#include "rq_cpu_plan.h"
#include "simd_avx2.h"

#include "rq_cpu_kernel.h"
