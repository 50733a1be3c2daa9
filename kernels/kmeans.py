"""Triton kernels for k-means: the Lloyd update (per-cluster sums) and k-means++ candidate scoring.

Imports only torch and triton; knows nothing of autograd or of the rest of pysid.

Entry points: :func:`kmeans_update_triton`, :func:`kmeanspp_candidates_triton`.

Both are deterministic: no float atomics; every sum is taken in an order fixed by the
inputs and the launch configuration, so two runs give bit-identical results.

Update (sort-based segmented sum, two launches after ``torch.sort``):

* ``sorted_codes, order = torch.sort(codes, stable=True)`` and
  ``offs = searchsorted(sorted_codes, 0..k)`` give each cluster's range ``[offs[c], offs[c+1])``
  of sorted positions; ``x`` is never permuted (rows are gathered through ``order``).
* Pass 1, grid ``(#chunks, #D-blocks)``: the sorted positions are cut into chunks of
  ``CHUNK`` rows, so every program has the same number of rows whatever the cluster
  sizes (one huge cluster is spread over many programs). A program walks the clusters
  present in its chunk (``sorted_codes[first] .. sorted_codes[last]``) and, for each,
  sums its rows in tiles of ``BLOCK_R`` gathered rows into a [BLOCK_R, BLOCK_D] float32
  tile that is reduced over rows at the end. The partial of (cluster c, chunk j) goes
  to slot ``c + j`` of a scratch buffer: along the sorted order each new (cluster, chunk)
  piece increases c or j, so ``c + j`` is unique per piece, and cluster c's pieces are
  the consecutive slots ``c + offs[c] // CHUNK .. c + (offs[c+1] - 1) // CHUNK`` - no scan
  and no host sync are needed to lay the segments out.
* Pass 2, grid ``(k, #D-blocks)``: cluster c adds its slots in ascending order (its size / CHUNK
  + 1 at most) and writes ``sums[c]`` and ``counts[c]`` (empty clusters: zeros).
* sm_90 (BLOCK_R=16, BLOCK_D=256, 8 warps, D a multiple of 16; BLOCK_R * BLOCK_D = 16 elements per
  thread at every D): 40 registers, no spills on triton 3.6 and 3.9 (BLOCK_R=32 spilled 4 bytes on
  3.6); each gathered row is read with 16-byte loads (LDG.E.128). Other D: scalar loads, half the
  rows per tile.

k-means++ candidates (one streaming pass over x; launches: pad of the candidates, kernel, ``sum``):

* Program = ``BLOCK_N`` rows x all ``T`` candidates (padded with zero candidates to ``TP``, a
  power of two); loop over D in slices of ``BLOCK_D`` columns with the next slice of x
  prefetched: ``diff = x[:, None, :] - cand[:, :, None]`` on a [BLOCK_D, TP, BLOCK_N] register
  tile, ``acc3 += diff * diff`` (float32, from the difference - never via norms), and one
  register-local sum over the BLOCK_D phases after the loop.
* Writes ``dist[rows, :T]`` and a per-program float64 partial of
  ``sum_i w_i * min(mind_i, dist_it)`` to ``partial[pid, :T]``; ``pot = partial.sum(0)``.
* sm_90 (fp32/bf16 x, default blocks: one row per thread, 128 rows per program, 4 warps): no
  spills (see tests/test_sm90_compile.py for the registers); ~80% of the loop's instructions are
  the FADD + FFMA pair per element.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = ["KMeansPPSeeder", "kmeans_update_triton", "kmeanspp_candidates_triton", "kmeanspp_seed_triton"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_MAX_T = 64


def _next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def _num_sms(dev: torch.device) -> int:
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).multi_processor_count
    return 4


# --------------------------------------------------------------------------- update: pass 1
@triton.jit
def _kmeans_chunk_kernel(
    x_ptr, w_ptr, order_ptr, scode_ptr, offs_ptr, psum_ptr, pcnt_ptr,
    N, D, stride_xm, stride_xd, CHUNK,
    HAS_W: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Partial sums of every (cluster, chunk) piece of chunk j = program_id(0), D-block program_id(1)."""
    j = tl.program_id(0)
    db = tl.program_id(1)
    p0 = j * CHUNK
    p1 = tl.minimum(p0 + CHUNK, N)
    c_first = tl.load(scode_ptr + p0)
    c_last = tl.load(scode_ptr + p1 - 1)
    cols = db * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    xcol = cols.to(tl.int64) * stride_xd
    rr = tl.arange(0, BLOCK_R)
    for c in range(c_first, c_last + 1):
        a = tl.maximum(tl.load(offs_ptr + c), p0)
        b = tl.minimum(tl.load(offs_ptr + c + 1), p1)
        acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
        wacc = tl.zeros([BLOCK_R], dtype=tl.float32)
        for r0 in range(a, b, BLOCK_R):
            pos = r0 + rr
            pm = pos < b
            idx = tl.load(order_ptr + pos, mask=pm, other=0).to(tl.int64)
            xv = tl.load(x_ptr + idx[:, None] * stride_xm + xcol[None, :], mask=pm[:, None] & cmask[None, :],
                         other=0.0).to(tl.float32)
            if HAS_W:
                wv = tl.load(w_ptr + idx, mask=pm, other=0.0)
                acc += xv * wv[:, None]
                wacc += wv
            else:
                acc += xv
        # an empty cluster between c_first and c_last has no piece here (a >= b): nothing written
        slot = (c + j).to(tl.int64)
        if a < b:  # a scalar branch, not a scalar mask: triton 3.9's interpreter rejects those
            tl.store(psum_ptr + slot * D + cols, tl.sum(acc, 0), mask=cmask)
            if HAS_W:
                if db == 0:
                    tl.store(pcnt_ptr + slot, tl.sum(wacc, 0))


