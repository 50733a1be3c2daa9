// pysid native kernels: compact SID trie (per-level CSR) and the fused exact
// constrained beam step. No torch headers: raw pointers and sizes only; the
// Python layer (pysid/trie.py, pysid/ops/beam_search.py) validates inputs and
// owns every allocation.
//
// Trie layout for M items of L codes (levels d = 0 .. L-1):
//   depth d holds n_d nodes (n_0 = 1: the root; n_L = M: one leaf per item).
//   offsets[d]  [n_d + 1]  int32: children of node i (depth d) are the nodes
//                          offsets[d][i] .. offsets[d][i+1]-1 of depth d+1.
//   codes[d]    [n_{d+1}]  int16 or int32 (CodeT): the code of each depth-(d+1)
//                          node; strictly increasing within one parent.
// Nodes at each depth are numbered in lexicographic order of their prefixes,
// so leaf r is the r-th item in sorted code order.
#pragma once
#include <cstdint>

#include "status.h"  // Status codes; the trie's own: kDuplicateCodes, kNonFinite, kBadNode

namespace pysid {

// Sort M code tuples lexicographically (ties impossible once duplicates are
// rejected; the sort is stable on the input index).
//   codes        [M, L] int64, row-major; 0 <= codes[i][d] < vocab[d]
//   vocab        [L]    int64 >= 1
// Outputs:
//   perm         [M] int64: perm[r] = input row of the r-th sorted tuple
//   lcp          [M] int8:  first level at which sorted row r differs from row
//                           r-1 (0 for r = 0)
//   dup          [2] int64: on kDuplicateCodes, the two input rows that collide
//                           (lowest sorted position first)
// Uses an LSD radix sort on packed keys when sum(ceil(log2 vocab)) <= 64, else
// a comparison sort.
int trie_sort_cpu(const int64_t* codes, int64_t M, int64_t L, const int64_t* vocab,
                  int64_t* perm, int8_t* lcp, int64_t* dup);

// Fill the per-level CSR from the sorted order. The caller sized
// offsets[d] to n_d + 1 and codes[d] to n_{d+1}, with n_{d+1} = #{r : lcp[r] <= d}.
// code_bytes: 2 (int16 codes) or 4 (int32 codes).
int trie_fill_cpu(const int64_t* codes, int64_t M, int64_t L, const int64_t* perm,
                  const int8_t* lcp, int32_t* const* offsets, void* const* child_codes,
                  int code_bytes);

// Walk N prefixes of length t (0 <= t <= L) from the root.
//   prefixes  [N, t] int64 (row stride `stride`); a code with no matching
//             child (or out of range) makes the row invalid.
// Output: nodes [N] int64, node id at depth t, or -1.
int trie_walk_cpu(const int64_t* prefixes, int64_t N, int64_t t, int64_t stride,
                  const int32_t* const* offsets, const void* const* child_codes,
                  int code_bytes, int64_t* nodes);

// One exact constrained beam step for B queries of K beams at depth `level`.
//   logprobs     [B*K, V] float32, row stride lp_stride (>= V)
//   beam_scores  [B, K]   float32 (row-major, contiguous)
//   nodes        [B, K]   int64: node id at depth level, or -1 (dead beam)
//   offsets      [n_level + 1] int32, child_codes [n_{level+1}] CodeT: that level's CSR
//   n_nodes      n_level (number of nodes at depth level), for range checks
//   banned       [B, E]   int64 or nullptr: per query, ascending node ids at
//                         depth level+1 that must never be chosen (other
//                         values are ignored, so any padding that keeps the
//                         row sorted works)
// Outputs, each [B, K]:
//   out_scores   float32: beam score + logprob of the chosen child, descending
//   out_parent   int64:   beam (0..K-1) it extends
//   out_token    int64:   code of the child
//   out_node     int64:   node id of the child at depth level+1
// The candidates of query b are the children of its live beams, scored
// beam_scores[b][k] + logprobs[b*K+k][code]; candidates scoring -inf (and
// banned ones) are never chosen. The K best are returned by score descending;
// equal scores are ordered by (parent beam, code) ascending. Slots left over
// when fewer than K candidates exist get score -inf, parent/token/node -1.
// Returns kNonFinite if a live beam's score or a read log-prob is NaN,
// kBadNode if a node id is outside [-1, n_nodes).
int beam_step_cpu(const float* logprobs, int64_t lp_stride, int64_t V,
                  const float* beam_scores, const int64_t* nodes, int64_t B, int64_t K,
                  const int32_t* offsets, int64_t n_nodes, const void* child_codes,
                  int code_bytes, const int64_t* banned, int64_t E, float* out_scores,
                  int64_t* out_parent, int64_t* out_token, int64_t* out_node);

}  // namespace pysid
