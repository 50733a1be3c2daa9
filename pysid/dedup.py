"""The suffix dedup at catalogue scale: memory-lean in one process, and sharded over ranks.

    keys = pysid.dedup.tuple_keys(codes, sizes)   # codes [N, L] any integer dtype -> [N] int64
    suffix = pysid.dedup.suffix_of_keys(keys)     # [N] int32: how many earlier rows share the key
    suffix = pysid.dedup.suffix(codes, sizes)     # the two together (the table's "suffix" rule)
    # under torch.distributed, each rank with its own rows (global row order = rank order):
    suffix = pysid.dedup.sharded_suffix(local_keys)   # == suffix_of_keys(all keys)[this rank's rows]

The suffix of a row is its rank among the rows with the same semantic tuple, in row order (0
for the first): the rule of ``SemanticIds`` (``dedup="suffix"``), the same numbers as
``pysid.sid._suffix``.

Memory: ``suffix_of_keys`` packs each key with its row number into one int64 (when the key's
bits plus the row number's bits fit in 63; 3 levels x 256 codes take 24 bits, leaving room
for 2**39 rows), sorts that array in place (numpy's sort, no index array) and scans it in
chunks: 12 bytes per row (the packed array and the int32 result) besides the caller's keys.
Otherwise it falls back to a stable argsort of the keys (24 bytes per row). ``tuple_keys``
builds the keys chunk by chunk from codes of any integer dtype (uint8 codes for 256-code
levels: 3 bytes per row), without [N, L] int64 temporaries.

The "reassign" rule needs every row's residual and candidate codes, so it is not offered at
this scale: ``SemanticIds`` applies it in memory.

Sharded (``sharded_suffix``): each rank sorts its own keys, groups them (key, count), and sends
each group to the rank that owns the key (a hash of the key; ``all_to_all_single``). The owner
orders the counts of a key by source rank and returns to each source the number of rows of that
key on the ranks before it; each rank adds that offset to its local suffix. Exactly the
single-process suffixes over the concatenation of the ranks' rows in rank order. Works with
any backend that has ``all_to_all_single`` on CPU tensors (gloo, mpi) or, with
``device="cuda"``, NCCL.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["tuple_keys", "suffix_of_keys", "suffix", "sharded_suffix", "key_counts"]

_CHUNK = 1 << 20


def _np(a) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def tuple_keys(codes, sizes: Sequence[int]) -> np.ndarray:
    """[N] int64 mixed-radix keys of code tuples ``codes`` [N, L] (any integer dtype, numpy or
    torch; ``0 <= codes[:, l] < sizes[l]``): equal keys <=> equal tuples, keys ordered as the
    tuples (lexicographic). ValueError if the product of the sizes exceeds 2**63 (then
    ``pysid.sid._tuple_keys`` ranks the tuples instead) or a code is out of range."""
    c = _np(codes)
    if c.ndim != 2 or c.dtype.kind not in "iu":
        raise ValueError(f"codes must be an [N, L] integer array, got shape {c.shape} ({c.dtype})")
    sizes = [int(s) for s in sizes]
    if len(sizes) != c.shape[1] or min(sizes, default=1) < 1:
        raise ValueError(f"sizes must give {c.shape[1]} codebook sizes >= 1, got {sizes}")
    if math.prod(sizes) > 2**63:
        raise ValueError(f"the product of the codebook sizes {sizes} exceeds 2**63: no packed int64 keys")
    n = c.shape[0]
    out = np.zeros(n, np.int64)
    for a in range(0, n, _CHUNK):
        blk = c[a : a + _CHUNK]
        k = out[a : a + _CHUNK]
        for lvl, s in enumerate(sizes):
            col = blk[:, lvl]
            if col.size and (int(col.min()) < 0 or int(col.max()) >= s):
                raise ValueError(f"codes of level {lvl} are outside [0, {s})")
            k *= s
            k += col
    return out


def _check_keys(keys) -> np.ndarray:
    k = _np(keys)
    if k.ndim != 1 or k.dtype.kind not in "iu":
        raise ValueError(f"keys must be a 1-d integer array, got shape {k.shape} ({k.dtype})")
    if k.dtype == np.uint64 and k.size and int(k.max()) >= 2**63:
        raise ValueError("keys must fit in int64")
    return k.astype(np.int64, copy=False)


def suffix_of_keys(keys, *, return_groups: bool = False, return_inverse: bool = False):
    """[N] int32: for each row, how many earlier rows have its key (0 for the first).

    keys: [N] integer keys (numpy or torch). With ``return_groups``, also the distinct keys
    (sorted, int64) and their counts (int64): ``(suffix, unique_keys, counts)``; with
    ``return_inverse`` as well, each row's index in ``unique_keys`` ([N] int64, appended)."""
    return_groups = return_groups or return_inverse
    k = _check_keys(keys)
    n = k.size
    out = np.empty(n, np.int32)
    if n == 0:
        e = np.empty(0, np.int64)
        if return_inverse:
            return out, e, e.copy(), e.copy()
        return (out, e, e.copy()) if return_groups else out
    if n - 1 > np.iinfo(np.int32).max:
        raise ValueError(f"{n} rows: suffixes would not fit in int32")
    kmin, kmax = int(k.min()), int(k.max())
    span = kmax - kmin  # keys shifted to start at 0
    idx_bits = max(1, (n - 1).bit_length())
    packed = span.bit_length() + idx_bits <= 63
    if packed:
        comp = np.empty(n, np.int64)
        for a in range(0, n, _CHUNK):
            b = min(n, a + _CHUNK)
            blk = comp[a:b]
            np.subtract(k[a:b], kmin, out=blk)
            blk <<= idx_bits
            blk |= np.arange(a, b, dtype=np.int64)
        comp.sort()  # unique values: the order is the stable order of the keys
        mask = np.int64((1 << idx_bits) - 1)
    else:
        order = np.argsort(k, kind="stable")
    uniq, counts = [], []
    inverse = np.empty(n, np.int64) if return_inverse else None
    n_groups = 0
    prev_key, run_start = None, 0
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        if packed:
            blk = comp[a:b]
            sk = blk >> idx_bits
            rows = blk & mask
        else:
            rows = order[a:b]
            sk = k[rows]
        first = np.empty(b - a, bool)
        first[0] = prev_key is None or sk[0] != prev_key
        np.not_equal(sk[1:], sk[:-1], out=first[1:])
        pos = np.arange(a, b, dtype=np.int64)
        start = np.where(first, pos, run_start)
        np.maximum.accumulate(start, out=start)
        out[rows] = pos - start
        if return_groups:
            starts = np.flatnonzero(first) + a
            uniq.append(sk[first])
            counts.append(starts)
            if return_inverse:
                inverse[rows] = np.cumsum(first) - 1 + n_groups
            n_groups += starts.size
        prev_key, run_start = sk[-1], int(start[-1])
    if not return_groups:
        return out
    ukeys = np.concatenate(uniq)
    if packed:
        ukeys = ukeys + kmin
    st = np.concatenate(counts)
    cnt = np.diff(np.append(st, n))
    if return_inverse:
        return out, ukeys.astype(np.int64, copy=False), cnt.astype(np.int64), inverse
    return out, ukeys.astype(np.int64, copy=False), cnt.astype(np.int64)


