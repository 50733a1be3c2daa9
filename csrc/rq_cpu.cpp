// Placeholder scalar kernel (to be replaced by the blocked SIMD kernels).
#include "rq.h"
#include <cstring>
#include <limits>
#include <vector>

namespace pysid {

const char* cpu_isa() { return "scalar"; }

int rq_encode_cpu(const float* x, int64_t n, int64_t d, const float* cb, const int64_t* off,
                  int64_t levels, int64_t beam_width, float* q, float* dist, int32_t* codes) {
  if (n < 0 || d < 1 || levels < 1 || beam_width != 1) return kBadArgument;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> r(x + i * d, x + (i + 1) * d);
    std::memset(q + i * d, 0, sizeof(float) * d);
    for (int64_t l = 0; l < levels; ++l) {
      float best = std::numeric_limits<float>::infinity();
      int64_t bi = 0;
      for (int64_t k = off[l]; k < off[l + 1]; ++k) {
        float s = 0;
        for (int64_t j = 0; j < d; ++j) { float t = r[j] - cb[k * d + j]; s += t * t; }
        if (s < best) { best = s; bi = k; }
      }
      float s = 0;
      for (int64_t j = 0; j < d; ++j) { r[j] -= cb[bi * d + j]; q[i * d + j] += cb[bi * d + j]; s += r[j] * r[j]; }
      dist[i * levels + l] = s;
      codes[i * levels + l] = static_cast<int32_t>(bi - off[l]);
    }
  }
  return kOk;
}

}  // namespace pysid