# --------------------------------------------------------------------------- update: pass 2
@triton.jit
def _kmeans_reduce_kernel(
    psum_ptr, pcnt_ptr, offs_ptr, sums_ptr, counts_ptr,
    D, CHUNK,
    HAS_W: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """sums[c] = sum of cluster c's slots in ascending order; counts[c] likewise (or the row count)."""
    c = tl.program_id(0)
    db = tl.program_id(1)
    a = tl.load(offs_ptr + c)
    b = tl.load(offs_ptr + c + 1)
    j0 = a // CHUNK
    j1 = tl.where(b > a, (b - 1) // CHUNK + 1, j0)  # chunks j0 .. j1-1 hold the cluster's rows
    cols = db * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    wsum = tl.zeros([], dtype=tl.float32)
    for j in range(j0, j1):
        slot = (c + j).to(tl.int64)
        acc += tl.load(psum_ptr + slot * D + cols, mask=cmask, other=0.0)
        if HAS_W:
            wsum += tl.load(pcnt_ptr + slot)
    tl.store(sums_ptr + c.to(tl.int64) * D + cols, acc, mask=cmask)
    if db == 0:
        if HAS_W:
            tl.store(counts_ptr + c, wsum)
        else:
            tl.store(counts_ptr + c, (b - a).to(tl.float32))


def _check_x(x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be [N, D], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")


def _check_weights(weights: Optional[torch.Tensor], x: torch.Tensor) -> Optional[torch.Tensor]:
    if weights is None:
        return None
    if weights.shape != (x.shape[0],) or weights.device != x.device:
        raise ValueError(f"weights must be [N={x.shape[0]}] on {x.device}, "
                         f"got {tuple(weights.shape)} on {weights.device}")
    return weights.to(torch.float32).contiguous()


def kmeans_update_triton(
    x: torch.Tensor,
    codes: torch.Tensor,
    weights: Optional[torch.Tensor],
    k: int,
    *,
    block_r: Optional[int] = None,
    block_d: Optional[int] = None,
    chunk_rows: Optional[int] = None,
    num_warps: Optional[int] = None,
    num_stages: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster weighted sums and weights of the rows of x (the Lloyd update), deterministic.

    Args:
        x: [N, D] float32, float16 or bfloat16 (any strides).
        codes: [N] int32 (int64 accepted), every value in [0, k) (not checked here).
        weights: None (all 1) or [N] float32.
        k: number of clusters (>= 1).
        block_r, block_d, chunk_rows, num_warps, num_stages: override the launch heuristic
            (tuning and tests). The result is bit-reproducible for a given configuration.

    Returns:
        sums [k, D] float32: ``sums[c] = sum_{i: codes[i] == c} w_i * x_i`` (float32 accumulation),
        counts [k] float32: ``counts[c] = sum_{i: codes[i] == c} w_i``.
        Empty clusters get zeros.
    """
    _check_x(x)
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, d = x.shape
    if codes.shape != (n,) or codes.device != x.device:
        raise ValueError(f"codes must be [N={n}] on {x.device}, got {tuple(codes.shape)} on {codes.device}")
    if codes.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"codes must be int32 or int64, got {codes.dtype}")
    w = _check_weights(weights, x)
    dev = x.device
    sums = torch.empty((k, d), dtype=torch.float32, device=dev)
    counts = torch.empty((k,), dtype=torch.float32, device=dev)
    if n == 0 or d == 0:
        sums.zero_()
        if n == 0:
            counts.zero_()
            return sums, counts
    if n >= 2**31:
        raise ValueError("the Triton k-means update needs N < 2^31")

    sorted_codes, order = torch.sort(codes, stable=True)
    bounds = torch.arange(k + 1, dtype=codes.dtype, device=dev)
    offs = torch.searchsorted(sorted_codes, bounds, out_int32=True)  # [k+1]: cluster c is offs[c]..offs[c+1]-1

    dp = _next_pow2(max(d, 1))
    if _INTERPRET:
        br, bd, chunk, nw, ns = 64, min(dp, 256), 256, 4, 1
    else:
        bd = min(dp, 256)
        nw = 8 if bd >= 256 else 4
        # 16 tile elements per thread: with 32 (BLOCK_R 32 at D 256) ptxas settles on 64 registers and
        # spills (triton 3.6; 3.9 too at D 128); 16 compile to ~40 registers without spills on both
        br = min(128, 16 * 32 * nw // bd)
        # Triton vectorises the row loads only when it can prove 16-element alignment (D and the
        # row stride multiples of 16); scalar loads hold a 64-bit address per element: half the rows
        # per tile (sm_90: no spills from D 32 up on triton 3.6 and 3.9)
        if bd > 16 and not (d % 16 == 0 and x.stride(0) % 16 == 0 and x.stride(1) == 1 and x.data_ptr() % 16 == 0):
            br //= 2
        ns = 2
        # enough equal chunks for ~8 programs per SM, >= 4 row tiles each, at most 2048 rows
        target = n // (8 * _num_sms(dev))
        chunk = max(4 * br, min(2048, 1 << max(0, target.bit_length() - 1)))
    br = block_r or br
    bd = block_d or bd
    chunk = chunk_rows or chunk
    nw = num_warps or nw
    ns = num_stages or ns
    nchunks = triton.cdiv(n, chunk)
    ndb = triton.cdiv(max(d, 1), bd)
    has_w = w is not None

    psum = torch.empty((k + nchunks, max(d, 1)), dtype=torch.float32, device=dev)  # slot c + j
    pcnt = torch.empty((k + nchunks,), dtype=torch.float32, device=dev) if has_w else psum
    wt = w if has_w else psum
    if d > 0:
        _kmeans_chunk_kernel[(nchunks, ndb)](
            x, wt, order, sorted_codes, offs, psum, pcnt,
            n, d, x.stride(0), x.stride(1), chunk,
            HAS_W=has_w, BLOCK_R=br, BLOCK_D=bd, num_warps=nw, num_stages=ns,
        )
    elif has_w:  # D == 0: only the counts are needed; pass 1 still provides the weight sums
        _kmeans_chunk_kernel[(nchunks, 1)](
            x, wt, order, sorted_codes, offs, psum, pcnt,
            n, 0, 0, 0, chunk,
            HAS_W=True, BLOCK_R=br, BLOCK_D=16, num_warps=nw, num_stages=ns,
        )
    bd2 = min(dp, 1024)
    _kmeans_reduce_kernel[(k, triton.cdiv(max(d, 1), bd2))](
        psum, pcnt, offs, sums, counts, d, chunk,
        HAS_W=has_w, BLOCK_D=bd2, num_warps=4 if bd2 >= 512 else 1,
    )
    return sums, counts


# --------------------------------------------------------------------------- k-means++ candidates
@triton.jit
def _kpp_tile(x_rows, rmask, c_base, c_step, D, stride_xd,
              TP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """[TP, BLOCK_N] float32 squared distances of BLOCK_N rows (pointers ``x_rows`` [1, BLOCK_N]) to TP
    candidates (column d of candidate t at ``c_base[t] + d * c_step``): the one distance loop that the
    step-by-step candidates kernel and the fused seeding kernel share, so both give the same bits.

    The work is laid out as [BLOCK_D, TP, BLOCK_N] (columns, candidates, rows): Triton's default
    layout puts the threads on the last (row) dimension, so a thread holds BLOCK_N / #threads rows
    x TP candidates x BLOCK_D columns of accumulators in registers: each x value (coalesced load,
    transposed through shared memory by Triton) is reused TP times, each candidate value
    BLOCK_N / #threads times, and the loop body is one FADD + one FFMA per element (the sum over
    the BLOCK_D column phases is taken once, after the loop, in registers)."""
    dd = tl.arange(0, BLOCK_D)
    acc3 = tl.zeros([BLOCK_D, TP, BLOCK_N], dtype=tl.float32)
    xv = tl.load(x_rows + dd[:, None].to(tl.int64) * stride_xd, mask=rmask[None, :] & (dd < D)[:, None],
                 other=0.0).to(tl.float32)  # [BLOCK_D, BLOCK_N]
    for d0 in range(0, D, BLOCK_D):
        # prefetch the next column slice (fully masked - no traffic - after the last one): a
        # program keeps two slices in flight, which the memory system needs at this tile size
        ncols = d0 + BLOCK_D + dd
        xn = tl.load(x_rows + ncols[:, None].to(tl.int64) * stride_xd, mask=rmask[None, :] & (ncols < D)[:, None],
                     other=0.0).to(tl.float32)
        cols = d0 + dd
        cv = tl.load(c_base[None, :] + cols[:, None] * c_step, mask=(cols < D)[:, None], other=0.0).to(tl.float32)
        diff = xv[:, None, :] - cv[:, :, None]  # [BLOCK_D, TP, BLOCK_N]; padded columns: 0 - 0
        acc3 += diff * diff  # one FADD + one FFMA per (column, candidate, row)
        xv = xn
    return tl.sum(acc3, 0)  # register-local


@triton.jit
def _kmeanspp_kernel(
    x_ptr, candt_ptr, mind_ptr, w_ptr, dist_ptr, part_ptr,
    N, D, T, stride_xm, stride_xd,
    HAS_W: tl.constexpr, TP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dist[rows, :T] and the program's float64 partial pot sums for BLOCK_N rows (see _kpp_tile)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    tt = tl.arange(0, TP)
    tmask = tt < T
    # candidates transposed and zero-padded to [D, TP] on the host: vector loads, no masks on t
    acc = _kpp_tile(x_ptr + rows64[None, :] * stride_xm, rmask, candt_ptr + tt, TP, D, stride_xd,
                    TP, BLOCK_N, BLOCK_D)
    tl.store(dist_ptr + rows64[None, :] * T + tt[:, None], acc, mask=rmask[None, :] & tmask[:, None])
    md = tl.load(mind_ptr + rows, mask=rmask, other=0.0)
    m = tl.minimum(acc, md[None, :])
    if HAS_W:
        wv = tl.load(w_ptr + rows, mask=rmask, other=0.0)
        m = m * wv[None, :]
    m = tl.where(rmask[None, :], m, 0.0)
    part = tl.sum(m.to(tl.float64), 1)  # [TP]
    tl.store(part_ptr + pid.to(tl.int64) * T + tt, part, mask=tmask)


def _kpp_config(n: int, d: int, tp: int) -> Tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_D, num_warps, num_stages) of the candidate scoring for T <= tp candidates: one
    choice for the step kernel and the fused seeding kernel (same BLOCK_D: the same distance bits)."""
    if _INTERPRET:
        return max(16, min(256, _next_pow2(n))), min(_next_pow2(max(d, 1)), 64), 4, 1
    # one row per thread: the loop is bound by memory latency (H200, 2026-12-04: 89 us for 2^16 rows
    # x 256 D x 8 candidates at two rows per thread, 7.7 warps active per SM, stalls on long
    # scoreboard), so as many programs as rows allow; <= 64 accumulators per thread
    nw = 4
    return 32 * nw, max(1, min(8 if tp <= 2 else 4, 64 // tp)), nw, 3


def kmeanspp_candidates_triton(
    x: torch.Tensor,
    cand: torch.Tensor,
    mind: torch.Tensor,
    weights: Optional[torch.Tensor],
    *,
    block_n: Optional[int] = None,
    block_d: Optional[int] = None,
    num_warps: Optional[int] = None,
    num_stages: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Score T k-means++ candidate centres against every row in one pass over x, deterministic.

    Args:
        x: [N, D] float32, float16 or bfloat16 (any strides).
        cand: [T, D] float32, 1 <= T <= 64.
        mind: [N] float32, current squared distance of each row to its nearest chosen centre
            (+inf before the first centre).
        weights: None (all 1) or [N] float32.
        block_n, block_d, num_warps, num_stages: override the launch heuristic (tuning, tests).

    Returns:
        dist [N, T] float32: ``dist[i, t] = sum_d (x[i, d] - cand[t, d])^2``, float32 from the difference,
        pot [T] float64: ``pot[t] = sum_i w_i * min(mind[i], dist[i, t])`` (float64 partials per program,
        summed by torch in a fixed order).
    """
    _check_x(x)
    n, d = x.shape
    if cand.dim() != 2 or cand.shape[1] != d or cand.device != x.device:
        raise ValueError(f"cand must be [T, D={d}] on {x.device}, got {tuple(cand.shape)} on {cand.device}")
    t = cand.shape[0]
    if not 1 <= t <= _MAX_T:
        raise ValueError(f"the number of candidates must be in [1, {_MAX_T}], got {t}")
    if mind.shape != (n,) or mind.device != x.device:
        raise ValueError(f"mind must be [N={n}] on {x.device}, got {tuple(mind.shape)} on {mind.device}")
    cand = cand.to(torch.float32)
    mind = mind.to(torch.float32).contiguous()
    w = _check_weights(weights, x)
    dev = x.device
    dist = torch.empty((n, t), dtype=torch.float32, device=dev)
    if n == 0:
        return dist, torch.zeros((t,), dtype=torch.float64, device=dev)
    tp = _next_pow2(t)
    bn, bd, nw, ns = _kpp_config(n, d, tp)
    bn = block_n or bn
    bd = block_d or bd
    nw = num_warps or nw
    ns = num_stages or ns
    # candidates as [D, TP], zero-padded: the kernel loads a column slice of all of them as vectors
    candt = torch.nn.functional.pad(cand.t(), (0, tp - t)).contiguous()
    nprog = triton.cdiv(n, bn)
    part = torch.empty((nprog, t), dtype=torch.float64, device=dev)
    _kmeanspp_kernel[(nprog,)](
        x, candt, mind, w if w is not None else mind, dist, part,
        n, d, t, x.stride(0), x.stride(1),
        HAS_W=w is not None, TP=tp, BLOCK_N=bn, BLOCK_D=bd, num_warps=nw, num_stages=ns,
    )
    return dist, part.sum(0)


# --------------------------------------------------------------------------- fused k-means++ seeding
# Greedy k-means++ with the whole state on the device and three launches per centre, none of
# which waits for the host (so a run of steps is captured once as a CUDA graph and replayed):
#
#   sample (grid T)       the T candidate rows of this step: row = the first whose prefix sum of
#                         p_i = w_i * mind_i exceeds u * total (torch.searchsorted(right=True) on
#                         the inclusive prefix sums, as the step loop and the C++ loop draw)
#   score  (grid N / BN)  the step loop's candidates kernel (_kmeanspp_kernel) on the sampled
#                         candidates: dist[i, t] = ||x_i - x_{row_t}||^2 and per program the
#                         float64 partial potentials sum_i w_i * min(mind_i, dist[i, t]) of its rows
#   commit (grid N / CB)  every program sums the partials in one fixed order (so all agree), picks
#                         best = argmin pot (ties: the first candidate); program 0 records the centre
#                         and advances the step counter; each program then sets
#                         mind <- min(mind, dist[best]) on its CB rows and writes their prefix sums
#
# Prefix sums are kept two-level: lcum[i] the float64 inclusive prefix of p within row i's block of
# CB rows, stored as -inf where p_i = 0, and bsum[b] the block's largest prefix (its total); the
# sampler takes block prefixes from bsum the same way. A parallel scan sums in another order than a
# sequential one and need not even be monotone, so the search asks for the first row with p > 0
# whose prefix exceeds the target (the searchsorted answer of sequential sums, which never lands on
# a row with p = 0): a row of weight 0 (or already a centre) is never drawn. Draws equal the
# sequential prefix sums' (the C++ loop, the step loop on the CPU) except where u * total falls
# within float64 rounding (~1e-16 relative) of a row boundary.
@triton.jit
def _kpp_sample_kernel(u_ptr, step_ptr, lcum_ptr, bsum_ptr, idx_ptr, x_ptr, candt_ptr, N, NB, CB, u_stride, D,
                       stride_xm, stride_xd,
                       NBP: tl.constexpr, CBP: tl.constexpr, TP: tl.constexpr, BD: tl.constexpr):
    """idx[t] for candidate t = program_id(0): the draw of uniform u[step, t] (see above); and the
    candidate as column t of candt [D, TP] float32 (the step kernel's layout: vector loads)."""
    t = tl.program_id(0)
    s = tl.load(step_ptr)
    u = tl.load(u_ptr + s * u_stride + t)
    bb = tl.arange(0, NBP)
    bs = tl.load(bsum_ptr + bb, mask=bb < NB, other=0.0)
    bci = tl.cumsum(bs, 0)  # block prefixes; blocks with p = 0 throughout are never chosen
    v = u * tl.max(tl.where(bs > 0, bci, 0.0), 0)
    b = tl.min(tl.where((bs > 0) & (bci > v), bb, NB), 0)  # the first block whose prefix exceeds v
    bx = tl.max(tl.where((bb < b) & (bs > 0), bci, 0.0), 0)  # the prefix before it
    bc = tl.minimum(b, NB - 1)
    jj = tl.arange(0, CBP)
    r0 = bc.to(tl.int64) * CB
    lc = tl.load(lcum_ptr + r0 + jj, mask=(jj < CB) & (r0 + jj < N), other=float("-inf"))  # -inf: p = 0
    j = tl.min(tl.where(lc > v - bx, jj, CBP), 0)
    # rounding of v - bx can leave no prefix above it: the block's row of largest prefix then
    jlast = tl.min(tl.where(lc >= tl.load(bsum_ptr + bc), jj, CBP), 0)
    j = tl.where(j < CBP, j, jlast)
    row = tl.where(b < NB, r0 + j, N - 1)  # none exceeds v (total 0): the last row, as searchsorted + clamp
    row = row.to(tl.int64)
    tl.store(idx_ptr + t, row)
    for d0 in range(0, D, BD):
        cols = d0 + tl.arange(0, BD)
        xv = tl.load(x_ptr + row * stride_xm + cols * stride_xd, mask=cols < D, other=0.0)
        tl.store(candt_ptr + cols * TP + t, xv.to(tl.float32), mask=cols < D)


@triton.jit
def _kpp_commit_kernel(
    dist_ptr, part_ptr, idx_ptr, step_ptr, chosen_ptr, pot_ptr, mind_ptr, w_ptr, lcum_ptr, bsum_ptr,
    N, T, P,
    HAS_W: tl.constexpr, INIT: tl.constexpr, TP: tl.constexpr, CB: tl.constexpr, PB: tl.constexpr,
):
    """Choose the best candidate (every program alike), record it (program 0), update mind and the
    prefix sums of CB rows. INIT: no choice, the prefix sums of the weights (the first draw's)."""
    b = tl.program_id(0)
    rows = b.to(tl.int64) * CB + tl.arange(0, CB)
    rmask = rows < N
    if INIT:
        if HAS_W:
            p = tl.load(w_ptr + rows, mask=rmask, other=0.0)
        else:
            p = tl.where(rmask, 1.0, 0.0)
    else:
        tt = tl.arange(0, TP)
        tmask = tt < T
        pot = tl.zeros([TP], dtype=tl.float64)
        for p0 in range(0, P, PB):  # the score programs' partials in one fixed order
            pr = p0 + tl.arange(0, PB)
            pot += tl.sum(tl.load(part_ptr + pr[:, None] * T + tt[None, :], mask=(pr < P)[:, None] & tmask[None, :],
                                  other=0.0), 0)
        pot = tl.where(tmask, pot, float("inf"))
        best = tl.argmin(pot, 0, tie_break_left=True)
        if b == 0:  # nothing else reads the step counter during this launch
            s = tl.load(step_ptr)
            tl.store(chosen_ptr + s, tl.load(idx_ptr + best))
            tl.store(pot_ptr + tt, pot, mask=tmask)
            tl.store(step_ptr, s + 1)
        d = tl.load(dist_ptr + rows * T + best, mask=rmask, other=0.0)  # [N, T]: 4 of every 4T bytes
        m = tl.minimum(tl.load(mind_ptr + rows, mask=rmask, other=0.0), d)
        tl.store(mind_ptr + rows, m, mask=rmask)
        if HAS_W:
            p = m * tl.load(w_ptr + rows, mask=rmask, other=0.0)  # float32 product, as the C++ commit
        else:
            p = m
    pd = tl.where(rmask, p.to(tl.float64), 0.0)
    lc = tl.cumsum(pd, 0)
    tl.store(lcum_ptr + rows, tl.where(pd > 0, lc, float("-inf")), mask=rmask)
    tl.store(bsum_ptr + b, tl.max(tl.where(pd > 0, lc, 0.0), 0))


class KMeansPPSeeder:
    """Greedy k-means++ on the fused kernels: ``KMeansPPSeeder(x, weights, u).run()`` -> chosen
    rows [k] int64 of x (the same rows as the step loop over ``kmeanspp_candidates_triton`` and the
    C++ loop, see the notes above _kpp_sample_kernel).

    x: [N, D] float32 / float16 / bfloat16 (any strides); weights: None or [N] float32 (>= 0,
    positive sum); u: [k, T] float64 uniforms in [0, 1) on x's device: row 0 draws the first centre
    (u[0, 0] only, weighted by ``weights``), row c the T candidates of centre c.

    block_n, block_d, num_warps: the scoring kernel's tiles (default: the step kernel's; the same
    block_d gives the same distance bits); commit_rows: rows per commit program (a power of two).

    The state (mind, prefix sums, step counter, the chosen rows) lives on the device; :meth:`step`
    launches one centre's three kernels; :meth:`run` runs every step, on CUDA replaying captured
    CUDA graphs of ``graph_steps`` steps (``graph=False``: eager launches; same kernels, same rows).
    ``pot`` holds the last step's candidate potentials [T] float64 (for tests)."""

    def __init__(self, x: torch.Tensor, weights: Optional[torch.Tensor], u: torch.Tensor, *,
                 block_n: Optional[int] = None, block_d: Optional[int] = None, commit_rows: Optional[int] = None,
                 num_warps: Optional[int] = None):
        _check_x(x)
        n, d = x.shape
        if n < 1:
            raise ValueError("k-means++ needs at least one row")
        if u.dim() != 2 or u.dtype != torch.float64 or u.device != x.device or u.shape[0] < 1:
            raise ValueError(f"u must be [k >= 1, T] float64 on {x.device}, got {tuple(u.shape)} {u.dtype} on {u.device}")
        t = u.shape[1]
        if not 1 <= t <= _MAX_T:
            raise ValueError(f"the number of candidates must be in [1, {_MAX_T}], got {t}")
        if n >= 2**31:
            raise ValueError("the fused k-means++ kernels need N < 2^31")
        self.x, self.u, self.t, self.k = x, u.contiguous(), t, u.shape[0]
        self.w = _check_weights(weights, x)
        dev = x.device
        self.cfg = {}
        for tt in {1, t}:
            bn, bd, nw, ns = _kpp_config(n, d, _next_pow2(tt))
            self.cfg[tt] = (block_n or bn, block_d or bd, num_warps or nw, ns)
        self.nprog = max(triton.cdiv(n, c[0]) for c in self.cfg.values())  # score programs (partials)
        # commit blocks: at most ~256 of them (the sampler scans their totals in one program), of
        # 256 to 4096 rows (one program's prefix scan)
        self.cb = commit_rows or min(4096, max(256, _next_pow2(triton.cdiv(n, 256))))
        self.nb = triton.cdiv(n, self.cb)
        self.mind = torch.full((n,), float("inf"), dtype=torch.float32, device=dev)
        self.lcum = torch.empty((n,), dtype=torch.float64, device=dev)
        self.bsum = torch.empty((self.nb,), dtype=torch.float64, device=dev)
        self.step_no = torch.zeros((1,), dtype=torch.int64, device=dev)
        self.idx = torch.zeros((t,), dtype=torch.int64, device=dev)
        # the candidates as [D, TP] float32, zero-padded (padding never written), per TP
        self.candt = {tt: torch.zeros((d, _next_pow2(tt)), dtype=torch.float32, device=dev) for tt in {1, t}}
        self.chosen = torch.empty((self.k,), dtype=torch.int64, device=dev)
        self.pot = torch.empty((t,), dtype=torch.float64, device=dev)
        self.dist = torch.empty((n, t), dtype=torch.float32, device=dev)
        self.part = torch.empty((self.nprog, t), dtype=torch.float64, device=dev)
        self.done = 0
        self._commit(1, init=True)

    def _commit(self, t: int, init: bool = False) -> None:
        w = self.w if self.w is not None else self.mind
        nw = 4 if self.cb <= 1024 else 8
        # partial sums summed as [PB, TP] tiles of <= 16 float64 per thread
        nparts = triton.cdiv(self.x.shape[0], self.cfg[t][0])  # the score launch's programs
        pb = max(1, min(1024, _next_pow2(nparts), 16 * 32 * nw // _next_pow2(t)))
        _kpp_commit_kernel[(self.nb,)](
            self.dist, self.part, self.idx, self.step_no, self.chosen, self.pot, self.mind, w, self.lcum, self.bsum,
            self.x.shape[0], t, nparts,
            HAS_W=self.w is not None, INIT=init, TP=_next_pow2(t), CB=self.cb, PB=pb, num_warps=nw,
        )

    def step(self) -> None:
        """Choose the next centre (three launches, no host synchronisation)."""
        t = 1 if self.done == 0 else self.t
        x, n = self.x, self.x.shape[0]
        candt = self.candt[t]
        _kpp_sample_kernel[(t,)](
            self.u, self.step_no, self.lcum, self.bsum, self.idx, x, candt, n, self.nb, self.cb, self.u.stride(0),
            x.shape[1], x.stride(0), x.stride(1),
            NBP=_next_pow2(self.nb), CBP=self.cb, TP=candt.shape[1], BD=min(256, _next_pow2(max(1, x.shape[1]))),
            num_warps=4,
        )
        bn, bd, nw, ns = self.cfg[t]
        _kmeanspp_kernel[(triton.cdiv(n, bn),)](
            x, candt, self.mind, self.w if self.w is not None else self.mind, self.dist, self.part,
            n, x.shape[1], t, x.stride(0), x.stride(1),
            HAS_W=self.w is not None, TP=_next_pow2(t), BLOCK_N=bn, BLOCK_D=bd, num_warps=nw, num_stages=ns,
        )
        self._commit(t)
        self.done += 1

    def run(self, progress=None, graph: bool = True, graph_steps: int = 16) -> torch.Tensor:
        """Every remaining step; returns the chosen rows [k] int64. ``progress``: a tqdm-like bar."""
        eager = self.k if not (graph and self.x.is_cuda) else min(self.k, 2)  # two eager steps compile both variants
        while self.done < eager:
            self.step()
            if progress is not None:
                progress.update(1)
        left = self.k - self.done
        if left > 0:
            self._replay(left, progress, graph_steps)
        return self.chosen

    def _replay(self, left: int, progress, graph_steps: int) -> None:
        import warnings

        runs = []  # (graph or None, steps it takes)
        try:
            for size in sorted({min(left, graph_steps), 1}, reverse=True):
                g = torch.cuda.CUDAGraph()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    with torch.cuda.graph(g):
                        for _ in range(size):
                            self.step()  # recorded, not run
                self.done -= size
                for w in caught:
                    if "graph is empty" in str(w.message).lower():
                        raise RuntimeError(f"the captured graph is empty ({w.message})")
                for w in caught:  # anything else the capture said, as it was said
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                runs.append((g, size))
        except Exception as e:  # noqa: BLE001 - any capture failure leaves the eager steps correct
            warnings.warn(f"k-means++: CUDA graph capture failed ({type(e).__name__}: {e}); running the steps eagerly",
                          RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize(self.x.device)
            self.done = int(self.step_no)  # a capture that ran its work has advanced the state
            while self.done < self.k:
                self.step()
                if progress is not None:
                    progress.update(1)
            return
        for g, size in runs:
            while self.k - self.done >= size:
                g.replay()
                self.done += size
                if progress is not None:
                    progress.update(size)


def kmeanspp_seed_triton(x: torch.Tensor, weights: Optional[torch.Tensor], u: torch.Tensor, progress=None, *,
                         graph: bool = True, **cfg) -> torch.Tensor:
    """Greedy k-means++ seeding on the fused kernels: the rows [k] int64 of x chosen as centres (see
    :class:`KMeansPPSeeder`). No host synchronisation until the caller reads the result."""
    return KMeansPPSeeder(x, weights, u, **cfg).run(progress, graph=graph)
