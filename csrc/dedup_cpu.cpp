// The "reassign" dedup kernel (dedup.h): independent prefix groups, solved in parallel.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#include "dedup.h"

namespace pysid {

namespace {
// a < b in the order of a stable ascending torch.sort: NaN after everything (+inf included)
inline bool score_less(float a, float b) {
  if (std::isnan(b)) return !std::isnan(a);
  return a < b;
}
}  // namespace

int reassign_groups_cpu(const int64_t* group_ptr, int64_t G, const int32_t* cand, const float* score,
                        int64_t M, int64_t m, const int64_t* occ_ptr, const int32_t* occ, int64_t k_last,
                        int32_t* out) {
  if (G < 0 || M < 0 || m < 1 || k_last < 1) return kBadArgument;
  for (int64_t i = 0; i < M; ++i) out[i] = -1;
  if (G == 0) return kOk;
  int status = kOk;
#pragma omp parallel if (M > (1 << 15))
  {
    std::vector<int64_t> held, proposed;
    std::vector<int64_t> best, active, touched;
    bool ok = true;
    try {
      held.assign(k_last, -1);      // held[c] == g: code c is held in group g
      proposed.assign(k_last, -1);  // proposed[c] == stamp: c has a proposer this round
      best.assign(k_last, 0);
    } catch (const std::bad_alloc&) {
      ok = false;
    }
    if (!ok) {
#pragma omp critical
      status = kOutOfMemory;
    }
    int64_t stamp = 0;
#pragma omp for schedule(dynamic, 256)
    for (int64_t g = 0; g < G; ++g) {
      if (!ok) continue;
      const int64_t a = group_ptr[g], b = group_ptr[g + 1];
      if (a >= b) continue;
      for (int64_t o = occ_ptr[g]; o < occ_ptr[g + 1]; ++o) held[occ[o]] = g;
      active.clear();
      for (int64_t i = a; i < b; ++i) active.push_back(i);
      for (int64_t r = 0; r < m && !active.empty(); ++r) {
        ++stamp;
        touched.clear();
        for (int64_t i : active) {
          const int32_t c = cand[i * m + r];
          if (held[c] == g) continue;
          if (proposed[c] != stamp) {
            proposed[c] = stamp;
            best[c] = i;
            touched.push_back(c);
          } else if (score_less(score[i * m + r], score[best[c] * m + r])) {
            best[c] = i;
          }
        }
        if (touched.empty()) continue;
        for (int64_t c : touched) {
          held[c] = g;
          out[best[c]] = static_cast<int32_t>(c);
        }
        size_t k = 0;
        for (int64_t i : active)
          if (out[i] < 0) active[k++] = i;
        active.resize(k);
      }
    }
  }
  return status;
}

int reassign_scan_cpu(const int64_t* sorted, const int64_t* rows, int64_t n, int idx_bits, int64_t kmin,
                      int64_t k_last, const int64_t* taken, int64_t T, int64_t* count, int64_t* group_ptr,
                      int64_t* mover_rows, int64_t* occ_ptr, int32_t* occ) {
  if (n < 0 || T < 0 || k_last < 1 || (rows == nullptr && (idx_bits < 1 || idx_bits > 62))) return kBadArgument;
  const bool fill = count == nullptr;
  const int64_t mask = rows ? 0 : ((int64_t(1) << idx_bits) - 1);
  auto key_at = [&](int64_t i) { return rows ? sorted[i] : (sorted[i] >> idx_bits) + kmin; };
  auto row_at = [&](int64_t i) { return rows ? rows[i] : (sorted[i] & mask); };
  int64_t G = 0, M = 0, O = 0, t = 0;
  std::vector<int64_t> mv;
  if (fill) {
    group_ptr[0] = 0;
    occ_ptr[0] = 0;
  }
  int64_t i = 0;
  while (i < n) {
    // the prefix of key_at(i): rows i .. j-1
    const int64_t p = key_at(i) / k_last, pend = (p + 1) * k_last;
    int64_t j = i;
    while (t < T && taken[t] < p * k_last) ++t;
    const int64_t t0 = t;
    mv.clear();
    int64_t n_occ = 0, prev = -1;
    for (; j < n; ++j) {
      const int64_t key = key_at(j);
      if (key >= pend) break;
      const bool first = key != prev;
      prev = key;
      bool mover = !first;
      if (first) {
        ++n_occ;
        while (t < T && taken[t] < key) ++t;
        if (t < T && taken[t] == key) mover = true;
      }
      if (mover) mv.push_back(row_at(j));
    }
    while (t < T && taken[t] < pend) ++t;
    if (!mv.empty()) {
      n_occ += t - t0;
      if (fill) {
        std::sort(mv.begin(), mv.end());
        std::copy(mv.begin(), mv.end(), mover_rows + M);
        int32_t* o = occ + O;
        for (int64_t q = i, prevq = -1; q < j; ++q) {
          const int64_t key = key_at(q);
          if (key != prevq) *o++ = static_cast<int32_t>(key - p * k_last);
          prevq = key;
        }
        for (int64_t q = t0; q < t; ++q) *o++ = static_cast<int32_t>(taken[q] - p * k_last);
      }
      M += static_cast<int64_t>(mv.size());
      O += n_occ;
      ++G;
      if (fill) {
        group_ptr[G] = M;
        occ_ptr[G] = O;
      }
    }
    i = j;
  }
  if (!fill) {
    count[0] = G;
    count[1] = M;
    count[2] = O;
  }
  return kOk;
}

}  // namespace pysid
