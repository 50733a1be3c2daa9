"""Reference k-means primitives: the specification the C++ and Triton kernels are tested against.

Both are single passes over x in the kernels; here they are plain PyTorch, in float64
where it matters.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kmeans_update_ref(x: Tensor, codes: Tensor, weights: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    """Per-cluster weighted sums and weights (the Lloyd centroid update).

    Args:
        x: [N, D] float tensor.
        codes: [N] integer cluster of each row, in [0, k).
        weights: [N] non-negative row weights, or None (all 1).
        k: number of clusters.

    Returns:
        sums [k, D] float64 (sum of w_i x_i over the rows of each cluster) and
        counts [k] float64 (sum of w_i); empty clusters give zeros.
    """
    xd = x.to(torch.float64)
    idx = codes.long()
    w = torch.ones(x.shape[0], dtype=torch.float64, device=x.device) if weights is None else weights.to(torch.float64)
    sums = torch.zeros((k, x.shape[1]), dtype=torch.float64, device=x.device).index_add_(0, idx, xd * w[:, None])
    counts = torch.zeros(k, dtype=torch.float64, device=x.device).index_add_(0, idx, w)
    return sums, counts


def kmeanspp_candidates_ref(x: Tensor, cand: Tensor, mind: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """One greedy k-means++ step: distances to T candidate centres and the potential of each.

    Args:
        x: [N, D] float tensor.
        cand: [T, D] candidate centres.
        mind: [N] float32 squared distance of each row to its nearest chosen centre (+inf before the first).
        weights: [N] non-negative row weights, or None.

    Returns:
        dist [N, T] float32 = ||x_i - cand_t||^2 (from the differences, float32), and
        pot [T] float64 = sum_i w_i * min(mind_i, dist_it): the potential if cand_t were added.
    """
    n = x.shape[0]
    chunk = max(1, (2**27 if x.is_cuda else 2**22) // max(1, cand.shape[0] * x.shape[1]))  # [chunk, T, D] temp
    dist = torch.empty((n, cand.shape[0]), dtype=torch.float32, device=x.device)
    c = cand.to(torch.float32)
    for i in range(0, n, chunk):  # chunks: never an [N, T, D] temporary
        diff = x[i : i + chunk, None, :].to(torch.float32) - c[None]
        dist[i : i + chunk] = (diff * diff).sum(-1)
    m = torch.minimum(mind[:, None], dist).to(torch.float64)
    if weights is not None:
        m = m * weights.to(torch.float64)[:, None]
    return dist, m.sum(0)


# --------------------------------------------------------------------------- the canonical score
# The k-means assignments of every engine pick codes by the canonical score of the nearest-codeword
# kernels (pysid.kernels.residual_quantize, tests/test_canonical_score.py): for float32 rows,
# ``score_k = fl(cn_k - 2 dot_k)``, ``dot_k`` one float32 FMA chain ``acc = fma(x_d, c_kd, acc)``
# over d = 0..D-1 from 0, ``cn_k`` the same chain of ``c_kd * c_kd``, exact ties to the lowest
# code (lists: the first in list order). Float64 rows keep float64 scores.

_U = 2.0**-24  # float32 unit roundoff


def fma32(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Correctly rounded float32 ``fma(a, b, c)``, elementwise (float32 operands, broadcast).

    The product of two float32 values is exact in float64; the float64 sum is made round-to-odd
    (TwoSum gives its exact remainder; an inexact sum with an even last bit moves one ulp towards
    the exact value), and a round-to-odd value with >= 26 bits rounds to float32 correctly."""
    p = a.double() * b.double()
    cc = c.double()
    s = p + cc
    bp = s - cc
    err = (p - bp) + (cc - (s - bp))  # s + err == p + cc exactly
    bits = s.view(torch.int64)
    fix = (err != 0) & ((bits & 1) == 0)
    toward = torch.where((err > 0) == (s > 0), bits + 1, bits - 1)
    return torch.where(fix, toward, bits).view(torch.float64).to(torch.float32)


def fma_chain32(a: Tensor, b: Tensor) -> Tensor:
    """``sum_d a[..., d] * b[..., d]`` as one float32 FMA chain over d ascending from 0 (broadcast)."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    acc = torch.zeros(shape, dtype=torch.float32, device=a.device)
    for j in range(a.shape[-1]):
        acc = fma32(a[..., j], b[..., j], acc)
    return acc


def canonical_scores_ref(x: Tensor, centroids: Tensor) -> Tensor:
    """The canonical scores [N, K] float32 of x [N, D] against centroids [K, D] (both as float32).

    The plain definition (N K D emulated FMAs): the k-means primitives below give the codes of
    these scores but compute them only near each row's minimum."""
    x, c = x.to(torch.float32), centroids.to(torch.float32)
    return fma_chain32(c, c)[None, :] - 2.0 * fma_chain32(x[:, None, :], c[None, :, :])


