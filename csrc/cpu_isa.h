// The run-time choice of the CPU SIMD path, shared by every CPU dispatcher (rq_cpu.cpp,
// kmeans_cpu.cpp). Implemented in cpu_isa.cpp (compiled without ISA flags).
#pragma once

namespace pysid {

enum IsaLevel : int { kIsaScalar = 0, kIsaAvx2 = 1, kIsaAvx512 = 2 };

// The hardware's best path, lowered (never raised) by PYSID_CPU_ISA=avx512|avx2|scalar.
// Read on every call so that tests can switch paths inside one process.
int cpu_isa_level();

// Name of a level ("avx512", "avx2", "scalar"); cpu_isa() (rq.h) = the chosen one's.
const char* cpu_isa_name(int level);

// Whether the AVX-512 path may use AVX512_BF16's vdpbf16ps (the k-means|| seeding assignment):
// the build has it (PYSID_BF16: the compiler knows -mavx512bf16), the hardware has it, the path is
// AVX-512, and PYSID_CPU_BF16 is not "0" (tests set it to compare the emulation with the
// instruction). Read on every call.
bool cpu_bf16_dot();

}  // namespace pysid

// The <fn>_scalar / <fn>_avx2 / <fn>_avx512 variant of a per-ISA kernel for `level`
// (always <fn>_scalar off x86, where only the scalar translation units are built).
#if defined(PYSID_X86)
#define PYSID_BY_ISA(level, fn)                                   \
  ((level) == ::pysid::kIsaAvx512 ? fn##_avx512                   \
   : (level) == ::pysid::kIsaAvx2 ? fn##_avx2                     \
                                  : fn##_scalar)
#else
#define PYSID_BY_ISA(level, fn) ((void)(level), fn##_scalar)
#endif

// The entry point `name`_<PYSID_ISA> of the kernel header being compiled (simd_<isa>.h
// defines PYSID_ISA): rq_cpu_kernel.h / kmeans_cpu_kernel.h define their functions so.
#define PYSID_CAT_(a, b) a##_##b
#define PYSID_CAT(a, b) PYSID_CAT_(a, b)
#define PYSID_ISA_FN(name) PYSID_CAT(name, PYSID_ISA)
