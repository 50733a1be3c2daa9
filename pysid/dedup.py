"""Dedup at catalogue scale (the "suffix" and "reassign" rules): memory-lean in one process, and
sharded over ranks.

    keys = pysid.dedup.tuple_keys(codes, sizes)   # codes [N, L] any integer dtype -> [N] int64
    suffix = pysid.dedup.suffix_of_keys(keys)     # [N] int32: how many earlier rows share the key
    suffix = pysid.dedup.suffix(codes, sizes)     # the two together (the table's "suffix" rule)
    rows, new = pysid.dedup.reassign_moves(keys, sizes[-1], candidates)   # the "reassign" rule
    codes2 = pysid.dedup.reassign(codes, sizes, candidates)             # ... applied to the codes
    # under torch.distributed, each rank with its own rows (global row order = rank order):
    suffix = pysid.dedup.sharded_suffix(local_keys)   # == suffix_of_keys(all keys)[this rank's rows]
    rows, new = pysid.dedup.sharded_reassign(local_keys, sizes[-1], candidates)

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

The "reassign" rule (``dedup="reassign"``; specification: ``pysid.sid._reassign_ref``): the first
holder of a tuple in row order keeps it (unless ``taken``, tuples of other items, has it); every
other row - a mover - proposes its m nearest last-level codes in rounds, a free tuple goes to
the nearest proposer (ties: the earlier row), rows out of candidates keep their tuple (the table
then adds a suffix level). A mover only ever changes its last code, so the rule splits into
independent problems, one per prefix (the first L-1 codes, ``key // sizes[-1]``), and only the
movers (~10-20 % of the rows of a fitted table) and the held tuples of their prefixes matter.
``reassign_moves`` sorts the packed keys as ``suffix_of_keys`` does, one C++ scan of the sorted
array lists the movers by prefix and the held last codes of those prefixes, then a C++ kernel
solves the prefixes (in parallel), a batch of whole prefixes at a time: the candidates are asked
for the movers only (``candidates(rows)``), so that the caller computes the m nearest codewords of
~12 % of the rows. Bit for bit ``sid._reassign_ref`` (tested on random inputs with ties);
``SemanticIds`` uses it (1M rows: 0.41 s against 14.6 s for the vectorised rounds). Memory: the
sorted packed keys (8 bytes per row), then about 40 bytes per mover plus one batch of candidates.

Measured (bench/bench_scale.py, 2-core AMD EPYC VM, 2026-12-05): 100M rows of 4 x 256 uint8 codes
with 13.7 % movers, m = 32: 10.3 s (1.9 s of it the synthetic candidates' callback), peak RSS
2.8 GB, codes included; the suffix rule on 100M rows: 6.4 s, 2.46 GB.

The functions here switch numpy's huge-page advice off while they run (``_small_pages``): on a
kernel with transparent huge pages "madvise" and defrag "madvise", first writes to fresh
huge pages stalled in compaction (800 MB: 10.8 s with the advice, 0.49 s without).

Sharded (``sharded_suffix``): each rank sorts its own keys, groups them (key, count), and sends
each group to the rank that owns the key (a hash of the key; ``all_to_all_single``). The owner
orders the counts of a key by source rank and returns to each source the number of rows of that
key on the ranks before it; each rank adds that offset to its local suffix. Exactly the
single-process suffixes over the concatenation of the ranks' rows in rank order. Works with
any backend that has ``all_to_all_single`` on CPU tensors (gloo, mpi) or, with
``device="cuda"``, NCCL.

Sharded reassign (``sharded_reassign``): the owner of a prefix (a hash of it) gets every rank's
distinct keys and taken keys of the prefix, tells each rank whether the first of its rows of a
key is a mover (an earlier rank has it, or it is taken), then gets the movers (global row, key,
m candidates and scores), solves the prefix with the same kernel and returns the new codes:
exactly ``reassign_moves`` over the concatenation in rank order (gloo tests, 2 and 3 ranks).
``pysid.stream.encode_shards`` uses ``reassign_moves`` in one process and ``sharded_reassign``
under torch.distributed (each rank computes its own movers' candidates; ``sid._LastCandidates``
pads every distance block to one shape, so that a row's scores do not depend on which rows
share its block: the one-process output, tested with 2 and 3 gloo ranks). An error in a rank's
candidates reaches every rank (all raise).
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["tuple_keys", "suffix_of_keys", "suffix", "sharded_suffix", "key_counts", "reassign_moves", "reassign",
           "sharded_reassign"]

_CHUNK = 1 << 20


def _set_hugepage(flag: bool):
    """numpy's madvise(MADV_HUGEPAGE) of large new arrays, set to ``flag``; returns the previous
    setting (None where this numpy has no such switch)."""
    mod = getattr(getattr(np, "_core", None), "multiarray", None) or getattr(getattr(np, "core", None), "multiarray", None)
    fn = getattr(mod, "_set_madvise_hugepage", None)
    return None if fn is None else bool(fn(bool(flag)))


def _small_pages(fn):
    """Run ``fn`` with numpy's huge-page advice off (restored after). On kernels whose
    transparent huge pages are "madvise" with defrag "madvise" (a common default), each fresh
    huge page of a numpy array can stall in direct compaction when the page cache fills memory:
    measured on the 2-core development machine, first writes to 800 MB took 10.8 s with the
    advice and 0.49 s without. The big arrays here are written once, in order: small pages cost
    nothing. (Process-wide while the call runs; ``NUMPY_MADVISE_HUGEPAGE=0`` sets it for good.)"""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _PAGES_LOCK:  # nested or concurrent calls: the first switches off, the last restores
            if _PAGES[0] == 0:
                _PAGES[1] = _set_hugepage(False)
            _PAGES[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with _PAGES_LOCK:
                _PAGES[0] -= 1
                if _PAGES[0] == 0 and _PAGES[1] is not None:
                    _set_hugepage(_PAGES[1])

    return run


_PAGES_LOCK = threading.Lock()
_PAGES: list = [0, None]  # calls running, the advice before the first


def _np(a) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


@_small_pages
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


@_small_pages
def _packed_sort(k: np.ndarray, kmin: int, idx_bits: int) -> np.ndarray:
    """[n] int64 (key - kmin) << idx_bits | row, sorted (built in chunks, sorted in place): the
    values are unique, so their order is the stable order of the keys; the caller checked that
    the bits fit in 63."""
    n = k.size
    out = np.empty(n, np.int64)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        blk = out[a:b]
        np.subtract(k[a:b], kmin, out=blk)
        blk <<= idx_bits
        blk |= np.arange(a, b, dtype=np.int64)
    out.sort()
    return out


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
        comp = _packed_sort(k, kmin, idx_bits)
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


@_small_pages
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


# --------------------------------------------------------------------------- reassign
def _candidate_arrays(got, n: int, k_last: int, m: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked (codes [n, m] int32, scores [n, m] float32) from a (codes, scores) pair."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise TypeError(f"{what} must be a pair (candidate codes [n, m], scores [n, m])")
    c, s = _np(got[0]), _np(got[1])
    if c.ndim != 2 or c.dtype.kind not in "iu":
        raise ValueError(f"{what}: candidate codes must be an [n, m] integer array, got shape {c.shape} ({c.dtype})")
    if s.shape != c.shape or s.dtype.kind != "f":
        raise ValueError(f"{what}: scores must be a float array of the codes' shape {c.shape}, got {s.shape} ({s.dtype})")
    if c.shape[0] != n or c.shape[1] < 1 or (m is not None and c.shape[1] != m):
        want = f"[{n}, {'m >= 1' if m is None else m}]"
        raise ValueError(f"{what}: candidates must have shape {want}, got {c.shape}")
    if c.size and (int(c.min()) < 0 or int(c.max()) >= k_last):
        raise ValueError(f"{what}: candidate codes must lie in [0, {k_last}) (the last level's codebook size)")
    return np.ascontiguousarray(c, dtype=np.int32), np.ascontiguousarray(s, dtype=np.float32)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique of a 1-d int64 array by one in-place-style sort (numpy 2's hash-based unique took
    9 s on 4.5M int64 keys here, the sort 0.3 s)."""
    s = np.sort(a)
    if s.size < 2:
        return s
    keep = np.empty(s.size, bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _isin_sorted_np(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    if ref.size == 0:
        return np.zeros(values.shape, bool)
    i = np.searchsorted(ref, values)
    np.minimum(i, ref.size - 1, out=i)
    return ref[i] == values


def _solve(C, group_ptr: np.ndarray, occ_ptr: np.ndarray, occ_codes: np.ndarray, mr: np.ndarray, candidates,
           cand_all, k_last: int, batch_rows: int) -> np.ndarray:
    """The new last code of each mover (-1: stays), groups solved by the C++ kernel a batch of whole
    groups at a time (the candidates of that batch only: ``candidates(rows)``, or rows of
    ``cand_all``)."""
    G, M = group_ptr.size - 1, mr.size
    new = np.full(M, -1, np.int32)
    gb = 0
    m_width = None
    while gb < G:
        ge = int(np.searchsorted(group_ptr, group_ptr[gb] + int(batch_rows), side="right")) - 1
        ge = min(G, max(ge, gb + 1))
        ra, rb = int(group_ptr[gb]), int(group_ptr[ge])
        rows = mr[ra:rb]
        if callable(candidates):
            cc, cs = _candidate_arrays(candidates(rows.copy()), rb - ra, k_last, m_width, "candidates(rows)")
        else:
            cc = np.ascontiguousarray(cand_all[0][rows])
            cs = np.ascontiguousarray(cand_all[1][rows])
        m_width = cc.shape[1]
        gp = np.ascontiguousarray(group_ptr[gb : ge + 1] - ra)
        op = np.ascontiguousarray(occ_ptr[gb : ge + 1] - occ_ptr[gb])
        oc = np.ascontiguousarray(occ_codes[occ_ptr[gb] : occ_ptr[ge]])
        out = new[ra:rb]
        C.reassign_groups(gp.ctypes.data, ge - gb, cc.ctypes.data, cs.ctypes.data, rb - ra, m_width,
                          op.ctypes.data, oc.ctypes.data if oc.size else 0, k_last, out.ctypes.data)
        gb = ge
    return new


def _reassign_args(keys, k_last, taken_keys, batch_rows) -> tuple[np.ndarray, int, np.ndarray]:
    """The checked arguments of ``reassign_moves`` / ``sharded_reassign``: (keys int64, k_last,
    the taken keys sorted and distinct)."""
    k = _check_keys(keys)
    k_last = int(k_last)
    if k_last < 1:
        raise ValueError(f"k_last must be >= 1, got {k_last}")
    if int(batch_rows) < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if k.size and int(k.min()) < 0:
        raise ValueError("keys must be >= 0")
    tk = np.empty(0, np.int64) if taken_keys is None else _sorted_unique(_check_keys(taken_keys))
    if tk.size and int(tk[0]) < 0:
        raise ValueError("taken_keys must be >= 0")
    return k, k_last, tk


@_small_pages
def reassign_moves(keys, k_last: int, candidates, *, taken_keys=None, batch_rows: int = 1 << 17
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The moves of the "reassign" rule over rows with tuple keys ``keys`` [N] (``tuple_keys``: the
    prefix - the first L-1 levels - is ``key // k_last``, the last code ``key % k_last``).

    The first holder of a tuple in row order keeps it (unless ``taken_keys`` [T], the keys of
    tuples other items hold, has it); every other row (a "mover") proposes its candidate
    last-level codes nearest first, in rounds; a tuple that is free in the mover's prefix goes to
    the proposer with the lowest score (ties: the earlier row); movers out of candidates keep
    their tuple. Exactly ``pysid.sid._reassign_ref`` (the specification of the in-memory rule of ``SemanticIds``).

    candidates: the movers' candidates, either a pair (codes [N, m], scores [N, m]) for every
    row (numpy or torch; only the movers' rows are read), or a callable ``f(rows)`` that gets
    the movers' row numbers ([b] int64, a batch of up to about ``batch_rows`` movers, whole
    prefixes) and returns (codes [b, m], scores [b, m]) for them: the caller then computes
    the m nearest last-level codewords of the movers only (10-20 % of the rows in practice).
    Codes in [0, k_last), scores float (lower = nearer, NaN last).

    Returns (rows, codes): the rows that moved (int64, ascending) and their new last-level
    codes (int32). Memory: the keys sorted with their row numbers packed in one int64 (8 bytes
    per row, as ``suffix_of_keys``), then 16 bytes per mover and 8 per occupied tuple of the
    movers' prefixes, plus one batch of candidates. Needs the compiled ``pysid._C``."""
    from . import _native

    C = _native.cpu()
    k, k_last, tk = _reassign_args(keys, k_last, taken_keys, batch_rows)
    n = k.size
    empty = (np.empty(0, np.int64), np.empty(0, np.int32))
    cand_all = None if callable(candidates) else _candidate_arrays(candidates, n, k_last, None, "candidates")
    if n == 0:
        return empty
    # 1. the keys sorted with their rows (packed in one int64 when the bits fit)
    kmin, kmax = int(k.min()), int(k.max())
    idx_bits = max(1, (n - 1).bit_length())
    packed = (kmax - kmin).bit_length() + idx_bits <= 63
    if packed:
        srt = _packed_sort(k, kmin, idx_bits)
        order = None
    else:
        order = np.argsort(k, kind="stable")
        srt = k[order]
    # 2. one linear scan (C++): the movers - every row after the first of its key, and the first
    #    when its key is taken - grouped by prefix, and the occupied codes of those prefixes
    count = np.zeros(3, np.int64)
    args = (srt.ctypes.data, 0 if order is None else order.ctypes.data, n, idx_bits, kmin, k_last,
            tk.ctypes.data if tk.size else 0, tk.size)
    C.reassign_scan(*args, count.ctypes.data, 0, 0, 0, 0)
    G, M, O = (int(v) for v in count)
    if M == 0:
        return empty
    group_ptr = np.empty(G + 1, np.int64)
    mr = np.empty(M, np.int64)
    occ_ptr = np.empty(G + 1, np.int64)
    occ_codes = np.empty(max(O, 1), np.int32)
    C.reassign_scan(*args, 0, group_ptr.ctypes.data, mr.ctypes.data, occ_ptr.ctypes.data, occ_codes.ctypes.data)
    del srt, order
    new = _solve(C, group_ptr, occ_ptr, occ_codes, mr, candidates, cand_all, k_last, batch_rows)
    moved = new >= 0
    rows, codes = mr[moved], new[moved]
    del mr, new, moved
    c_bits = max(1, (k_last - 1).bit_length())
    if idx_bits + c_bits <= 63:  # by row: one packed sort (rows are distinct)
        rows <<= c_bits
        rows |= codes
        rows.sort()
        codes = (rows & np.int64((1 << c_bits) - 1)).astype(np.int32)
        rows >>= c_bits
        return rows, codes
    o = np.argsort(rows)
    return rows[o], codes[o]


def reassign(codes, sizes: Sequence[int], candidates, *, taken=None, batch_rows: int = 1 << 17) -> np.ndarray:
    """The semantic codes [N, L] (a new numpy array, the dtype of ``codes``) of code tuples
    ``codes`` [N, L] after the "reassign" rule (``reassign_moves``; ``taken`` [T, L]: tuples
    other items hold). ``candidates``: as in ``reassign_moves`` (last-level codes). Exactly
    ``pysid.sid._reassign_ref``. The suffix level, if any row still collides, is the caller's
    (``suffix``)."""
    c = _np(codes)
    keys = tuple_keys(c, sizes)
    tk = None
    if taken is not None:
        t = _np(taken)
        if t.ndim != 2 or t.shape[1] != c.shape[1]:
            raise ValueError(f"taken must be [T, {c.shape[1]}], got shape {t.shape}")
        tk = tuple_keys(t, sizes)
    rows, new = reassign_moves(keys, int(sizes[-1]), candidates, taken_keys=tk, batch_rows=batch_rows)
    out = c.copy()
    out[rows, -1] = new
    return out


def _a2a(values: np.ndarray, send: np.ndarray, recv: np.ndarray, width: int, group, dev) -> np.ndarray:
    """all_to_all_single of ``values`` (rows grouped by destination rank, ``send`` rows to each;
    ``width`` numbers per row) -> the rows received (``recv`` from each source, in rank order)."""
    import torch.distributed as dist

    t = torch.from_numpy(np.ascontiguousarray(values).reshape(-1))
    out = torch.empty(int(recv.sum()) * width, dtype=t.dtype, device=dev)
    dist.all_to_all_single(out, t.to(dev), output_split_sizes=(recv * width).tolist(),
                           input_split_sizes=(send * width).tolist(), group=group)
    return out.cpu().numpy().reshape(-1, width) if width > 1 else out.cpu().numpy()


def _routes(dest: np.ndarray, world: int, group, dev) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(send order: a stable sort by destination, rows sent to each rank, rows received from each)."""
    import torch.distributed as dist

    order = np.argsort(dest.astype(np.int16 if world < 2**15 else np.int64), kind="stable")
    send = np.bincount(dest, minlength=world).astype(np.int64)
    st = torch.from_numpy(send).to(dev)
    rt = torch.empty_like(st)
    dist.all_to_all_single(rt, st, group=group)
    return order, send, rt.cpu().numpy()


@_small_pages
def sharded_reassign(local_keys, k_last: int, candidates, *, taken_keys=None, group=None,
                     device: Union[str, torch.device] = "cpu", batch_rows: int = 1 << 17
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``reassign_moves`` over ranks (``torch.distributed`` initialised; every rank of ``group``
    calls it with its own rows' keys, possibly none; global row order = rank order): returns this
    rank's moves (local rows ascending, int64; new last codes, int32), exactly
    ``reassign_moves`` of the concatenation of all ranks' keys at this rank's rows.

    candidates: for this rank's rows, as in ``reassign_moves`` (arrays for every local row, or a
    callable called with this rank's movers' local rows, ascending, in batches); every rank
    gives the same m. taken_keys: keys of tuples other items hold, on any rank (the union counts).

    The rule moves rows within their prefix (``key // k_last``), so a prefix is one rank's work
    (a hash of the prefix): 1. every rank sends its distinct keys and taken keys to their
    prefix's owner, which tells each rank whether the first of its rows of a key is a mover
    (an earlier rank has the key, or it is taken); 2. every rank sends its movers (global row,
    key, m candidates and scores) to the owners; 3. each owner solves its prefixes (the C++
    kernel) and returns the new codes. Traffic: 16 bytes per distinct key and rank, plus
    ~16 + 12 m bytes per mover."""
    import torch.distributed as dist

    from . import _native

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("sharded_reassign needs torch.distributed initialised (init_process_group)")
    C = _native.cpu()
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    k, k_last, tk = _reassign_args(local_keys, k_last, taken_keys, batch_rows)
    if world == 1:
        return reassign_moves(k, k_last, candidates, taken_keys=tk, batch_rows=batch_rows)
    dev = torch.device(device)
    n = k.size
    cand_all = None if callable(candidates) else _candidate_arrays(candidates, n, k_last, None, "candidates")
    sizes_t = torch.tensor([n], dtype=torch.int64, device=dev)
    all_n = [torch.empty_like(sizes_t) for _ in range(world)]
    dist.all_gather(all_n, sizes_t, group=group)
    row0 = int(sum(int(v) for v in all_n[:rank]))
    # 1. distinct keys and taken keys to the prefix owners; back: "the first row is a mover"
    suf, ukeys, _, inv = suffix_of_keys(k, return_inverse=True)
    first_row = np.empty(ukeys.size, np.int64)
    f0 = np.flatnonzero(suf == 0)
    first_row[inv[f0]] = f0
    del inv
    o_k, s_k, r_k = _routes(_owner(ukeys // k_last, world), world, group, dev)
    o_t, s_t, r_t = _routes(_owner(tk // k_last, world), world, group, dev)
    rk = _a2a(ukeys[o_k], s_k, r_k, 1, group, dev)
    rt = _sorted_unique(_a2a(tk[o_t], s_t, r_t, 1, group, dev))
    srt = np.argsort(rk, kind="stable")  # by key; within a key, by source rank
    sk = rk[srt]
    later = np.zeros(sk.size, bool)
    later[1:] = sk[1:] == sk[:-1]
    flag = np.empty(sk.size, np.int64)
    flag[srt] = later | _isin_sorted_np(sk, rt)
    occupied = np.sort(np.concatenate([sk[~later], rt]))  # this owner's prefixes' held tuples (repeats fine)
    del srt, sk, later
    back = _a2a(flag, r_k, s_k, 1, group, dev)
    first_mover = np.empty(ukeys.size, bool)
    first_mover[o_k] = back.astype(bool)
    mv = suf > 0
    mv[first_row[first_mover]] = True
    movers = np.flatnonzero(mv).astype(np.int64)
    del mv, suf, first_row, first_mover, back
    # 2. the movers' candidates, then the movers to the owners of their prefixes
    parts_c, parts_s = [], []
    m_here, failed = 0, None
    try:  # an error here (the caller's candidates) must reach every rank, not leave them waiting
        for a in range(0, movers.size, int(batch_rows)):
            rows = movers[a : a + int(batch_rows)]
            if cand_all is None:
                cc, cs = _candidate_arrays(candidates(rows.copy()), rows.size, k_last, m_here or None,
                                           "candidates(rows)")
            else:
                cc, cs = cand_all[0][rows], cand_all[1][rows]
            m_here = cc.shape[1]
            parts_c.append(cc)
            parts_s.append(cs)
        if cand_all is not None and movers.size == 0:
            m_here = cand_all[0].shape[1]
    except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks know
        failed, m_here = e, -1
    mt = torch.tensor([m_here], dtype=torch.int64, device=dev)
    all_m = [torch.empty_like(mt) for _ in range(world)]
    dist.all_gather(all_m, mt, group=group)
    if failed is not None:
        raise failed
    bad = [r for r, v in enumerate(all_m) if int(v) < 0]
    if bad:
        raise ValueError(f"sharded_reassign: the candidates of rank {bad[0]} failed (see that rank's error)")
    ms = {int(v) for v in all_m} - {0}
    if len(ms) > 1:
        raise ValueError(f"every rank must give the same number of candidates per row, got {sorted(ms)}")
    m = ms.pop() if ms else 1
    cc = np.concatenate(parts_c) if parts_c else np.empty((0, m), np.int32)
    cs = np.concatenate(parts_s) if parts_s else np.empty((0, m), np.float32)
    del parts_c, parts_s
    mkeys = k[movers]
    o_m, s_m, r_m = _routes(_owner(mkeys // k_last, world), world, group, dev)
    g_rows = _a2a(movers[o_m] + row0, s_m, r_m, 1, group, dev)
    g_keys = _a2a(mkeys[o_m], s_m, r_m, 1, group, dev)
    g_c = _a2a(cc[o_m], s_m, r_m, m, group, dev).reshape(-1, m)
    g_s = _a2a(cs[o_m], s_m, r_m, m, group, dev).reshape(-1, m)
    del cc, cs
    # 3. the owner solves its prefixes (movers by prefix, then global row) and answers
    new_recv = np.full(g_rows.size, -1, np.int64)
    if g_rows.size:
        gp = g_keys // k_last
        order = np.lexsort((g_rows, gp))
        gps = gp[order]
        newg = np.ones(gps.size, bool)
        newg[1:] = gps[1:] != gps[:-1]
        gstart = np.flatnonzero(newg)
        gpref = gps[gstart]
        group_ptr = np.append(gstart, gps.size).astype(np.int64)
        occ = occupied[_isin_sorted_np(occupied // k_last, gpref)]
        lo = np.searchsorted(occ, gpref * k_last)
        hi = np.searchsorted(occ, gpref * k_last + k_last)
        occ_ptr = np.zeros(gpref.size + 1, np.int64)
        np.cumsum(hi - lo, out=occ_ptr[1:])
        occ_codes = np.ascontiguousarray((occ % k_last).astype(np.int32))
        new = _solve(C, group_ptr, occ_ptr, occ_codes, order.astype(np.int64), None, (g_c, g_s), k_last, batch_rows)
        new_recv[order] = new
    got = _a2a(new_recv, r_m, s_m, 1, group, dev)
    new_mine = np.empty(movers.size, np.int64)
    new_mine[o_m] = got
    ok = new_mine >= 0
    return movers[ok], new_mine[ok].astype(np.int32)
