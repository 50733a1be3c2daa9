"""``pysid.Trie``: a compact prefix index of the catalogue's Semantic IDs.

Layout (per-level CSR; L levels, M items, depth d has n_d nodes, n_0 = 1, n_L = M)::

    offsets[d]  [n_d + 1]  int32   children of node i are nodes offsets[d][i] .. offsets[d][i+1]-1 of depth d+1
    codes[d]    [n_{d+1}]  int16 (int32 if a level has more than 32768 codes): each child's code,
                                   increasing within a parent
    item_ids    [M]        int32 (int64 if an id needs it): the item of each leaf

Nodes are numbered in lexicographic order of their prefixes (the layout is specified by
the reference build, :mod:`pysid.reference.trie`). ``Trie.nbytes`` is the measured size:
for 3 x 256 codes plus a small disambiguation level it is 12.2 bytes per item at 1M items,
15.1 at 100k and 17.0 at 20k (sparser catalogues share fewer prefixes; bench_beam_search
and ``pysid demo`` print it).

The build and the walk run the C++ kernels on CPU tensors and the reference on other
devices (both registered in ``pysid.ops.registry``; ``pysid.backends()`` lists them).
Duplicate tuples raise :class:`DuplicateCodesError` from either build.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from . import _native, _status
from .ops.registry import Inputs, register, select
from .reference.trie import DuplicateCodesError, build_trie_ref, walk_trie_ref

__all__ = ["DuplicateCodesError", "Trie"]

_FORMAT = "pysid.Trie"
_VERSION = 1
_I32 = 2**31 - 1


# --------------------------------------------------------------------------- build / walk

_DUPLICATE = _status.DUPLICATE_CODES  # status of the C++ trie sort: two equal tuples


def _code_bytes(t: Tensor) -> int:
    return 2 if t.dtype == torch.int16 else 4


@register("trie_build", "reference", devices=None, dtypes=None)
def _build_reference(codes: Tensor, vocab_sizes: Sequence[int], code_dtype: torch.dtype):
    off, cc, perm = build_trie_ref(codes)
    return [o.to(torch.int32) for o in off], [c.to(code_dtype) for c in cc], perm


@register("trie_build", "cpu", devices=("cpu",), dtypes=None)
def _build_cpu(codes: Tensor, vocab_sizes: Sequence[int], code_dtype: torch.dtype):
    M, L = codes.shape
    C = _native.cpu()
    vocab = torch.tensor(list(vocab_sizes), dtype=torch.int64)
    perm = torch.empty(M, dtype=torch.int64)
    lcp = torch.empty(M, dtype=torch.int8)
    status, a, b = C.trie_sort(codes.data_ptr(), M, L, vocab.data_ptr(), perm.data_ptr(), lcp.data_ptr())
    if status == _DUPLICATE:
        raise DuplicateCodesError(a, b)
    counts = torch.bincount(lcp.long(), minlength=L)[:L].cumsum(0)  # n_{d+1} = #{lcp <= d}
    n = [1] + [int(c) for c in counts]
    offsets = [torch.empty(n[d] + 1, dtype=torch.int32) for d in range(L)]
    child = [torch.empty(n[d + 1], dtype=code_dtype) for d in range(L)]
    C.trie_fill(codes.data_ptr(), M, L, perm.data_ptr(), lcp.data_ptr(), [o.data_ptr() for o in offsets],
                [c.data_ptr() for c in child], _code_bytes(child[0]) if L else 4)
    return offsets, child, perm


def trie_build(codes: Tensor, vocab_sizes: Sequence[int], code_dtype: torch.dtype) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Build the per-level CSR of validated, contiguous int64 ``codes`` [M, L].

    Returns (offsets: L int32 tensors, child_codes: L tensors of ``code_dtype``, perm [M] int64).
    Raises :class:`DuplicateCodesError` naming the first two colliding rows on duplicates.
    """
    return select("trie_build", Inputs(codes.device)).fn(codes, vocab_sizes, code_dtype)


@register("trie_walk", "reference", devices=None, dtypes=None)
def _walk_reference(offsets: Sequence[Tensor], child_codes: Sequence[Tensor], prefixes: Tensor) -> Tensor:
    return walk_trie_ref(offsets, child_codes, prefixes)


@register("trie_walk", "cpu", devices=("cpu",), dtypes=None)
def _walk_cpu(offsets: Sequence[Tensor], child_codes: Sequence[Tensor], prefixes: Tensor) -> Tensor:
    N, t = prefixes.shape
    prefixes = prefixes.contiguous()
    out = torch.empty(N, dtype=torch.int64)
    _native.cpu().trie_walk(prefixes.data_ptr(), N, t, max(t, 1), [o.data_ptr() for o in offsets],
                            [c.data_ptr() for c in child_codes], _code_bytes(child_codes[0]), out.data_ptr())
    return out


