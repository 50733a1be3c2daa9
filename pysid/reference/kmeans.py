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
