// Run-time CPU feature detection and the PYSID_CPU_ISA override (cpu_isa.h).
#include "cpu_isa.h"

#include <cstdlib>
#include <cstring>

#include "rq.h"

namespace pysid {
namespace {

int hardware_level() {
#if defined(PYSID_X86) && (defined(__GNUC__) || defined(__clang__))
  static const int level = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
      return static_cast<int>(kIsaAvx512);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return static_cast<int>(kIsaAvx2);
    return static_cast<int>(kIsaScalar);
  }();
  return level;
#else
  return kIsaScalar;
#endif
}

}  // namespace

int cpu_isa_level() {
  int level = hardware_level();
  if (const char* env = std::getenv("PYSID_CPU_ISA")) {
    int want = level;
    if (std::strcmp(env, "scalar") == 0) want = kIsaScalar;
    else if (std::strcmp(env, "avx2") == 0) want = kIsaAvx2;
    else if (std::strcmp(env, "avx512") == 0) want = kIsaAvx512;
    if (want < level) level = want;
  }
  return level;
}

bool cpu_bf16_dot() {
#if defined(PYSID_X86) && defined(PYSID_BF16) && (defined(__GNUC__) || defined(__clang__))
  static const bool hw = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  if (!hw || cpu_isa_level() != kIsaAvx512) return false;
  const char* env = std::getenv("PYSID_CPU_BF16");
  return !(env && std::strcmp(env, "0") == 0);
#else
  return false;
#endif
}

const char* cpu_isa_name(int level) {
  return level == kIsaAvx512 ? "avx512" : level == kIsaAvx2 ? "avx2" : "scalar";
}

const char* cpu_isa() { return cpu_isa_name(cpu_isa_level()); }

}  // namespace pysid