def trie_walk(offsets: Sequence[Tensor], child_codes: Sequence[Tensor], prefixes: Tensor) -> Tensor:
    """Node id at depth t of each validated prefix ``prefixes`` [N, t] (int64), -1 if absent."""
    return select("trie_walk", Inputs(prefixes.device)).fn(offsets, child_codes, prefixes)



def _as_int_tensor(x, name: str, dims: int) -> Tensor:
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x) if not isinstance(x, np.ndarray) else x)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{name} must be a rectangular {dims}-d integer array (ragged lists are not allowed): {e}") from None
        if t.dtype == torch.float64 and t.numel() == 0:
            t = t.long()
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
    if t.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(t.shape)}")
    return t


class Trie:
    """Compact trie of M unique code tuples (one per item), for constrained decoding.

    Args:
        codes:       [M, L] integer tensor / array: the Semantic ID of each item (unique rows).
        item_ids:    optional [M] non-negative unique integer ids (default: row index).
        device:      where the trie lives (default: codes' device, CPU for arrays).
        vocab_sizes: optional codes per level (default: max code + 1 of each level);
                     every code must be in [0, vocab_sizes[l]).

    Raises ValueError on duplicate tuples (naming both items), negative or out-of-range
    codes, ragged input, bad item ids; TypeError on non-integer input.
    """

    offsets: list[Tensor]
    codes: list[Tensor]
    item_ids: Tensor
    vocab_sizes: tuple[int, ...]

    def __init__(
        self,
        codes,
        *,
        item_ids=None,
        device: Union[str, torch.device, None] = None,
        vocab_sizes: Optional[Sequence[int]] = None,
    ) -> None:
        codes = _as_int_tensor(codes, "codes", 2)
        device = torch.device(device) if device is not None else codes.device
        M, L = codes.shape
        if L < 1:
            raise ValueError("codes must have at least one level (L >= 1)")
        if L > 127:
            raise ValueError(f"at most 127 levels are supported, got {L}")
        if M > _I32 - 1:
            raise ValueError(f"at most {_I32 - 1} items are supported, got {M}")
        codes = codes.to(device=device, dtype=torch.int64).contiguous()
        if M and int(codes.min()) < 0:
            r, c = (codes < 0).nonzero()[0].tolist()
            raise ValueError(f"codes must be >= 0: item {r} has code {int(codes[r, c])} at level {c}")
        maxc = codes.amax(0).tolist() if M else [0] * L
        if vocab_sizes is None:
            vocab = [int(m) + 1 for m in maxc]
        else:
            vocab = [int(v) for v in vocab_sizes]
            if len(vocab) != L:
                raise ValueError(f"vocab_sizes has {len(vocab)} entries for {L} levels")
            for d, (v, m) in enumerate(zip(vocab, maxc)):
                if v < 1:
                    raise ValueError(f"vocab_sizes[{d}] must be >= 1, got {v}")
                if M and m >= v:
                    r = int((codes[:, d] >= v).nonzero()[0])
                    raise ValueError(f"code out of range: item {r} has code {int(codes[r, d])} at level {d} (vocab_sizes[{d}] = {v})")
        if max(vocab) > _I32:
            raise ValueError(f"codes must be < 2**31, got a level with {max(vocab)} codes")
        code_dtype = torch.int16 if max(vocab) <= 32768 else torch.int32

        if item_ids is None:
            ids = None
        else:
            ids = _as_int_tensor(item_ids, "item_ids", 1).to(device=device, dtype=torch.int64)
            if ids.shape[0] != M:
                raise ValueError(f"item_ids has {ids.shape[0]} entries for {M} code tuples")
            if M and int(ids.min()) < 0:
                raise ValueError("item_ids must be >= 0 (-1 means 'no item')")
            if M > 1:
                s = torch.sort(ids).values
                d = (s[1:] == s[:-1]).nonzero()
                if d.numel():
                    raise ValueError(f"item_ids must be unique: {int(s[int(d[0])])} appears more than once")

        try:
            offsets, child, perm = trie_build(codes, vocab, code_dtype)
        except DuplicateCodesError as e:
            a, b = e.rows
            ia, ib = (a, b) if ids is None else (int(ids[a]), int(ids[b]))
            tup = tuple(codes[a].tolist())
            raise DuplicateCodesError(
                a, b, f"duplicate Semantic IDs: items {ia} and {ib} (rows {a} and {b}) share the code tuple {tup}; "
                "add a disambiguation level", items=(ia, ib)) from None
        leaf_ids = perm if ids is None else ids[perm]
        id_dtype = torch.int32 if (M == 0 or int(leaf_ids.max()) <= _I32) else torch.int64
        self._set(offsets, child, leaf_ids.to(id_dtype), vocab)

    # ------------------------------------------------------------------ construction helpers

    def _set(self, offsets: list[Tensor], codes: list[Tensor], item_ids: Tensor, vocab: Sequence[int]) -> None:
        self.offsets = list(offsets)
        self.codes = list(codes)
        self.item_ids = item_ids
        self.vocab_sizes = tuple(int(v) for v in vocab)
        self._inverse: Optional[tuple[Tensor, Tensor]] = None
        # widest node of each depth: fixed shapes for children() and the reference step
        self.max_children = tuple(int(o.diff().max()) if o.numel() > 1 else 0 for o in self.offsets)

    @classmethod
    def _from_arrays(cls, offsets, codes, item_ids, vocab) -> "Trie":
        t = cls.__new__(cls)
        t._set(offsets, codes, item_ids, vocab)
        return t

    # ------------------------------------------------------------------ properties

    @property
    def num_levels(self) -> int:
        return len(self.offsets)

    @property
    def num_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def num_nodes(self) -> tuple[int, ...]:
        """Nodes at each depth 0..L (n_0 = 1, n_L = num_items)."""
        return tuple(int(o.shape[0]) - 1 for o in self.offsets) + (self.num_items,)

    @property
    def device(self) -> torch.device:
        return self.item_ids.device

    @property
    def nbytes(self) -> int:
        """Bytes held by the index (offsets, child codes, leaf item ids)."""
        ts = self.offsets + self.codes + [self.item_ids]
        return int(sum(t.numel() * t.element_size() for t in ts))

    def __len__(self) -> int:
        return self.num_items

    def __repr__(self) -> str:
        return (
            f"Trie(num_items={self.num_items}, levels={self.num_levels}, vocab_sizes={self.vocab_sizes}, "
            f"nodes={self.num_nodes}, nbytes={self.nbytes}, device={self.device})"
        )

    def to(self, device: Union[str, torch.device]) -> "Trie":
        device = torch.device(device)
        return Trie._from_arrays([o.to(device) for o in self.offsets], [c.to(device) for c in self.codes],
                                 self.item_ids.to(device), self.vocab_sizes)

    # ------------------------------------------------------------------ queries

    def _prefixes(self, prefixes, what: str, exact_len: Optional[int] = None) -> Tensor:
        p = _as_int_tensor(prefixes, what, 2)
        if exact_len is not None and p.shape[1] != exact_len:
            raise ValueError(f"{what} must be [N, {exact_len}], got shape {tuple(p.shape)}")
        if p.shape[1] > self.num_levels:
            raise ValueError(f"{what} has {p.shape[1]} codes but the trie has {self.num_levels} levels")
        if isinstance(prefixes, Tensor) and p.device != self.device:
            raise ValueError(f"{what} is on {p.device} but the trie is on {self.device}")
        return p.to(device=self.device, dtype=torch.int64)

    def nodes(self, prefixes) -> Tensor:
        """Node id at depth t of each prefix [N, t] (int64 [N], -1 where the prefix is not in the trie)."""
        p = self._prefixes(prefixes, "prefixes")
        return trie_walk(self.offsets, self.codes, p)

    def lookup(self, codes) -> Tensor:
        """Item id of each code tuple [N, L] (int64 [N], -1 where the tuple is not an item)."""
        p = self._prefixes(codes, "codes", exact_len=self.num_levels)
        leaf = trie_walk(self.offsets, self.codes, p)
        return torch.where(leaf >= 0, self.item_ids[leaf.clamp_min(0)].long() if self.num_items else leaf, -1)

    def children(self, prefixes) -> tuple[Tensor, Tensor]:
        """Valid next codes of each prefix [N, t] (t < L).

        Returns (codes [N, W] int64, counts [N] int64): row i holds the counts[i] child codes
        of prefix i in increasing order, padded with -1; W = ``max_children[t]`` (fixed for
        the level). An unknown prefix has no children.
        """
        p = self._prefixes(prefixes, "prefixes")
        t = p.shape[1]
        if t >= self.num_levels:
            raise ValueError(f"prefixes of length {t} are complete items: no children (L = {self.num_levels})")
        node = trie_walk(self.offsets, self.codes, p)
        off = self.offsets[t]  # index first, widen after: never copy a whole level
        n = node.clamp(0, off.numel() - 1)  # clamped so that a level with no nodes still indexes
        lo = off[n].long()
        cnt = torch.where(node >= 0, off[(n + 1).clamp(max=off.numel() - 1)].long() - lo, 0)
        W = self.max_children[t]
        ar = torch.arange(W, device=self.device)
        valid = ar < cnt[:, None]
        cc = self.codes[t]
        j = torch.where(valid, lo[:, None] + ar, 0)
        out = torch.where(valid, cc[j].long() if cc.numel() else j, -1)
        return out, cnt

    def leaves_of_items(self, item_ids: Tensor) -> Tensor:
        """Leaf index (depth-L node) of each item id (same shape, int64; -1 for unknown ids)."""
        if self._inverse is None:
            s = torch.sort(self.item_ids.long())
            self._inverse = (s.values, s.indices)
        sv, si = self._inverse
        ids = item_ids.to(self.device).long()
        if sv.numel() == 0:
            return torch.full_like(ids, -1)
        pos = torch.searchsorted(sv, ids.contiguous()).clamp(max=sv.numel() - 1)
        return torch.where(sv[pos] == ids, si[pos], -1)

    def subtree_leaves(self, depth: int, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """Leaf range [first, end) under each node id of ``depth`` (int64 tensors)."""
        lo, hi = nodes.long(), nodes.long() + 1
        for d in range(depth, self.num_levels):
            off = self.offsets[d]
            last = off.numel() - 1  # ids past the level's end (e.g. an empty trie) get empty ranges
            lo, hi = off[lo.clamp(0, last)].long(), off[hi.clamp(0, last)].long()
        return lo, hi

    def parents(self, depth: int, nodes: Tensor) -> Tensor:
        """Parent (depth-1) of each node id of ``depth`` >= 1."""
        off = self.offsets[depth - 1].long()
        return torch.searchsorted(off, nodes.long().contiguous(), right=True) - 1

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "vocab_sizes": list(self.vocab_sizes),
            "offsets": [o.cpu() for o in self.offsets],
            "codes": [c.cpu() for c in self.codes],
            "item_ids": self.item_ids.cpu(),
        }

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the trie to ``path`` (a torch.save file of plain tensors)."""
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, device: Union[str, torch.device, None] = None) -> "Trie":
        """Read a trie written by :meth:`save` (``weights_only`` loading: no code runs)."""
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict) or sd.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a saved pysid.Trie")
        if sd.get("version") != _VERSION:
            raise ValueError(f"{path}: unsupported pysid.Trie format version {sd.get('version')}")
        _check_arrays(path, sd)
        t = cls._from_arrays(sd["offsets"], sd["codes"], sd["item_ids"], sd["vocab_sizes"])
        return t.to(device) if device is not None else t


def _check_arrays(path, sd: dict) -> None:
    """Structure of a loaded trie (the native walk trusts it): dtypes, CSR sizes, monotone
    offsets, codes within the vocabulary. A corrupt file is an error, never a crash."""

    def bad(why: str) -> ValueError:
        return ValueError(f"{path} is not a valid pysid.Trie: {why}")

    offsets, codes, ids, vocab = sd.get("offsets"), sd.get("codes"), sd.get("item_ids"), sd.get("vocab_sizes")
    if not (isinstance(offsets, list) and isinstance(codes, list) and isinstance(ids, Tensor)):
        raise bad("missing arrays")
    if not (len(offsets) == len(codes) == len(vocab) >= 1):
        raise bad("levels disagree")
    if ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64):
        raise bad("item_ids must be a 1-D int32/int64 tensor")
    code_dtype = codes[0].dtype if isinstance(codes[0], Tensor) else None
    nodes = 1  # nodes at the current depth
    for d, (off, cc) in enumerate(zip(offsets, codes)):
        if not isinstance(off, Tensor) or off.dtype != torch.int32 or off.dim() != 1 or off.numel() != nodes + 1:
            raise bad(f"offsets[{d}] must be int32 of length {nodes + 1}")
        if not isinstance(cc, Tensor) or cc.dtype not in (torch.int16, torch.int32) or cc.dtype != code_dtype:
            raise bad(f"codes[{d}] must be int16 or int32 like codes[0]")
        if int(off[0]) != 0 or bool((off.diff() < 0).any()) or int(off[-1]) != cc.numel():
            raise bad(f"offsets[{d}] must rise from 0 to len(codes[{d}])")
        if cc.numel() and (int(cc.min()) < 0 or int(cc.max()) >= int(vocab[d])):
            raise bad(f"codes[{d}] out of the vocabulary")
        nodes = cc.numel()
    if ids.numel() != nodes:
        raise bad(f"{ids.numel()} item ids for {nodes} leaves")
