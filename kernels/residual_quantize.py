"""Triton kernels for residual quantization (greedy and beam search).

Imports only torch and triton; knows nothing of autograd or of the rest of pysid.

Entry point: :func:`residual_quantize_triton`.

Greedy (``beam_width == 1``): ONE launch for all levels, persistent programs (grid =
min(#tiles, #SMs)). Each program takes tiles of ``BLOCK_M`` = 128 rows (8 warps: the wgmma
layout is then [8, 1] warps, so a row's reductions stay inside one warp). A tile's residual lives
in the program's own scratch slots across all levels (float32, and the MMA's operand: fp16(r s_r),
or its tf32 rounding; 2 x 128 x DP x 4 bytes per program, 33 MB in all at D = 256: L2-resident), never whole in
registers: every pass over it (load x, subtract the chosen codeword, write the quantized rows)
goes in ``BLOCK_U``-column slices with 16-byte accesses, and also yields the squared norms the
next level needs. Per level the program streams the level's codebook in ``BLOCK_K`` chunks; per
chunk a plain pipelined GEMM over D (``BLOCK_D`` steps; both operands by 16-byte cp.async into
shared memory, async wgmma on the accumulator chain) gives ``r.c`` - or, with the fp16 proposal
at D <= 256 (the default), the tile's whole fp16 A operand (128 x 256 x 2 B = 64 KB) is read once
per level and stays in shared memory while the codebook chunks stream past it (one MMA over all
of D per chunk, BLOCK_K 64, 2 stages: 128 KB of shared memory; ``_resident``) - and the program keeps the
best candidates of ``score = ||c||^2 - 2 r.c`` (float32), exact ties to the lowest index; then it
subtracts the chosen codeword and writes that level's distance ``||r||^2`` and code. The exact
path (``fast=False``, and the redo of unproven rows) runs the same loop with
``input_precision="ieee"``, D-chunked, with its own (smaller) tiles. Shared memory is 24 KB
(fp16 pass; tf32: 48 KB) whatever D; no spills on triton 3.6 or 3.9 (tests/test_sm90_compile.py). Triton
3.6 waits on a wgmma right before the first use of its result, so the top-4 epilogue of a chunk
does not overlap the next chunk's MMA inside one program; the next chunk's first operand copies
are in flight during it.

The canonical score (every backend and path returns its codes bit for bit; C++ kernel,
CUDA kernel, this module; tests/test_canonical_score.py): ``score_k = fl(cn_k - 2 dot_k)``,
``dot_k`` one float32 FMA chain ``acc = fma(r_d, c_kd, acc)`` over d = 0..D-1 from 0, ``cn_k``
the same chain of ``c_kd * c_kd`` (:func:`codeword_sqnorms`), exact ties to the lowest index,
the next residual ``fl(r - c)``. The exact pass computes it (``tl.dot(ieee)`` is that chain on
the GPU; under the interpreter the chain is spelled out with ``tl.fma``, ``FMA_CHAIN``). The
proposal pass and the re-check only propose: the re-check sums with ``tl.sum`` (a tree), so its
choice stands only where it is apart from the other candidates by more than twice its proven
distance to the canonical score (``e_chk``); other rows go to the exact pass. Distances
(``tl.sum(r * r)``) are not canonical: their summation order differs between backends.

Fast path (``fast=True``, tensor cores: an fp16 or tf32 proposal) and why it returns the float32
answer:

* The proposal GEMM multiplies operands with 11-bit significands, r_hi and c_hi, whose
  products are exact in float32 and whose remainders ``r_lo = r - r_hi``, ``c_lo = c - c_hi``
  are known exactly. fp16 (the default, ``_proposal="fp16"``): c_hi = fp16(c sc_l) / sc_l on
  the host, sc_l = 2^ec_l a power of two per level with max|c sc_l| < 2^15; r_hi =
  fp16(r s_r) / s_r in the kernel, s_r = 2^e_r per row and level chosen before the pass that
  writes the operand from a bound B >= max_d |r_d| (level 0: max|x_d|, its own pass; level
  l + 1: max|r_d| + max|c_d| of level l, no extra pass), e_r = 14 - floor(log2 B), clamped so
  that s_r and 2 / (s_r sc_l) are normal float32. The operand (slot 0 as fp16) holds
  fp16(r s_r) (clamped to the fp16 range: never inf), fp16 subnormals included: r_lo is
  computed exactly whatever r_hi is. The epilogue unscales, ``s = cn - acc * 2 / (s_r sc_l)``,
  exact unless the product underflows (absolute error < 2^-149: the 1e-30 term of E). tf32
  (``_proposal="tf32"``): both operands rounded to tf32 explicitly (codebook on the host,
  residual in the kernel). fp16 streams half the bytes (the A operand, the codebook from L2)
  at twice tf32's tensor rate: faster by arithmetic, not yet measured (bench/gpu_rq_sweep.py
  times both). Either way the only difference to the exact dot is ``r_lo.c_hi + r.c_lo`` plus
  float32 accumulation error, so by Cauchy-Schwarz every candidate's proposed score is within
  ``E = 2 (||r_lo|| max||c_hi|| + ||r|| max||c_lo|| + gamma ||r|| max||c_hi||) + packing``
  of its exact score, a bound computed per row and level (the same formula for both).
* The chunk loop keeps the 4 smallest proposed scores per row (the chunk-local index is
  packed into the low mantissa bits, so one ``min`` gives value and index; the
  packing error is part of ``E``).  The best 3 are re-scored in full float32
  (gather the codeword, ``sum(r * c)``) and the best of them by (score, index) is taken.
* Rows whose proposed winner is provably the float32 winner (``v1 - E > v0 + E``) skip the
  re-check (its loads are masked off for them).
* The 4th score ``v3`` is the smallest proposed score of every candidate that was NOT
  re-checked, so if ``v3 - E > best_exact`` no unchecked candidate can be as good:
  the choice is the float32 argmin (ties included; with the re-check's own distance to the
  canonical score, ``e_chk``, added on both sides).  Rows where this cannot be proven
  at some level are "unsure": the program appends them to a list (an atomic counter and
  a row index each) and goes on.  A second launch of the same kernel (``REDO``, no host
  sync: its persistent programs read the count) re-encodes just the listed rows, every
  level, with the exact (``input_precision="ieee"``) pass and overwrites their outputs,
  so those rows get exactly the ``fast=False`` answer. Where some level has K >= 1024
  (``_TIER2_MIN_K``; a top-4 window leaves ~2 % of rows unproven at K 4096 on k-means data) a
  second tier runs first over the listed rows (the same kernel, FAST and REDO, ``NP`` = 16): the
  proposal GEMM again keeping the 16 best (score, index) per row (int64 keys: exact proposal
  scores, bitonic top-k per chunk and merge), the best 15 re-scored with the canonical score itself
  (the FMA chain: no allowance, near-ties decided as the exact pass does), proven when the 16th
  proposal minus E is above the best of them; the rows it cannot prove go to a second list, which
  the exact pass redoes.  (Until 2026-11-28 the whole
  64-row tile re-ran the level exactly for one unsure row: on clustered data 11 % of
  tile-levels did, ~+9 ms of 41 ms in GPU run 2.)  The candidate count therefore
  affects speed only, never the answer.  With 3 re-checked candidates the fallback is
  rare: for a random-looking row the window ``2E`` is ~2^-10 sqrt(D) standard
  deviations of the score spread, and the fallback needs 3 more candidates inside it
  (probability ~(3.5 * 2E/sigma)^3, ~1e-4 per row for D=256, ~3e-5 for D=64); on
  clustered data it is higher but stays correct.

Beam search (``1 < beam_width <= 16``): persistent programs; the (row, beam) pairs form the rows of the
dot (128 pairs per tile on the GPU, packed densely: 25 rows of 5 beams at B 5, not 16 rows of 8 slots, 3
of them empty; 64 where the lists hold 16 or more, B > 5 or a wider window: ``_beam_config``); top-B
over (beam, code) pairs by repeated min-extraction (each pair's own best along the dot's rows, then
merged per row through memory) ordered by (score, beam rank, code), score ``fl(fl(cn_k - 2 dot) +
||r_b||^2)``. Level 0 (one beam per row: x) is its own kernel, a per-row top-B with as many rows of one
pair per tile (``_rq_beam_first_kernel``), whose B codes per row start the levels kernel
(``_rq_beam_kernel``, levels 1..L-1); both share the proposal, proof and re-score (``_beam_level``). The
pairs' residuals live in scratch slots per program (L2; swapped per level): each new residual is its
parent's row of the old slot minus the chosen codeword (a gather by row index, 16-byte slices; valid
pairs only, and after the last level only the best one); the paths are back-pointers in a per-program
scratch array, followed back at the end. ``fast=False``: the exact kernel (every candidate by the FMA
chain). ``fast=True`` (default): a GEMM proposes the row's best NP candidates over all its beams (fp16
by default: fp16(c sc_l) from the host, fp16(r s) rounded from the float32 slot on the way to the MMA, s
a power of two per row at level 0 and per tile at later levels, from the largest ||r||:
``_beam_fp16_scales``; tf32 with ``_proposal="tf32"``: the tf32 rounding, the same way), the window
(NP - 1) is re-scored exactly with the canonical chain, a per-row error bound proves that no candidate
outside the window can enter the B best, and unproven rows are re-encoded by the exact kernel (a second
launch over the listed rows): the exact kernel's outputs bit for bit (``_rq_beam_kernel``'s docstring).
The proposal runs in chunks of 128 codewords (A re-read twice per level at K = 256) with packed keys
(``_topn_packed``): the low log2(PB * BK) mantissa bits of each proposal score hold the candidate's
chunk-local (beam, code), so one ``min`` per extraction gives value and candidate (B > 8 or lists of 32:
a bitonic top-k of (key, id) as int64 per chunk, the same order); the proof adds the packing error
(``2^(P-22) |key|`` at the NP-th key; the fp16 operand's r_lo bound adds the subnormals' DP 2^-24 / s).
``precision="fast"``: the B best packed keys, no proof (scores equal above the packing bits rank by
(beam, code) in the chunk, then by id across chunks, so near-ties can order differently from the float32
scores).
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Sequence

import torch
import triton
import triton.language as tl

__all__ = ["residual_quantize_triton", "codeword_sqnorms"]

_PAD_SCORE = 3.0e38  # ||c||^2 of padding codewords: never chosen over a real one
_MAX_BEAM = 16
_SCRATCH_BYTES = 160 << 20  # the persistent programs' residual slots: at most this much memory
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# ptxas's register limit (maxnreg) for the exact passes that spilled when ptxas chose it (greedy: _greedy_config;
# beam: both kernels' exact launches): left to itself, ptxas settled on 128 registers and spilled there
_EXACT_MAXNREG = 255
_TIER2_NP = 16  # greedy second tier: proposals kept per row (NP - 1 re-checked)
_TIER2_MIN_K = 1024  # greedy second tier: runs where some level has at least this many codewords


# --------------------------------------------------------------------------- helpers
@triton.jit
def _round_tf32(v):
    """Round float32 to the nearest tf32 value (10 explicit mantissa bits), ties away."""
    bits = v.to(tl.int32, bitcast=True)
    bits = (bits + 0x1000) & -8192  # -8192 == 0xFFFFE000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _level_exact(sp_ptr, cb_ptr, cn_ptr, kbeg, kend, D, BM: tl.constexpr, BK: tl.constexpr,
                 DP: tl.constexpr, BD: tl.constexpr, FMA_CHAIN: tl.constexpr):
    """Exact float32 argmin over rows kbeg..kend-1 (padded) of the packed codebook: global row index.

    The canonical score (module docstring): ``fl(cn_k - 2 dot_k)``, ``dot_k`` one float32
    FMA chain over d = 0..D-1, exact ties to the lowest index. The residual is read from this
    program's scratch tile sp_ptr [BM, DP] (L2). On the GPU ``tl.dot(..., input_precision="ieee")``
    on float32 lowers to exactly that chain (Triton's FMA dot: ``acc = fma(a[k], b[k], acc)`` for
    k ascending, the accumulator carried across the BD-column slices). ``FMA_CHAIN`` spells the
    chain out with ``tl.fma`` column by column: the interpreter's ``tl.dot`` is
    ``numpy.matmul(a, b) + acc`` (blocked sums, not a chain), so the interpreter runs this form.
    The D-slice loop is kept a loop (``disable_licm``): hoisted, its [BM, BD] / [BD, BK] address
    tensors would stay live in registers across the chunk loop."""
    kk = tl.arange(0, BK)
    dd = tl.arange(0, BD)
    mm = tl.arange(0, BM)
    bv = tl.full([BM], float("inf"), tl.float32)
    bi = tl.zeros([BM], dtype=tl.int32) + kbeg
    for kb in tl.range(kbeg, kend, BK, disable_licm=True):
        acc = tl.zeros([BM, BK], dtype=tl.float32)
        if FMA_CHAIN:
            for j in range(0, D):
                a = tl.load(sp_ptr + mm * DP + j)  # [BM]: column j of the residual
                c = tl.load(cb_ptr + (kb + kk) * DP + j)  # [BK]
                acc = tl.fma(a[:, None], c[None, :], acc)
        else:
            for d0 in tl.range(0, DP, BD, disable_licm=True):
                d0 = tl.multiple_of(d0, BD)
                a = tl.load(sp_ptr + mm[:, None] * DP + (d0 + dd)[None, :])  # [BM, BD]
                c = tl.load(cb_ptr + (kb + kk)[None, :] * DP + (d0 + dd)[:, None])  # [BD, BK]
                acc = tl.dot(a, c, acc, input_precision="ieee")
        cn = tl.load(cn_ptr + kb + kk)
        s = cn[None, :] - 2.0 * acc
        m = tl.min(s, 1)
        idx = tl.min(tl.where(s == m[:, None], kk[None, :], BK), 1)
        better = m < bv  # strict: an earlier chunk (lower index) keeps exact ties
        bv = tl.where(better, m, bv)
        bi = tl.where(better, kb + idx, bi)
    return bi


@triton.jit
def _sqnorm_kernel(c_ptr, out_ptr, K, D, BLOCK: tl.constexpr):
    """out[k] = ||c_k||^2 as one float32 FMA chain over d = 0..D-1 (c: [K, D] contiguous)."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < K
    base = rows.to(tl.int64) * D
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for j in range(0, D):
        v = tl.load(c_ptr + base + j, mask=rmask, other=0.0)
        acc = tl.fma(v, v, acc)
    tl.store(out_ptr + rows, acc, mask=rmask)


def codeword_sqnorms(c: torch.Tensor) -> torch.Tensor:
    """The canonical ``||c_k||^2`` [K] float32 of a contiguous float32 [K, D] codebook: one float32
    FMA chain per codeword over d ascending (``s = fma(c_kd, c_kd, s)``, s = 0 first). The C++
    kernel (rq_cpu.cpp, ``pack_codebooks``) and the CUDA kernel compute the same chain."""
    if c.dim() != 2 or c.dtype != torch.float32:
        raise ValueError(f"codebook must be a float32 [K, D] tensor, got {c.dtype} {tuple(c.shape)}")
    c = c.contiguous()
    k, d = c.shape
    out = torch.empty((k,), dtype=torch.float32, device=c.device)
    if k == 0:
        return out
    block = 128 if not _INTERPRET else max(16, min(1024, _next_pow2(k)))
    _sqnorm_kernel[(triton.cdiv(k, block),)](c, out, k, d, BLOCK=block, num_warps=4)
    return out