def key_counts(keys) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, their counts), int64."""
    _, u, c = suffix_of_keys(keys, return_groups=True)
    return u, c


def suffix(codes, sizes: Sequence[int]) -> np.ndarray:
    """[N] int32 suffix level of code tuples [N, L] (``tuple_keys`` then ``suffix_of_keys``)."""
    return suffix_of_keys(tuple_keys(codes, sizes))


def _owner(keys: np.ndarray, world: int) -> np.ndarray:
    """The rank that owns each key: a multiplicative hash, so that consecutive keys spread."""
    h = (keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    return (h % np.uint64(world)).astype(np.int64)


def sharded_suffix(local_keys, group=None, device: Union[str, torch.device] = "cpu") -> np.ndarray:
    """The suffixes of this rank's rows [n_r] int32 (``torch.distributed`` initialised; every rank
    of ``group`` calls it with its own keys, possibly none): exactly ``suffix_of_keys`` of the
    concatenation of all ranks' keys in rank order, at this rank's rows. Collective traffic:
    two int64 words per distinct key of each rank, twice. ``device``: where the exchanged
    tensors live (``"cuda"`` for NCCL)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("sharded_suffix needs torch.distributed initialised (init_process_group)")
    world = dist.get_world_size(group)
    local, ukeys, counts, inv = suffix_of_keys(local_keys, return_inverse=True)
    if world == 1:
        return local
    dev = torch.device(device)
    owner = _owner(ukeys, world)
    small = owner.astype(np.int16 if world < 2**15 else np.int64)  # 16-bit: numpy's radix sort
    order = np.argsort(small, kind="stable")  # by owner, keys sorted within each owner
    send_keys, send_counts = ukeys[order], counts[order]
    send_split = np.bincount(owner, minlength=world).astype(np.int64)

    def exchange(values: np.ndarray, send: np.ndarray, recv: np.ndarray) -> np.ndarray:
        out = torch.empty(int(recv.sum()), dtype=torch.int64, device=dev)
        dist.all_to_all_single(out, torch.from_numpy(np.ascontiguousarray(values)).to(dev),
                               output_split_sizes=recv.tolist(), input_split_sizes=send.tolist(), group=group)
        return out.cpu().numpy()

    split_t = torch.from_numpy(send_split).to(dev)
    recv_t = torch.empty_like(split_t)
    dist.all_to_all_single(recv_t, split_t, group=group)
    recv_split = recv_t.cpu().numpy()
    rkeys = exchange(send_keys, send_split, recv_split)
    rcounts = exchange(send_counts, send_split, recv_split)
    # the received groups come in source-rank order: a stable sort by key keeps it within a key
    o = np.argsort(rkeys, kind="stable")
    sk, sc = rkeys[o], rcounts[o]
    csum = np.cumsum(sc) - sc  # rows before this (key, source) in key-then-rank order
    first = np.ones(sk.size, bool)
    first[1:] = sk[1:] != sk[:-1]
    base = np.maximum.accumulate(np.where(first, csum, 0)) if sk.size else csum
    offs = np.empty_like(sc)
    offs[o] = csum - base  # rows of this key on the ranks before the source
    back = exchange(offs, recv_split, send_split)  # in send order
    offset = np.empty_like(back)
    offset[order] = back
    res = local.astype(np.int64) + offset[inv]
    if res.size and int(res.max()) > np.iinfo(np.int32).max:
        raise ValueError("suffixes would not fit in int32")
    return res.astype(np.int32)
