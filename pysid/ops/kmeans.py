"""k-means primitives and the engine that :mod:`pysid.kmeans` runs on.

The primitives (nearest-centroid assignment, bounded assignment, centroid update,
k-means++ candidates / commit and fused seeding) register their implementations with
``pysid.ops.registry`` (reference: ``pysid.reference.kmeans`` / ``residual_quantize_ref``;
``cpu``: the C++ kernels of ``pysid._C``; ``triton``: ``pysid.kernels``, on CUDA or on
CPU under ``TRITON_INTERPRET=1``); ``pysid.backends()`` lists them. :func:`engine` picks
one backend for a whole run, by the backend in force and the input, and hands the
algorithm a :class:`KMeansEngine`: the primitives of that backend and its capabilities.
The algorithm never names a backend.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .. import _native, _native_kmeans
from .._checks import check_precision
from ..reference.kmeans import (kmeans_assign_bf16_ref, kmeans_assign_candidates_ref, kmeans_assign_canonical_ref,
                                kmeans_topm_ref, kmeans_update_ref, kmeanspp_candidates_ref)
from ..reference.residual_quantize import residual_quantize_ref
from .registry import FLOAT_DTYPES, KERNEL_DTYPES, BackendNotSupportedError, Inputs, get, register, select

__all__ = ["BoundedAssign", "KMeansEngine", "cumulative", "engine"]

_CPU = dict(devices=("cpu",), dtypes=KERNEL_DTYPES)
_TRITON = dict(devices=("cuda",), dtypes=KERNEL_DTYPES)
_REF = dict(devices=None, dtypes=FLOAT_DTYPES)


# --------------------------------------------------------------------------- input layout
# prepare(x) -> x as the backend's kernels want it (the rows every primitive then takes)


@register("kmeans_prepare", "reference", **_REF)
@register("kmeans_prepare", "cpu", **_CPU)
def _prepare_float32(x: Tensor) -> Tensor:
    """Contiguous float32 (the C++ kernels; the reference computes half-precision input in
    float32 like the kernels); float64 stays (the reference only)."""
    return x if x.dtype == torch.float64 else x.to(torch.float32).contiguous()


@register("kmeans_prepare", "triton", **_TRITON)
def _prepare_contiguous(x: Tensor) -> Tensor:
    return x.contiguous()


# --------------------------------------------------------------------------- assignment
# assign(x, centroids) -> (codes [N] int64, squared distances [N] float32): exact float32
# argmin of ||x - c||^2 with ties to the lowest index (float64 on the float64 reference
# path); the kernels never build an N x k matrix.


# "greedy_codes": the final Lloyd assignments of float32 input are the greedy codes of the canonical
# score (residual_quantize's C++ kernel on its FMA paths, the Triton and CUDA kernels), so fit takes them
@register("kmeans_assign", "reference", traits=("greedy_codes",), **_REF)
def _assign_reference(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """float32 rows: the codes of the canonical score (those of the C++ kernels, bit for bit: the
    reference and the C++ engine then run the same Lloyd iterations; ``residual_quantize_ref`` sums
    with a GEMM and agrees within its tolerance); float64 rows: float64 scores."""
    if x.dtype != torch.float64:
        return kmeans_assign_canonical_ref(x, centroids)
    _, dist, codes = residual_quantize_ref(x, [centroids.to(x.dtype)])
    return codes[:, 0].long(), dist[:, 0]


# the C++ assignment is residual_quantize's C++ kernel on one level: the same codes, bit for bit
@register("kmeans_assign", "cpu", traits=("greedy_codes",), **_CPU)
def _assign_cpu(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    n, k = x.shape[0], centroids.shape[0]
    c = centroids.to(torch.float32).contiguous()
    dist = torch.empty((n, 1), dtype=torch.float32)
    codes = torch.empty((n, 1), dtype=torch.int32)
    if n:
        off = torch.tensor([0, k], dtype=torch.int64)
        _native.cpu().rq_encode(x.data_ptr(), n, x.shape[1], c.data_ptr(), off.data_ptr(), 1, 1, 0,
                                dist.data_ptr(), codes.data_ptr())
    return codes[:, 0].long(), dist[:, 0]


# a k-means++ step on the Triton kernels has no host synchronisation: it can be a CUDA graph;
# "precision": takes precision= ("exact" | "fast", see pysid.residual_quantize)
@register("kmeans_assign", "triton", traits=("cuda_graphs", "precision"), **_TRITON)
def _assign_triton(x: Tensor, centroids: Tensor, precision: str = "exact") -> tuple[Tensor, Tensor]:
    from ..kernels.residual_quantize import residual_quantize_triton

    k = centroids.shape[0]
    c = centroids.to(torch.float32).contiguous()
    _, dist, codes = residual_quantize_triton(x, c, [0, k], 1, quantized=False, precision=precision)
    return codes[:, 0].long(), dist[:, 0]


@register("kmeans_assign_bounded", "cpu", limits="Hamerly/Elkan bounds", **_CPU)
class BoundedAssign:
    """Lloyd's assignment step on the CPU kernels with bounds carried from call to call.

    ``BoundedAssign(x)(centroids)`` returns what the ``cpu`` assignment returns, bit for bit,
    but after the first call it searches only the rows whose code may have changed: a
    row keeps its code when its distance to that centre, plus the float error of the
    kernel's scores, stays below a lower bound on its distance to every other centre
    (Hamerly's bound, moved by how far the centres moved, and half the distance from
    its centre to the nearest other one). ``searched`` lists the rows searched per call.
    Where the bounds prune little (rows about as near to two centres, as on the residuals
    of later RQ levels), checking them costs more than it saves: once a call after the
    second has searched more than ``give_up`` of the rows, later calls run the plain search.

    x: [N, D] float32 contiguous (as :meth:`KMeansEngine.prepare` gives for the C++ kernels)."""

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
            return _assign_cpu(x, centroids)
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


# --------------------------------------------------------------------------- candidate lists
# assign_topm(x, centroids, m) -> (codes [N] int64, distances [N] float32, cand [N, m] int32): the
# exact assignment (the same as assign) and each row's m nearest centroids (the m lowest scores
# ||c||^2 - 2 x.c, ties to the lower code) in increasing code order.
# assign_candidates(x, centroids, cand) -> (codes [N] int64, distances [N] float32): the nearest
# centroid among each row's candidates by assign's score (float32 rows: the canonical score
# fl(||c||^2 - 2 x.c), x.c one float32 FMA chain over d; ties: the first in list order), so a list
# holding a row's full-search code gives that code; distances from the differences.


@register("kmeans_assign_topm", "reference", **_REF)
def _topm_reference(x: Tensor, centroids: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    codes, dist = _assign_reference(x, centroids)
    return codes, dist, kmeans_topm_ref(x, centroids, m).to(torch.int32)


@register("kmeans_assign_topm", "cpu", limits="the scores and codes of the cpu assignment", **_CPU)
def _topm_cpu(x: Tensor, centroids: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    n, k = x.shape[0], centroids.shape[0]
    if not 1 <= m <= k:
        raise ValueError(f"kmeans_assign_topm: m must be in [1, k = {k}], got {m}")
    c = centroids.to(torch.float32).contiguous()
    dist = torch.empty(n, dtype=torch.float32)
    codes = torch.empty(n, dtype=torch.int32)
    cand = torch.empty((n, m), dtype=torch.int32)
    if n:
        _native.cpu().kmeans_assign_topm(x.data_ptr(), n, x.shape[1], c.data_ptr(), k, m, codes.data_ptr(),
                                         dist.data_ptr(), cand.data_ptr())
    return codes.long(), dist, cand


@register("kmeans_assign_candidates", "reference", **_REF)
def _candidates_assign_reference(x: Tensor, centroids: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    return kmeans_assign_candidates_ref(x, centroids, cand)


@register("kmeans_assign_candidates", "cpu", **_CPU)
def _candidates_assign_cpu(x: Tensor, centroids: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    n, k = x.shape[0], centroids.shape[0]
    if cand.dtype != torch.int32 or cand.dim() != 2 or cand.shape[0] != n or not cand.is_contiguous():
        raise ValueError(f"kmeans_assign_candidates: cand must be a contiguous [N = {n}, m] int32 tensor, "
                         f"got {cand.dtype} {tuple(cand.shape)}")
    c = centroids.to(torch.float32).contiguous()
    dist = torch.empty(n, dtype=torch.float32)
    codes = torch.empty(n, dtype=torch.int32)
    if n:
        _native.cpu().kmeans_assign_candidates(x.data_ptr(), n, x.shape[1], c.data_ptr(), k, cand.data_ptr(),
                                               cand.shape[1], codes.data_ptr(), dist.data_ptr())
    return codes.long(), dist


# --------------------------------------------------------------------------- k-means|| seeding
# assign_seed(x, cand) -> (codes [N] int64, distances [N] float32): each row's nearest k-means||
# candidate by bfloat16 distances (reference.kmeans.kmeans_assign_bf16_ref: the same bits); the
# k-means|| rounds use it where a backend has it (their distances only weight the random draws),
# else the exact assign. The reference and C++ engines therefore seed the same centres.


@register("kmeans_assign_seed", "reference", **_REF)
def _seed_assign_reference(x: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    return kmeans_assign_bf16_ref(x, cand)


@register("kmeans_assign_seed", "cpu", limits="bfloat16 distances (AVX512_BF16 or its exact emulation)", **_CPU)
def _seed_assign_cpu(x: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    codes, dist = _native_kmeans.kmeans_assign_bf16(x, cand.to(torch.float32).contiguous())
    return codes.long(), dist


# --------------------------------------------------------------------------- update
# update(x, codes, weights, k) -> per-cluster weighted sums [k, D] and weights [k], float64.


@register("kmeans_update", "reference", **_REF)
def _update_reference(x: Tensor, codes: Tensor, weights: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    return kmeans_update_ref(x, codes, weights, k)


@register("kmeans_update", "cpu", **_CPU)
def _update_cpu(x: Tensor, codes: Tensor, weights: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    c32 = codes.to(torch.int32).contiguous()
    return _native_kmeans.kmeans_update(x, c32, weights, k)


@register("kmeans_update", "triton", **_TRITON)
def _update_triton(x: Tensor, codes: Tensor, weights: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    from ..kernels.kmeans import kmeans_update_triton

    sums, counts = kmeans_update_triton(x, codes.to(torch.int32).contiguous(), weights, k)
    return sums.double(), counts.double()


# --------------------------------------------------------------------------- k-means++
# candidates(x, cand, mind, weights) -> distances [N, T] float32 to T candidate centres and
# the potential [T] float64 of each; commit(dist, best, mind, weights) -> (mind, cum): after
# a centre is chosen, mind <- min(mind, dist[:, best]) and the next draw's cumulative
# weights cumsum(w * mind) float64 [N].


@register("kmeanspp_candidates", "reference", **_REF)
def _candidates_reference(x: Tensor, cand: Tensor, mind: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    return kmeanspp_candidates_ref(x, cand, mind, weights)


@register("kmeanspp_candidates", "cpu", **_CPU)
def _candidates_cpu(x: Tensor, cand: Tensor, mind: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    cand = cand.to(torch.float32).contiguous()
    return _native_kmeans.kmeanspp_candidates(x, cand, mind, weights)


@register("kmeanspp_candidates", "triton", **_TRITON)
def _candidates_triton(x: Tensor, cand: Tensor, mind: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    from ..kernels.kmeans import kmeanspp_candidates_triton

    dist, pot = kmeanspp_candidates_triton(x, cand.to(torch.float32).contiguous(), mind, weights)
    return dist, pot.double()


def cumulative(p: Tensor) -> Tensor:
    """Inclusive float64 prefix sums of the sampling weights p [N] (a single 0 when N = 0)."""
    if p.shape[0] == 0:
        return torch.zeros(1, dtype=torch.float64, device=p.device)
    return torch.cumsum(p.to(torch.float64), 0)


def _commit_torch(dist: Tensor, best: Tensor, mind: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    mind = torch.minimum(mind, dist.index_select(1, best.reshape(1))[:, 0])
    return mind, cumulative(mind if weights is None else weights * mind)


# the reference and the Triton path commit with the same torch ops (the same bits as the C++ pass)
register("kmeanspp_commit", "reference", **_REF)(_commit_torch)
register("kmeanspp_commit", "triton", **_TRITON)(_commit_torch)


@register("kmeanspp_commit", "cpu", limits="one fused pass, in place on mind", **_CPU)
def _commit_cpu(dist: Tensor, best: Tensor, mind: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    if dist.shape[0] == 0:
        return _commit_torch(dist, best, mind, weights)
    cum = _native_kmeans.kmeanspp_commit(dist, int(best), mind, weights)
    return mind, cum


@register("kmeanspp_seed", "cpu", limits="one process (the whole loop in C++)", **_CPU)
def _seed_cpu(x: Tensor, weights: Tensor | None, u: Tensor, progress=None) -> Tensor:
    """Greedy k-means++ on one process with the C++ loop: the rows [k] int64 of x chosen
    as centres, the same ones as the step-by-step loop over ``candidates`` and
    ``commit`` (one draw for centre 0, then ``u.shape[1]`` candidates per centre).

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