@triton.jit
def _cswap(a, ai, b, bi):
    sw = b < a
    return tl.where(sw, b, a), tl.where(sw, bi, ai), tl.where(sw, a, b), tl.where(sw, ai, bi)


@triton.jit
def _recheck(rs_ptr, cb_ptr, cn_ptr, i0, i1, i2, need, kbeg, kreal,
             BM: tl.constexpr, DP: tl.constexpr, BD: tl.constexpr):
    """Float32 scores ||c||^2 - 2 r.c of candidates i0, i1, i2 (global rows) for the rows in
    `need`; r is read from the scratch slot rs_ptr [BM, DP] in BD-column slices (loads of the
    other rows are masked off: no traffic). 16-byte loads: every slice starts at a multiple of BD."""
    mm = tl.arange(0, BM)
    dd = tl.arange(0, BD)
    s0 = tl.zeros([BM], dtype=tl.float32)
    s1 = s0
    s2 = s0
    nm = need[:, None]
    for d0 in tl.range(0, DP, BD, disable_licm=True):
        cols = tl.multiple_of(d0, BD) + dd
        rr = tl.load(rs_ptr + mm[:, None] * DP + cols[None, :], mask=nm, other=0.0)
        c0 = tl.load(cb_ptr + i0[:, None] * DP + cols[None, :], mask=nm, other=0.0)
        s0 += tl.sum(rr * c0, 1)
        c1 = tl.load(cb_ptr + i1[:, None] * DP + cols[None, :], mask=nm, other=0.0)
        s1 += tl.sum(rr * c1, 1)
        c2 = tl.load(cb_ptr + i2[:, None] * DP + cols[None, :], mask=nm, other=0.0)
        s2 += tl.sum(rr * c2, 1)
    e0 = tl.where(i0 - kbeg < kreal, tl.load(cn_ptr + i0) - 2.0 * s0, float("inf"))
    e1 = tl.where(i1 - kbeg < kreal, tl.load(cn_ptr + i1) - 2.0 * s1, float("inf"))
    e2 = tl.where(i2 - kbeg < kreal, tl.load(cn_ptr + i2) - 2.0 * s2, float("inf"))
    return e0, e1, e2


@triton.jit
def _better(e, i, be, bi):
    b = (e < be) | ((e == be) & (i < bi))
    return tl.where(b, e, be), tl.where(b, i, bi)


@triton.jit
def _top4_merge(acc, cn, kb, v0, v1, v2, v3, i0, i1, i2, i3, mult, BK: tl.constexpr, PACK_BITS: tl.constexpr,
                SCALED: tl.constexpr):
    """Merge one chunk's proposal scores (acc = r.c [BM, BK], cn = ||c||^2 [BK] of codes kb..kb+BK-1) into
    the running 4 smallest keys per row (ascending v0..v3, global rows i0..i3). Row reductions only:
    with the wgmma layout of BLOCK_M = 16 x num_warps rows, a row lives in one warp (a quad).
    SCALED (the fp16 proposal): acc is the dot of the scaled operands and mult [BM] the row's
    2 / (s_r sc_l), a power of two: ``cn - acc * mult`` (the product is exact unless it underflows)."""
    INF: tl.constexpr = float("inf")
    kk = tl.arange(0, BK)
    if SCALED:
        s = cn[None, :] - acc * mult[:, None]
    else:
        s = cn[None, :] - 2.0 * acc
    # pack the chunk-local index into the low mantissa bits: keys are unique per row
    key = ((s.to(tl.int32, bitcast=True) & -(1 << PACK_BITS)) | kk[None, :]).to(tl.float32, bitcast=True)
    m0 = tl.min(key, 1)
    key = tl.where(key == m0[:, None], INF, key)
    m1 = tl.min(key, 1)
    key = tl.where(key == m1[:, None], INF, key)
    m2 = tl.min(key, 1)
    key = tl.where(key == m2[:, None], INF, key)
    m3 = tl.min(key, 1)
    j0 = kb + (m0.to(tl.int32, bitcast=True) & (BK - 1))
    j1 = kb + (m1.to(tl.int32, bitcast=True) & (BK - 1))
    j2 = kb + (m2.to(tl.int32, bitcast=True) & (BK - 1))
    j3 = kb + (m3.to(tl.int32, bitcast=True) & (BK - 1))
    # merge two ascending lists of 4, keep the 4 smallest: bitonic min + 4-sorter
    t = m3 < v0
    c0 = tl.where(t, m3, v0)
    d0 = tl.where(t, j3, i0)
    t = m2 < v1
    c1 = tl.where(t, m2, v1)
    d1 = tl.where(t, j2, i1)
    t = m1 < v2
    c2 = tl.where(t, m1, v2)
    d2 = tl.where(t, j1, i2)
    t = m0 < v3
    c3 = tl.where(t, m0, v3)
    d3 = tl.where(t, j0, i3)
    c0, d0, c2, d2 = _cswap(c0, d0, c2, d2)
    c1, d1, c3, d3 = _cswap(c1, d1, c3, d3)
    v0, i0, v1, i1 = _cswap(c0, d0, c1, d1)
    v2, i2, v3, i3 = _cswap(c2, d2, c3, d3)
    return v0, v1, v2, v3, i0, i1, i2, i3


@triton.jit
def _proposal_gemm(sp_ptr, cbhi_ptr, kb, BM: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr, BD: tl.constexpr,
                   PROPOSAL: tl.constexpr):
    """r.c [BM, BK] of the proposal operands (the A slot sp_ptr [BM, DP], codewords kb..kb+BK-1 of
    cbhi_ptr), a plain pipelined GEMM over D in BD steps: both operands stream into shared memory by
    cp.async (16-byte copies, num_stages deep), the accumulator chain runs on async wgmma. fp16:
    the products are exact in float32, float32 accumulation; tf32: both operands tf32-exact."""
    mm = tl.arange(0, BM)
    kk = tl.arange(0, BK)
    dd = tl.arange(0, BD)
    acc = tl.zeros([BM, BK], dtype=tl.float32)
    for d0 in range(0, DP, BD):
        cols = tl.multiple_of(d0, BD) + dd
        a = tl.load(sp_ptr + mm[:, None] * DP + cols[None, :])  # [BM, BD]
        c = tl.load(cbhi_ptr + (kb + kk)[None, :] * DP + cols[:, None])  # [BD, BK]
        if PROPOSAL == "fp16":
            acc = tl.dot(a, c, acc, out_dtype=tl.float32)
        else:
            acc = tl.dot(a, c, acc, input_precision="tf32")
    return acc


@triton.jit
def _level_fast(sp_ptr, rs_ptr, cb_ptr, cbhi_ptr, cn_ptr, kbeg, kend, kreal, r_n, rlo_n, chimax, clomax, cnmax,
                mult, gamma, gamma_chk, BM: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr, BD: tl.constexpr,
                PACK_BITS: tl.constexpr, PROVE: tl.constexpr, PROPOSAL: tl.constexpr, RESIDENT: tl.constexpr):
    """Proposal GEMM keeping the 4 best per row, float32 re-check of the best 3.

    sp_ptr: the proposal's A operand [BM, DP]: PROPOSAL "tf32": the residual rounded to tf32
    (float32), cbhi_ptr the tf32-rounded codebook; "fp16": fp16(r * s_r) (s_r a power of two per
    row), cbhi_ptr fp16(c * sc_l), and mult [BM] = 2 / (s_r sc_l) unscales the dot exactly.
    rs_ptr: the float32 residual (re-check); r_n, rlo_n: ||r||, ||r - r_hi|| per row (r_hi the
    value the A operand stands for: tf32(r), or fp16(r * s_r) / s_r). Returns (global row index of
    the choice, unsure mask).

    RESIDENT (fp16, DP <= 256): A [BM, DP] is loaded once before the chunk loop (Triton keeps it in
    shared memory: 128 KB with BK 64 and 2 stages on sm_90) and each chunk is one dot over all of D:
    per level the tile reads A once instead of once per chunk. Otherwise:
    per chunk of BK codewords a plain GEMM over D in BD steps: A and B slices go straight from L2 to
    shared memory (cp.async, no register staging of a [BM, DP] operand), num_stages deep, and the
    accumulator chain runs on async wgmma. Shared memory is then num_stages * (BM + BK) * BD * 4
    bytes (tf32; half with fp16): two programs fit per SM, so one program's top-4 epilogue overlaps
    the other's MMA (Triton 3.6 places a wgmma wait right after a dot whose result the epilogue
    reads)."""
    kk = tl.arange(0, BK)
    mm = tl.arange(0, BM)
    INF: tl.constexpr = float("inf")
    v0 = tl.full([BM], INF, tl.float32)
    v1 = v0
    v2 = v0
    v3 = v0
    i0 = tl.zeros([BM], dtype=tl.int32) + kbeg
    i1 = i0
    i2 = i0
    i3 = i0
    if RESIDENT:  # the whole A operand [BM, DP] (fp16) read once per level; it stays in shared memory
        dfull = tl.arange(0, DP)
        a_res = tl.load(sp_ptr + mm[:, None] * DP + dfull[None, :])
    for kb in range(kbeg, kend, BK):
        if RESIDENT:  # one MMA over all of D per chunk: only the codebook chunk streams (cp.async)
            c = tl.load(cbhi_ptr + (kb + kk)[None, :] * DP + dfull[:, None])  # [DP, BK]
            acc = tl.dot(a_res, c, out_dtype=tl.float32)
        else:  # both operands streamed per chunk in D-slices
            acc = _proposal_gemm(sp_ptr, cbhi_ptr, kb, BM, BK, DP, BD, PROPOSAL)
        cn = tl.load(cn_ptr + kb + kk)
        v0, v1, v2, v3, i0, i1, i2, i3 = _top4_merge(acc, cn, kb, v0, v1, v2, v3, i0, i1, i2, i3, mult, BK,
                                                     PACK_BITS, PROPOSAL == "fp16")
    if PROVE:
        # error bound on every proposal key (see module docstring); the same for tf32 and for
        # fp16 with power-of-two scaling (both: 11-bit operands, exact products, r_lo and c_lo known)
        err_dot = rlo_n * chimax + r_n * clomax + gamma * r_n * chimax
        pack = (2.0 ** (PACK_BITS - 22)) * (cnmax + 2.0 * r_n * chimax)
        e_bound = (2.0 * err_dot + pack) * 1.0625 + 1e-30
        # rows whose proposed winner is provably the float32 winner need no re-check (NaN: re-check)
        need = ~((v1 - e_bound) > (v0 + e_bound))
        # float32 re-check of the best three, (score, index) order
        e0, e1, e2 = _recheck(rs_ptr, cb_ptr, cn_ptr, i0, i1, i2, need, kbeg, kreal, BM, DP, BD)
        be, bi = _better(e1, i1, e0, i0)
        be, bi = _better(e2, i2, be, bi)
        # The re-check sums D-slices with tl.sum (a tree), the canonical score with one FMA chain:
        # both are within gamma_D ||r|| ||c|| of the real dot, so each re-checked score is within
        # e_chk of its canonical value (dot error x 2 x 2, and the two roundings of cn - 2 dot).
        # The choice is the canonical one only if the winner is apart from the other two by more
        # than 2 e_chk (exact ties included: duplicated codewords go to the exact pass) and every
        # unchecked candidate is provably worse; other rows are unsure (the exact pass decides;
        # a NaN anywhere makes the row unsure too).
        # (x 1.125: room for the float rounding of these few operations; the second-best score is
        # the median of the three, which needs no candidate indices)
        cmax = chimax + clomax
        e_chk = (4.0 * gamma_chk * r_n * cmax + (2.0 ** -23) * (cnmax + 2.0 * r_n * cmax)) * 1.125 + 1e-30
        sec = tl.maximum(tl.minimum(e0, e1), tl.minimum(tl.maximum(e0, e1), e2))
        proven = ((v3 - e_bound) > (be + e_chk)) & ((sec - be) > 2.0 * e_chk)
        unsure = need & ~proven
        bi = tl.where(need, bi, i0)
    else:  # precision="fast": the proposal's choice as it is (near-ties may differ from float32)
        bi = i0
        unsure = i0 < 0  # never: no row is listed for the exact pass
    return bi, unsure


@triton.jit
def _fp16_exponent(bound, ec):
    """The exponent e_r of a row's power-of-two scale s_r = 2^e_r for the fp16 A operand, from an upper
    bound [BM] of max_d |r_d| (float32 >= 0) and the level's codebook exponent ec (sc_l = 2^ec):
    e_r = 14 - floor(log2 bound) (read from the exponent bits), so |r_d| s_r < 2^15; clamped so that
    s_r, 1 / s_r and 2 / (s_r sc_l) are normal float32 (a zero or tiny row: the largest such scale;
    too small a scale only makes r_lo larger, and the bound uses r_lo as computed)."""
    eb = (bound.to(tl.int32, bitcast=True) >> 23) & 255  # biased exponent (0: zero / subnormal)
    er = 141 - eb  # 14 - (eb - 127)
    lo = tl.maximum(-125 - ec, -126)
    hi = tl.minimum(125 - ec, 126)
    return tl.minimum(tl.maximum(er, lo), hi)


