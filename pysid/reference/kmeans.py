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