def _near(x: Tensor, cg: Tensor, cn: Tensor) -> tuple[Tensor, Tensor]:
    """float64 scores ``cn - 2 x.c`` (nearly exact) and a bound E >= |canonical - float64 score|,
    for rows x [n, D] and centroids cg ([K, D]: every row against all; [n, m, D]: each row its own).

    E = 1.01 (2 gamma_{D+2} + 4 u) (sum_d |x_d c_d| + cn) + (D + 2) 2^-140 (u = 2^-24): the
    chain's error (gamma_D sum |x c|, twice), the rounding of cn - 2 dot, float32 underflow, and
    (the 1.01) the float64 arithmetic here."""
    xd, cd, cnd = x.double(), cg.double(), cn.double()
    if cg.dim() == 2:
        dot, a = xd @ cd.T, xd.abs() @ cd.abs().T
    else:
        dot, a = (xd[:, None, :] * cd).sum(-1), (xd.abs()[:, None, :] * cd.abs()).sum(-1)
    n = x.shape[1] + 2
    g = n * _U / (1 - n * _U)
    e = 1.01 * (2 * g + 4 * _U) * (a + cnd) + n * 2.0**-140
    return cnd - 2.0 * dot, e


def _canonical_pick(x: Tensor, cg: Tensor, cn: Tensor, win: Tensor, m: int) -> Tensor:
    """Positions [n, m] (increasing) of each row's m lowest canonical scores among the positions
    where win [n, P] is set (at least m per row; among equal scores the lower position), with the
    canonical score computed only for rows that have more than m such positions."""
    cnt = win.sum(1)
    key = torch.where(win, 0.0, float("inf")).to(torch.float64)
    rows = (cnt > m).nonzero()[:, 0]
    if rows.numel():
        ri, pos = win[rows].nonzero(as_tuple=True)
        row = rows[ri]
        cc = cg[pos] if cg.dim() == 2 else cg[row, pos]
        sc = cn[pos] if cn.dim() == 1 else cn[row, pos]
        kr = torch.full((rows.numel(), win.shape[1]), float("inf"), dtype=torch.float64, device=x.device)
        kr[ri, pos] = (sc - 2.0 * fma_chain32(x[row], cc)).double()
        key[rows] = kr
    return torch.argsort(key, dim=1, stable=True)[:, :m].sort(1).values