@triton.jit
def _pow2(e):
    """2.0^e as float32 (int32 e in [-126, 127])."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _to_fp16(v, s):
    """fp16(v * s) (s a power of two, broadcast to v; clamped to the fp16 range: never inf). With s from a
    bound >= max|v| (:func:`_fp16_exponent`) |v s| < 2^15: no clamping, and |v - fp16(v s) / s| <=
    2^-11 |v| + 2^-24 / s per element (fp16's normal range; below it, half the subnormal spacing)."""
    return tl.minimum(tl.maximum(v * s, -65504.0), 65504.0).to(tl.float16)


@triton.jit
def _split_fp16(v, s, inv_s):
    """fp16(v * s) (s [BM] a power of two per row; clamped to the fp16 range: never inf) and
    r_lo = v - fp16(v * s) / s, exact in float32 (Sterbenz in fp16's normal range; a multiple of
    ulp(v) below it)."""
    h = _to_fp16(v, s[:, None])
    return h, v - h.to(tl.float32) * inv_s[:, None]


@triton.jit
def _beam_fp16_scales(rn_max, ec, DP: tl.constexpr):
    """The fp16 beam proposal's scale s = 2^e for a level, from rn_max >= 0, the largest ||r||^2 of the
    residuals it scales (float32 sums of squares of non-negative terms: >= max_d r_d^2 (1 - (D + 1)
    2^-24), and >= max_d r_d^2 - D 2^-149 where squares underflow), so B = sqrt(rn_max) (1 + 2^-8) +
    2^-60 >= max_d |r_d| of each of them (D < 2^16). Returns s, the unscaling 2 / (s sc_l) (sc_l = 2^ec)
    and the fp16 subnormals' part of the bound on ||r - r_hi|| (DP 2^-24 / s; the rest is 2^-11 ||r||);
    per row or per tile, as rn_max is."""
    er = _fp16_exponent(tl.sqrt(rn_max) * (1.0 + 2.0 ** -8) + 2.0 ** -60, ec)
    return _pow2(er), _pow2(1 - er - ec), (DP * 2.0 ** -24) * _pow2(-er)


@triton.jit
def _key64(s, idx):
    """(score, index) as one int64 whose signed order is (float order of s, then index): the float
    bits made order-preserving as int32 (negative scores: magnitude bits flipped), index below."""
    b = s.to(tl.int32, bitcast=True)
    o = tl.where(b < 0, b ^ 0x7FFFFFFF, b)
    return (o.to(tl.int64) << 32) | idx.to(tl.int64)


@triton.jit
def _unkey64(key):
    """Inverse of _key64: (score, index)."""
    o = (key >> 32).to(tl.int32)
    b = tl.where(o < 0, o ^ 0x7FFFFFFF, o)
    return b.to(tl.float32, bitcast=True), (key & 0xFFFFFFFF).to(tl.int32)


@triton.jit
def _fma4(dot, a4, c4, BM: tl.constexpr, NP: tl.constexpr):
    """dot [BM, NP] + the 4 columns of a4, c4 [BM, NP, 4] as 4 FMAs in column order (a piece of the
    canonical FMA chain, after 16-byte loads of 4 columns)."""
    a02, a13 = tl.split(tl.reshape(a4, [BM, NP, 2, 2]))  # columns (j0, j0+2), (j0+1, j0+3)
    c02, c13 = tl.split(tl.reshape(c4, [BM, NP, 2, 2]))
    a0, a2 = tl.split(a02)
    a1, a3 = tl.split(a13)
    c0, c2 = tl.split(c02)
    c1, c3 = tl.split(c13)
    return tl.fma(a3, c3, tl.fma(a2, c2, tl.fma(a1, c1, tl.fma(a0, c0, dot))))


@triton.jit
def _level_wide(sp_ptr, rs_ptr, cb_ptr, cbhi_ptr, cn_ptr, kbeg, kend, kreal, D, r_n, rlo_n, chimax, clomax, cnmax,
                mult, gamma, BM: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr, BD: tl.constexpr,
                NP: tl.constexpr, PROPOSAL: tl.constexpr):
    """The second tier: the proposal GEMM of _level_fast keeping the NP best per row (by (score, index),
    exact proposal scores: int64 keys, no packing), the best NP - 1 re-scored with the canonical score
    (the FMA chain), and the proof that no other candidate can reach the best of them. Returns (global
    row index of the choice, unsure mask)."""
    kk = tl.arange(0, BK)
    mm = tl.arange(0, BM)
    pp = tl.arange(0, NP)
    BIGK: tl.constexpr = 0x7FFFFFFFFFFFFFFF
    top = tl.full([BM, NP], BIGK, tl.int64)
    for kb in range(kbeg, kend, BK):
        acc = _proposal_gemm(sp_ptr, cbhi_ptr, kb, BM, BK, DP, BD, PROPOSAL)
        cn = tl.load(cn_ptr + kb + kk)
        if PROPOSAL == "fp16":
            s = cn[None, :] - acc * mult[:, None]
        else:
            s = cn[None, :] - 2.0 * acc
        # the NP smallest keys of the chunk, then of (running list, chunk): bitonic top-k on ~key
        # (bitwise not reverses the signed order: the largest ~key is the smallest key)
        ck = ~tl.topk(~_key64(s, kb + kk[None, :]), NP)
        both = tl.reshape(tl.join(top, ck), [BM, 2 * NP])
        top = ~tl.topk(~both, NP)
    vs, vi = _unkey64(top)  # ascending (score, index)
    # the window (the first NP - 1) re-scored with the canonical score itself: fl(cn - 2 dot), dot the
    # float32 FMA chain over d ascending (the exact pass's bits; 16-byte loads of 4 columns, their FMAs
    # in column order; columns D..DP-1 are zeros: fma(0, 0, acc) == acc), ties to the lowest index. Unlike
    # the top-4 pass's tree-summed re-check it needs no allowance (e_chk) and decides near-ties itself.
    win = pp[None, :] < NP - 1
    gi = tl.where(win, vi, kbeg)
    j4 = tl.arange(0, 4)
    w3 = win[:, :, None]
    dot = tl.zeros([BM, NP], dtype=tl.float32)
    for j0 in range(0, D, 4):
        j0 = tl.multiple_of(j0, 4)
        r4 = tl.load(rs_ptr + mm[:, None] * DP + (j0 + j4)[None, :])  # [BM, 4]
        a4 = tl.broadcast_to(r4[:, None, :], [BM, NP, 4])
        c4 = tl.load(cb_ptr + gi[:, :, None] * DP + (j0 + j4)[None, None, :], mask=w3, other=0.0)  # [BM, NP, 4]
        dot = _fma4(dot, a4, c4, BM, NP)
    INF: tl.constexpr = float("inf")
    ex = tl.where(win & (gi - kbeg < kreal), tl.load(cn_ptr + gi) - 2.0 * dot, INF)
    be = tl.min(ex, 1)
    bi = tl.min(tl.where(ex == be[:, None], gi, 2147483647), 1)
    vlast = tl.sum(tl.where(pp[None, :] == NP - 1, vs, 0.0), 1)  # the NP-th proposal score
    err_dot = rlo_n * chimax + r_n * clomax + gamma * r_n * chimax
    e_bound = (2.0 * err_dot + (2.0 ** -22) * (cnmax + 2.0 * r_n * chimax)) * 1.0625 + 1e-30
    # every candidate outside the window has a canonical score >= vlast - e_bound > be (strict: no tie)
    proven = (vlast - e_bound) > be
    return bi, ~proven


# --------------------------------------------------------------------------- greedy kernel
@triton.jit
def _append_redo(redo, rows, redo_ptr, fallback_ptr, COUNT_FALLBACK: tl.constexpr):
    """Append the rows flagged in ``redo`` [BM] to the redo list (redo_ptr[0]: its length,
    then row numbers); the exact pass rewrites all their outputs."""
    n_redo = tl.sum(redo, 0)
    if n_redo > 0:
        base = tl.atomic_add(redo_ptr, n_redo)
        pos = base + tl.cumsum(redo, 0) - 1
        tl.store(redo_ptr + 1 + pos, rows, mask=redo > 0)
        if COUNT_FALLBACK:
            tl.atomic_add(fallback_ptr + 1, n_redo)


@triton.jit
def _rq_greedy_kernel(
    x_ptr, cb_ptr, cbhi_ptr, cn_ptr, poff_ptr, kreal_ptr, stat_ptr,
    q_ptr, dist_ptr, code_ptr, scratch_ptr, redo_ptr, redo2_ptr, fallback_ptr,
    N, D, L, stride_xm, stride_xd, gamma, gamma_chk,
    BM: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr, BD: tl.constexpr, BU: tl.constexpr,
    FAST: tl.constexpr, REDO: tl.constexpr, PACK_BITS: tl.constexpr, COUNT_FALLBACK: tl.constexpr,
    STORE_Q: tl.constexpr, FMA_CHAIN: tl.constexpr, PROVE: tl.constexpr, PROPOSAL: tl.constexpr,
    NP: tl.constexpr,
    RESIDENT: tl.constexpr = False,
):
    """FAST: the proposal pass (PROPOSAL "fp16" or "tf32"); rows it cannot prove at some level are
    appended to the redo list (redo_ptr[0] = count, redo_ptr[1:] = rows). REDO (with FAST off): the
    exact pass over the rows of that list only (N is then read from redo_ptr[0]). FAST and REDO: the
    second tier over the rows of redo_ptr's list, NP (> 4) best proposals kept per row and NP - 1
    re-checked (_level_wide); rows it cannot prove go to the list at redo2_ptr (the exact pass's).
    NP == 4: the top-4 pass (_level_fast).

    The residual lives in this program's scratch slots (L2) across all levels, never whole in
    registers: slot 1 the float32 residual, slot 0 the MMA's A operand (tf32: the tf32 rounding,
    float32; fp16: fp16(r * s_r) in the slot's first half). Every pass over it (load x, subtract the
    chosen codeword, write the quantized rows) goes in [BM, BU] column slices with 16-byte accesses;
    the squared norms the next level's error bound needs come out of the same pass. fp16: s_r = 2^e_r
    per row and level is chosen before the pass that writes the operand, from a bound of max_d |r_d|:
    level 0 from x (its own pass: x into slot 1 and the row maximum, then slot 1 into the operand),
    level l + 1 from max|r| + max|c| of level l (stat), max|r| kept by the pass that wrote r; the
    stat row of level l is (max||c_hi||, max||c_lo||, max||c||^2, ec_l, max|c_d|), sc_l = 2^ec_l."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    sp_ptr = scratch_ptr + pid.to(tl.int64) * (2 * BM * DP)  # this program's slots: [2, BM, DP]
    rs_ptr = sp_ptr + BM * DP  # slot 1: float32 residual (slot 0: the MMA's A operand)
    FP16: tl.constexpr = PROPOSAL == "fp16"
    if FP16:
        op_ptr = sp_ptr.to(tl.pointer_type(tl.float16))  # slot 0 as fp16 [BM, DP]
        NST: tl.constexpr = 5
    else:
        op_ptr = sp_ptr
        NST: tl.constexpr = 3
    mm = tl.arange(0, BM)
    uu = tl.arange(0, BU)
    # the passes over the residual: BU-wide slices unrolled up to DP 256; beyond, a loop over the slices
    # (unrolled, D 512 spilled 64 / 68 B on triton 3.6 and D 1024 ~250 B on 3.6, 1.9 KB on 3.9; a loop with
    # loop_unroll_factor 16 spilled at D 256: 2026-12-05)
    SPAN_U: tl.constexpr = DP if DP <= 256 else BU
    n_rows = N
    if REDO:
        n_rows = tl.load(redo_ptr)
    num_tiles = tl.cdiv(n_rows, BM)
    for tile in range(pid, num_tiles, nprog):  # persistent: the scratch slots stay in L2
        rows = tile * BM + mm
        rmask = rows < n_rows
        if REDO:
            rows = tl.load(redo_ptr + 1 + rows, mask=rmask, other=0)
        rows64 = rows.to(tl.int64)
        tl.debug_barrier()  # the previous tile's reads of the slots are done
        # ||r||^2 and ||r - r_hi||^2 (the fast pass's bound): elementwise over the slices, one
        # row reduction at the end
        sq = tl.zeros([BM, BU], dtype=tl.float32)
        losq = sq
        amx = sq  # fp16: max_d |r_d| (the next level's scale)
        for ub in range(0, DP, SPAN_U):  # one iteration (folded) up to DP 256
            for u0 in tl.static_range(0, SPAN_U, BU):
                cu = ub + u0 + uu
                xmask = rmask[:, None] & (cu < D)[None, :]
                xv = tl.load(x_ptr + rows64[:, None] * stride_xm + cu[None, :] * stride_xd, mask=xmask, other=0.0)
                xv = xv.to(tl.float32)
                tl.store(rs_ptr + mm[:, None] * DP + cu[None, :], xv)
                if FAST:
                    sq += xv * xv
                    if FP16:
                        amx = tl.maximum(amx, tl.abs(xv))
                    else:
                        hi = _round_tf32(xv)
                        tl.store(op_ptr + mm[:, None] * DP + cu[None, :], hi)
                        lo = xv - hi
                        losq += lo * lo
        rsq = tl.sum(sq, 1)
        if FAST and FP16:  # level 0's scale from max |x_d|, then slot 1 -> the fp16 operand
            amax = tl.max(amx, 1)
            er = _fp16_exponent(amax, tl.load(stat_ptr + 3).to(tl.int32))
            sr = _pow2(er)
            isr = _pow2(-er)
            tl.debug_barrier()
            for ub in range(0, DP, SPAN_U):
                for u0 in tl.static_range(0, SPAN_U, BU):
                    cu = ub + u0 + uu
                    rv = tl.load(rs_ptr + mm[:, None] * DP + cu[None, :])
                    h, lo = _split_fp16(rv, sr, isr)
                    tl.store(op_ptr + mm[:, None] * DP + cu[None, :], h)
                    losq += lo * lo
        losq = tl.sum(losq, 1)
        tl.debug_barrier()  # the slots are visible to every thread of the program
        redo = tl.zeros([BM], dtype=tl.int32)
        for l in range(L):
            kbeg = tl.multiple_of(tl.load(poff_ptr + l), BK)  # levels are padded to BK codewords
            kend = tl.load(poff_ptr + l + 1)
            kreal = tl.load(kreal_ptr + l)
            if FAST:
                chimax = tl.load(stat_ptr + NST * l)
                clomax = tl.load(stat_ptr + NST * l + 1)
                cnmax = tl.load(stat_ptr + NST * l + 2)
                if FP16:  # 2 / (s_r sc_l): a normal float32 power of two (_fp16_exponent)
                    mult = _pow2(1 - er - tl.load(stat_ptr + NST * l + 3).to(tl.int32))
                else:
                    mult = rsq  # unused: tf32 scores are cn - 2 acc (a [BM] placeholder)
                if NP > 4:  # the second tier: a wider window, the same proof
                    best, unsure = _level_wide(op_ptr, rs_ptr, cb_ptr, cbhi_ptr, cn_ptr, kbeg, kend, kreal, D,
                                               tl.sqrt(rsq), tl.sqrt(losq), chimax, clomax, cnmax, mult, gamma,
                                               BM, BK, DP, BD, NP, PROPOSAL)
                else:
                    best, unsure = _level_fast(op_ptr, rs_ptr, cb_ptr, cbhi_ptr, cn_ptr, kbeg, kend, kreal,
                                               tl.sqrt(rsq), tl.sqrt(losq), chimax, clomax, cnmax, mult, gamma,
                                               gamma_chk, BM, BK, DP, BD, PACK_BITS, PROVE, PROPOSAL, RESIDENT)
                unsure = unsure & rmask
                redo = redo | unsure.to(tl.int32)  # this row's later levels are redone too
                if COUNT_FALLBACK:
                    tl.atomic_add(fallback_ptr, tl.sum(unsure.to(tl.int32), 0))
                if FP16:  # the next level's scale: max|r - c| <= max|r| + max|c_d| of this level
                    ln = tl.minimum(l + 1, L - 1)
                    er = _fp16_exponent(amax + tl.load(stat_ptr + NST * l + 4),
                                        tl.load(stat_ptr + NST * ln + 3).to(tl.int32))
                    sr = _pow2(er)
                    isr = _pow2(-er)
            else:
                best = _level_exact(rs_ptr, cb_ptr, cn_ptr, kbeg, kend, D, BM, BK, DP, BD, FMA_CHAIN)
            tl.debug_barrier()  # every read of the slots (A operand, re-check, exact pass) is done
            sq = tl.zeros([BM, BU], dtype=tl.float32)
            losq = sq
            amx = sq
            for ub in range(0, DP, SPAN_U):
                for u0 in tl.static_range(0, SPAN_U, BU):  # r -= c[best], slice by slice
                    cu = ub + u0 + uu
                    rp = rs_ptr + mm[:, None] * DP + cu[None, :]
                    rv = tl.load(rp) - tl.load(cb_ptr + best[:, None] * DP + cu[None, :])
                    tl.store(rp, rv)
                    sq += rv * rv
                    if FAST:
                        if FP16:
                            h, lo = _split_fp16(rv, sr, isr)
                            amx = tl.maximum(amx, tl.abs(rv))
                        else:
                            h = _round_tf32(rv)
                            lo = rv - h
                        tl.store(op_ptr + mm[:, None] * DP + cu[None, :], h)
                        losq += lo * lo
            rsq = tl.sum(sq, 1)
            losq = tl.sum(losq, 1)
            if FAST and FP16:
                amax = tl.max(amx, 1)
            tl.debug_barrier()
            tl.store(dist_ptr + rows64 * L + l, rsq, mask=rmask)
            tl.store(code_ptr + rows64 * L + l, best - kbeg, mask=rmask)
        if STORE_Q:  # quantized = x - residual (x reloaded: usually still in L2)
            for ub in range(0, DP, SPAN_U):
                for u0 in tl.static_range(0, SPAN_U, BU):
                    cu = ub + u0 + uu
                    xmask = rmask[:, None] & (cu < D)[None, :]
                    xv = tl.load(x_ptr + rows64[:, None] * stride_xm + cu[None, :] * stride_xd, mask=xmask, other=0.0)
                    rv = tl.load(rs_ptr + mm[:, None] * DP + cu[None, :])
                    tl.store(q_ptr + rows64[:, None] * D + cu[None, :], xv.to(tl.float32) - rv, mask=xmask)
        if FAST:
            if REDO:  # the second tier: its unproven rows go to the exact pass's list
                _append_redo(redo, rows, redo2_ptr, fallback_ptr, COUNT_FALLBACK)
            else:
                _append_redo(redo, rows, redo_ptr, fallback_ptr, COUNT_FALLBACK)


# --------------------------------------------------------------------------- beam kernels
@triton.jit
def _topn_merge(s, flat, sel_s, sel_f, sidx, NSEL: tl.constexpr):
    """The NSEL smallest of the candidates s [BM, P, Q] (ids flat, broadcastable to s) and of the
    running list (sel_s, sel_f) [BM, NP] together, ordered by (score, id): a new list [BM, NP]
    (entries NSEL.. and missing ones INF / BIG). Repeated min-extraction, row reductions only."""
    INF: tl.constexpr = float("inf")
    BIG: tl.constexpr = 2147483647
    new_s = tl.full(sel_s.shape, INF, tl.float32)
    new_f = tl.full(sel_f.shape, BIG, tl.int32)
    for t in tl.static_range(NSEL):
        m = tl.minimum(tl.min(tl.min(s, 2), 1), tl.min(sel_s, 1))  # [BM]
        fa = tl.min(tl.min(tl.where(s == m[:, None, None], flat, BIG), 2), 1)
        fb = tl.min(tl.where(sel_s == m[:, None], sel_f, BIG), 1)
        f = tl.minimum(fa, fb)
        f = tl.where(m < INF, f, BIG)
        new_s = tl.where(sidx[None, :] == t, m[:, None], new_s)
        new_f = tl.where(sidx[None, :] == t, f[:, None], new_f)
        s = tl.where(flat == f[:, None, None], INF, s)
        sel_s = tl.where(sel_f == f[:, None], INF, sel_s)
    return new_s, new_f


@triton.jit
def _topn_packed(key, kofs, kreal, sel_s, sel_f, sidx, NSEL: tl.constexpr, PB: tl.constexpr, BK: tl.constexpr):
    """The NSEL smallest of one chunk's packed proposal keys key [BM, PB, BK] (beam b, chunk-local code j:
    the float32 score with its low log2(PB * BK) mantissa bits replaced by b * BK + j, INF where
    invalid: unique per row, so one ``min`` gives value and candidate) and of the running list
    (sel_s, sel_f) [BM, NP] together, ordered by (key, id), id = beam * kreal + code (kofs: the
    chunk's first code): a new list [BM, NP] (entries NSEL.. and missing ones INF / BIG). Per
    extraction one reduction over the chunk (and a compare-select to take the extracted key out);
    the list's two small reductions break ties of equal keys from different chunks by id."""
    INF: tl.constexpr = float("inf")
    BIG: tl.constexpr = 2147483647
    new_s = tl.full(sel_s.shape, INF, tl.float32)
    new_f = tl.full(sel_f.shape, BIG, tl.int32)
    for t in tl.static_range(NSEL):
        mc = tl.min(tl.min(key, 2), 1)  # [BM]: the chunk's smallest key (unique in the chunk)
        ms = tl.min(sel_s, 1)
        fs = tl.min(tl.where(sel_s == ms[:, None], sel_f, BIG), 1)
        li = mc.to(tl.int32, bitcast=True) & (PB * BK - 1)  # the packed chunk-local candidate
        fc = (li // BK) * kreal + kofs + (li % BK)
        tc = (mc < ms) | ((mc == ms) & (fc < fs))  # the chunk's key comes first
        m = tl.where(tc, mc, ms)
        f = tl.where(m < INF, tl.where(tc, fc, fs), BIG)
        new_s = tl.where(sidx[None, :] == t, m[:, None], new_s)
        new_f = tl.where(sidx[None, :] == t, f[:, None], new_f)
        key = tl.where(key == tl.where(tc, mc, float("nan"))[:, None, None], INF, key)  # (nan: no key)
        sel_s = tl.where(sel_f == tl.where(tc, -1, fs)[:, None], INF, sel_s)  # (-1: no id)
    return new_s, new_f


@triton.jit
def _beam_chunk_dot(cur, cb_ptr, cbhi_ptr, kb, D, sr, M: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr,
                    BD: tl.constexpr, FAST: tl.constexpr, FMA_CHAIN: tl.constexpr, PROPOSAL: tl.constexpr):
    """r.c [M, BK] of the M pairs' residuals (rows of a scratch slot [M, DP]) with codewords kb..kb+BK-1.
    FAST: the proposal GEMM over D in BD steps (cp.async operands, wgmma) with the proposal codebook
    cbhi_ptr, the A operand rounded from the float32 slot cur on the way to the MMA: PROPOSAL "fp16":
    fp16(r sr) (sr: powers of two, broadcast to [M, BD]) and fp16(c sc_l) (the scaled dot, float32
    accumulation); "tf32": the tf32 roundings of r and of the codebook. Else the canonical FMA chain
    over d (``tl.dot`` ieee on the GPU; spelled out with ``tl.fma`` under FMA_CHAIN: the interpreter's
    ``tl.dot`` is a matmul)."""
    pm = tl.arange(0, M)
    kk = tl.arange(0, BK)
    dd = tl.arange(0, BD)
    acc = tl.zeros([M, BK], dtype=tl.float32)
    if FAST:  # the proposal GEMM: fp16 (scaled) or tf32 operands, products exact in float32
        for d0 in range(0, DP, BD):
            cols = tl.multiple_of(d0, BD) + dd
            c = tl.load(cbhi_ptr + (kb + kk)[None, :] * DP + cols[:, None])  # [BD, BK]
            if PROPOSAL == "fp16":
                a = _to_fp16(tl.load(cur + pm[:, None] * DP + cols[None, :]), sr)  # [M, BD]
                acc = tl.dot(a, c, acc, out_dtype=tl.float32)
            else:
                a = _round_tf32(tl.load(cur + pm[:, None] * DP + cols[None, :]))  # [M, BD]
                acc = tl.dot(a, c, acc, input_precision="tf32")
    elif FMA_CHAIN:  # the canonical chain spelled out (the interpreter's tl.dot is a matmul)
        for j in range(0, D):
            a = tl.load(cur + pm * DP + j)  # [M]
            c = tl.load(cb_ptr + (kb + kk) * DP + j)  # [BK]
            acc = tl.fma(a[:, None], c[None, :], acc)
    else:
        for d0 in range(0, DP, BD):
            cols = tl.multiple_of(d0, BD) + dd
            a = tl.load(cur + pm[:, None] * DP + cols[None, :])  # [M, BD]
            c = tl.load(cb_ptr + (kb + kk)[None, :] * DP + cols[:, None])  # [BD, BK]
            acc = tl.dot(a, c, acc, input_precision="ieee")
    return acc


@triton.jit
def _beam_chunk(cur, cb_ptr, cbhi_ptr, cn_ptr, lst_ptr, kb, kbeg, kreal, D, rn, valid, pb, sr, mult, sel_s,
                sel_f, BEAM: tl.constexpr, M: tl.constexpr, RPB: tl.constexpr, BM: tl.constexpr, PB: tl.constexpr,
                BK: tl.constexpr, DP: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, FAST: tl.constexpr,
                PROVE: tl.constexpr, FMA_CHAIN: tl.constexpr, PROPOSAL: tl.constexpr):
    """One chunk of codewords kb..kb+BK-1 merged into the M pairs' running lists (sel_s, sel_f) [M, NP] of
    :func:`_beam_level` (pair p: ||r||^2 rn [M], valid [M], its beam pb [M]; reductions along the dot's
    rows only): FAST: packed proposal keys (:func:`_topn_packed`; with B > 8 or lists of 32 a bitonic
    top-k of (key, id) as int64; fp16: the dot unscaled by mult = 2 / (s_r sc_l), powers of two, a [M, 1]
    tensor), else exact scores (:func:`_topn_merge`); ordered by (key or score, id). RPB > 1: the lists
    live in this program's list scratch lst_ptr ([2, M, NP] int32) between chunks, read here and written
    back (then a barrier), so they are not held in registers across the next chunk's MMA (in registers the
    levels kernel spilled 20-36 B on triton 3.6 and 3.9)."""
    INF: tl.constexpr = float("inf")
    kk = tl.arange(0, BK)
    sidx = tl.arange(0, NP)
    acc = _beam_chunk_dot(cur, cb_ptr, cbhi_ptr, kb, D, sr, M, BK, DP, BD, FAST, FMA_CHAIN, PROPOSAL)
    acc = tl.reshape(acc, [M, 1, BK])  # (the 3-d form of the reductions: the 2-d one spilled on 3.6 and 3.9)
    cn = tl.load(cn_ptr + kb + kk)
    code = kb - kbeg + kk  # [BK]
    if FAST and PROPOSAL == "fp16":  # 2 r.c = acc * 2 / (s_r sc_l): exact (a power of two)
        s = (cn[None, None, :] - acc * mult[:, :, None]) + rn[:, None, None]
    else:
        s = (cn[None, None, :] - 2.0 * acc) + rn[:, None, None]  # the C++ kernel's association
    ok = valid[:, None, None] & (code < kreal)[None, None, :]
    NSEL: tl.constexpr = NP if FAST and PROVE else BEAM
    if FAST:  # packed keys: the low log2(PB * BK) mantissa bits of the proposal score hold (beam, code)
        loc = pb[:, None, None] * BK + kk[None, None, :]  # [M, 1, BK]
        key = ((s.to(tl.int32, bitcast=True) & -(PB * BK)) | loc).to(tl.float32, bitcast=True)
        s = tl.where(ok, key, INF)
    else:
        s = tl.where(ok, s, INF)
        flat = pb[:, None, None] * kreal + code[None, None, :]  # [M, 1, BK]: beam rank, then code
    if RPB > 1:  # the pairs' running lists live in memory between chunks (not in registers across the MMA)
        pi = tl.arange(0, M)
        at = pi[:, None] * NP + sidx[None, :]
        sel_s = tl.load(lst_ptr + at).to(tl.float32, bitcast=True)
        sel_f = tl.load(lst_ptr + M * NP + at)
    if FAST and BK >= NP and (NSEL >= 32 or BEAM > 8):  # lists of 32 (B >= 14 or a window over 15), or B > 8:
        # a bitonic top-k of (key, id) as int64, the same order (on triton 3.6 at B 16 the NSEL min-extractions
        # per chunk spilled 628 B in the first kernel, 28 B in the levels kernel and 8 B without the proof;
        # with the top-k none at B 9-16, and 150-250 registers in place of 220-255, 2026-12-06)
        k64 = _key64(tl.reshape(s, [M, BK]), pb[:, None] * kreal + (kb - kbeg + kk)[None, :])
        both = tl.reshape(tl.join(_key64(sel_s, sel_f), ~tl.topk(~k64, NP)), [M, 2 * NP])
        sel_s, sel_f = _unkey64(~tl.topk(~both, NP))
        sel_f = tl.where(sel_s < INF, sel_f, 2147483647)
    elif FAST:
        sel_s, sel_f = _topn_packed(s, kb - kbeg, kreal, sel_s, sel_f, sidx, NSEL, PB, BK)
    else:
        sel_s, sel_f = _topn_merge(s, flat, sel_s, sel_f, sidx, NSEL)
    if RPB > 1:
        tl.store(lst_ptr + at, sel_s.to(tl.int32, bitcast=True))
        tl.store(lst_ptr + M * NP + at, sel_f)
        tl.debug_barrier()
    return sel_s, sel_f


@triton.jit
def _beam_level(cur, cb_ptr, cbhi_ptr, cn_ptr, stat_ptr, lst_ptr, rn_ptr, l, kbeg, kend, kreal, D, rn, valid,
                sr, mult, rlo_x, gamma, gamma_chk, BEAM: tl.constexpr, M: tl.constexpr, RPB: tl.constexpr,
                BM: tl.constexpr, PB: tl.constexpr, BP: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr,
                BD: tl.constexpr, NP: tl.constexpr, FAST: tl.constexpr, PROVE: tl.constexpr, FMA_CHAIN: tl.constexpr,
                PROPOSAL: tl.constexpr, NST: tl.constexpr):
    """One level's B best candidates of a tile of M (row, beam) pairs, RPB per row, packed densely: pair p =
    i * RPB + b is row i's beam b and row p of the slots (RB = M // RPB rows; BM >= RB, a power of two, rows
    RB.. are padding; RPB 1: BM = M); rn [M] the pair's ||r||^2 (0 for invalid pairs), valid [M].
    Returns (score [BM, BP], id = beam * kreal + code [BM, BP], unsure [BM]) in (score, beam rank, code)
    order, missing entries INF / BIG. The score of candidate (b, k) is ``fl(fl(cn_k - 2 dot) + rn_b)``, dot
    the canonical FMA chain.

    The chunk loop keeps each pair's own NP best (:func:`_beam_chunk`; RPB > 1: in lst_ptr, this program's
    list scratch); after it they are read in the rows' layout [BM, PB, NP] and merged by (key or score,
    id): a row's NP best are among the NP best of its pairs, so the rows' lists are those of a search over
    all the row's candidates at once. rn_ptr (RPB > 1): the pairs' ||r||^2 bits as the levels kernel stored
    them (int32, pair order), for the window's re-score and the bound.

    FAST and PROVE: the proposal pass (PROPOSAL "fp16": fp16(r s_r) with s_r (sr, broadcast to the GEMM's
    rows) a power of two per row or per tile, mult ([M, 1]) = 2 / (s_r sc_l) unscaling the dot, rlo_x
    (to [BM]) the fp16 subnormals' part of the bound on ||r - r_hi||; "tf32": sr and mult unused, rlo_x
    0) keeps the row's NP smallest packed keys (over all its beams; the proposal score with its low
    log2(PB * BK) mantissa bits replaced by the chunk-local b * BK + code, ordered by (key, id):
    :func:`_topn_packed`); the first NP - 1 (the window) are re-scored with the canonical chain (fp16: in
    rows whose first B + 1 keys are not provably in the exact order only) and the B best of them taken by
    (exact score, id); the row is unsure unless the NP-th key minus its packing
    error and the row's error bound is above the B-th exact score. FAST without PROVE: the B best keys as
    they are (NP = BP; near-ties in key order). Not FAST: exact, every score by the canonical chain,
    (score, id) order (:func:`_topn_merge`). The stat row of level l: NST floats from stat_ptr + NST * l,
    (max||c_hi||, max||c_lo||, max||c||^2, ...)."""
    INF: tl.constexpr = float("inf")
    BIG: tl.constexpr = 2147483647
    RB: tl.constexpr = M // RPB
    mi = tl.arange(0, BM)
    pi = tl.arange(0, M)
    pidx = tl.arange(0, PB)
    bidx = tl.arange(0, BP)
    sidx = tl.arange(0, NP)
    pb = pi % RPB  # the pair's beam
    sel_s = tl.full([M, NP], INF, tl.float32)
    sel_f = tl.full([M, NP], BIG, tl.int32)
    if RPB > 1:
        at = pi[:, None] * NP + sidx[None, :]
        tl.store(lst_ptr + at, sel_s.to(tl.int32, bitcast=True))
        tl.store(lst_ptr + M * NP + at, sel_f)
        tl.debug_barrier()
    # The chunk loops. FAST: disable_licm (hoisted out of the loop, the packed keys' candidate numbers and
    # masks stay live in registers across it: 255 registers and spills at BK 64 / 128 on 3.6 and 3.9);
    # not FAST: a plain loop (with disable_licm the exact kernels went to 128 registers and spilled 84-108 B
    # on both versions).
    if FAST:
        for kb in tl.range(kbeg, kend, BK, disable_licm=True):
            sel_s, sel_f = _beam_chunk(cur, cb_ptr, cbhi_ptr, cn_ptr, lst_ptr, kb, kbeg, kreal, D, rn, valid, pb,
                                       sr, mult, sel_s, sel_f, BEAM, M, RPB, BM, PB, BK, DP, BD, NP, FAST, PROVE,
                                       FMA_CHAIN, PROPOSAL)
    else:
        for kb in range(kbeg, kend, BK):
            sel_s, sel_f = _beam_chunk(cur, cb_ptr, cbhi_ptr, cn_ptr, lst_ptr, kb, kbeg, kreal, D, rn, valid, pb,
                                       sr, mult, sel_s, sel_f, BEAM, M, RPB, BM, PB, BK, DP, BD, NP, FAST, PROVE,
                                       FMA_CHAIN, PROPOSAL)
    if RPB > 1:  # the pairs' lists to the rows' layout (through memory), merged per row; the row's largest ||r||^2
        NSEL: tl.constexpr = NP if FAST and PROVE else BEAM
        rn_row = tl.max(tl.load(rn_ptr + mi[:, None] * RPB + pidx[None, :], mask=(mi < RB)[:, None] &
                                (pidx < RPB)[None, :], other=0).to(tl.float32, bitcast=True), 1)  # [BM]
        at3 = (mi[:, None, None] * RPB + pidx[None, :, None]) * NP + sidx[None, None, :]  # [BM, PB, NP]
        m3 = ((mi < RB)[:, None, None] & (pidx < RPB)[None, :, None]) & (sidx < NSEL)[None, None, :]
        s3 = tl.load(lst_ptr + at3, mask=m3, other=0x7F800000).to(tl.float32, bitcast=True)  # (INF's bits)
        f3 = tl.load(lst_ptr + M * NP + at3, mask=m3, other=BIG)
        sel_s, sel_f = _topn_merge(s3, f3, tl.full([BM, NP], INF, tl.float32), tl.full([BM, NP], BIG, tl.int32),
                                   sidx, NSEL)
    else:
        rn_row = tl.where(valid, rn, 0.0)
    unsure = mi < 0  # none
    sep = mi < 0  # rows whose window re-score was skipped (their keys prove the order): none
    if FAST and PROVE:
        # error bound of every proposal score against its canonical value, for the row's largest ||r||
        # (the bound grows with ||r||; invalid pairs have rn 0): the proposal dot (operands with 11-bit
        # significands, products exact in float32: ||r_lo|| <= 2^-11 ||r|| + rlo_x (fp16: the subnormals'
        # half spacing 2^-24 / s_r per column; tf32: 0), c_lo known; gamma: float32 accumulation; fp16:
        # the unscaling is a power of two), the canonical chain's own error (gamma_chk), and the roundings
        # of cn - 2 dot and of + rn on both sides and of the tests below.
        chimax = tl.load(stat_ptr + NST * l)
        clomax = tl.load(stat_ptr + NST * l + 1)
        cnmax = tl.load(stat_ptr + NST * l + 2)
        cmax = chimax + clomax
        r_n = tl.sqrt(rn_row)
        e_p = (2.0 * (((2.0 ** -11) * r_n + rlo_x) * chimax + r_n * clomax + gamma * r_n * chimax)
               + 2.0 * gamma_chk * r_n * cmax + (2.0 ** -21) * (cnmax + 2.0 * r_n * cmax + rn_row))
        e_row = e_p * 1.0625 + 1e-30
        # The packing error: a key and its proposal score share sign, exponent and all but the low
        # P = log2(PB * BK) mantissa bits, so |key - s| < 2^P ulp <= 2^(P-23) |key| (+ 2^(P-149) for
        # subnormals, inside e_row's 1e-30): a candidate's exact score lies in [key - pk - e_row, key + pk +
        # e_row], pk = 2^(P-22) |key| (2^(P-22): room for the rounding of these tests).
        PKF: tl.constexpr = PB * BK * 2.0 ** -22  # 2^(P-22)
        # Rows whose first B + 1 keys have pairwise disjoint intervals: their key order is the exact order
        # (strictly: no exact ties) and every other candidate is worse than the B-th, so the first B keys
        # are the exact answer and their window needs no re-score (its loads are masked off).
        # (fp16 only: with the tf32 proposal the test spilled 16-20 B on triton 3.6; tf32 re-scores every row)
        if PROPOSAL == "fp16":
            sep = mi >= 0
            k_i = tl.sum(tl.where(sidx[None, :] == 0, sel_s, 0.0), 1)
            prev_hi = (k_i + PKF * tl.abs(k_i)) + e_row
            for i in tl.static_range(1, BEAM + 1):
                k_i = tl.sum(tl.where(sidx[None, :] == i, sel_s, 0.0), 1)
                pk_i = PKF * tl.abs(k_i)
                sep = sep & (((k_i - pk_i) - e_row) > prev_hi)
                prev_hi = (k_i + pk_i) + e_row
        nxt_v = tl.sum(tl.where(sidx[None, :] == NP - 1, sel_s, 0.0), 1)  # the NP-th packed key
        thr = tl.where(nxt_v < INF, (nxt_v - PKF * tl.abs(nxt_v)) - e_row, float("nan"))
        # exact re-score of the other rows' window (the first NP - 1 proposals): the canonical chain
        win = (sidx[None, :] < NP - 1) & (sel_f < BIG)  # [BM, NP]
        wb = tl.where(win, sel_f // kreal, 0)
        wc = tl.where(win, sel_f % kreal, 0)
        wsrc = (mi[:, None] * RPB + wb) * DP
        wcw = (kbeg + wc) * DP
        # 16-byte loads of 4 columns, then their 4 FMAs in column order: the same chain (columns D..DP-1
        # of the slots and the packed codebook are zeros: fma(0, 0, acc) == acc)
        dot = tl.zeros([BM, NP], dtype=tl.float32)
        j4 = tl.arange(0, 4)
        wre = win & ~sep[:, None]  # the window entries re-scored (none in separated rows)
        w3 = wre[:, :, None]
        for j0 in range(0, D, 4):
            j0 = tl.multiple_of(j0, 4)
            if RPB > 1:  # the window's pairs' residuals
                a4 = tl.load(cur + (wsrc[:, :, None] + j0) + j4[None, None, :], mask=w3, other=0.0)  # [BM, NP, 4]
            else:  # one pair per row: the row's one residual, loaded once and broadcast (not gathered [BM, NP,
                # 4]: at B 16 with 128 rows the first kernel's spill fell from 1.2 KB to 740 B on 3.6 with this)
                a4 = tl.load(cur + (mi[:, None] * DP + j0) + j4[None, :], mask=~sep[:, None], other=0.0)
                a4 = tl.broadcast_to(a4[:, None, :], [BM, NP, 4])
            c4 = tl.load(cb_ptr + (wcw[:, :, None] + j0) + j4[None, None, :], mask=w3, other=0.0)
            dot = _fma4(dot, a4, c4, BM, NP)
        if RPB > 1:
            rn_w = tl.load(rn_ptr + mi[:, None] * RPB + wb, mask=wre, other=0).to(tl.float32, bitcast=True)
        else:
            rn_w = rn[:, None]
        cn_w = tl.load(cn_ptr + kbeg + wc, mask=wre, other=0.0)
        ex = tl.where(sep[:, None], sel_s, (cn_w - 2.0 * dot) + rn_w)  # (separated rows: the keys' order)
        ex = tl.where(win, ex, INF)
        if RPB == 1 and NP >= 32:  # (the first kernel's [rows, 32] windows: a bitonic top-k of (score, id), the
            # same order (scores are never -0); B extractions spilled 52-128 B at B 14 on triton 3.6, 2026-12-06)
            top_s, top_f = _unkey64(~tl.topk(~_key64(ex, sel_f), BP))
            top_s = tl.where(bidx[None, :] < BEAM, top_s, INF)
            top_f = tl.where(top_s < INF, top_f, BIG)
        else:
            top_s = tl.full([BM, BP], INF, tl.float32)
            top_f = tl.full([BM, BP], BIG, tl.int32)
            top_s, top_f = _topn_merge(ex[:, None, :], sel_f[:, None, :], top_s, top_f, bidx, BEAM)
        # every candidate outside the window (key >= nxt_v, the (key, id) order) has an exact score >= thr:
        # the row is proven when that is above the B-th exact score (strict: ties redo)
        s_b = tl.sum(tl.where(bidx[None, :] == BEAM - 1, top_s, 0.0), 1)  # the B-th exact score
        unsure = ~sep & (thr <= s_b)
        sel_s = top_s
        sel_f = top_f
    return sel_s, sel_f, unsure, sep


@triton.jit
def _rq_beam_first_kernel(
    x_ptr, cb_ptr, cbhi_ptr, cn_ptr, poff_ptr, kreal_ptr, stat_ptr, top_ptr, flag_ptr, scratch_ptr, redo_ptr,
    fallback_ptr, N, D, stride_xm, stride_xd, gamma, gamma_chk,
    BEAM: tl.constexpr, BP: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr, BD: tl.constexpr,
    BU: tl.constexpr, FAST: tl.constexpr, REDO: tl.constexpr, PROVE: tl.constexpr, NP: tl.constexpr,
    COUNT_FALLBACK: tl.constexpr, FMA_CHAIN: tl.constexpr, PROPOSAL: tl.constexpr,
):
    """Level 0 of the beam search: every row has one beam (x itself), so a tile is BM rows of one pair
    each (the same M = BM rows of the dot as the later levels' M pairs). Writes each
    row's B best codes of x in (score, code) order to top_ptr [N, BEAM] (-1 where K_0 < B), with the
    scores, proof and exact re-score of :func:`_beam_level` (the same bits as level 0 of the previous
    fused kernel: ``||x||^2`` is the same [pairs, BU] slice sum). FAST and PROVE: flag_ptr[row]
    = 1 for rows the window cannot prove (the levels kernel appends them to the redo list). REDO
    (with FAST off): the exact pass over the rows listed in redo_ptr. FAST with PROPOSAL "fp16": the
    GEMM rounds fp16(x s_r) from slot 0 on the way to the MMA, s_r = 2^e_r per row from ||x||
    (:func:`_beam_fp16_scales`)."""
    INF: tl.constexpr = float("inf")
    FP16: tl.constexpr = FAST and PROPOSAL == "fp16"
    NST: tl.constexpr = 5 if PROPOSAL == "fp16" else 3  # floats per level in stat_ptr
    SPAN_U: tl.constexpr = DP if DP <= 256 else BU  # the residual passes: slices unrolled up to DP 256, else a loop
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cur = scratch_ptr + pid.to(tl.int64) * (2 * BM * DP)  # the levels kernel's slot 0
    mi = tl.arange(0, BM)
    uu = tl.arange(0, BU)
    bidx = tl.arange(0, BP)
    kend = tl.load(poff_ptr + 1)  # level 0 starts at row 0 of the packed codebook
    kreal = tl.load(kreal_ptr)
    n_rows = N
    if REDO:
        n_rows = tl.load(redo_ptr)
    for tile in range(pid, tl.cdiv(n_rows, BM), nprog):
        rows = tile * BM + mi
        rmask = rows < n_rows
        if REDO:
            rows = tl.load(redo_ptr + 1 + rows, mask=rmask, other=0)
        rows64 = rows.to(tl.int64)
        tl.debug_barrier()  # the previous tile's reads of the slots are done
        # x into the slots and ||x||^2, as [BM, BU] slices (the levels' [pairs, BU] form)
        sq = tl.zeros([BM, BU], dtype=tl.float32)
        for ub in range(0, DP, SPAN_U):
            for u0 in tl.static_range(0, SPAN_U, BU):
                cu = ub + u0 + uu
                xmask = rmask[:, None] & (cu < D)[None, :]
                xv = tl.load(x_ptr + rows64[:, None] * stride_xm + cu[None, :] * stride_xd, mask=xmask,
                             other=0.0).to(tl.float32)
                at = mi[:, None] * DP + cu[None, :]
                tl.store(cur + at, xv)
                sq += xv * xv
        rn = tl.sum(sq, 1)  # [BM]
        if FP16:  # one scale per row (the GEMM rounds fp16(x s_r) on the way from slot 0)
            sr, mult, rlo_x = _beam_fp16_scales(rn, tl.load(stat_ptr + 3).to(tl.int32), DP)
            sr = sr[:, None]
            mult = mult[:, None]
        else:  # (placeholders: unused)
            sr = rn
            mult = rn
            rlo_x = tl.zeros([BM], dtype=tl.float32)
        tl.debug_barrier()
        valid = rows >= 0  # [BM]
        # (one pair per row: M = BM rows, RPB 1, no list scratch or stored norms: flag_ptr stands in for both)
        sel_s, sel_f, unsure, sep = _beam_level(cur, cb_ptr, cbhi_ptr, cn_ptr, stat_ptr, flag_ptr, flag_ptr, 0, 0,
                                                kend, kreal, D, rn, valid, sr, mult, rlo_x, gamma, gamma_chk, BEAM, BM,
                                                1, BM, 1, BP, BK, DP, BD, NP, FAST, PROVE, FMA_CHAIN, PROPOSAL, NST)
        code = tl.where(sel_s < INF, sel_f, -1)  # beam 0 only: the id is the code
        tl.store(top_ptr + rows64[:, None] * BEAM + bidx[None, :], code, mask=rmask[:, None] & (bidx < BEAM)[None, :])
        if FAST and PROVE:
            unsure = unsure & rmask
            tl.store(flag_ptr + rows, unsure.to(tl.int32), mask=rmask)
            if COUNT_FALLBACK:
                tl.atomic_add(fallback_ptr, tl.sum(unsure.to(tl.int32), 0))
                tl.atomic_add(fallback_ptr + 2, tl.sum((sep & rmask).to(tl.int32), 0))


@triton.jit
def _rq_beam_kernel(
    x_ptr, cb_ptr, cbhi_ptr, cn_ptr, poff_ptr, kreal_ptr, stat_ptr, top_ptr, flag_ptr,
    q_ptr, dist_ptr, code_ptr, scratch_ptr, path_ptr, lst_ptr, redo_ptr, fallback_ptr,
    N, D, L, stride_xm, stride_xd, gamma, gamma_chk,
    BEAM: tl.constexpr, BP: tl.constexpr, M: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr,
    LP: tl.constexpr, BD: tl.constexpr, BU: tl.constexpr, FAST: tl.constexpr, REDO: tl.constexpr,
    PROVE: tl.constexpr, NP: tl.constexpr, COUNT_FALLBACK: tl.constexpr, FMA_CHAIN: tl.constexpr,
    PROPOSAL: tl.constexpr,
):
    """Beam search, levels 1..L-1 (level 0: :func:`_rq_beam_first_kernel`, whose B codes per row,
    top_ptr [N, BEAM], start every row's beams). Persistent programs; a tile is M (row, beam) pairs, the
    rows of the dot, packed densely: RB = M // BEAM rows of BEAM pairs each, pair p = row i * BEAM + beam b
    (M 128 at B 5: 25 rows, 3 padding pairs; a row-major [rows, next_pow2(B)] tile would leave 3/8 of the
    MMA, the operand streaming and the epilogue to beams that do not exist). The rows' own values (lists,
    proof, outputs) use a [BM, ...] layout, BM = next_pow2(RB) (rows RB.. masked); the pairs' lists reach it
    through memory (:func:`_beam_level`). The pairs' residuals live in this program's scratch slots [M, DP]
    (L2; slots 0 and 1, one read, the other written, swapped per level), never in registers: the score dot
    runs over D in BD steps, the new residuals (parent's residual minus the chosen codeword, a gather by
    row index; x minus the codeword after level 0) and their norms in [M, BU] slices. Only valid pairs
    (fewer than B where K_0 < B, or K_0 K_1 ... < B) are read and written, after the last level only the
    best one (its distance and the quantized row); an invalid pair's slot rows keep stale finite values,
    which its masked scores ignore. The back-pointers (parent, code, ||r||^2 bits per level and pair)
    are in path_ptr: written by rows, read back by pairs.

    The score of candidate (beam b, code k) is ``fl(fl(cn_k - 2 dot) + rn_b)`` (rn_b = ||r_b||^2 as
    this kernel sums it, dot the canonical FMA chain), the B best of a row's B*K candidates kept in
    (score, beam rank, code) order (:func:`_beam_level`).

    FAST=False: exact, every candidate scored by the FMA chain (``tl.dot`` ieee on the GPU; spelled
    out with ``tl.fma`` under FMA_CHAIN). REDO (with FAST off): the same over the rows listed in
    redo_ptr (N read from redo_ptr[0]). FAST: a proposal pass: per chunk of BK codewords a GEMM of
    the pairs' residuals with the codebook (fp16 scaled or tf32: PROPOSAL, below), and the NP smallest
    packed proposal keys of the row are kept (over all its beams: each pair's NP, then merged per row;
    the chunk-local (beam, code) in the low log2(BP * BK) mantissa bits). PROVE: the first NP - 1 (the
    window) are re-scored exactly (the canonical FMA chain over d, the same bits as the exact pass; fp16:
    not in rows whose first B + 1 keys are apart by more than their error bounds, whose key order is
    then the exact one), the B best of them taken; the row is proven when the NP-th key minus its packing error and the row's error bound is
    above the B-th exact score (then every candidate outside the window is worse than all B chosen,
    ties included); rows unproven here or at level 0 (flag_ptr) are appended to the redo list (the
    exact passes re-encode them). Without PROVE (precision="fast"): the B best keys as they are
    (NP = BP). PROPOSAL "fp16": the GEMM's operands are fp16(c sc_l) (the host's) and fp16(r s_r),
    rounded from the float32 slot on the way to the MMA (tf32: its rounding, the same way), with powers
    of two sc_l per level and s per tile and level, shared by its rows and beams, from the
    largest of their ||r|| (:func:`_beam_fp16_scales`); the proof's ||r_lo|| is bounded by
    2^-11 ||r|| + DP 2^-24 / s (fp16 subnormals: a row ~2^28 below its tile's largest is redone)."""
    INF: tl.constexpr = float("inf")
    RB: tl.constexpr = M // BEAM  # rows per tile (pairs RB * BEAM.. are padding)
    FP16: tl.constexpr = FAST and PROPOSAL == "fp16"
    NST: tl.constexpr = 5 if PROPOSAL == "fp16" else 3  # floats per level in stat_ptr
    SPAN_U: tl.constexpr = DP if DP <= 256 else BU  # the residual passes: slices unrolled up to DP 256, else a loop
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    slot_a = scratch_ptr + pid.to(tl.int64) * (2 * M * DP)
    slot_b = slot_a + M * DP
    pp = path_ptr + pid.to(tl.int64) * (L * 3 * M)  # per level and pair: parent, code, distance (backtracked)
    lst = lst_ptr + pid.to(tl.int64) * (2 * M * NP)  # the pairs' candidate lists on their way to the rows
    mi = tl.arange(0, BM)
    bidx = tl.arange(0, BP)
    uu = tl.arange(0, BU)
    pi = tl.arange(0, M)  # pair pi: row pi // BEAM of the tile, its beam pi % BEAM
    prow = pi // BEAM
    pbeam = pi % BEAM
    at_r = mi[:, None] * BEAM + bidx[None, :]  # [BM, BP]: a row's beams as pairs
    am_r = (mi < RB)[:, None] & (bidx < BEAM)[None, :]
    n_rows = N
    if REDO:
        n_rows = tl.load(redo_ptr)
    for tile in range(pid, tl.cdiv(n_rows, RB), nprog):
        rows = tile * RB + mi
        rmask = (mi < RB) & (rows < n_rows)
        prows = tile * RB + prow
        pmask = (prow < RB) & (prows < n_rows)
        if REDO:
            rows = tl.load(redo_ptr + 1 + rows, mask=rmask, other=0)
            prows = tl.load(redo_ptr + 1 + prows, mask=pmask, other=0)
        rows64 = rows.to(tl.int64)
        prows64 = prows.to(tl.int64)
        cur = slot_a
        nxt = slot_b
        tl.debug_barrier()  # the previous tile's reads of the slots are done
        # level 0's choice (the first kernel): beam b = x - c_0[code_b], parent 0
        code = tl.load(top_ptr + prows64 * BEAM + pbeam, mask=pmask, other=-1)
        valid = code >= 0
        code = tl.where(valid, code, 0)
        parent = tl.zeros([M], dtype=tl.int32)
        cw = code.to(tl.int64) * DP  # level 0 starts at row 0 of the packed codebook
        # the residuals of the valid pairs (after the last level only the best one's: its distance and q)
        more = (tl.zeros([M], dtype=tl.int32) + L) > 1  # (a tensor: L == 1 is specialised to a constant)
        v2 = (valid & ((pbeam == 0) | more))[:, None]
        sq = tl.zeros([M, BU], dtype=tl.float32)
        for ub in range(0, DP, SPAN_U):
            for u0 in tl.static_range(0, SPAN_U, BU):
                cu = ub + u0 + uu
                m2 = v2 & (cu < D)[None, :]  # (pairs not written: r = 0, ||r||^2 = 0)
                xv = tl.load(x_ptr + prows64[:, None] * stride_xm + cu[None, :] * stride_xd, mask=m2, other=0.0)
                rv = xv.to(tl.float32) - tl.load(cb_ptr + cw[:, None] + cu[None, :], mask=v2, other=0.0)
                tl.store(cur + pi[:, None] * DP + cu[None, :], rv, mask=v2)
                sq += rv * rv
        rn = tl.sum(sq, 1)  # [M]
        tl.store(pp + pi, parent)
        tl.store(pp + M + pi, code)
        tl.store(pp + 2 * M + pi, rn.to(tl.int32, bitcast=True))
        if FAST and PROVE:
            redo = tl.load(flag_ptr + rows, mask=rmask, other=0)  # unproven at level 0
        else:
            redo = tl.zeros([BM], dtype=tl.int32)
        tl.debug_barrier()  # the new residuals are visible to every thread
        for l in range(1, L):
            kbeg = tl.multiple_of(tl.load(poff_ptr + l), BK)
            kend = tl.load(poff_ptr + l + 1)
            kreal = tl.load(kreal_ptr + l)
            if FP16:  # one scale per tile and level (the GEMM rounds fp16(r s) on the way from the slot). Per
                # row (a [M, 1] broadcast in the operand's layout): 255 registers and a 20-byte spill on 3.9. A
                # scalar mult made triton 3.6 emit a degenerate HGMMA (64x8x16, RZ operands) in place of the
                # proposal's MMA: a [M, 1] tensor keeps the real one (sm_90 SASS, 2026-12-05).
                sr, mult, rlo_x = _beam_fp16_scales(tl.max(rn, 0), tl.load(stat_ptr + NST * l + 3).to(tl.int32), DP)
                mult = mult + tl.zeros([M, 1], dtype=tl.float32)
                rlo_x = rlo_x + tl.zeros([BM], dtype=tl.float32)
            else:  # (placeholders: unused)
                sr = rn
                mult = rn
                rlo_x = tl.zeros([BM], dtype=tl.float32)
            sel_s, sel_f, unsure, sep = _beam_level(cur, cb_ptr, cbhi_ptr, cn_ptr, stat_ptr, lst,
                                                    pp + (3 * l - 1) * M, l, kbeg, kend, kreal, D, rn, valid, sr, mult,
                                                    rlo_x, gamma, gamma_chk, BEAM, M, BEAM, BM, BP, BP, BK, DP, BD, NP,
                                                    FAST, PROVE, FMA_CHAIN, PROPOSAL, NST)
            if FAST and PROVE:
                unsure = unsure & rmask
                redo = redo | unsure.to(tl.int32)
                if COUNT_FALLBACK:
                    tl.atomic_add(fallback_ptr, tl.sum(unsure.to(tl.int32), 0))
                    tl.atomic_add(fallback_ptr + 2, tl.sum((sep & rmask).to(tl.int32), 0))
            # back-pointers (in memory, not registers: the paths are followed back at the end), from the rows'
            # layout to the pairs' (code -1: no such candidate)
            ok = sel_s < INF
            tl.store(pp + (3 * l) * M + at_r, tl.where(ok, sel_f // kreal, 0), mask=am_r)
            tl.store(pp + (3 * l + 1) * M + at_r, tl.where(ok, sel_f % kreal, -1), mask=am_r)
            tl.debug_barrier()  # the dot's reads of the current slot are done (the next slot is free)
            parent = tl.load(pp + (3 * l) * M + pi, mask=prow < RB, other=0)
            code = tl.load(pp + (3 * l + 1) * M + pi, mask=prow < RB, other=-1)
            valid = code >= 0
            code = tl.where(valid, code, 0)
            src = prow * BEAM + parent  # [M]: the parent's row in the current slot
            cw = (kbeg + code).to(tl.int64) * DP
            # valid pairs only (the others' loads and stores are masked off); after the last level only
            # the best beam's residual is needed (its distance and q), and no tf32 copy
            more = (tl.zeros([M], dtype=tl.int32) + l) < L - 1
            v2 = (valid & ((pbeam == 0) | more))[:, None]
            sq = tl.zeros([M, BU], dtype=tl.float32)
            for ub in range(0, DP, SPAN_U):
                for u0 in tl.static_range(0, SPAN_U, BU):
                    cu = ub + u0 + uu
                    rv = tl.load(cur + src[:, None] * DP + cu[None, :], mask=v2, other=0.0) - tl.load(
                        cb_ptr + cw[:, None] + cu[None, :], mask=v2, other=0.0)
                    tl.store(nxt + pi[:, None] * DP + cu[None, :], rv, mask=v2)
                    sq += rv * rv
            rn = tl.sum(sq, 1)
            tl.store(pp + (3 * l + 2) * M + pi, rn.to(tl.int32, bitcast=True))
            tl.debug_barrier()  # the new residuals are visible to every thread
            tmp = cur
            cur = nxt
            nxt = tmp
        # the best beam (rank 0), followed back from the last level
        b = tl.zeros([BM], dtype=tl.int32)
        for i in range(0, L):
            l = L - 1 - i
            at = pp + mi * BEAM + b
            c0 = tl.load(at + (3 * l + 1) * M, mask=rmask, other=0)
            d0 = tl.load(at + (3 * l + 2) * M, mask=rmask, other=0).to(tl.float32, bitcast=True)
            b = tl.load(at + (3 * l) * M, mask=rmask, other=0)
            tl.store(code_ptr + rows64 * L + l, c0, mask=rmask)
            tl.store(dist_ptr + rows64 * L + l, d0, mask=rmask)
        for ub in range(0, DP, SPAN_U):
            for u0 in tl.static_range(0, SPAN_U, BU):
                cu = ub + u0 + uu
                xmask = rmask[:, None] & (cu < D)[None, :]
                xv = tl.load(x_ptr + rows64[:, None] * stride_xm + cu[None, :] * stride_xd, mask=xmask, other=0.0)
                r0 = tl.load(cur + (mi * BEAM)[:, None] * DP + cu[None, :], mask=xmask, other=0.0)
                tl.store(q_ptr + rows64[:, None] * D + cu[None, :], xv.to(tl.float32) - r0, mask=xmask)
        if FAST and PROVE:
            _append_redo(redo, rows, redo_ptr, fallback_ptr, COUNT_FALLBACK)


# --------------------------------------------------------------------------- host side
def _next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


class _Tiles(NamedTuple):
    """One launch's tiles: rows per program, codewords per chunk, D-step of the MMA / re-check /
    exact FMA dot, D-slice of the passes over the residual, warps, pipeline stages, and the
    register limit given to ptxas (``maxnreg``; None: ptxas chooses)."""

    bm: int
    bk: int
    bd: int
    bu: int
    nw: int
    ns: int
    mr: int | None = None


def _greedy_config(dp: int, n: int, resident: bool = False, quantized: bool = True) -> tuple[_Tiles, _Tiles]:
    """Tiles of the greedy kernel's proposal pass (fp16 or tf32) and of its exact pass (fast=False,
    and the redo of unproven rows); the same BLOCK_M (the scratch slots).

    BLOCK_M = 128 with 8 warps: the wgmma layout is [8, 1] warps (m64 per warpgroup, n = BLOCK_K), so
    each row's reductions stay inside one warp (GPU-NOTES.md, 2026-12-04). The tf32 pass is a plain
    pipelined GEMM over D per chunk of BLOCK_K codewords (A from the scratch slot, B from the
    codebook, both by 16-byte cp.async): shared memory num_stages * (BM + BK) * BD * 4 = 48 KB
    whatever D (tf32; fp16 half: 24 KB; fp16 with BD 32 spills 20 B on 3.6, 2026-12-05). Beyond DP 256 the
    passes over the residual loop over their BU-wide slices instead of unrolling them (2026-12-05: unrolled,
    the fp16 pass spilled 64 / 68 B at D 512 on 3.6, 248 / 268 B at D 1024 on 3.6 and 1.9 KB on 3.9, the
    exact pass with BU 32 at D 512 32 B on 3.6); with BU 32 (proposal, tier) and 64 (exact) there: no
    spill at D 512 and 1024 on 3.6 and 3.9 (fp16 228 / 220 registers, tier 229 / 241, tf32 222 / 221,
    exact 206 / 218). Registers and spills checked by compiling for sm_90 on triton 3.6 and the installed
    one (tests/test_sm90_compile.py, D 256 and 1024): BD 32 or BU 32 make the tf32 pass spill on 3.6 at
    D 256, BU < 64 the exact pass at D = 64 (2026-12-04).

    The exact pass's register limit (2026-12-05, seventh session; sm_90 compiles of every DP from 16 to 1024,
    with and without the quantized rows, redo and whole pass): left to itself, ptxas 3.6 often settles on 128
    registers and spills (the k-means assignment's redo, ``quantized=False``, at DP 64-256: 16-24 B; the
    encode's redo at DP 16 / 32: 4-8 B); ``maxnreg=255`` makes it allocate freely there (157-216 registers,
    no spill on 3.6 or 3.9), while at DP >= 64 with the quantized rows the same limit spills (4-84 B) and
    ptxas's own choice does not. So: 255 without the quantized rows or at DP <= 32, else ptxas's choice.
    With the quantized rows at DP 64 / 128 the whole exact pass (fast=False) spilled 36-60 B on 3.6 with 3
    stages whatever the limit; 2 stages spill neither it nor the redo on either version
    (tests/test_sm90_compile.py compiles these passes)."""
    if _INTERPRET:  # the interpreter pays per program and per loop step: big tiles, few steps
        bm = max(16, min(128, _next_pow2(max(n, 1))))
        t = _Tiles(bm, 64, dp, dp, 4, 1)
        return t, t
    # BU: 16 up to DP 256 (unrolled slices), 32 beyond (a loop over the slices; the exact pass 64: with 32 it
    # spills on 3.6). resident A (fp16, DP <= 256): 64 KB of A + 2 stages x 32 KB of codebook chunk (BK 64)
    bu = 16 if dp <= 256 else 32
    return (_Tiles(128, 64, 16, bu, 8, 2) if resident else _Tiles(128, 128, 16, bu, 8, 3),
            _Tiles(128, 64, 16, dp if dp <= 64 else (32 if dp <= 256 else 64), 8,  # exact: BU 16 at D 64 spills
                   2 if quantized and 64 <= dp <= 128 else 3, _EXACT_MAXNREG if not quantized or dp <= 32 else None))


class _BeamTiles(NamedTuple):
    bm: int  # rows per tile; x BP: the (row, beam) pairs, the rows of the dot
    np: int  # the proposal's list per row (NP): it re-scores NP - 1 (the window)
    bk: int  # BLOCK_K of the proposal pass
    bk_exact: int  # BLOCK_K of the exact kernels (fast=False, and the redo)
    nw: int
    ns: int  # pipeline stages of the proposal pass
    ns_exact: int


def _beam_config(beam_width: int, beam_window: int | None = None) -> _BeamTiles:
    """The beam kernels' default tiles (the interpreter's where TRITON_INTERPRET=1). BU (and BM, BP, warps)
    must be the same in every pass: ||r||^2 is a tl.sum over BU-wide slices, and the redone rows are bit
    for bit the exact kernel's."""
    bp = _next_pow2(beam_width)
    np_win = _next_pow2(max(int(beam_window or _next_pow2(beam_width + 3) - 1), beam_width) + 1)
    # (row, beam) pairs per tile: 128 on the GPU; 64 with lists of 16 or more (beam_width > 5 or a window
    # over 7): at 128 pairs the proposal spilled 4-12 B at B 8 and the exact first kernel 68-72 B at B 12-16
    # on triton 3.6; at 64 (and the exact BLOCK_K below) none at B 6-16 on 3.6 or 3.9, 2026-12-06
    bm = max(1, (64 if _INTERPRET or max(np_win, bp) >= 16 else 128) // bp)
    # BLOCK_K: the proposal pass 128 (both kernels: A re-read twice per level at K 256, not 8 times;
    # its packed-key epilogue is one reduction per extraction), the exact kernel (fast=False, and the
    # redo tier) 32 with 2 stages on the GPU: no spills on triton 3.6 or 3.9 with BU 16
    # (tests/test_sm90_compile.py; with the dense pair tiles BK 64 / 3 stages spilled 4-12 B on 3.6 and
    # left a 16-48 B stack on 3.9), 16 where BP is 16 (B > 8: BK 32 spilled 16-40 B)
    if _INTERPRET:
        return _BeamTiles(bm, np_win, 32, 32, 4, 1, 1)
    return _BeamTiles(bm, np_win, 128, 32 if bp < 16 else 16, 8, 3, 2)


def _round_tf32_host(c: torch.Tensor) -> torch.Tensor:
    bits = c.contiguous().view(torch.int32)
    hi = ((bits + 0x1000) & -8192).view(torch.float32)
    return torch.where(torch.isfinite(hi), hi, (bits & -8192).view(torch.float32))


def _tf32_stats(cb: torch.Tensor, cn: torch.Tensor, dst: torch.Tensor, ks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The padded codebook rounded to tf32 (the fast passes' MMA operand) and, per level, the
    error bound's codebook figures [L, 3]: max ||c_hi||, max ||c - c_hi||, max ||c||^2."""
    levels = len(ks)
    cbhi = _round_tf32_host(cb)
    lvl = torch.repeat_interleave(torch.arange(levels, device=cb.device), torch.tensor(ks, device=cb.device))
    real_hi = cbhi[dst]
    real_lo = cb[dst] - real_hi
    per_row = torch.stack([real_hi.norm(dim=1), real_lo.norm(dim=1), cn[dst]])  # [3, sum_k]
    stat = torch.zeros((3, levels), dtype=torch.float32, device=cb.device)
    stat.scatter_reduce_(1, lvl[None, :].expand(3, -1), per_row, reduce="amax", include_self=True)
    return cbhi, stat.t().contiguous()  # [L, 3]


def _fp16_stats(cb: torch.Tensor, cn: torch.Tensor, dst: torch.Tensor,
                ks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy fp16 proposal's codebook: per level l a power of two sc_l = 2^ec_l with
    max|c * sc_l| < 2^15 (ec_l = 14 - floor(log2 max|c|), clamped to [-100, 100]: a zero level gets
    100), the padded codebook fp16(c * sc_l) [P, DP] (padding stays zero), and per level [L, 5]:
    max ||c_hi||, max ||c - c_hi||, max ||c||^2, ec_l, max_kd |c_kd| with c_hi = fp16(c sc_l) / sc_l
    (exact); the norms in float64, rounded up."""
    levels = len(ks)
    dev = cb.device
    lvl = torch.repeat_interleave(torch.arange(levels, device=dev), torch.tensor(ks, device=dev))
    real = cb[dst]
    amax = torch.zeros(levels, dtype=torch.float32, device=dev)
    amax.scatter_reduce_(0, lvl, real.abs().amax(1), reduce="amax", include_self=True)
    _, ex = torch.frexp(amax)  # amax = m 2^ex, m in [0.5, 1): floor(log2 amax) = ex - 1
    ec = torch.where(amax > 0, 15 - ex, torch.full_like(ex, 100)).clamp(-100, 100)
    sc = torch.ldexp(torch.ones_like(amax), ec)
    scale = torch.zeros(cb.shape[0], dtype=torch.float32, device=dev)
    scale[dst] = sc[lvl]
    # exact scaling, one rounding to fp16 (clamped: only a level with max|c| >= 2^114 reaches the clamp)
    cb16 = (cb * scale[:, None]).clamp(-65504.0, 65504.0).to(torch.float16)
    real_hi = cb16[dst].double() / sc[lvl].double()[:, None]  # exact: a power of two
    real_lo = real.double() - real_hi  # exact in float64
    up = 1.0 + 2.0**-20
    per_row = torch.stack([real_hi.norm(dim=1) * up, real_lo.norm(dim=1) * up,
                           cn[dst].double()]).float()  # [3, sum_k]
    stat = torch.zeros((3, levels), dtype=torch.float32, device=dev)
    stat.scatter_reduce_(1, lvl[None, :].expand(3, -1), per_row, reduce="amax", include_self=True)
    stat = torch.cat([stat, ec.float()[None, :], amax[None, :]])
    return cb16, stat.t().contiguous()  # [L, 5]


def residual_quantize_triton(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    offsets: Sequence[int],
    beam_width: int = 1,
    *,
    fast: bool = True,
    precision: str = "exact",
    block_m: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    block_d: int | None = None,
    block_u: int | None = None,
    programs_per_sm: int | None = None,
    _fallback_counter: torch.Tensor | None = None,
    quantized: bool = True,
    _fma_chain: bool | None = None,
    _force_redo: bool = False,
    beam_window: int | None = None,
    _proposal: str | None = None,
    _resident: bool | None = None,
    _tier2: bool | None = None,
    _force_tier2: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual quantization with Triton kernels.

    Args:
        x: [N, D] float32, float16 or bfloat16 (any strides); accumulation in float32.
        codebooks: [sum_l K_l, D] float32 contiguous, level l owns rows offsets[l]..offsets[l+1]-1.
        offsets: L+1 increasing ints, offsets[0] == 0, offsets[-1] == codebooks.shape[0].
        beam_width: 1 = greedy (exact ties to the lowest index); 2..16 = beam search
            (candidates (beam, code) ordered by (score, beam rank, code)).
        fast: tensor cores propose, float32 decides. Greedy: an fp16 GEMM (power-of-two scaling per
            row and level; tf32 with ``_proposal="tf32"``) proposes, a float32 re-check of the best
            candidates and an exact fallback where the re-check cannot prove the choice. Beam
            search: the same fp16 (or tf32) proposal keeps a row's best candidates over all its
            beams (power-of-two scales per row at level 0, per tile of rows after), the window
            (``beam_window``) is re-scored with the canonical FMA chain, and rows whose window
            cannot be proven to hold the B best are re-encoded by the exact beam kernel. Either
            way the same codes as ``fast=False`` bit for bit. ``fast=False``: float32
            (``input_precision="ieee"``) dot products throughout (the exact kernels).
        precision: ``"exact"`` (default): the codes of the canonical float32 score, whatever the
            path (with ``fast=True`` the fp16 / tf32 pass proposes and the proof / exact redo
            decides). ``"fast"`` (with ``fast=True``): the proposal's choice without the proof
            (greedy: the fp16 (or tf32) GEMM's best, no re-check; beam: the B best packed proposal keys
            as they are, scores equal above the low log2(BP * BLOCK_K) bits ranked by candidate; no
            redo launch); codes may differ from float32 on near-ties (about 0.1 % of rows on random
            data). torch's global tf32
            flags never change either.
        block_m, block_k, num_warps, num_stages, block_d, block_u: override the tile heuristic
            (tuning; greedy: of the proposal pass, or of the exact pass with ``fast=False``; block_d:
            D-step of the MMA, the float32 re-check and the exact pass; block_u: D-slice of the
            passes over the residual; beam: a tile is block_m x next_pow2(B) (row, beam) pairs, the
            rows of the dot, holding block_m x next_pow2(B) // B rows of B beams each).
        programs_per_sm: CUDA: persistent programs per SM (greedy and beam; tuning; default 1: ~200
            registers per thread x 256 threads).
        _fallback_counter: optional int32 [2] tensor: adds (#(row, level) pairs the proposal pass could
            not prove, #rows re-encoded by the exact pass) - for tests and tuning. Beam search: a third
            entry, where there is one, gets the (row, level) pairs whose window re-score was skipped
            (their first B + 1 proposal keys proved the order; fp16 proposal with the proof).
        quantized: greedy only: False skips writing the quantized rows (k-means assignment);
            the first returned tensor is then an empty [0, D] placeholder.
        _fma_chain: the exact pass spells its FMA chain out with ``tl.fma`` (default: under the
            interpreter only; on the GPU ``tl.dot(ieee)`` is that chain) - for tests.
        _force_redo: fast path: an error bound so wide that every row with ||r|| > 0 is re-checked,
            left unproven and re-encoded by the exact pass (the redo tier forced on; beam search:
            every row with more candidates than the window) - for tests.
        _proposal: fast path (greedy and beam): the proposal GEMM's operands, ``"fp16"`` (default: fp16
            with exact power-of-two scaling per row and level, float32 accumulation) or ``"tf32"`` (the
            tf32-rounded float32 residual and codebook); the same proof either way, so the same codes
            (``precision="fast"``: the proposal's own choice, which may differ between the two on
            near-ties) - for tuning and the GPU comparison (bench/gpu_rq_sweep.py).
        _resident: greedy, fast path, fp16 proposal: the tile's whole A operand [BM, DP] is read once
            per level and stays in shared memory while the codebook chunks stream past it (one MMA
            over all of D per chunk), instead of both operands streaming per chunk in D-slices.
            Default: on where DP <= 256 (BM 128: 64 KB of A, BLOCK_K 64, 2 stages: 128 KB of shared
            memory) - for tuning and the GPU comparison.
        _tier2: greedy, fast path with the proof: run the second tier (the rows the top-4 pass could
            not prove, again with the best ``_TIER2_NP`` = 16 proposals kept and 15 re-checked; what
            it cannot prove goes to the exact pass) - default: where some level has
            K >= ``_TIER2_MIN_K`` = 1024 codewords; True / False force it on / off (tests, tuning).
            A ``_fallback_counter`` of 4 entries gets the tier's counts in entries 2 and 3
            ((row, level) pairs it could not prove, rows it sent to the exact pass); entry 1 then
            counts the rows the top-4 pass sent to the tier.
        _force_tier2: greedy: the top-4 pass proves no row with ||r|| > 0 (every such row goes
            through the second tier, which is then on) - for tests.
        beam_window: beam search, fast path: candidates per row re-scored exactly (default
            2^ceil(log2(B + 3)) - 1: 7 for B = 5; at least B); wider: fewer unproven rows, more
            re-scoring.

    Returns:
        quantized [N, D] float32 (x - final residual = sum of the chosen codewords),
        distances [N, L] float32 (||x - sum_{j<=l} c_j||^2 after each level),
        codes [N, L] int32.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be [N, D], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if codebooks.dim() != 2 or codebooks.dtype != torch.float32 or not codebooks.is_contiguous():
        raise ValueError("codebooks must be a contiguous float32 [sum_k, D] tensor")
    if codebooks.device != x.device:
        raise ValueError("x and codebooks must be on the same device")
    offsets = [int(o) for o in offsets]
    levels = len(offsets) - 1
    n, d = x.shape
    if levels < 1 or offsets[0] != 0 or any(b <= a for a, b in zip(offsets, offsets[1:])):
        raise ValueError(f"offsets must start at 0 and strictly increase (every K_l >= 1), got {offsets}")
    if offsets[-1] != codebooks.shape[0] or codebooks.shape[1] != d:
        raise ValueError(f"codebooks {tuple(codebooks.shape)} do not match offsets[-1]={offsets[-1]}, D={d}")
    if d < 1:
        raise ValueError("D must be >= 1")
    if precision not in ("exact", "fast"):
        raise ValueError(f'precision must be "exact" or "fast", got {precision!r}')
    proposal = "fp16" if _proposal is None else _proposal
    if proposal not in ("fp16", "tf32"):
        raise ValueError(f'_proposal must be "fp16" or "tf32", got {_proposal!r}')
    dp = max(16, _next_pow2(d))
    resident = proposal == "fp16" and dp <= 256 if _resident is None else bool(_resident)
    if resident and (proposal != "fp16" or dp > 256):
        raise ValueError(f"_resident needs the fp16 proposal and D <= 256 (shared memory), got {proposal}, D {d}")
    beam_width = int(beam_width)
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if beam_width > _MAX_BEAM:
        raise NotImplementedError(
            f"the Triton residual_quantize kernel supports beam_width <= {_MAX_BEAM}, got {beam_width}; "
            "use the reference backend for wider beams")
    dev = x.device
    if not quantized and beam_width != 1:
        raise ValueError("quantized=False is supported for greedy encoding (beam_width == 1) only")
    q = torch.empty((n if quantized else 0, d), dtype=torch.float32, device=dev)
    dist = torch.empty((n, levels), dtype=torch.float32, device=dev)
    codes = torch.empty((n, levels), dtype=torch.int32, device=dev)
    if n == 0:
        return q, dist, codes

    ks = [b - a for a, b in zip(offsets, offsets[1:])]

    if beam_width == 1:
        tiles_fast, tiles_exact = _greedy_config(dp, n, resident, bool(quantized))

        def _override(t: _Tiles) -> _Tiles:
            return _Tiles(block_m or t.bm, block_k or t.bk, min(dp, block_d or t.bd), min(dp, block_u or t.bu),
                          num_warps or t.nw, num_stages or t.ns, t.mr)

        if fast:  # the overrides tune the proposal pass; the exact (redo) pass keeps its tiles (its FMA
            # dot holds both operand slices in registers) with the same BLOCK_M (the scratch slots)
            # and a BLOCK_K that divides the codebook padding
            tiles_fast = _override(tiles_fast)
            tiles_exact = tiles_exact._replace(bm=tiles_fast.bm, bk=min(tiles_exact.bk, tiles_fast.bk),
                                               bd=min(dp, block_d or tiles_exact.bd))
        else:
            tiles_exact = tiles_fast = _override(tiles_exact)
        bm, bk = tiles_fast.bm, tiles_fast.bk
    else:
        bp = _next_pow2(beam_width)
        bm, np_win, bk, bk_exact, nw, ns, ns_exact = _beam_config(beam_width, beam_window)
        # block_k sets the pass that runs first (beam: a power of two in [16, 1024])
        if block_k is not None and (block_k < 16 or block_k > 1024 or block_k & (block_k - 1)):
            # (the packed keys hold log2(BP * BLOCK_K) <= 14 low mantissa bits of the score)
            raise ValueError(f"beam search: block_k must be a power of two in [16, 1024], got {block_k}")
        if block_k:
            bk, bk_exact = (block_k, min(block_k, bk_exact)) if fast else (block_k, block_k)
        elif not fast:
            bk = bk_exact
        bm = block_m or bm
        nw = num_warps or nw
        ns = num_stages or ns
        ns_exact = num_stages or ns_exact

    # codebook padded per level to a multiple of BLOCK_K rows and to DP columns (no masks
    # in the kernel); padding rows get ||c||^2 = 3e38 so they never win.
    kpad = [-(-k // bk) * bk for k in ks]  # (the beam's exact BLOCK_K divides bk)
    poff = [0]
    for kp in kpad:
        poff.append(poff[-1] + kp)
    dst = torch.cat([torch.arange(k, device=dev) + p for k, p in zip(ks, poff)])
    if poff[-1] * dp >= 2**31:
        raise ValueError("codebooks too large for the Triton kernel (int32 offsets): sum_k * D must be < 2^31")
    cb = torch.zeros((poff[-1], dp), dtype=torch.float32, device=dev)
    cb[dst, :d] = codebooks
    cn = torch.full((poff[-1],), _PAD_SCORE, dtype=torch.float32, device=dev)
    cn[dst] = codeword_sqnorms(codebooks)  # the canonical ||c||^2 (one FMA chain per codeword)
    poff_t = torch.tensor(poff, dtype=torch.int32, device=dev)
    kreal_t = torch.tensor(ks, dtype=torch.int32, device=dev)
    grid = (triton.cdiv(n, bm),)

    fma_chain = _INTERPRET if _fma_chain is None else _fma_chain
    prove = precision == "exact"
    # float32 accumulation error allowance (tensor cores and the float32 re-check), generous
    gamma_ok = (dp + 8) * 2.0 ** -21
    gamma = gamma_ok if not _force_redo else 1e30  # (the beam kernels; the greedy passes: gammas below)
    # gamma_D of a float32 sum of D products (any order), for the re-check's distance to the canonical score
    gamma_chk = (d + 2) * 2.0 ** -24 / (1.0 - (d + 2) * 2.0 ** -24) * 1.0625
    if fast and proposal == "fp16":  # the fp16 codebook, its scales and the bound's figures [L, 5]
        cbhi, stat = _fp16_stats(cb, cn, dst, ks)
    elif fast:  # the tf32 proposal
        cbhi, stat = _tf32_stats(cb, cn, dst, ks)
    else:
        cbhi, stat = cb, cn
    counter = _fallback_counter if _fallback_counter is not None else poff_t

    if beam_width > 1:
        bp = _next_pow2(beam_width)
        m = bm * bp  # (row, beam) pairs per tile, the rows of the dot: m // B rows of B pairs each, packed densely
        rb = m // beam_width
        tiles = triton.cdiv(n, rb)
        if dev.type == "cuda":  # persistent: one program per SM, its two residual slots in L2
            nprog = min(tiles, (programs_per_sm or 1) * torch.cuda.get_device_properties(dev).multi_processor_count)
            nprog = max(1, min(nprog, _SCRATCH_BYTES // (2 * m * dp * 4)))
        else:
            nprog = min(tiles, 2)
        # zeros: an invalid pair's slot rows are never written (their scores are masked), so they hold
        # finite values from the start (no NaN garbage in the MMA's rows)
        scratch = torch.zeros((nprog, 2, m, dp), dtype=torch.float32, device=dev)
        paths = torch.empty((nprog, levels, 3, m), dtype=torch.int32, device=dev)
        bd = min(dp, block_d or (dp if _INTERPRET else 16))
        bu = min(dp, block_u or (dp if _INTERPRET else (16 if dp <= 256 else 32)))  # (beyond DP 256 the kernels loop
        # over the slices of their residual passes: unrolled at D 1024 with BU 64 they spilled 36 / 48 B on 3.6)
        np_lists = np_win if fast and prove else bp
        lists = torch.empty((nprog, 2, m, np_lists), dtype=torch.int32, device=dev)  # the pairs' lists -> rows
        redo = torch.zeros((n + 1 if fast and prove else 1,), dtype=torch.int32, device=dev)
        # level 0 (one beam per row: x) is a per-row top-B of x's scores in tiles of M rows (the first
        # kernel), its B codes per row in top0; the levels kernel starts each row's beams from them
        top0 = torch.empty((n, beam_width), dtype=torch.int32, device=dev)
        flag0 = torch.empty((n if fast and prove else 1,), dtype=torch.int32, device=dev)  # unproven at level 0
        nprog0 = min(nprog, triton.cdiv(n, m))
        # the beam counters: (unproven row-levels, redone rows, row-levels whose window re-score was skipped)
        bcount = torch.zeros((3,), dtype=torch.int32, device=dev) if _fallback_counter is not None else counter
        # fast=False: the exact kernels; fast: the proposal (+ exact re-score and proof), then
        # (precision="exact") the exact kernels over the unproven rows (no host sync: they read the count)
        passes = [(False, False)] if not fast else [(True, False)] + ([(False, True)] if prove else [])
        for fast_pass, redo_pass in passes:
            kw = dict(BEAM=beam_width, BP=bp, BK=bk if fast_pass else bk_exact, DP=dp, BD=bd, BU=bu, FAST=fast_pass,
                      REDO=redo_pass, PROVE=prove and fast_pass, NP=np_lists if fast_pass else bp,
                      COUNT_FALLBACK=_fallback_counter is not None, FMA_CHAIN=bool(fma_chain),
                      PROPOSAL=proposal if fast_pass else "tf32", num_warps=nw,
                      num_stages=ns if fast_pass else ns_exact)  # (exact: one compile)
            # (the exact kernels, whole pass and redo, with the register limit: left to ptxas the levels kernel
            # spilled 32-104 B at B 2-4 on triton 3.9 and 3.6 (2026-12-05), the first kernel 36 B at B 12 on 3.6
            # (2026-12-06); with it no spill at B 2-16 on either, tests/test_sm90_compile.py)
            if not fast_pass:
                kw["maxnreg"] = _EXACT_MAXNREG
            _rq_beam_first_kernel[(nprog0 if not redo_pass else nprog,)](
                x, cb, cbhi, cn, poff_t, kreal_t, stat, top0, flag0, scratch, redo, bcount,
                n, d, x.stride(0), x.stride(1), gamma, gamma_chk, BM=m, **kw)
            _rq_beam_kernel[(nprog,)](
                x, cb, cbhi, cn, poff_t, kreal_t, stat, top0, flag0, q, dist, codes, scratch, paths, lists, redo,
                bcount, n, d, levels, x.stride(0), x.stride(1), gamma, gamma_chk, M=m, BM=_next_pow2(rb),
                LP=_next_pow2(levels), **kw)
        if _fallback_counter is not None:
            nc = min(3, _fallback_counter.numel())
            _fallback_counter[:nc] += bcount[:nc]
        return q, dist, codes

    # rows the proposal pass cannot prove: [0] = count, [1:] = the rows (order: whichever program comes first)
    redo = torch.zeros((n + 1 if fast else 1,), dtype=torch.int32, device=dev)
    tiles = triton.cdiv(n, bm)
    if dev.type == "cuda":
        # persistent programs: one per SM by default (~200 registers x 256 threads), so the scratch
        # slots (2 x BM x DP x 4 bytes each: 33 MB at D 256) stay in L2
        per_sm = programs_per_sm or 1
        nprog = min(tiles, per_sm * torch.cuda.get_device_properties(dev).multi_processor_count)
        nprog = max(1, min(nprog, _SCRATCH_BYTES // (2 * bm * dp * 4)))  # large D: fewer programs, bounded memory
    else:
        nprog = min(tiles, 2)  # CPU (interpreter): few programs, so tests run the persistent loop
    scratch = torch.empty((nprog, 2, bm, dp), dtype=torch.float32, device=dev)
    # the second tier (fast path with the proof): over the rows the top-4 pass lists, the proposal again
    # keeping the _TIER2_NP best per row, NP - 1 re-checked; what it cannot prove goes to the exact pass.
    # It runs where a level has K >= _TIER2_MIN_K codewords (a top-4 window leaves ~2 % of rows unproven at
    # K 4096 on k-means data, a top-8 ~6e-5: GPU-NOTES.md), or when _tier2 says so.
    tier2 = fast and prove and ((max(ks) >= _TIER2_MIN_K if _tier2 is None else bool(_tier2)) or _force_tier2)
    gammas = {"fast": 1e30 if (_force_redo or _force_tier2) else gamma_ok, "tier2": 1e30 if _force_redo else gamma_ok,
              "exact": gamma_ok}
    np2 = min(_TIER2_NP, tiles_fast.bk)
    tiles_tier2 = tiles_fast._replace(bk=max(np2, min(64, tiles_fast.bk)))  # (divides the padding: powers of 2)
    redo2 = torch.zeros((n + 1,), dtype=torch.int32, device=dev) if tier2 else redo  # the exact pass's list
    count2 = counter  # the tier's counts: entries 2, 3 of a 4-entry counter, else none
    if _fallback_counter is not None:
        count2 = _fallback_counter[2:4] if _fallback_counter.numel() >= 4 else torch.zeros_like(_fallback_counter)
    passes = (["fast"] + (["tier2"] if tier2 else []) + (["exact"] if prove else [])) if fast else ["exact"]
    for name in passes:
        # the tier and the exact pass over the listed rows need no host sync: their programs read the count
        t = {"fast": tiles_fast, "tier2": tiles_tier2, "exact": tiles_exact}[name]
        lists = {"fast": (redo, redo), "tier2": (redo, redo2), "exact": (redo2, redo2)}[name]
        _rq_greedy_kernel[(nprog,)](
            x, cb, cbhi, cn, poff_t, kreal_t, stat, q, dist, codes, scratch, lists[0], lists[1],
            count2 if name == "tier2" else counter,
            n, d, levels, x.stride(0), x.stride(1), gammas[name], gamma_chk,
            BM=t.bm, BK=t.bk, DP=dp, BD=t.bd, BU=t.bu, FAST=name != "exact", REDO=name != "fast" and bool(fast),
            PACK_BITS=int(math.log2(t.bk)), COUNT_FALLBACK=_fallback_counter is not None, STORE_Q=bool(quantized),
            FMA_CHAIN=bool(fma_chain), PROVE=prove, PROPOSAL=proposal, NP=np2 if name == "tier2" else 4,
            RESIDENT=resident and name == "fast",
            num_warps=t.nw, num_stages=t.ns, **({"maxnreg": t.mr} if t.mr else {}),
        )
    return q, dist, codes
