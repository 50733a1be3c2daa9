"""Triton kernel for the exact trie-constrained beam step.

Imports only torch and triton; knows nothing of autograd or of the rest of pysid.

Entry point: :func:`beam_step_triton`.

One program per query b. The candidates of the query are the children of its K beams:
candidate (k, c) is the c-th child of beam k's node (children are stored with ascending
codes, so (k, c) order is (parent beam, token) order), flat index ``k * FAN + c`` where
FAN = the level's widest node (``Trie.max_children[level]``, trie metadata: no per-call
host sync). The program walks the [K, FAN] candidate grid in tiles of [BR, BC] (one tile
when K_pad x FAN_pad <= 4096), scoring a tile in registers (``beam_score +
logprobs[row, code]``; dead beams, padding, -inf scores and banned nodes are dropped).

Each candidate gets a unique int64 key: the order-preserving int32 image of its float32
score (-0.0 folded into +0.0) in the high half, ``2^31 - 1 - flat`` in the low half, so
"larger key" is exactly "higher score, then lower (parent beam, token)" - no reliance on
how tl.argmax breaks ties, and NaN never enters a reduction (a NaN score is flagged and
dropped). Per tile: keys not above the K-th best key held so far are dropped, the best
``n = min(K, #left)`` are extracted by n rounds of one ``max`` each, and the two sorted
lists (held, tile) are merged by rank (own position + #keys of the other list above it,
a [K_pad, K_pad] comparison). Banned node ids (ascending per row) are found by a
vectorised binary search of each candidate's node id in the query's row. Nothing of
size [B*K, V] or [B, K*V] is built.

Errors (NaN beam score of a live beam / NaN score of a valid child: 11; node id outside
[-1, n_nodes): 12 - that beam is then treated as dead) are written to a per-query status
tensor: the caller decides whether to look at it (a host sync).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["beam_step_triton", "STATUS_NAN", "STATUS_BAD_NODE"]

STATUS_NAN = 11
STATUS_BAD_NODE = 12
_MAX_TILE = 4096  # elements of one [BR, BC] candidate tile (<= 8 per thread at 16 warps: no spills on sm_90)
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _beam_step_kernel(
    lp_ptr, bs_ptr, node_ptr, off_ptr, cc_ptr, ban_ptr,
    out_s_ptr, out_p_ptr, out_t_ptr, out_n_ptr, status_ptr,
    K, FAN, n_nodes, lp_stride, E,
    KP: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, BAN_STEPS: tl.constexpr,
):
    NEG: tl.constexpr = float("-inf")
    BIG: tl.constexpr = 2147483647
    b = tl.program_id(0).to(tl.int64)
    kk = tl.arange(0, KP)
    rr = tl.arange(0, BR)
    cc = tl.arange(0, BC)
    MIN: tl.constexpr = -9223372036854775808
    run = tl.full([KP], MIN, tl.int64)  # running top-K keys, best first
    kth = tl.full([], MIN, tl.int64)  # the K-th best key held so far (MIN: fewer held)
    bad_any = tl.full([], 0, tl.int32)
    nan_any = tl.full([], 0, tl.int32)
    for r0 in range(0, K, BR):
        k = r0 + rr  # [BR] beam index
        kmask = k < K
        node = tl.load(node_ptr + b * K + k, mask=kmask, other=-1)
        bad = kmask & ((node < -1) | (node >= n_nodes))
        s0 = tl.load(bs_ptr + b * K + k, mask=kmask, other=NEG)
        inrange = kmask & (node >= 0) & ~bad
        nan0 = inrange & (s0 != s0)
        live = inrange & (s0 > NEG)  # NaN compares false: not live
        bad_any = tl.maximum(bad_any, tl.max(bad.to(tl.int32), 0))
        nan_any = tl.maximum(nan_any, tl.max(nan0.to(tl.int32), 0))
        nd = tl.where(live, node, 0)
        lo = tl.load(off_ptr + nd, mask=live, other=0)
        hi = tl.load(off_ptr + nd + 1, mask=live, other=0)
        cnt = tl.where(live, hi - lo, 0)
        row = (b * K + k).to(tl.int64) * lp_stride
        for c0 in range(0, FAN, BC):
            c = c0 + cc  # [BC] child position
            valid = c[None, :] < cnt[:, None]  # [BR, BC]
            j = lo[:, None] + c[None, :]  # depth-(level+1) node id
            code = tl.load(cc_ptr + j, mask=valid, other=0).to(tl.int64)
            lp = tl.load(lp_ptr + row[:, None] + code, mask=valid, other=NEG)
            s = s0[:, None] + lp
            nan_any = tl.maximum(nan_any, tl.max(tl.max((valid & (s != s)).to(tl.int32), 1), 0))
            valid = valid & (s > NEG)
            if BAN_STEPS > 0:  # binary search of j in the ascending row banned[b, :E]
                jb = j.to(tl.int64)
                blo = tl.zeros([BR, BC], dtype=tl.int32)
                bhi = tl.zeros([BR, BC], dtype=tl.int32) + E
                for _ in tl.static_range(BAN_STEPS):
                    act = valid & (blo < bhi)
                    mid = (blo + bhi) // 2
                    v = tl.load(ban_ptr + b * E + mid, mask=act, other=0)
                    go_right = v < jb
                    blo = tl.where(act & go_right, mid + 1, blo)
                    bhi = tl.where(act & ~go_right, mid, bhi)
                hit = tl.load(ban_ptr + b * E + blo, mask=valid & (blo < E), other=-2)
                valid = valid & (hit != jb)
            # unique int64 key per candidate: order-preserving int32 image of the score (-0.0 -> +0.0)
            # in the high half, BIG - flat index in the low half: larger key = better candidate
            s = tl.where(s == 0.0, 0.0, s)
            u = s.to(tl.int32, bitcast=True)
            mono = tl.where(u >= 0, u, u ^ 0x7FFFFFFF)
            flat = k[:, None] * FAN + c[None, :]
            key = (mono.to(tl.int64) << 32) | (BIG - flat).to(tl.int64)
            key = tl.where(valid & (key > kth), key, MIN)  # only what can enter the running top-K
            nr = tl.minimum(tl.sum(tl.sum((key > MIN).to(tl.int32), 1), 0), K)
            if nr > 0:
                # the tile's best nr keys, best first (keys are unique: one max per round)
                tk = tl.full([KP], MIN, tl.int64)
                for t in range(0, nr):
                    m = tl.max(tl.max(key, 1), 0)
                    tk = tl.where(kk == t, m, tk)
                    key = tl.where(key == m, MIN, key)
                # merge two descending lists: rank = own position + #keys of the other list above it
                rank_h = kk + tl.sum((tk[None, :] > run[:, None]).to(tl.int32), 1)
                rank_t = kk + tl.sum((run[None, :] > tk[:, None]).to(tl.int32), 1)
                merged = tl.maximum(
                    tl.max(tl.where(rank_h[:, None] == kk[None, :], run[:, None], MIN), 0),
                    tl.max(tl.where(rank_t[:, None] == kk[None, :], tk[:, None], MIN), 0),
                )
                run = tl.where(kk < K, merged, MIN)
                kth = tl.max(tl.where(kk == K - 1, run, MIN), 0)  # MIN until K candidates are held
    ok = (run > MIN) & (kk < K)
    hi32 = (run >> 32).to(tl.int32)
    score = tl.where(ok, tl.where(hi32 >= 0, hi32, hi32 ^ 0x7FFFFFFF).to(tl.float32, bitcast=True), NEG)
    run_f = tl.where(ok, BIG - (run - (hi32.to(tl.int64) << 32)).to(tl.int32), 0)
    fan = tl.maximum(FAN, 1)
    parent = run_f // fan
    pos = run_f % fan
    pnode = tl.load(node_ptr + b * K + parent, mask=ok, other=0)
    plo = tl.load(off_ptr + pnode, mask=ok, other=0)
    child = (plo + pos).to(tl.int64)
    tok = tl.load(cc_ptr + child, mask=ok, other=0).to(tl.int64)
    omask = kk < K
    o = b * K + kk
    tl.store(out_s_ptr + o, score, mask=omask)
    tl.store(out_p_ptr + o, tl.where(ok, parent.to(tl.int64), -1), mask=omask)
    tl.store(out_t_ptr + o, tl.where(ok, tok, -1), mask=omask)
    tl.store(out_n_ptr + o, tl.where(ok, child, -1), mask=omask)
    status = tl.where(bad_any > 0, 12, tl.where(nan_any > 0, 11, 0))
    tl.store(status_ptr + b, status)


def _next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def beam_step_triton(
    logprobs: torch.Tensor,
    beam_scores: torch.Tensor,
    nodes: torch.Tensor,
    offsets: torch.Tensor,
    child_codes: torch.Tensor,
    banned: torch.Tensor | None,
    max_children: int,
    *,
    block_rows: int | None = None,
    block_cols: int | None = None,
    num_warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One exact trie-constrained beam step (see the module docstring).

    Args:
        logprobs: [B*K, V] float32, unit column stride (row stride >= V).
        beam_scores: [B, K] float32 contiguous (-inf: dead beam).
        nodes: [B, K] int64 contiguous: node at depth ``level`` (-1: dead beam).
        offsets: [n_level + 1] int32: the level's CSR offsets.
        child_codes: [n_{level+1}] int16 or int32: each child's code (ascending within a node).
        banned: None or [B, E] int64 contiguous, ascending per row: node ids never chosen.
        max_children: the level's widest node (``Trie.max_children[level]``); must be
            >= every node's child count (a launch parameter: read from trie metadata,
            never from the data, so the call has no host sync).
        block_rows, block_cols, num_warps: override the tile heuristic (tests, tuning).

    Returns:
        scores [B, K] float32, parent / token / node [B, K] int64, status [B] int32
        (0 ok, 11 NaN score on a live beam / valid child, 12 node id out of range).
    """
    B, K = beam_scores.shape
    dev = logprobs.device
    out_s = torch.empty((B, K), dtype=torch.float32, device=dev)
    out_p = torch.empty((B, K), dtype=torch.int64, device=dev)
    out_t = torch.empty((B, K), dtype=torch.int64, device=dev)
    out_n = torch.empty((B, K), dtype=torch.int64, device=dev)
    status = torch.zeros((B,), dtype=torch.int32, device=dev)
    if B == 0:
        return out_s, out_p, out_t, out_n, status
    fan = max(int(max_children), 0)
    if K * max(fan, 1) >= 2**31 - 1:
        raise ValueError(f"beam width x max children ({K} x {fan}) must be < 2^31 for the Triton beam step")
    kp = _next_pow2(K)
    cp = _next_pow2(max(fan, 1))
    bc = block_cols or min(cp, _MAX_TILE)
    br = block_rows or min(kp, max(1, _MAX_TILE // bc))
    elems = br * bc
    nw = num_warps or min(16, max(4, elems // 256))  # ~8 tile elements per thread (~120 registers)
    E = 0 if banned is None else int(banned.shape[1])
    ban_steps = 0 if E == 0 else E.bit_length()  # ceil(log2(E + 1)) halvings empty [0, E)
    ban = banned if E > 0 else status  # unused pointer when E == 0
    n_nodes = offsets.shape[0] - 1
    _beam_step_kernel[(B,)](
        logprobs, beam_scores, nodes, offsets, child_codes, ban,
        out_s, out_p, out_t, out_n, status,
        K, fan, n_nodes, logprobs.stride(0), E,
        KP=kp, BR=br, BC=bc, BAN_STEPS=ban_steps,
        num_warps=nw,
    )
    return out_s, out_p, out_t, out_n, status
