"""k-means primitives with backend dispatch: nearest-centroid assignment, centroid update
(segmented sum) and the greedy k-means++ candidate step.

Every primitive has three implementations with the same semantics: the reference
(``pysid.reference.kmeans`` / ``residual_quantize_ref``), the C++ CPU kernels
(``pysid._C``) and the Triton kernels (``pysid.kernels``; CUDA, or CPU under
``TRITON_INTERPRET=1``). There is no CUDA C++ k-means kernel: on CUDA tensors
``auto`` runs Triton, and forcing ``cuda``/``native`` raises.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _backend, _native, _native_kmeans
from ..reference.kmeans import kmeans_update_ref, kmeanspp_candidates_ref
from ..reference.residual_quantize import residual_quantize_ref

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def select(x: Tensor) -> str:
    """'reference', 'cpu' or 'triton' for this input under the backend in force (never falls back)."""
    name = _backend.get_backend()
    if name == "reference" or (name == "auto" and x.dtype not in _KERNEL_DTYPES):
        return "reference"
    if x.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"the {name} backend takes float32, float16 or bfloat16 x, got {x.dtype} "
                        "(float64 runs on the reference)")
    if x.is_cuda:
        if name in ("auto", "triton"):
            if not _native.has_triton():
                raise RuntimeError("k-means on CUDA tensors needs Triton (pip install triton)")
            return "triton"
        raise RuntimeError(f"backend {name!r}: pysid has no CUDA C++ k-means kernels; use 'triton' or 'auto'")
    if x.device.type != "cpu":
        if name == "auto":
            return "reference"
        raise RuntimeError(f"pysid has no {name} kernel for {x.device.type} tensors")
    if name == "cuda":
        raise RuntimeError("backend 'cuda' was forced but x is a CPU tensor")
    return "triton" if name == "triton" else "cpu"


def prepare(x: Tensor, impl: str) -> Tensor:
    """x as the kernels of ``impl`` want it: contiguous; float32 for the C++ assignment (and for
    the reference, which computes half-precision input in float32 like the kernels)."""
    if impl == "triton":
        return x.contiguous()
    if impl == "cpu" or x.dtype != torch.float64:
        return x.to(torch.float32).contiguous()
    return x


def assign(x: Tensor, centroids: Tensor, impl: str) -> tuple[Tensor, Tensor]:
    """Nearest centroid of every row: (codes [N] int64, squared distances [N] float32).

    Exact float32 argmin of ||x - c||^2 with ties to the lowest index (float64 on the
    float64 reference path); never builds an N x k matrix in the kernels."""
    n, k = x.shape[0], centroids.shape[0]
    if impl == "reference":
        _, dist, codes = residual_quantize_ref(x, [centroids.to(x.dtype)])
        return codes[:, 0].long(), dist[:, 0]
    c = centroids.to(torch.float32).contiguous()
    if impl == "cpu":
        dist = torch.empty((n, 1), dtype=torch.float32)
        codes = torch.empty((n, 1), dtype=torch.int32)
        if n:
            off = torch.tensor([0, k], dtype=torch.int64)
            _native.cpu().rq_encode(x.data_ptr(), n, x.shape[1], c.data_ptr(), off.data_ptr(), 1, 1, 0,
                                    dist.data_ptr(), codes.data_ptr())
        return codes[:, 0].long(), dist[:, 0]
    from ..kernels.residual_quantize import residual_quantize_triton

    _, dist, codes = residual_quantize_triton(x, c, [0, k], 1, quantized=False)
    return codes[:, 0].long(), dist[:, 0]


class BoundedAssign:
    """Lloyd's assignment step on the CPU kernels with bounds carried from call to call.

    ``BoundedAssign(x)(centroids)`` returns what ``assign(x, centroids, "cpu")`` returns, bit for bit,
    but after the first call it searches only the rows whose code may have changed: a
    row keeps its code when its distance to that centre, plus the float error of the
    kernel's scores, stays below a lower bound on its distance to every other centre
    (Hamerly's bound, moved by how far the centres moved, and half the distance from
    its centre to the nearest other one). ``searched`` lists the rows searched per call.
    Where the bounds prune little (rows about as near to two centres, as on the residuals
    of later RQ levels), checking them costs more than it saves: once a call after the
    second has searched more than ``give_up`` of the rows, later calls run the plain search.

    x: [N, D] float32 contiguous (as :func:`prepare` gives for the "cpu" kernels)."""

    give_up = 0.85

    def __init__(self, x: Tensor):
        n = x.shape[0]
        self.x = x
        self.codes = torch.zeros(n, dtype=torch.int32)
        self.lower = torch.zeros(n, dtype=torch.float64)
        self.xnorm2 = torch.zeros(n, dtype=torch.float64)
        self.prev: Tensor | None = None
        self.searched: list[int] = []

    def __call__(self, centroids: Tensor) -> tuple[Tensor, Tensor]:
        x, (n, d), k = self.x, self.x.shape, centroids.shape[0]
        if len(self.searched) > 2 and self.searched[-1] > self.give_up * n:
            return assign(x, centroids, "cpu")
        c = centroids.to(torch.float32).contiguous()
        shift = None
        if self.prev is not None and self.prev.shape == c.shape:
            shift = (c.double() - self.prev.double()).norm(dim=1).contiguous()
        dist = torch.empty(n, dtype=torch.float32)
        self.searched.append(_native.cpu().kmeans_assign_bounded(
            x.data_ptr(), n, d, c.data_ptr(), k, 0 if shift is None else shift.data_ptr(),
            self.codes.data_ptr(), dist.data_ptr(), self.lower.data_ptr(), self.xnorm2.data_ptr()))
        self.prev = c.clone()
        return self.codes.long(), dist


def update(x: Tensor, codes: Tensor, weights: Tensor | None, k: int, impl: str) -> tuple[Tensor, Tensor]:
    """Per-cluster weighted sums [k, D] and weights [k], both float64 (deterministic)."""
    if impl == "reference":
        return kmeans_update_ref(x, codes, weights, k)
    c32 = codes.to(torch.int32).contiguous()
    if impl == "cpu":
        return _native_kmeans.kmeans_update(x, c32, weights, k)
    from ..kernels.kmeans import kmeans_update_triton

    sums, counts = kmeans_update_triton(x, c32, weights, k)
    return sums.double(), counts.double()


def candidates(x: Tensor, cand: Tensor, mind: Tensor, weights: Tensor | None, impl: str) -> tuple[Tensor, Tensor]:
    """Distances [N, T] float32 to T candidate centres, and the potential [T] float64 of each."""
    if impl == "reference":
        return kmeanspp_candidates_ref(x, cand, mind, weights)
    cand = cand.to(torch.float32).contiguous()
    if impl == "cpu":
        return _native_kmeans.kmeanspp_candidates(x, cand, mind, weights)
    from ..kernels.kmeans import kmeanspp_candidates_triton

    dist, pot = kmeanspp_candidates_triton(x, cand, mind, weights)
    return dist, pot.double()


def kmeanspp_cpu(x: Tensor, weights: Tensor | None, u: Tensor, progress=None) -> Tensor:
    """Greedy k-means++ on one process with the C++ loop: the rows [k] int64 of x chosen
    as centres, the same ones as the step-by-step loop over :func:`candidates` and
    :func:`commit` (one draw for centre 0, then ``u.shape[1]`` candidates per centre).

    x: [N, D] float32 contiguous CPU; weights: None or [N] float32; u: [k, T] float64
    uniforms in [0, 1); progress: a tqdm bar (or None), advanced once per centre."""
    C = _native_kmeans
    n, d = x.shape
    k = u.shape[0]
    panels = C.kmeanspp_pack(x)
    mind = torch.full((n,), float("inf"), dtype=torch.float32)
    cum = cumulative(weights if weights is not None else torch.ones(n, dtype=torch.float32))
    chosen = torch.empty(k, dtype=torch.int64)
    step = max(1, 2**27 // max(1, n * d * u.shape[1]))  # ~0.1 s between progress updates
    for c0 in range(0, k, step):
        c1 = min(k, c0 + step)
        chosen[c0:c1] = C.kmeanspp_run(panels, n, weights, u[c0:c1].contiguous(), c0, mind, cum)
        if progress is not None:
            progress.update(c1 - c0)
    return chosen


def cumulative(p: Tensor) -> Tensor:
    """Inclusive float64 prefix sums of the sampling weights p [N] (a single 0 when N = 0)."""
    if p.shape[0] == 0:
        return torch.zeros(1, dtype=torch.float64, device=p.device)
    return torch.cumsum(p.to(torch.float64), 0)


def commit(dist: Tensor, best: Tensor, mind: Tensor, weights: Tensor | None, impl: str) -> tuple[Tensor, Tensor]:
    """After a k-means++ centre is chosen: mind <- min(mind, dist[:, best]) and the next draw's
    cumulative weights cumsum(w * mind) float64 [N]. The C++ path does both in one pass (in
    place on mind); the others are the same torch ops, which give the same bits."""
    if impl == "cpu" and dist.shape[0] > 0:
        cum = _native_kmeans.kmeanspp_commit(dist, int(best), mind, weights)
        return mind, cum
    mind = torch.minimum(mind, dist.index_select(1, best.reshape(1))[:, 0])
    return mind, cumulative(mind if weights is None else weights * mind)