@register("kmeanspp_seed", "triton", limits="one process; three fused kernels per centre, CUDA graphs", **_TRITON)
def _seed_triton(x: Tensor, weights: Tensor | None, u: Tensor, progress=None) -> Tensor:
    """Greedy k-means++ on one process with the fused Triton kernels (``pysid.kernels.kmeans.
    KMeansPPSeeder``): per centre a sampling, a scoring and a choose-and-commit launch, the state on
    the device, steps replayed from captured CUDA graphs. The same rows as the step-by-step loop
    over ``candidates`` and ``commit`` (whose distances it shares bit for bit) up to draws within
    float64 rounding of a row boundary.

    x: [N, D] contiguous (float32 / float16 / bfloat16) on CUDA (or CPU under TRITON_INTERPRET=1);
    weights: None or [N] float32; u: [k, T] float64 uniforms; progress: a tqdm bar or None."""
    from ..kernels.kmeans import kmeanspp_seed_triton

    return kmeanspp_seed_triton(x, weights, u.to(device=x.device, dtype=torch.float64), progress)


# --------------------------------------------------------------------------- the engine


class KMeansEngine:
    """The primitives of one backend for one k-means run, and what they can do.

    Primitives (registered per backend; a backend needs :attr:`REQUIRED`): :meth:`prepare`, :meth:`assign`, :meth:`update`, :meth:`candidates`,
    :meth:`commit`, :meth:`cumulative`; optional ones are None when the backend lacks
    them: :attr:`bounded_assign` (``BoundedAssign``-like factory: ``bounded_assign(x)(c)``
    equals ``assign(x, c)`` bit for bit), :attr:`seed` (the whole greedy k-means++ loop
    of one process in one call) and the candidate-list pair :attr:`assign_topm`
    (``assign_topm(x, c, m)``: ``assign``'s codes and distances, bit for bit, and each row's m
    nearest centroids) and :attr:`assign_candidates` (``assign_candidates(x, c, cand)``: the
    nearest among each row's candidates by the same score as ``assign``: a list that holds a row's
    ``assign`` code gives that code), and :attr:`assign_seed` (``assign_seed(x, cand)``: the
    k-means|| rounds' nearest candidate by bfloat16 distances).

    Capabilities: :attr:`lloyd_codes_are_greedy_codes` (the final Lloyd assignments of
    float32 input are the greedy codes of the canonical score bit for bit, as
    ``residual_quantize``'s C++ kernel gives them: the same kernel computes both on the C++ engine,
    the reference computes the canonical score itself) and :attr:`cuda_graphs` (the k-means++ step may be captured and
    replayed as a CUDA graph).

    :attr:`precision`: ``"exact"`` or ``"fast"`` (``pysid.residual_quantize``'s option), given to
    an assignment registered with the trait ``"precision"`` (Triton); the others are exact."""

    REQUIRED = ("kmeans_prepare", "kmeans_assign", "kmeans_update", "kmeanspp_candidates", "kmeanspp_commit")
    OPTIONAL = ("kmeans_assign_bounded", "kmeanspp_seed", "kmeans_assign_topm", "kmeans_assign_candidates",
                "kmeans_assign_seed")

    def __init__(self, backend: str, device: torch.device, precision: str = "exact"):
        self.backend = backend
        self.precision = check_precision(precision)
        missing = [op for op in self.REQUIRED if get(op, backend) is None]
        if missing:
            raise BackendNotSupportedError(f"backend {backend!r} lacks the k-means primitives {missing}",
                                           {backend: [f"no {op}" for op in missing]})
        self._prepare, self._assign, self._update, self._candidates, self._commit = (
            get(op, backend).fn for op in self.REQUIRED)
        bounded, seed, topm, cands, seed_assign = (get(op, backend) for op in self.OPTIONAL)
        self.bounded_assign: Optional[Callable[[Tensor], Callable]] = None if bounded is None else bounded.fn
        self.seed: Optional[Callable] = None if seed is None else seed.fn
        # candidate lists (kmeans(..., candidates=m)): both primitives or neither
        self.assign_topm: Optional[Callable] = None if topm is None or cands is None else topm.fn
        self.assign_candidates: Optional[Callable] = None if topm is None or cands is None else cands.fn
        # the k-means|| rounds' assignment (bfloat16 distances); None: they use assign
        self.assign_seed: Optional[Callable] = None if seed_assign is None else seed_assign.fn
        traits = get("kmeans_assign", backend).traits
        self._assign_kw = {"precision": precision} if "precision" in traits else {}
        self.lloyd_codes_are_greedy_codes = "greedy_codes" in traits
        self.cuda_graphs = "cuda_graphs" in traits and device.type == "cuda"

    def __repr__(self) -> str:
        return f"KMeansEngine({self.backend!r})"

    def prepare(self, x: Tensor) -> Tensor:
        """x as the kernels want it (contiguous; float32 for the C++ kernels and the reference)."""
        return self._prepare(x)

    def assign(self, x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
        return self._assign(x, centroids, **self._assign_kw)

    def update(self, x: Tensor, codes: Tensor, weights: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
        return self._update(x, codes, weights, k)

    def candidates(self, x: Tensor, cand: Tensor, mind: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._candidates(x, cand, mind, weights)

    def commit(self, dist: Tensor, best: Tensor, mind: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._commit(dist, best, mind, weights)

    cumulative = staticmethod(cumulative)


def engine(x: Tensor, backend: Optional[str] = None, precision: str = "exact") -> KMeansEngine:
    """The k-means engine for ``x`` [N, D] under ``backend`` (default: the backend in force), its
    assignments at ``precision`` ("exact" | "fast"); never falls back: a forced backend that cannot
    run x raises ``BackendNotSupportedError``."""
    impl = select("kmeans_assign", Inputs.of(x), backend)
    return KMeansEngine(impl.backend, x.device, precision)
