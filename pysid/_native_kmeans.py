"""The checked Python face of the C++ k-means kernels (``pysid._C``, csrc/bind_kmeans.cpp).

The bindings take pointers and sizes only (the one binding style, csrc/README.md); these
functions check every argument, allocate every output, then make one call. Semantics,
summation orders and determinism: csrc/kmeans.h.

    kmeans_update(x, codes, weights, k) -> (sums [k, D] float64, counts [k] float64)
    kmeanspp_candidates(x, cand, mind, weights) -> (dist [N, T] float32, pot [T] float64)
    kmeanspp_commit(dist, best, mind, weights) -> cum [N] float64   (mind updated in place)
    kmeans_assign_bf16(x, cand) -> (codes [N] int32, dist [N] float32)
    kmeanspp_pack(x) -> panels [ceil(N / 32) * 2, D, 16] float32
    kmeanspp_run(panels, n, weights, u, c0, mind, cum) -> chosen [steps] int64
                                                        (mind, cum updated in place)

x: [N, D] float32 / float16 / bfloat16; codes [N] int32; weights None or [N] float32;
cand [T, D] float32 with 1 <= T <= 64; mind [N] float32; u [steps, T] float64; cum [N]
float64. Every tensor: CPU, contiguous.

Errors (raised before any work, so no partial result ever escapes): TypeError for a
non-tensor or a wrong dtype; ValueError for a wrong device, number of dims, size,
non-contiguous input, k < 1, T outside [1, 64], or a code outside [0, k) (the message names
the first such row); RuntimeError when out of memory.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._status import DTYPE_CODES

MAX_CANDIDATES = 64  # == _C.kmeanspp_max_candidates (csrc/kmeans.h)
_PANEL_ROWS, _UNIT_ROWS = 16, 32  # kmeanspp_pack: 16-row panels, rows padded to whole 32-row units


def _tensor(fn: str, name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cpu:
        raise ValueError(f"{fn}: {name} must be on the CPU, got device {t.device}")
    return t


def _dtype(fn: str, name: str, t: Tensor, want: torch.dtype) -> None:
    if t.dtype != want:
        raise TypeError(f"{fn}: {name} must be {want}, got {t.dtype}")


def _ptr(fn: str, name: str, t: Tensor) -> int:
    if not t.is_contiguous():
        raise ValueError(f"{fn}: {name} must be contiguous (call .contiguous() first)")
    return t.data_ptr()


def _vector(fn: str, name: str, t: object, dtype: torch.dtype, n: int) -> int:
    """A [N] tensor of dtype; returns its pointer."""
    t = _tensor(fn, name, t)
    _dtype(fn, name, t, dtype)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{fn}: {name} must have shape [N] (N = x.shape[0] = {n}), got {tuple(t.shape)}")
    return _ptr(fn, name, t)


def _weights(fn: str, w: object, n: int) -> int:
    return 0 if w is None else _vector(fn, "weights", w, torch.float32, n)


def _x(fn: str, x: object) -> tuple[Tensor, int, int, int, int]:
    """x [N, D] float32 / float16 / bfloat16: (x, dtype code, N, D, pointer)."""
    x = _tensor(fn, "x", x)
    code = DTYPE_CODES.get(x.dtype)
    if code is None:
        raise TypeError(f"{fn}: x must be torch.float32, torch.float16 or torch.bfloat16, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{fn}: x must be 2-D [N, D], got shape {tuple(x.shape)}")
    n, d = x.shape
    return x, code, n, d, _ptr(fn, "x", x)


def kmeans_update(x: Tensor, codes: Tensor, weights: Optional[Tensor], k: int) -> tuple[Tensor, Tensor]:
    """Per-cluster float64 sums [k, D] and weight totals [k] of x's rows grouped by codes."""
    fn = "kmeans_update"
    x, code, n, d, xp = _x(fn, x)
    cp = _vector(fn, "codes", codes, torch.int32, n)
    wp = _weights(fn, weights, n)
    if k < 1:
        raise ValueError(f"{fn}: k must be >= 1, got {k}")
    sums = torch.empty((k, d), dtype=torch.float64)
    counts = torch.empty((k,), dtype=torch.float64)
    _native.cpu().kmeans_update(xp, code, n, d, cp, wp, k, sums.data_ptr(), counts.data_ptr())
    return sums, counts