def kmeans_assign_canonical_ref(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's nearest centroid by the canonical score (float32; ties to the lowest code).

    Args:
        x: [N, D] float tensor (computed as float32); centroids: [K, D].

    Returns:
        codes [N] int64 and squared distances [N] float32 ``||x - c||^2`` from the differences.
    """
    x, c = x.to(torch.float32), centroids.to(torch.float32)
    cn = fma_chain32(c, c)
    codes = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], 4096):  # row chunks: never a full N x K matrix
        xc = x[i : i + 4096]
        s, e = _near(xc, c, cn)
        win = (s - e) <= (s + e).min(1, keepdim=True).values  # may hold the canonical minimum
        codes[i : i + 4096] = _canonical_pick(xc, c, cn, win, 1)[:, 0]
    r = x - c[codes]
    return codes, (r * r).sum(1)


def kmeans_topm_ref(x: Tensor, centroids: Tensor, m: int) -> Tensor:
    """Each row's m nearest centroids: the m lowest scores ``||c||^2 - 2 x.c`` (the canonical score
    for float32 rows, float64 for float64 ones; among equal scores the lower codes), listed in
    increasing code order.

    Args:
        x: [N, D] float tensor; centroids: [k, D]; 1 <= m <= k.

    Returns:
        [N, m] int64 codes.
    """
    cand = torch.empty((x.shape[0], m), dtype=torch.int64, device=x.device)
    if x.dtype == torch.float64:
        c = centroids.to(x.dtype)
        for i in range(0, x.shape[0], 8192):  # row chunks: never a full N x k matrix
            s = (c * c).sum(1)[None] - 2.0 * x[i : i + 8192] @ c.t()
            order = torch.argsort(s, dim=1, stable=True)[:, :m]  # stable: ties to the lower code
            cand[i : i + 8192] = order.sort(1).values
        return cand
    x, c = x.to(torch.float32), centroids.to(torch.float32)
    cn = fma_chain32(c, c)
    for i in range(0, x.shape[0], 4096):
        xc = x[i : i + 4096]
        s, e = _near(xc, c, cn)
        hi = torch.kthvalue(s + e, m, dim=1, keepdim=True).values  # >= the m-th lowest canonical score
        cand[i : i + 4096] = _canonical_pick(xc, c, cn, (s - e) <= hi, m)
    return cand


def kmeans_assign_candidates_ref(x: Tensor, centroids: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """The k-means assignment restricted to each row's candidate centroids.

    Args:
        x: [N, D] float tensor; centroids: [k, D]; cand: [N, m] integer codes in [0, k).

    Returns:
        codes [N] int64: the candidate of least score (the canonical score for float32 rows, as
        the full assignment: a list that holds the full assignment's code gives that code; float64
        rows: least float64 distance), the first in list order among equal scores; and its squared
        distance [N] from the differences (x's dtype; float32 for half precision).
    """
    cand = cand.long()
    codes = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    if x.dtype == torch.float64:
        c = centroids.to(x.dtype)
        dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(0, x.shape[0], 4096):
            cc = cand[i : i + 4096]
            diff = x[i : i + 4096, None, :] - c[cc]
            dd = (diff * diff).sum(-1)
            j = torch.argmin(dd, dim=1)  # the first minimum
            codes[i : i + 4096] = cc.gather(1, j[:, None])[:, 0]
            dist[i : i + 4096] = dd.gather(1, j[:, None])[:, 0]
        return codes, dist
    x, c = x.to(torch.float32), centroids.to(torch.float32)
    cn = fma_chain32(c, c)
    rows = max(1, 2**22 // max(1, cand.shape[1] * x.shape[1]))  # [rows, m, D] float64 temporaries
    for i in range(0, x.shape[0], rows):
        xc, cc = x[i : i + rows], cand[i : i + rows]
        cg, cng = c[cc], cn[cc]
        s, e = _near(xc, cg, cng)
        win = (s - e) <= (s + e).min(1, keepdim=True).values
        pos = _canonical_pick(xc, cg, cng, win, 1)  # [n, 1]; ties: the first in list order
        codes[i : i + rows] = cc.gather(1, pos)[:, 0]
    r = x - c[codes]
    return codes, (r * r).sum(1)


def _bf16_pairs(v: Tensor) -> tuple[Tensor, Tensor]:
    """[R, D] float32 -> (odd [R, D2], even [R, D2]): v[:, 2g + 1] and v[:, 2g] rounded to bfloat16
    (nearest even), as float32; |v| < 2^-56 -> 0 (then every product is exact in float32); 0 past D."""
    r = torch.where(v.abs() < 2.0**-56, torch.zeros_like(v), v.to(torch.bfloat16).to(torch.float32))
    if r.shape[1] % 2:
        r = torch.cat([r, torch.zeros_like(r[:, :1])], 1)
    return r[:, 1::2], r[:, 0::2]


def _bf16_sqnorm(odd: Tensor, even: Tensor) -> Tensor:
    """Squared norms [R] of rows given as bfloat16 pairs: lane l (of 16) sums the pairs g = l, l + 16,
    ... in order (odd product, then even), then the lanes are added left to right."""
    pad = (-odd.shape[1]) % 16
    t = (odd.shape[1] + pad) // 16
    o = torch.cat([odd, odd.new_zeros(odd.shape[0], pad)], 1).reshape(odd.shape[0], t, 16)
    e = torch.cat([even, even.new_zeros(even.shape[0], pad)], 1).reshape(even.shape[0], t, 16)
    lane = torch.zeros((odd.shape[0], 16), dtype=torch.float32, device=odd.device)
    for t in range(o.shape[1]):
        lane = lane + o[:, t] * o[:, t]
        lane = lane + e[:, t] * e[:, t]
    s = lane[:, 0]
    for l in range(1, 16):
        s = s + lane[:, l]
    return s


def kmeans_assign_bf16_ref(x: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """The k-means|| seeding assignment (each row's nearest candidate) on bfloat16-rounded values.

    Every value is rounded to bfloat16; each dot product is accumulated in float32 over the
    element pairs g = 0, 1, ...: ``s += odd product``, then ``s += even product`` (the order of
    AVX512_BF16's vdpbf16ps; every product is exact, each sum rounded once). A squared norm
    (``xn``, ``cn``) is 16 such lane sums, lane l over the pairs g = l, l + 16, ..., added left to
    right. Score of candidate j: ``cn_j - 2 x.c_j``; code: the lowest j of least score; distance:
    ``max(0, xn + score)``.

    Args:
        x: [N, D] float32; cand: [k, D] float32.

    Returns:
        codes [N] int64, distances [N] float32.
    """
    x, cand = x.to(torch.float32), cand.to(torch.float32)
    co, ce = _bf16_pairs(cand)
    cn = _bf16_sqnorm(co, ce)
    codes = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    dist = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], 4096):  # row chunks (rows are independent): never a full N x k matrix
        xo, xe = _bf16_pairs(x[i : i + 4096])
        acc = torch.zeros((xo.shape[0], cand.shape[0]), dtype=torch.float32, device=x.device)
        for g in range(xo.shape[1]):  # one rounding per product-sum, in the instruction's order
            acc = acc + xo[:, g, None] * co[None, :, g]
            acc = acc + xe[:, g, None] * ce[None, :, g]
        s = cn[None, :] + (-2.0) * acc  # -2 acc is exact
        best, codes[i : i + 4096] = torch.min(s, dim=1)  # the first minimum
        dist[i : i + 4096] = torch.clamp(_bf16_sqnorm(xo, xe) + best, min=0.0)
    return codes, dist
