"""Reference trie build and walk: the specification of the trie layout and the test oracle.

Pure PyTorch, nothing imported from the rest of pysid.

Trie layout (L levels, M items; depth d has n_d nodes, n_0 = 1, n_L = M; nodes are
numbered in lexicographic order of their prefixes)::

    offsets[d]      [n_d + 1]   children of node i are nodes offsets[d][i] .. offsets[d][i+1]-1 of depth d+1
    child_codes[d]  [n_{d+1}]   the code of each depth-(d+1) node, increasing within a parent
    perm            [M]         leaf r is input row perm[r] (lexicographic order of the tuples)

The reference returns int64 arrays; ``pysid.Trie`` stores the same values in narrower
dtypes (offsets int32, codes int16/int32) and the leaves' item ids instead of perm.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["DuplicateCodesError", "build_trie_ref", "walk_trie_ref"]


class DuplicateCodesError(ValueError):
    """Two items share a code tuple. ``rows``: the two input rows (first pair found);
    ``items``: their item ids where the caller knows them (else the rows)."""

    def __init__(self, row_a: int, row_b: int, message: Optional[str] = None,
                 items: Optional[tuple[int, int]] = None):
        self.rows = (int(row_a), int(row_b))
        self.items = self.rows if items is None else (int(items[0]), int(items[1]))
        super().__init__(message or f"duplicate code tuples: rows {self.rows[0]} and {self.rows[1]}")


def build_trie_ref(codes: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Per-level CSR of M unique code tuples ``codes`` [M, L] (int64).

    Returns (offsets, child_codes, perm), all int64 (see the module docstring).
    Raises :class:`DuplicateCodesError` (a ValueError) naming the first two equal rows.
    """
    codes = codes.long()
    M, L = codes.shape
    perm = torch.arange(M, device=codes.device)
    for d in reversed(range(L)):  # lexicographic order by stable sorts, last key first
        perm = perm[torch.sort(codes[perm, d], stable=True).indices]
    s = codes[perm]
    new = torch.ones(M, L, dtype=torch.bool, device=codes.device)  # row r opens a node at depth d+1
    if M > 1:
        new[1:] = (s[1:] != s[:-1]).long().cummax(dim=1).values.bool()
        dup = (~new[1:, -1]).nonzero()
        if dup.numel():
            r = int(dup[0]) + 1
            raise DuplicateCodesError(int(perm[r - 1]), int(perm[r]))
    node = new.long().cumsum(0) - 1  # node id at depth d+1 of row r
    offsets, child_codes = [], []
    for d in range(L):
        child_codes.append(s[new[:, d], d])
        n_d = 1 if d == 0 else int(node[-1, d - 1]) + 1 if M else 0
        parent = torch.zeros(int(new[:, d].sum()), dtype=torch.long, device=codes.device)
        if d > 0:
            parent = node[new[:, d], d - 1]
        counts = torch.bincount(parent, minlength=n_d)[:n_d] if parent.numel() else torch.zeros(n_d, dtype=torch.long, device=codes.device)
        offsets.append(torch.cat([counts.new_zeros(1), counts.cumsum(0)]))
    return offsets, child_codes, perm


def walk_trie_ref(offsets: Sequence[Tensor], child_codes: Sequence[Tensor], prefixes: Tensor) -> Tensor:
    """Node id at depth t of each prefix ``prefixes`` [N, t], or -1 if it is not in the trie."""
    N, t = prefixes.shape
    node = torch.zeros(N, dtype=torch.long, device=prefixes.device)
    for d in range(t):
        off, cc = offsets[d].long(), child_codes[d].long()
        V = int(cc.max()) + 1 if cc.numel() else 1
        parent = torch.repeat_interleave(torch.arange(len(off) - 1, device=off.device), off.diff())
        key = parent * V + cc  # globally sorted: parents in order, codes increasing within one
        c = prefixes[:, d].long()
        q = node.clamp_min(0) * V + c.clamp(0, V - 1)
        pos = torch.searchsorted(key, q).clamp(max=max(len(key) - 1, 0))
        ok = (node >= 0) & (c >= 0) & (c < V) & (len(key) > 0)
        ok &= key[pos] == q if len(key) else ok
        node = torch.where(ok, pos, -1)
    return node
