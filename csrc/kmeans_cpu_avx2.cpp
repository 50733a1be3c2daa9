// The AVX2+FMA k-means row kernels: kmeans_cpu_kernel.h over simd_avx2.h.
// Compiled with -mavx2 -mfma -mf16c (CMakeLists.txt); called only after
// the run-time check of cpu_isa.h.
#include <cstdint>

#include "kmeans_cpu_plan.h"
#include "simd_avx2.h"

#include "kmeans_cpu_kernel.h"
#include "kmeans_seed_kernel.h"
