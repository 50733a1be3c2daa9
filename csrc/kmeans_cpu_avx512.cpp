// The AVX-512 k-means row kernels: kmeans_cpu_kernel.h over simd_avx512.h.
// Compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma -mf16c (CMakeLists.txt); called only after
// the run-time check of cpu_isa.h.
#include <cstdint>

#include "kmeans_cpu_plan.h"
#include "simd_avx512.h"

#include "kmeans_cpu_kernel.h"
#include "kmeans_seed_kernel.h"
