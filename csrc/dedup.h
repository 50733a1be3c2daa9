// pysid native kernel of the "reassign" dedup at catalogue scale (pysid/dedup.py). No torch
// headers: raw pointers and sizes only; the Python layer validates inputs (codes in range,
// movers grouped by prefix and in row order within a group) and owns every allocation.
#pragma once
#include <cstdint>

#include "status.h"

namespace pysid {

// Moves colliding rows to free last-level codes, one prefix (group) at a time, in rounds:
// round r, every still active mover of a group proposes its candidate r; a candidate code
// already held in the group is refused; a free one goes to the proposer with the lowest
// score (NaN above +inf, ties: the earlier mover in the group's order = row order); the
// winner's code becomes held; losers go on to round r + 1; after m rounds the rest stay.
//   group_ptr [G + 1] int64: the movers of group g are rows group_ptr[g] .. group_ptr[g+1]-1
//                            of cand / score / out (their order = row order)
//   cand      [M, m]  int32: each mover's candidate last-level codes, nearest first, < k_last
//   score     [M, m]  float32: their scores (lower = nearer)
//   occ_ptr   [G + 1] int64, occ [*] int32: the last-level codes already held in group g
//                            (occ[occ_ptr[g] .. occ_ptr[g+1]-1], < k_last; repeats allowed)
// Output: out [M] int32: the code a mover moved to, or -1 if it keeps its tuple.
int reassign_groups_cpu(const int64_t* group_ptr, int64_t G, const int32_t* cand, const float* score,
                        int64_t M, int64_t m, const int64_t* occ_ptr, const int32_t* occ, int64_t k_last,
                        int32_t* out);

// The movers and the occupied codes of their prefixes, from the keys sorted in (key, row) order,
// in one linear scan (called twice: with count != nullptr it only counts; then it fills).
//   sorted    [n] int64: packed ((key - kmin) << idx_bits | row), ascending   (rows == nullptr)
//             or the keys themselves in stable sorted order, with rows [n] int64 their rows
//   taken     [T] int64: sorted distinct keys held by other items (may be null when T == 0)
// A mover: a row after the first of its key, or the first when its key is taken. The prefix of a
// key is key / k_last. For each prefix with movers (a group, in ascending prefix order):
//   count [3] int64 (pass 1): G groups, M movers, O occupied codes
//   group_ptr [G + 1], mover_rows [M] (grouped, ascending rows within a
//   group), occ_ptr [G + 1], occ [O] int32 (the distinct keys' and taken keys' last codes).
int reassign_scan_cpu(const int64_t* sorted, const int64_t* rows, int64_t n, int idx_bits, int64_t kmin,
                      int64_t k_last, const int64_t* taken, int64_t T, int64_t* count, int64_t* group_ptr,
                      int64_t* mover_rows, int64_t* occ_ptr, int32_t* occ);

}  // namespace pysid
