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


def kmeans_topm_ref(x: Tensor, centroids: Tensor, m: int) -> Tensor:
    """Each row's m nearest centroids: the m lowest scores ``||c||^2 - 2 x.c`` (among equal
    scores the lower codes), listed in increasing code order.

    Args:
        x: [N, D] float tensor; centroids: [k, D]; 1 <= m <= k.

    Returns:
        [N, m] int64 codes.
    """
    c = centroids.to(x.dtype)
    cand = torch.empty((x.shape[0], m), dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], 8192):  # row chunks: never a full N x k matrix
        s = (c * c).sum(1)[None] - 2.0 * x[i : i + 8192] @ c.t()
        order = torch.argsort(s, dim=1, stable=True)[:, :m]  # stable: ties to the lower code
        cand[i : i + 8192] = order.sort(1).values
    return cand


def kmeans_assign_candidates_ref(x: Tensor, centroids: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """The k-means assignment restricted to each row's candidate centroids.

    Args:
        x: [N, D] float tensor; centroids: [k, D]; cand: [N, m] integer codes in [0, k).

    Returns:
        codes [N] int64: the candidate of least squared distance (the first in list order among
        equal distances), and its squared distance [N] (x's dtype; float32 for half precision).
    """
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    c = centroids.to(dt)
    cand = cand.long()
    codes = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    dist = torch.empty(x.shape[0], dtype=dt, device=x.device)
    for i in range(0, x.shape[0], 4096):
        cc = cand[i : i + 4096]
        diff = x[i : i + 4096, None, :].to(dt) - c[cc]
        dd = (diff * diff).sum(-1)
        j = torch.argmin(dd, dim=1)  # the first minimum
        codes[i : i + 4096] = cc.gather(1, j[:, None])[:, 0]
        dist[i : i + 4096] = dd.gather(1, j[:, None])[:, 0]
    return codes, dist


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