def kmeans_assign_bf16(x: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's nearest candidate by bfloat16 distances (the k-means|| seeding assignment,
    csrc/kmeans.h: kmeans_assign_bf16_cpu): codes [N] int32 and distances [N] float32.
    x: [N, D] float32; cand: [k, D] float32, k >= 1; both contiguous."""
    fn = "kmeans_assign_bf16"
    x = _tensor(fn, "x", x)
    _dtype(fn, "x", x, torch.float32)
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"{fn}: x must be 2-D [N, D] with D >= 1, got shape {tuple(x.shape)}")
    n, d = x.shape
    xp = _ptr(fn, "x", x)
    cand = _tensor(fn, "cand", cand)
    _dtype(fn, "cand", cand, torch.float32)
    if cand.dim() != 2 or cand.shape[1] != d or cand.shape[0] < 1:
        raise ValueError(f"{fn}: cand must have shape [k, D] with k >= 1 (D = x.shape[1] = {d}), got {tuple(cand.shape)}")
    candp = _ptr(fn, "cand", cand)
    codes = torch.empty(n, dtype=torch.int32)
    dist = torch.empty(n, dtype=torch.float32)
    _native.cpu().kmeans_assign_bf16(xp, n, d, candp, cand.shape[0], codes.data_ptr(), dist.data_ptr())
    return codes, dist


def kmeanspp_candidates(x: Tensor, cand: Tensor, mind: Tensor, weights: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Squared distances [N, T] float32 of x's rows to T candidate centres and each candidate's
    k-means++ potential [T] float64."""
    fn = "kmeanspp_candidates"
    x, code, n, d, xp = _x(fn, x)
    cand = _tensor(fn, "cand", cand)
    _dtype(fn, "cand", cand, torch.float32)
    if cand.dim() != 2 or cand.shape[1] != d:
        raise ValueError(f"{fn}: cand must have shape [T, D] (D = x.shape[1] = {d}), got {tuple(cand.shape)}")
    t = cand.shape[0]
    if not 1 <= t <= MAX_CANDIDATES:
        raise ValueError(f"{fn}: the number of candidates T = cand.shape[0] must be in [1, {MAX_CANDIDATES}], got {t}")
    candp = _ptr(fn, "cand", cand)
    mp = _vector(fn, "mind", mind, torch.float32, n)
    wp = _weights(fn, weights, n)
    dist = torch.empty((n, t), dtype=torch.float32)
    pot = torch.empty((t,), dtype=torch.float64)
    _native.cpu().kmeanspp_candidates(xp, code, n, d, candp, t, mp, wp, dist.data_ptr(), pot.data_ptr())
    return dist, pot


def kmeanspp_commit(dist: Tensor, best: int, mind: Tensor, weights: Optional[Tensor]) -> Tensor:
    """mind <- min(mind, dist[:, best]) in place; returns cumsum((weights * mind).double()) [N]."""
    fn = "kmeanspp_commit"
    dist = _tensor(fn, "dist", dist)
    _dtype(fn, "dist", dist, torch.float32)
    if dist.dim() != 2 or dist.shape[1] < 1:
        raise ValueError(f"{fn}: dist must have shape [N, T], T >= 1, got {tuple(dist.shape)}")
    n, t = dist.shape
    if not 0 <= best < t:
        raise ValueError(f"{fn}: best = {best} is out of range [0, {t})")
    dp = _ptr(fn, "dist", dist)
    mp = _vector(fn, "mind", mind, torch.float32, n)
    wp = _weights(fn, weights, n)
    cum = torch.empty((n,), dtype=torch.float64)
    _native.cpu().kmeanspp_commit(dp, n, t, best, mp, wp, cum.data_ptr())
    return cum


def _panel_count(n: int) -> int:
    return (n + _UNIT_ROWS - 1) // _UNIT_ROWS * _UNIT_ROWS // _PANEL_ROWS


def kmeanspp_pack(x: Tensor) -> Tensor:
    """x [N, D] as float32 row panels [ceil(N / 32) * 2, D, 16] (16 rows transposed, zero padded)
    for :func:`kmeanspp_run`."""
    fn = "kmeanspp_pack"
    x, code, n, d, xp = _x(fn, x)
    panels = torch.empty((_panel_count(n), d, _PANEL_ROWS), dtype=torch.float32)
    _native.cpu().kmeanspp_pack(xp, code, n, d, panels.data_ptr())
    return panels


def kmeanspp_run(panels: Tensor, n: int, weights: Optional[Tensor], u: Tensor, c0: int, mind: Tensor,
                 cum: Tensor) -> Tensor:
    """Greedy k-means++ centres c0 .. c0 + steps - 1 on packed rows: the chosen rows [steps]
    int64; mind [N] float32 and cum [N] float64 are updated in place (csrc/kmeans.h)."""
    fn = "kmeanspp_run"
    if n < 1:
        raise ValueError(f"{fn}: N must be >= 1, got {n}")
    if c0 < 0:
        raise ValueError(f"{fn}: c0 must be >= 0, got {c0}")
    panels = _tensor(fn, "panels", panels)
    _dtype(fn, "panels", panels, torch.float32)
    npan = _panel_count(n)
    if panels.dim() != 3 or panels.shape[0] != npan or panels.shape[2] != _PANEL_ROWS:
        raise ValueError(f"{fn}: panels must have shape [{npan}, D, 16] (kmeanspp_pack of N = {n} rows), "
                         f"got {tuple(panels.shape)}")
    d = panels.shape[1]
    pp = _ptr(fn, "panels", panels)
    wp = _weights(fn, weights, n)
    u = _tensor(fn, "u", u)
    _dtype(fn, "u", u, torch.float64)
    if u.dim() != 2 or not 1 <= u.shape[1] <= MAX_CANDIDATES:
        raise ValueError(f"{fn}: u must have shape [steps, T] with 1 <= T <= {MAX_CANDIDATES}, got {tuple(u.shape)}")
    steps, t = u.shape
    up = _ptr(fn, "u", u)
    mp = _vector(fn, "mind", mind, torch.float32, n)
    cp = _vector(fn, "cum", cum, torch.float64, n)
    chosen = torch.empty((steps,), dtype=torch.int64)
    _native.cpu().kmeanspp_run(pp, n, d, wp, t, up, c0, steps, mp, cp, chosen.data_ptr())
    return chosen
