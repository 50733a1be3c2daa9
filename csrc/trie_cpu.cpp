// pysid CPU kernels: trie build (radix sort + CSR fill), prefix walk, and the
// fused exact constrained beam step. See trie.h for the contracts.
#include "trie.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

namespace pysid {
namespace {

int bits_for(int64_t v) {  // bits needed to store 0 .. v-1
  int b = 0;
  while (b < 63 && (int64_t(1) << b) < v) ++b;
  return b == 0 ? 1 : b;
}

// LSD radix sort of (key, index) pairs by the low `nbits` bits of key; stable.
void radix_sort(std::vector<uint64_t>& key, std::vector<int64_t>& idx, int nbits) {
  const int64_t n = static_cast<int64_t>(key.size());
  std::vector<uint64_t> key2(n);
  std::vector<int64_t> idx2(n);
  constexpr int kDigit = 11;
  constexpr int kBuckets = 1 << kDigit;
  std::vector<int64_t> count(kBuckets);
  for (int shift = 0; shift < nbits; shift += kDigit) {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t i = 0; i < n; ++i) ++count[(key[i] >> shift) & (kBuckets - 1)];
    int64_t sum = 0;
    for (int j = 0; j < kBuckets; ++j) {
      const int64_t c = count[j];
      count[j] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = count[(key[i] >> shift) & (kBuckets - 1)]++;
      key2[pos] = key[i];
      idx2[pos] = idx[i];
    }
    key.swap(key2);
    idx.swap(idx2);
  }
}

template <typename CodeT>
int fill_impl(const int64_t* codes, int64_t M, int64_t L, const int64_t* perm, const int8_t* lcp,
              int32_t* const* offsets, void* const* child_codes_v) {
  std::vector<int64_t> cnt(L + 2, 0);
  cnt[0] = 1;
  offsets[0][0] = 0;
  for (int64_t r = 0; r < M; ++r) {
    const int64_t* row = codes + perm[r] * L;
    for (int64_t d = lcp[r]; d < L; ++d) {  // a new node at depth d+1
      const int64_t id = cnt[d + 1]++;
      static_cast<CodeT*>(child_codes_v[d])[id] = static_cast<CodeT>(row[d]);
      if (d + 1 < L) offsets[d + 1][id] = static_cast<int32_t>(cnt[d + 2]);
    }
  }
  for (int64_t d = 0; d < L; ++d) offsets[d][cnt[d]] = static_cast<int32_t>(cnt[d + 1]);
  return kOk;
}

// Position of `c` in the sorted range codes[lo, hi), or -1.
template <typename CodeT>
inline int64_t find_child(const CodeT* codes, int64_t lo, int64_t hi, int64_t c) {
  while (lo < hi) {
    const int64_t mid = lo + ((hi - lo) >> 1);
    const int64_t v = codes[mid];
    if (v < c) lo = mid + 1;
    else if (v > c) hi = mid;
    else return mid;
  }
  return -1;
}

template <typename CodeT>
int walk_impl(const int64_t* prefixes, int64_t N, int64_t t, int64_t stride,
              const int32_t* const* offsets, const void* const* child_codes_v, int64_t* nodes) {
#pragma omp parallel for schedule(static) if (N * (t + 1) > (1 << 16))
  for (int64_t i = 0; i < N; ++i) {
    int64_t node = 0;
    const int64_t* p = prefixes + i * stride;
    for (int64_t d = 0; d < t && node >= 0; ++d) {
      node = find_child(static_cast<const CodeT*>(child_codes_v[d]), offsets[d][node],
                        offsets[d][node + 1], p[d]);
    }
    nodes[i] = node;
  }
  return kOk;
}

struct Cand {
  float score;
  int32_t beam;
  int32_t code;
  int64_t flat;  // beam * V + code: the tie order
  int64_t node;
};

// a ranks before b: higher score, then lower (beam, code).
inline bool better(const Cand& a, const Cand& b) {
  return a.score > b.score || (a.score == b.score && a.flat < b.flat);
}

inline bool is_banned(const int64_t* row, int64_t E, int64_t node) {
  // rows are ascending: binary search
  int64_t lo = 0, hi = E;
  while (lo < hi) {
    const int64_t mid = lo + ((hi - lo) >> 1);
    if (row[mid] < node) lo = mid + 1;
    else hi = mid;
  }
  return lo < E && row[lo] == node;
}

template <typename CodeT>
int beam_step_impl(const float* logprobs, int64_t lp_stride, int64_t V, const float* beam_scores,
                   const int64_t* nodes, int64_t B, int64_t K, const int32_t* offsets,
                   int64_t n_nodes, const CodeT* codes, const int64_t* banned, int64_t E,
                   float* out_scores, int64_t* out_parent, int64_t* out_token,
                   int64_t* out_node) {
  const float ninf = -std::numeric_limits<float>::infinity();
  // Work estimate: candidates read per query (mean branching x beams).
  const double branching = n_nodes > 0 ? double(offsets[n_nodes]) / double(n_nodes) : 0.0;
  const double work = double(B) * double(K) * (branching + 4.0);
  int err = kOk;
#pragma omp parallel if (work > 65536.0 && B > 1)
  {
    std::vector<Cand> heap;
    heap.reserve(static_cast<size_t>(K));
#pragma omp for schedule(dynamic, 2) reduction(max : err)
    for (int64_t b = 0; b < B; ++b) {
      heap.clear();
      const int64_t* brow = banned ? banned + b * E : nullptr;
      int qerr = kOk;
      for (int64_t k = 0; k < K && qerr == kOk; ++k) {
        const int64_t node = nodes[b * K + k];
        if (node == -1) continue;
        if (node < -1 || node >= n_nodes) { qerr = kBadNode; break; }
        const float s0 = beam_scores[b * K + k];
        if (std::isnan(s0)) { qerr = kNonFinite; break; }
        if (s0 == ninf) continue;
        const float* lp = logprobs + (b * K + k) * lp_stride;
        const int64_t lo = offsets[node], hi = offsets[node + 1];
        for (int64_t j = lo; j < hi; ++j) {
          const int64_t c = codes[j];
          const float v = s0 + lp[c];
          if (!(v > ninf)) {  // -inf (skipped) or NaN (error)
            if (std::isnan(v)) { qerr = kNonFinite; break; }
            continue;
          }
          // Candidates arrive in increasing (beam, code): an equal score loses.
          if (static_cast<int64_t>(heap.size()) == K && !(v > heap.front().score)) continue;
          if (brow && is_banned(brow, E, j)) continue;
          Cand cand{v, static_cast<int32_t>(k), static_cast<int32_t>(c), k * V + c, j};
          if (static_cast<int64_t>(heap.size()) < K) {
            heap.push_back(cand);
            std::push_heap(heap.begin(), heap.end(), better);  // front = worst kept
          } else {
            std::pop_heap(heap.begin(), heap.end(), better);
            heap.back() = cand;
            std::push_heap(heap.begin(), heap.end(), better);
          }
        }
      }
      if (qerr != kOk) { err = std::max(err, qerr); continue; }
      std::sort_heap(heap.begin(), heap.end(), better);  // best first
      const int64_t n = static_cast<int64_t>(heap.size());
      for (int64_t i = 0; i < K; ++i) {
        const int64_t o = b * K + i;
        if (i < n) {
          out_scores[o] = heap[i].score;
          out_parent[o] = heap[i].beam;
          out_token[o] = heap[i].code;
          out_node[o] = heap[i].node;
        } else {
          out_scores[o] = ninf;
          out_parent[o] = -1;
          out_token[o] = -1;
          out_node[o] = -1;
        }
      }
    }
  }
  return err;
}

}  // namespace

