// The k-means|| seeding assignment over AVX512_BF16's vdpbf16ps: kmeans_seed_kernel.h with
// PYSID_SEED_BF16, over simd_avx512.h. Compiled with the AVX-512 flags and -mavx512bf16
// (CMakeLists.txt); called only after the run-time check of cpu_isa.h (cpu_has_bf16_dot).
#include <immintrin.h>

#include <cstdint>

#include "kmeans_cpu_plan.h"
#include "simd_avx512.h"

#define PYSID_SEED_BF16 1
#include "kmeans_seed_kernel.h"
