"""Quality report of a Semantic ID table.

    rep = pysid.metrics.sid_report(codes, codebook_sizes=256)          # codes [M, L]
    rep = pysid.metrics.sid_report(codes, codebook_sizes=256, embeddings=x, reconstruction=x_hat)
    print(rep)                 # aligned plain-text table
    json.dumps(rep.to_dict())

Definitions (M items, L levels, code c[i, l] of item i at level l, K_l codebook size):

* usage[l]       = (distinct codes used at level l) / K_l.
* perplexity[l]  = exp(H_l), H_l = -sum_k p_k ln p_k, p_k = (items with code k at level l) / M.
                   Between 1 (one code) and K_l (uniform use).
* prefixes at depth d (1..L): the tuples (c[i, 0], ..., c[i, d-1]).
  prefix_distinct[d-1] = number of distinct prefixes, prefix_mean_items[d-1] = M / that,
  prefix_max_items[d-1] = the most items sharing one prefix.
* collisions (depth L): distinct_tuples, max_items_per_tuple, colliding_items = items
  whose full tuple is shared with at least one other item, collision_rate = colliding_items / M.
* reconstruction_error = sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i||^2 (differences in
  float32, or float64 for float64 input; sums in float64), when
  embeddings x and reconstruction x_hat are both given (nan if both sums are 0, inf if
  only the denominator is).

Vectorised in torch on the codes' device: one sort of the M packed tuples gives every
prefix statistic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["SIDReport", "sid_report"]

_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


@dataclass
class SIDReport:
    """Statistics of a Semantic ID table codes [M, L] (see the module docstring).

    Per-level lists have length L; prefix lists are indexed by depth - 1 (depth 1..L).
    ``codebook_sizes_given`` is False when the sizes were inferred as max code + 1 per
    level (usage is then an upper bound).
    """

    num_items: int
    levels: int
    codebook_sizes: list[int]
    codebook_sizes_given: bool
    codes_used: list[int]
    usage: list[float]
    perplexity: list[float]
    prefix_distinct: list[int]
    prefix_mean_items: list[float]
    prefix_max_items: list[int]
    distinct_tuples: int
    max_items_per_tuple: int
    colliding_items: int
    collision_rate: float
    reconstruction_error: float | None = None

    def to_dict(self) -> dict:
        """Plain dict of Python ints, floats, bools, lists and None (``json.dumps``-able)."""
        return asdict(self)

    def __str__(self) -> str:
        head = ["level", "codebook", "used", "usage", "perplexity", "prefixes", "items/prefix",
                "max items/prefix"]
        rows = []
        for l in range(self.levels):
            size = f"{self.codebook_sizes[l]}" + ("" if self.codebook_sizes_given else "*")
            rows.append([str(l + 1), size, str(self.codes_used[l]), f"{100 * self.usage[l]:.2f}%",
                         f"{self.perplexity[l]:.2f}", str(self.prefix_distinct[l]),
                         f"{self.prefix_mean_items[l]:.3f}", str(self.prefix_max_items[l])])
        widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(head)]

        def fmt(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                             for j, (c, w) in enumerate(zip(cells, widths))).rstrip()

        lines = [f"Semantic ID report: {self.num_items} items, {self.levels} levels", fmt(head),
                 fmt(["-" * w for w in widths])]
        lines += [fmt(r) for r in rows]
        if not self.codebook_sizes_given:
            lines.append("* codebook size inferred as max code + 1")
        lines.append(f"distinct tuples:      {self.distinct_tuples} "
                     f"(max {self.max_items_per_tuple} items per tuple)")
        lines.append(f"collision rate:       {100 * self.collision_rate:.4f}% "
                     f"({self.colliding_items} items share their full tuple)")
        if self.reconstruction_error is not None:
            lines.append(f"reconstruction error: {self.reconstruction_error:.6g} "
                         "(relative: sum ||x - x_hat||^2 / sum ||x||^2)")
        return "\n".join(lines)


def _check_codes(codes: Tensor) -> None:
    if not isinstance(codes, Tensor):
        raise TypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dim() != 2:
        raise ValueError(f"codes must be [M, L] (M items, L levels), got shape {tuple(codes.shape)}")
    if codes.dtype not in _INT_DTYPES:
        raise TypeError(f"codes must have an integer dtype, got {codes.dtype}")
    if codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError(f"codes is empty (shape {tuple(codes.shape)})")


def _sizes(codebook_sizes: int | Sequence[int] | None, levels: int, maxes: list[int]) -> list[int]:
    if codebook_sizes is None:
        return [m + 1 for m in maxes]
    if isinstance(codebook_sizes, Tensor):
        codebook_sizes = codebook_sizes.tolist()
    if isinstance(codebook_sizes, int) and not isinstance(codebook_sizes, bool):
        sizes = [codebook_sizes] * levels
    else:
        sizes = list(codebook_sizes)
        if len(sizes) != levels:
            raise ValueError(f"codebook_sizes has {len(sizes)} entries for {levels} levels")
    for l, k in enumerate(sizes):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"codebook_sizes[{l}] must be an int >= 1, got {k!r}")
    return sizes


def sid_report(codes: Tensor, *, codebook_sizes: int | Sequence[int] | None = None,
               embeddings: Tensor | None = None, reconstruction: Tensor | None = None) -> SIDReport:
    """Usage, perplexity, prefix sharing, collisions and reconstruction error of a SID table.

    codes:          [M, L] integer tensor (any device), codes >= 0.
    codebook_sizes: int (every level) or L ints; codes must be < the size of their level.
                    None: max code + 1 per level.
    embeddings:     [M, D] float tensor x (optional, with ``reconstruction``).
    reconstruction: [M, D] float tensor x_hat, e.g. the sum of the chosen codewords.

    Returns an :class:`SIDReport`. Raises TypeError/ValueError for a non-integer or non-2-D
    or empty code table, negative or out-of-range codes (naming level and item), and
    embeddings/reconstruction given alone or with mismatched shapes.
    """
    _check_codes(codes)
    m, nl = codes.shape
    c = codes.to(torch.int64)
    mins = c.min(dim=0).values.tolist()
    maxes = c.max(dim=0).values.tolist()
    for l in range(nl):
        if mins[l] < 0:
            i = int(torch.nonzero(c[:, l] < 0)[0, 0])
            raise ValueError(f"codes must be >= 0: item {i} has code {int(c[i, l])} at level {l}")
    sizes = _sizes(codebook_sizes, nl, maxes)
    for l in range(nl):
        if maxes[l] >= sizes[l]:
            i = int(torch.nonzero(c[:, l] >= sizes[l])[0, 0])
            raise ValueError(f"item {i} has code {int(c[i, l])} at level {l}, "
                             f"outside the codebook of size {sizes[l]}")

    recon = None
    if (embeddings is None) != (reconstruction is None):
        raise ValueError("embeddings and reconstruction must be given together")
    if embeddings is not None:
        recon = _relative_error(embeddings, reconstruction, m)

    # per-level usage and perplexity
    used, usage, perplexity = [], [], []
    for l in range(nl):
        if maxes[l] < max(4 * m, 1 << 20):
            counts = torch.bincount(c[:, l])
            counts = counts[counts > 0]
        else:  # huge codebooks: count by sorting instead of a dense histogram
            counts = torch.unique(c[:, l], return_counts=True)[1]
        nz = counts.to(torch.float64)
        p = nz / m
        used.append(int(nz.numel()))
        usage.append(nz.numel() / sizes[l])
        perplexity.append(float(torch.exp(-(p * torch.log(p)).sum())))

    # prefix statistics: pack tuples into one int64 key (mixed radix) and sort once; the
    # key of a depth-d prefix is key // (K_{d} * ... * K_{L-1}), monotone in key, so every
    # depth's groups are runs of the sorted keys.
    prefix_distinct, prefix_mean, prefix_max = [], [], []
    if math.prod(sizes) < 2 ** 62:
        key = torch.zeros(m, dtype=torch.int64, device=c.device)
        for l in range(nl):
            key = key * sizes[l] + c[:, l]
        key, _ = torch.sort(key)
        div = math.prod(sizes)
        for d in range(1, nl + 1):
            div //= sizes[d - 1]
            pk = key // div if div > 1 else key
            _, cnt = torch.unique_consecutive(pk, return_counts=True)
            prefix_distinct.append(int(cnt.numel()))
            prefix_max.append(int(cnt.max()))
            prefix_mean.append(m / cnt.numel())
    else:  # too many tuples for one int64: re-rank the prefix after each level
        rank = torch.zeros(m, dtype=torch.int64, device=c.device)
        for l in range(nl):
            rank, cnt = torch.unique(rank * sizes[l] + c[:, l], return_inverse=True, return_counts=True)[1:]
            prefix_distinct.append(int(cnt.numel()))
            prefix_max.append(int(cnt.max()))
            prefix_mean.append(m / cnt.numel())
    # cnt holds the full-tuple group sizes here
    colliding = int(cnt[cnt > 1].sum())
    return SIDReport(
        num_items=m, levels=nl, codebook_sizes=sizes, codebook_sizes_given=codebook_sizes is not None,
        codes_used=used, usage=usage, perplexity=perplexity,
        prefix_distinct=prefix_distinct, prefix_mean_items=prefix_mean, prefix_max_items=prefix_max,
        distinct_tuples=prefix_distinct[-1], max_items_per_tuple=prefix_max[-1],
        colliding_items=colliding, collision_rate=colliding / m, reconstruction_error=recon)


def _relative_error(x: Tensor, x_hat: Tensor, m: int) -> float:
    for name, t in (("embeddings", x), ("reconstruction", x_hat)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be [M, D], got shape {tuple(t.shape)}")
    if x.shape != x_hat.shape:
        raise ValueError(f"embeddings {tuple(x.shape)} and reconstruction {tuple(x_hat.shape)} "
                         "must have the same shape")
    if x.shape[0] != m:
        raise ValueError(f"embeddings have {x.shape[0]} rows for {m} items in codes")
    if x.device != x_hat.device:
        raise ValueError(f"embeddings on {x.device} and reconstruction on {x_hat.device}")
    # differences in float32 (float64 if either input is float64), sums of squares in float64
    dt = torch.promote_types(torch.promote_types(x.dtype, x_hat.dtype), torch.float32)
    num = den = 0.0
    step = max(1, (1 << 22) // max(1, x.shape[1]))  # ~4M elements at a time
    for i in range(0, m, step):
        xc = x[i:i + step].to(dt)
        d = (xc - x_hat[i:i + step].to(dt)).reshape(-1).to(torch.float64)
        xc = xc.reshape(-1).to(torch.float64)
        num += float(torch.dot(d, d))
        den += float(torch.dot(xc, xc))
    if den == 0.0:
        return math.nan if num == 0.0 else math.inf
    return num / den