int trie_sort_cpu(const int64_t* codes, int64_t M, int64_t L, const int64_t* vocab,
                  int64_t* perm, int8_t* lcp, int64_t* dup) {
  if (M < 0 || L < 1 || L > 127) return kBadArgument;
  try {
    int total_bits = 0;
    std::vector<int> bits(L);
    for (int64_t d = 0; d < L; ++d) {
      if (vocab[d] < 1) return kBadArgument;
      bits[d] = bits_for(vocab[d]);
      total_bits += bits[d];
    }
    std::vector<int64_t> idx(M);
    for (int64_t i = 0; i < M; ++i) idx[i] = i;
    if (total_bits <= 64) {
      std::vector<uint64_t> key(M);
      for (int64_t i = 0; i < M; ++i) {
        uint64_t k = 0;
        const int64_t* row = codes + i * L;
        for (int64_t d = 0; d < L; ++d) k = (bits[d] == 64 ? 0 : (k << bits[d])) | uint64_t(row[d]);
        key[i] = k;
      }
      radix_sort(key, idx, total_bits);
    } else {
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
        const int64_t* ra = codes + a * L;
        const int64_t* rb = codes + b * L;
        for (int64_t d = 0; d < L; ++d)
          if (ra[d] != rb[d]) return ra[d] < rb[d];
        return false;
      });
    }
    std::memcpy(perm, idx.data(), sizeof(int64_t) * M);
  } catch (const std::bad_alloc&) {
    return kOutOfMemory;
  }
  for (int64_t r = 0; r < M; ++r) {
    if (r == 0) { lcp[0] = 0; continue; }
    const int64_t* a = codes + perm[r - 1] * L;
    const int64_t* b = codes + perm[r] * L;
    int64_t d = 0;
    while (d < L && a[d] == b[d]) ++d;
    if (d == L) {
      dup[0] = perm[r - 1];
      dup[1] = perm[r];
      return kDuplicateCodes;
    }
    lcp[r] = static_cast<int8_t>(d);
  }
  return kOk;
}

