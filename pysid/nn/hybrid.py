"""Hybrid inputs and collaborative alignment for Semantic IDs.

    x = pysid.nn.fuse([text_emb, image_emb], weights=[2, 1])   # [N, Dt + Di] concatenation
    enc = pysid.nn.FusedEncoder([384, 512, 64], 128)           # learned projection, summed
    loss = pysid.nn.alignment_loss(quantized, collab)          # in-batch InfoNCE (DAS, LETTER)

``fuse`` is a parameter-free concatenation: every input is L2-normalised per row and scaled by
sqrt(w_i / sum w), so input i contributes exactly its weight share w_i / sum w of each fused
row's squared norm (the fused rows have unit norm). ``FusedEncoder`` is the learned variant.
``alignment_loss`` is the symmetric in-batch InfoNCE used by DAS and LETTER to pull a quantized
content representation towards the item's collaborative embedding; ``train_rqvae(...,
align_with=collab)`` applies it during RQ-VAE training.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FusedEncoder", "alignment_loss", "fuse"]


def _check_inputs(inputs: Sequence[Tensor]) -> list[Tensor]:
    if isinstance(inputs, Tensor):
        raise TypeError("inputs must be a sequence of tensors (e.g. [text_emb, image_emb]), not one tensor")
    inputs = list(inputs)
    if not inputs:
        raise ValueError("inputs is empty: give at least one [N, D_i] tensor")
    n = None
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"inputs[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"inputs[{i}] must be floating point, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"inputs[{i}] must be 2-D [N, D], got shape {tuple(t.shape)}")
        if n is None:
            n = t.shape[0]
        elif t.shape[0] != n:
            shapes = [tuple(x.shape) for x in inputs]
            raise ValueError(f"inputs have different numbers of rows (N): shapes {shapes}")
        bad = ~torch.isfinite(t).all(1)
        if bool(bad.any()):
            rows = bad.nonzero()[:, 0]
            raise ValueError(f"inputs[{i}] has NaN/Inf in {rows.numel()} row(s), e.g. rows {rows[:8].tolist()}")
    return inputs


def _check_weights(weights, k: int) -> list[float]:
    if weights is None:
        return [1.0] * k
    w = [float(v) for v in (weights.tolist() if isinstance(weights, Tensor) else weights)]
    if len(w) != k:
        raise ValueError(f"weights has {len(w)} entries for {k} inputs")
    if any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    return w


def fuse(inputs: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Concatenation fusion of several embeddings of the same N items.

    Args:
        inputs: tensors [N, D_i] (floating point, no NaN, same N; may differ in dtype: the
            result has their promoted dtype and the first input's device).
        weights: one non-negative weight per input (default: equal).

    Returns [N, sum D_i]: the concatenation of ``normalize(x_i) * sqrt(w_i / sum w)``; input i
    thus holds the share w_i / sum w of every row's squared norm (a zero row stays zero). Rows
    whose norm overflows their dtype or is below 1e-11 (e.g. float32 near 1e20 or 1e-30) are
    rescaled first, so any finite scale works. NaN/Inf are refused.
    """
    inputs = _check_inputs(inputs)
    w = _check_weights(weights, len(inputs))
    total = sum(w)
    dtype = inputs[0].dtype
    for t in inputs[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    dev = inputs[0].device
    parts = [_normalize(t.to(dev, dtype)) * math.sqrt(wi / total) for t, wi in zip(inputs, w)]
    return torch.cat(parts, 1)


def _normalize(t: Tensor) -> Tensor:
    """F.normalize(t, dim=1), also for rows whose norm overflows t's dtype or falls under
    F.normalize's eps (1e-12): those rows are divided by their largest |value| first, in
    float64 (e.g. float32 rows near 1e20 or 1e-30). Zero rows stay zero."""
    out = F.normalize(t, dim=1)
    if t.shape[0] == 0 or t.shape[1] == 0:
        return out
    n = torch.linalg.vector_norm(t, dim=1)
    bad = (~torch.isfinite(n) | (n < 1e-11)) & (t != 0).any(1)
    if bool(bad.any()):
        r = t[bad].double()
        r = r / r.abs().amax(1, keepdim=True)
        out[bad] = (r / torch.linalg.vector_norm(r, dim=1, keepdim=True)).to(t.dtype)
    return out


class FusedEncoder(nn.Module):
    """Learned fusion of several inputs into one [N, out_dim] representation.

    Args:
        dims: the size D_i of each input.
        out_dim: output size.
        mode: ``"projection"`` - per input LayerNorm(D_i) then Linear(D_i, out_dim), summed;
            ``"concat"`` - :func:`fuse` (equal weights) then one Linear(sum D_i, out_dim).

    Forward: ``*inputs`` (one [N, D_i] tensor per entry of ``dims``) -> [N, out_dim].
    Its output can feed an :class:`~pysid.nn.RQVAE` (train both in your own loop) or be
    computed once and passed to :func:`~pysid.nn.train_rqvae`.
    """

    def __init__(self, dims: Sequence[int], out_dim: int, mode: str = "projection"):
        super().__init__()
        dims = tuple(dims)
        if not dims:
            raise ValueError("dims is empty: give the size of each input")
        for name, v in [*((f"dims[{i}]", d) for i, d in enumerate(dims)), ("out_dim", out_dim)]:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if mode not in ("projection", "concat"):
            raise ValueError(f"mode must be 'projection' or 'concat', got {mode!r}")
        self.dims, self.out_dim, self.mode = dims, out_dim, mode
        if mode == "projection":
            self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
            self.projections = nn.ModuleList(nn.Linear(d, out_dim) for d in dims)
        else:
            self.projection = nn.Linear(sum(dims), out_dim)

    def forward(self, *inputs: Tensor) -> Tensor:
        if len(inputs) == 1 and not isinstance(inputs[0], Tensor):
            inputs = tuple(inputs[0])  # also accept forward([a, b])
        if len(inputs) != len(self.dims):
            raise ValueError(f"expected {len(self.dims)} inputs, got {len(inputs)}")
        xs = _check_inputs(inputs)
        for i, (t, d) in enumerate(zip(xs, self.dims)):
            if t.shape[1] != d:
                raise ValueError(f"inputs[{i}] must be [N, {d}], got shape {tuple(t.shape)}")
        if self.mode == "concat":
            return self.projection(fuse(xs).float())
        out = None
        for t, norm, proj in zip(xs, self.norms, self.projections):
            y = proj(norm(t.float()))
            out = y if out is None else out + y
        return out

    def extra_repr(self) -> str:
        return f"dims={self.dims}, out_dim={self.out_dim}, mode={self.mode!r}"


def alignment_loss(
    a: Tensor,
    b: Tensor,
    temperature: float = 0.07,
    projection: nn.Module | None = None,
) -> Tensor:
    """Symmetric in-batch InfoNCE between paired rows of a [N, Da] and b [N, Db].

    ``projection`` (e.g. ``nn.Linear(Da, Db)``) is applied to a first; it is required when
    Da != Db. With cosine similarities S = normalize(a) @ normalize(b).T / temperature, the loss
    is (CE(S, diag) + CE(S.T, diag)) / 2: row i of a must pick b_i among the batch and vice versa.
    Returns a scalar (0 for N = 1: a single pair has no negatives). Differentiable in a, b and
    the projection's parameters.
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(t.shape)}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same number of rows, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if projection is not None:
        a = projection(a)
    if a.shape[1] != b.shape[1]:
        hint = "" if projection is not None else " (pass projection=nn.Linear(Da, Db))"
        raise ValueError(f"a and b have different widths {a.shape[1]} and {b.shape[1]}{hint}")
    if a.shape[0] == 0:
        raise ValueError("a and b are empty (N = 0)")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    an = F.normalize(a.to(dtype), dim=1)
    bn = F.normalize(b.to(an.device, dtype), dim=1)
    logits = an @ bn.T / float(temperature)
    target = torch.arange(a.shape[0], device=an.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