int trie_fill_cpu(const int64_t* codes, int64_t M, int64_t L, const int64_t* perm,
                  const int8_t* lcp, int32_t* const* offsets, void* const* child_codes,
                  int code_bytes) {
  if (M < 0 || L < 1) return kBadArgument;
  try {
    if (code_bytes == 2) return fill_impl<int16_t>(codes, M, L, perm, lcp, offsets, child_codes);
    if (code_bytes == 4) return fill_impl<int32_t>(codes, M, L, perm, lcp, offsets, child_codes);
  } catch (const std::bad_alloc&) {
    return kOutOfMemory;
  }
  return kBadArgument;
}

int trie_walk_cpu(const int64_t* prefixes, int64_t N, int64_t t, int64_t stride,
                  const int32_t* const* offsets, const void* const* child_codes, int code_bytes,
                  int64_t* nodes) {
  if (N < 0 || t < 0) return kBadArgument;
  if (code_bytes == 2)
    return walk_impl<int16_t>(prefixes, N, t, stride, offsets, child_codes, nodes);
  if (code_bytes == 4)
    return walk_impl<int32_t>(prefixes, N, t, stride, offsets, child_codes, nodes);
  return kBadArgument;
}

int beam_step_cpu(const float* logprobs, int64_t lp_stride, int64_t V, const float* beam_scores,
                  const int64_t* nodes, int64_t B, int64_t K, const int32_t* offsets,
                  int64_t n_nodes, const void* child_codes, int code_bytes, const int64_t* banned,
                  int64_t E, float* out_scores, int64_t* out_parent, int64_t* out_token,
                  int64_t* out_node) {
  if (B < 0 || K < 1 || V < 1 || lp_stride < V || E < 0) return kBadArgument;
  try {
    if (code_bytes == 2)
      return beam_step_impl<int16_t>(logprobs, lp_stride, V, beam_scores, nodes, B, K, offsets,
                                     n_nodes, static_cast<const int16_t*>(child_codes), banned, E,
                                     out_scores, out_parent, out_token, out_node);
    if (code_bytes == 4)
      return beam_step_impl<int32_t>(logprobs, lp_stride, V, beam_scores, nodes, B, K, offsets,
                                     n_nodes, static_cast<const int32_t*>(child_codes), banned, E,
                                     out_scores, out_parent, out_token, out_node);
  } catch (const std::bad_alloc&) {
    return kOutOfMemory;
  }
  return kBadArgument;
}

}  // namespace pysid
