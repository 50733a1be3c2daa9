"""k-means for codebook initialisation: greedy k-means++ seeding, Lloyd iterations,
balanced (size-constrained) assignment, residual k-means, and multi-process runs.

    res = pysid.kmeans(x, 256)                            # [N, D] -> KMeansResult
    cbs = pysid.residual_kmeans(x, levels=3, k=256)       # [3, 256, D] codebooks
    out = pysid.residual_quantize(x, cbs)                 # ready to encode

Algorithm (every step runs on the engine ``pysid.ops.kmeans.engine(x)`` gives for the
input under the backend in force; ``pysid.backends()`` lists the implementations):

* Seeding, ``init="auto"`` (default): k-means|| when k >= 32 and the seeding rows number at
  least twice its candidates (``2 * (1 + 2 * 2k)``, e.g. 2,050 rows for k = 256), else
  greedy k-means++. Both draw only rows of positive ``init_weights`` and give data rows.
* ``init="k-means++"``: greedy k-means++ as in scikit-learn. The first centre
  is drawn with probability proportional to the row weights; each next centre draws
  ``n_local_trials`` (default ``2 + floor(ln k)``) candidates with probability
  proportional to ``w_i * D_i`` (``D_i``: squared distance to the nearest chosen centre)
  and keeps the candidate that lowers the potential ``sum_i w_i D_i`` most. One fused
  pass over the rows per centre scores all candidates; on one CPU process the whole loop
  runs in C++ on a transposed copy of the seeding rows (the same centres as the step loop).
  k passes over the rows: at few rows per centre (text catalogues: ~70) it costs as much as
  ~15-40 Lloyd iterations (memory-bound passes of a few candidates each).
* ``init="k-means||"`` (Bahmani et al. 2012; cuML and cuVS seed this way): one weighted
  draw, then 2 rounds that each draw 2k rows with probability proportional to ``w_i D_i``
  (with replacement) and update every ``D_i`` with one pass of an assignment kernel
  (compute-bound, like a Lloyd assignment); each of the 4k + 1 candidates is weighted by
  the rows nearest to it, and greedy k-means++ on the weighted candidates picks the k
  centres. About 4 Lloyd assignments of work. The rounds' distances only weight the draws
  and the candidates: on the C++ kernels and the reference (``KMeansEngine.assign_seed``)
  they are computed from bfloat16-rounded values (AVX512_BF16's ``vdpbf16ps`` where the CPU
  has it, else a float32 emulation with the same bits on every path; the reference is
  ``pysid.reference.kmeans.kmeans_assign_bf16_ref``, so both seed the same centres), ~1.7x
  faster than the exact kernel; on Triton and for float64 input by the exact assignment. On MiniLM text (Amazon Toys / Sports items,
  3 x 256 residual k-means) it seeds better than k-means++ on every row (lower final error
  and fewer collisions; bench/RESULTS.md, 2026-12-04). If the candidates hold fewer than k
  distinct rows of positive weight (data with few distinct rows), k-means++ seeds instead.
* Large N: seeding runs on a uniform subsample of ``init_sample`` rows (default
  ``256 * k``, as faiss caps its training set per centroid) when N is larger; the Lloyd
  iterations always use every row. ``init_sample=0`` seeds on every row.
* Lloyd: assignment by the exact nearest-codeword kernel of ``residual_quantize``
  (float32 argmin of the canonical score ``fl(||c||^2 - 2 x.c)``, ``x.c`` one float32 FMA chain
  over d, ties to the lowest index; every assignment - full, top-m lists, restricted to the lists -
  on the C++ engine's FMA paths and on the reference, which is why both run the same iterations
  and ``pysid.fit`` gives the same codebooks and codes on both, bit for bit; the C++ portable path
  without FMA rounds its chain twice per step and agrees within the reference's tolerance; no N x k
  matrix; on the C++ kernels, rows
  whose code provably cannot change are not searched: Hamerly/Elkan bounds with the
  kernel's float error as margin, the same result bit for bit), update by a deterministic
  segmented sum accumulated in float64 (C++) or float32 (Triton). Stops after ``iters``
  updates, or when an assignment lowers the inertia by less than ``rtol`` (default 1e-3)
  relative to the previous one (those centroids are then returned with that assignment,
  without another update), or when the total squared centre shift of an update is
  <= ``tol * mean feature variance`` (scikit-learn's rule). The result's assignments and
  inertia are those of the returned centroids.
* Candidate lists, ``candidates=m`` (``pysid.fit`` uses m = 8): a full assignment also keeps
  each row's m nearest centroids (the m lowest kernel scores, ties to the lower code); the
  next iterations search only those m (a restricted assignment: ~m/k of the arithmetic, each
  row's m centroid rows read from cache; a row whose list holds its full-search code gets that
  code: the C++ kernel proves its lane-wise fast scores against an error bound and re-scores the
  rare near-ties with the canonical chain) until the rtol rule would stop on a restricted
  assignment, or ``CANDIDATE_REFRESH`` (16) iterations have passed: then that iteration's
  assignment is a full one (renewing the lists), and the rule decides on it. A stop, the
  returned assignments and inertia therefore always come from a full, exact search (on the
  C++ kernels bit for bit ``residual_quantize``'s codes of the returned centroids). On
  MiniLM text (3 x 256, m = 8) a level runs 11-14 iterations, 3-4 of them full, and ends
  within 1 % of the error of 50 full iterations (bench/RESULTS.md, 2026-12-05). Runs on
  engines with the two candidate primitives (C++, reference) in the per-iteration loop;
  Triton runs, ``balanced=True`` and m >= k search every centroid every iteration.
* Host synchronisation: on CUDA the loop runs blocks of ``CHECK_EVERY_CUDA`` (8)
  iterations with its inertia, shift and empty-cluster flags kept on the device, then
  reads them once; iterations past a stop are dropped and an iteration that left a
  cluster empty is redone on the exact path, so the result is bit for bit that of the
  per-iteration loop (which the CPU runs: reads cost nothing there).
* Empty clusters (deterministic rule): after an update, each empty cluster, in index
  order, takes the row farthest from its assigned centre (largest ``w_i * D_i``, ties
  to the lowest row index), and that row is not used again in the same update.
* ``balanced=True``: every iteration's assignment (and the final one) gives every
  cluster floor(N/k) or ceil(N/k) rows (weights do not change the sizes). Rows first
  propose to their nearest clusters (``balance_candidates`` of them) and clusters accept
  the cheapest proposals up to capacity; rows left over then go to the nearest clusters
  that still have room. This is a greedy on exact costs, not an optimal transport
  solution; ``KMeansResult.inertia`` reports what it costs.
* Randomness: one CPU ``torch.Generator`` seeded with ``seed`` draws every random
  number, so a seed gives the same result on the same backend and device, and the
  same draws for every device.
* Multi-process: if ``torch.distributed`` is initialised with more than one process,
  each rank passes its shard (rows of the union, in rank order). Sampling, potentials,
  the update sums and the empty-cluster rule are reduced across ranks, so every rank
  gets the centroids of a single process run on the union with the same seed (up to
  float64 summation order), and the assignments of its own rows. ``balanced=True`` is
  single-process only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from ._checks import check_int, check_precision, check_tensor, nonfinite_rows  # nonfinite_rows: also imported from here
from ._dist import Comm as _Comm
from .ops import kmeans as _ops
from .ops.kmeans import KMeansEngine

__all__ = ["KMeansResult", "kmeans", "residual_kmeans"]


@dataclass
class KMeansResult:
    """Result of :func:`kmeans`.

    centroids:   [k, D] float32 (float64 for float64 input), on x's device.
    assignments: [N] int64, cluster of each (local) row under the returned centroids.
    inertia:     sum_i w_i ||x_i - centroid(a_i)||^2 over all rows (all ranks).
    sizes:       [k] int64 rows per cluster (all ranks).
    iterations:  Lloyd iterations run.
    converged:   True if the tolerance stopped the iterations.
    history:     inertia before each update (the assignment of each iteration).
    seconds:     {"seeding": s, "lloyd": s}, wall time.
    """

    centroids: Tensor
    assignments: Tensor
    inertia: float
    sizes: Tensor
    iterations: int
    converged: bool
    history: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        k, d = self.centroids.shape
        s = self.sizes.float()
        return (f"KMeansResult(k={k}, D={d}, inertia={self.inertia:.6g}, iterations={self.iterations}, "
                f"converged={self.converged}, sizes min/mean/max={int(s.min())}/{s.mean():.1f}/{int(s.max())})")


# --------------------------------------------------------------------------- validation
def _validate(x: Tensor, k: int, weights: Tensor | None, comm: _Comm) -> int:
    check_tensor(x, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be [N, D], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"x must be float32, float16, bfloat16 or float64, got {x.dtype}")
    if x.shape[1] < 1:
        raise ValueError("x must have at least one column")
    check_int("k", k)
    n_total = int(comm.sum(torch.tensor([x.shape[0]], dtype=torch.int64))[0])
    if n_total == 0:
        raise ValueError("x is empty (N = 0)")
    if k > n_total:
        raise ValueError(f"k = {k} is larger than the number of rows N = {n_total}")
    rows = nonfinite_rows(x)
    if rows is not None:
        raise ValueError(f"x has NaN/Inf in {rows.numel()} row(s), e.g. rows {rows[:8].tolist()}")
    _check_weights(x, weights, "weights", comm)
    return n_total


def _check_weights(x: Tensor, weights: Tensor | None, name: str, comm: _Comm) -> None:
    if weights is None:
        return
    if not isinstance(weights, Tensor) or weights.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a [N] = [{x.shape[0]}] tensor, got "
                         f"{tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__}")
    if weights.device != x.device:
        raise ValueError(f"{name} are on {weights.device}, x on {x.device}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0")
    if float(comm.sum(weights.double().sum()[None])[0]) <= 0:
        raise ValueError(f"{name} sum to 0")


# --------------------------------------------------------------------------- sampling
def _draw(cum: Tensor, u: Tensor, comm: _Comm) -> tuple[Tensor, Tensor]:
    """Rows drawn with probability proportional to the weights p (>= 0) whose inclusive
    float64 prefix sums are cum (``KMeansEngine.cumulative``: [N], or a single 0 for no rows), over the
    union of the ranks' rows.

    u: [T] float64 uniforms in [0, 1) (identical on every rank). Returns (local row index
    [T] int64, mine [T] bool: this rank owns the draw). No host synchronisation."""
    n = cum.shape[0]  # a rank without rows has cum = [0]: its (never owned) draws are row 0
    if not comm.on:  # one process: fewer launches (this runs once per k-means++ step)
        idx = torch.searchsorted(cum, u * cum[-1], right=True).clamp_(0, max(n - 1, 0))
        return idx, torch.ones_like(idx, dtype=torch.bool)
    tot = comm.gather(cum[-1:])[:, 0]  # [world]
    ends = torch.cumsum(tot, 0)
    v = u.to(cum.device) * ends[-1]
    owner = torch.searchsorted(ends, v, right=True).clamp_(max=comm.world - 1)
    local = v - (ends - tot)[owner]
    idx = torch.searchsorted(cum, local, right=True).clamp_(0, max(n - 1, 0))
    return idx, owner == comm.rank


def _take(x: Tensor, idx: Tensor, mine: Tensor, comm: _Comm) -> Tensor:
    """Rows idx of the owning ranks as float32 [T, D], identical on every rank."""
    if x.shape[0] == 0:
        rows = torch.zeros((idx.shape[0], x.shape[1]), dtype=torch.float32, device=x.device)
    else:
        rows = x[idx].to(torch.float32)
    if not comm.on:
        return rows
    return comm.sum(torch.where(mine[:, None], rows, 0.0).double()).to(torch.float32)


RTOL = 1e-3  # kmeans(rtol=) default: stop when an iteration lowers the inertia by less than this share
_GRAPH_SEEDING = True  # CUDA graph replay of the k-means++ steps (bench_kmeans --gpu times it off too)


def _kmeanspp(x: Tensor, w: Tensor | None, k: int, trials: int, g: torch.Generator, eng: KMeansEngine,
              comm: _Comm, progress, fused: bool = True, graph: bool | None = None) -> Tensor:
    """Greedy k-means++ centres [k, D] float32 (float64 on the float64 reference path).

    One process on an engine with a fused seeding loop (``eng.seed``: the C++ kernels) runs
    the whole loop in one call (``fused``; the same centres as the step-by-step loop below,
    which serves CUDA, the reference and torch.distributed).
    On an engine that allows CUDA graphs (Triton kernels on CUDA, one process) the steps
    from the third centre on replay one
    captured CUDA graph (``graph``, default on): a step is ~20 small kernels whose launch
    overhead, not the pass over x, set its time (GPU run 2: 0.43 ms per step). Same
    kernels, same centres."""
    n = x.shape[0]
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    u = torch.rand((k, trials), generator=g, dtype=torch.float64).to(x.device)  # every draw, up front
    w32 = w.to(torch.float32) if w is not None else None
    if fused and eng.seed is not None and not comm.on:
        return x[eng.seed(x, w32, u, progress)].to(cdtype)
    centres = torch.empty((k, x.shape[1]), dtype=cdtype, device=x.device)
    mind = torch.full((n,), float("inf"), dtype=torch.float32, device=x.device)
    cum = eng.cumulative(w32 if w32 is not None else torch.ones(n, dtype=torch.float32, device=x.device))
    step = torch.zeros(1, dtype=torch.int64, device=x.device)  # the centre being chosen, on the device

    def one_step(t: int) -> None:  # no host synchronisation (one process): capturable
        idx, mine = _draw(cum, u.index_select(0, step)[0, :t], comm)
        cand = _take(x, idx, mine, comm)
        dist, pot = eng.candidates(x, cand, mind, w)
        best = torch.argmin(comm.sum(pot)).reshape(1)  # ties: the first candidate
        centres.index_copy_(0, step, cand.index_select(0, best).to(cdtype))
        # mind <- min(mind, dist[:, best]); the next draw's weights w * mind (in place: graph replays)
        new_mind, new_cum = eng.commit(dist, best, mind, w32)
        if new_mind is not mind:  # the C++ commit updates mind in place
            mind.copy_(new_mind)
        cum.copy_(new_cum)
        step.add_(1)

    if graph is None:
        graph = _GRAPH_SEEDING and eng.cuda_graphs and not comm.on  # the reference stays eager
    eager = min(k, 2) if graph else k  # two eager steps compile every kernel the graph records
    for c in range(eager):
        one_step(1 if c == 0 else trials)  # the first centre: one weighted draw (scikit-learn's rule)
        if progress is not None:
            progress.update(1)
    if eager < k:
        _replay_steps(one_step, trials, k - eager, progress, step)
    return centres


PARALLEL_ROUNDS = 2  # k-means|| rounds
PARALLEL_OVERSAMPLING = 2.0  # k-means|| rows drawn per round, per centre (cuML's default factor)
PARALLEL_MIN_K = 32  # init="auto": k-means|| from this k on


def _parallel_plan(k: int) -> tuple[int, int]:
    """(rounds, rows drawn per round) of k-means|| for k centres."""
    return PARALLEL_ROUNDS, max(1, int(round(PARALLEL_OVERSAMPLING * k)))


def _use_parallel_seeding(k: int, n: int) -> bool:
    """init="auto": k-means|| when k >= PARALLEL_MIN_K and the seeding rows number at least
    twice its candidates (1 + rounds * ell); else greedy k-means++ (its k passes over few
    rows cost less than the rounds' passes)."""
    rounds, ell = _parallel_plan(k)
    return k >= PARALLEL_MIN_K and n >= 2 * (1 + rounds * ell)


def _rows(x: Tensor, comm: _Comm) -> int:
    """Rows of x over all ranks."""
    return int(comm.sum(torch.tensor([x.shape[0]], dtype=torch.int64))[0])


def _kmeans_parallel(x: Tensor, w: Tensor | None, k: int, rounds: int, ell: int, trials: int,
                     g: torch.Generator, eng: KMeansEngine, comm: _Comm, progress) -> Tensor | None:
    """k-means|| seeding (Bahmani et al. 2012, as cuML / cuVS run it): centres [k, D], or None
    when the candidates hold fewer than k distinct rows of positive weight (the caller then
    seeds with k-means++ on x).

    One weighted draw gives the first candidate; each of ``rounds`` rounds then draws ``ell``
    rows with replacement, with probability proportional to ``w_i * D_i`` (``D_i``: squared
    distance to the nearest candidate so far), and one assignment pass of x to the new rows
    (``eng.assign_seed`` where the engine has it: bfloat16 distances; else ``eng.assign``, the
    exact nearest-codeword kernel; compute-bound) updates every row's
    ``D_i`` and nearest candidate. Each candidate is then weighted by the weight of the rows
    nearest to it (ties: the earlier candidate), and greedy k-means++ (``trials`` candidates
    per step) picks k centres among the 1 + rounds * ell candidates. Cost: ``rounds`` passes
    over x of ``ell`` centres each (plus the small k-means++), where k-means++ makes k
    passes of ``trials`` centres. Randomness: all from ``g``; with torch.distributed the
    draws, the candidate weights and so the centres are those of one process on the union."""
    n, dev = x.shape[0], x.device
    w32 = None if w is None else w.to(torch.float32)
    u0 = torch.rand((1,), generator=g, dtype=torch.float64).to(dev)
    us = torch.rand((rounds, ell), generator=g, dtype=torch.float64).to(dev)
    ones = torch.ones(n, dtype=torch.float32, device=dev)
    assign = eng.assign_seed if eng.assign_seed is not None and x.dtype != torch.float64 else eng.assign
    idx, mine = _draw(eng.cumulative(w32 if w32 is not None else ones), u0, comm)
    cands = [_take(x, idx, mine, comm)]
    _, mind = assign(x, cands[0])
    mind = mind.to(torch.float32)
    owner = torch.zeros(n, dtype=torch.int64, device=dev)
    for r in range(rounds):
        idx, mine = _draw(eng.cumulative(mind if w32 is None else w32 * mind), us[r], comm)
        c = _take(x, idx, mine, comm)
        code, dist = assign(x, c)
        dist = dist.to(torch.float32)
        owner = torch.where(dist < mind, code + (1 + r * ell), owner)  # ties: the earlier candidate
        mind = torch.minimum(mind, dist)
        cands.append(c)
    cand = torch.cat(cands)
    cw = torch.zeros(cand.shape[0], dtype=torch.float64, device=dev)
    cw.index_add_(0, owner, ones.double() if w32 is None else w32.double())
    cw = comm.sum(cw)
    if int((cw > 0).sum()) < k:  # too few distinct rows reached: seed on x itself
        return None
    if cand.is_cuda or cand.numel() * 4 > _ONE_THREAD_BYTES:
        return _kmeanspp(cand, cw.to(torch.float32), k, trials, g, eng, _Comm(dev, local=True), progress)
    threads = torch.get_num_threads()  # k passes over a few MB: waking a second thread per pass costs more
    torch.set_num_threads(1)  # (the C++ kernels share torch's OpenMP thread count)
    try:
        return _kmeanspp(cand, cw.to(torch.float32), k, trials, g, eng, _Comm(dev, local=True), progress)
    finally:
        torch.set_num_threads(threads)


_ONE_THREAD_BYTES = 4 << 20  # k-means|| candidates up to this size: their k-means++ runs on one CPU thread


def _replay_steps(one_step, trials: int, count: int, progress, step: Tensor) -> None:
    """Capture one k-means++ step (its kernels were compiled by the eager steps before) and
    replay it ``count`` times. If capture fails, a warning says why and the steps run
    eagerly (same kernels, same centres, slower). ``step`` is the on-device step counter
    that ``one_step`` advances. Never captured for tensors off CUDA, and an empty graph
    (nothing recorded: on a CUDA machine a capture of CPU work "succeeds" that way) is
    never replayed: both count as a failed capture."""
    import warnings

    run = lambda: one_step(trials)  # noqa: E731
    start = int(step) if step.is_cuda else 0
    try:
        if not step.is_cuda:
            raise RuntimeError(f"the k-means++ state is on {step.device}, not on a CUDA device")
        g = torch.cuda.CUDAGraph()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.cuda.graph(g):
                one_step(trials)  # recorded, not run
        for w in caught:
            if "graph is empty" in str(w.message).lower():
                raise RuntimeError(f"the captured graph is empty ({w.message})")
        for w in caught:  # anything else the capture said, as it was said
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        run = g.replay
    except Exception as e:  # noqa: BLE001 - any capture failure leaves the eager loop correct
        warnings.warn(f"k-means++: CUDA graph capture failed ({type(e).__name__}: {e}); running the steps eagerly",
                      RuntimeWarning, stacklevel=3)
        if step.is_cuda:  # a capture that ran its work instead of recording it has done a step already
            count -= int(step) - start
    for _ in range(count):
        run()
        if progress is not None:
            progress.update(1)


# --------------------------------------------------------------------------- balanced assignment
def _balanced_assign(x: Tensor, centroids: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Size-constrained assignment: every cluster gets floor(N/k) or ceil(N/k) rows.

    Greedy on exact squared distances; returns (codes [N] int64, distances [N] float32)."""
    n, k = x.shape[0], centroids.shape[0]
    xf = x.to(torch.float32)
    c = centroids.to(torch.float32)
    cn = (c * c).sum(1)
    xn = (xf * xf).sum(1)
    m = max(1, min(m, k))
    cand = torch.empty((n, m), dtype=torch.int64, device=x.device)
    for i in range(0, n, 16384):  # top-m nearest clusters, in row chunks (never N x k at once)
        s = cn[None, :] - 2.0 * xf[i : i + 16384] @ c.t()
        cand[i : i + 16384] = torch.topk(s, m, dim=1, largest=False, sorted=True).indices
    q, r = divmod(n, k)
    codes = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    size = torch.zeros(k, dtype=torch.int64, device=x.device)

    def fill(cap: Tensor, rows: Tensor, choices: Tensor) -> None:
        """Rounds: every waiting row proposes to its first choice that still has room; each
        cluster keeps its cheapest proposers (ties: lower row) up to its room. Each round
        fills at least one cluster or places every proposer, so it ends within k rounds."""
        wait = torch.ones(rows.shape[0], dtype=torch.bool, device=x.device)
        while bool(wait.any()):
            room = cap - size
            li = wait.nonzero()[:, 0]
            open_ = room[choices[li]] > 0  # [w, m]
            has = open_.any(1)
            wait[li[~has]] = False  # no listed choice has room: left for the caller
            li, first = li[has], open_[has].int().argmax(1)
            if li.numel() == 0:
                return
            rr, cc = rows[li], choices[li, first]
            cost = xn[rr] - 2.0 * (xf[rr] * c[cc]).sum(1) + cn[cc]
            order = torch.argsort(cost, stable=True)
            order = order[torch.argsort(cc[order], stable=True)]  # by cluster, then cost, then row
            cs = cc[order]
            new = torch.ones_like(cs, dtype=torch.bool)
            new[1:] = cs[1:] != cs[:-1]
            pos = torch.arange(cs.numel(), device=x.device)
            rank = pos - torch.cummax(torch.where(new, pos, 0), 0).values
            acc = rank < room[cs]
            took = li[order[acc]]
            codes[rows[took]] = cs[acc]
            size.index_add_(0, cs[acc], torch.ones_like(cs[acc]))
            wait[took] = False

    all_rows = torch.arange(n, device=x.device)
    for phase_cap in (torch.full((k,), q, dtype=torch.int64, device=x.device), None):
        cap = phase_cap if phase_cap is not None else torch.full((k,), q + 1, dtype=torch.int64, device=x.device)
        if phase_cap is None and r == 0:
            break
        fill(cap, all_rows[codes < 0], cand[codes < 0])
        left = all_rows[codes < 0]
        if left.numel() and bool((size < cap).any()):  # nearest clusters with room, among all k
            open_c = (size < cap).nonzero()[:, 0]
            s = cn[open_c][None, :] - 2.0 * xf[left] @ c[open_c].t()
            order = open_c[torch.argsort(s, dim=1, stable=True)]
            fill(cap, left, order)
    dist = ((xf - c[codes]) ** 2).sum(1)
    return codes, dist


# --------------------------------------------------------------------------- k-means
def kmeans(
    x: Tensor,
    k: int,
    *,
    iters: int = 50,
    init: str | Tensor = "auto",
    seed: int = 0,
    tol: float = 1e-4,
    rtol: float = RTOL,
    balanced: bool = False,
    weights: Tensor | None = None,
    init_weights: Tensor | None = None,
    n_local_trials: int | None = None,
    init_sample: int | None = None,
    balance_candidates: int = 16,
    candidates: int = 0,
    progress: bool | str = False,
    precision: str = "exact",
) -> KMeansResult:
    """k-means clustering of the rows of x.

    Args:
        x: [N, D] float32 / float16 / bfloat16 (float64 runs on the reference), CPU or CUDA.
            Under torch.distributed (world > 1): this rank's shard.
        k: number of clusters, 1 <= k <= N (N over all ranks).
        iters: maximum Lloyd iterations (updates; 0: seeding only).
        init: "auto" (k-means|| for k >= 32 and enough rows, else k-means++; module docstring),
            "k-means++" (greedy), "k-means||", "random" (k distinct rows drawn uniformly,
            weighted by ``weights``) or a [k, D] tensor of initial centroids.
        seed: seed of the CPU generator that draws every random number.
        tol: stop when the total squared centroid shift <= tol * mean feature variance (0: only
            when the centroids stop moving).
        rtol: stop when an iteration's assignment lowers the inertia by <= rtol times itself
            relative to the previous iteration's (0: off). The default 1e-3 stops MiniLM text
            (3 x 256) after 8-12 iterations within ~1.5 % of the 50-iteration inertia.
        balanced: size-constrained assignment (floor(N/k) or ceil(N/k) rows per cluster).
        weights: optional [N] non-negative row weights.
        init_weights: optional [N] non-negative row weights for the seeding only (default:
            ``weights``): a row of weight 0 is never drawn as an initial centre and does
            not count in the k-means++ potential; Lloyd iterations use ``weights``.
        n_local_trials: candidates per k-means++ step (default 2 + floor(ln k)).
        init_sample: rows used for seeding (default 256 * k; 0: all rows).
        balance_candidates: nearest clusters each row proposes to first (balanced=True).
        candidates: m > 0: Lloyd with candidate lists (module docstring): a full assignment keeps
            each row's m nearest centroids, and the following iterations search only those (cost
            ~m/k of a full search), with a full search at least every ``CANDIDATE_REFRESH``
            iterations, whenever the rtol rule would stop, and at the end (the returned
            assignments are exact). 0 (default): every assignment searches all k. Used on engines
            with the candidate primitives (C++ and reference) in the per-iteration loop; elsewhere
            (Triton, balanced=True) and for m >= k every assignment is full.
        progress: progress reports: False, True (a tqdm bar on a terminal), "tqdm", "log" (a line
            on stderr every few seconds with rate and ETA) or "auto" (tqdm on a terminal, else
            log lines); see ``pysid._progress``.
        precision: "exact" (default) or "fast": the Lloyd assignments' precision, as for
            :func:`pysid.residual_quantize` ("fast": on the Triton kernels, tensor-core codes
            without the float32 proof; may differ on near-ties; CPU and reference: exact).

    Returns:
        :class:`KMeansResult`.
    """
    comm = _Comm(x.device if isinstance(x, Tensor) else torch.device("cpu"))
    n_total = _validate(x, k, weights, comm)
    if balanced and comm.on:
        raise NotImplementedError("balanced=True runs on one process; gather the rows on one rank")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 0:
        raise ValueError(f"candidates must be an int >= 0, got {candidates!r}")
    for name, v in (("tol", tol), ("rtol", rtol)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    eng = _ops.engine(x, precision=check_precision(precision))
    xk = eng.prepare(x)
    _check_weights(x, init_weights, "init_weights", comm)
    w = None if weights is None else weights.to(torch.float32).contiguous()
    iw = w if init_weights is None else init_weights.to(torch.float32).contiguous()
    g = torch.Generator().manual_seed(int(seed))
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    bars = _Bars(progress)

    t0 = time.perf_counter()
    if isinstance(init, Tensor):
        if init.shape != (k, x.shape[1]):
            raise ValueError(f"init must be [k, D] = [{k}, {x.shape[1]}], got {tuple(init.shape)}")
        if not bool(torch.isfinite(init).all()):
            raise ValueError("init has NaN/Inf")
        centroids = init.to(device=x.device, dtype=cdtype).clone()
    elif init in ("k-means++", "k-means||", "auto"):
        trials = n_local_trials if n_local_trials is not None else 2 + int(math.log(k))
        if trials < 1:
            raise ValueError(f"n_local_trials must be >= 1, got {trials}")
        xs, ws = _subsample(xk, iw, k, n_total, init_sample, g, comm)
        centroids = None
        if init == "k-means||" or (init == "auto" and _use_parallel_seeding(k, _rows(xs, comm))):
            rounds, ell = _parallel_plan(k)
            centroids = _kmeans_parallel(xs, ws, k, rounds, ell, trials, g, eng, comm, bars.new(k, "k-means||"))
        if centroids is None:
            centroids = _kmeanspp(xs, ws, k, trials, g, eng, comm, bars.new(k, "k-means++"))
        centroids = centroids.to(cdtype)
    elif init == "random":
        centroids = _random_init(xk, iw, k, g, eng, comm).to(cdtype)
    else:
        raise ValueError(f"init must be 'auto', 'k-means++', 'k-means||', 'random' or a [k, D] tensor, got {init!r}")
    _sync(x)
    t_seed = time.perf_counter() - t0

    # tolerance relative to the mean feature variance (scikit-learn's rule)
    tol_abs = 0.0
    if tol > 0 and iters > 0:
        s1 = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        s2 = torch.zeros_like(s1)
        for i in range(0, xk.shape[0], 16384):  # float64 moments in row chunks (no [N, D] float64 copy)
            xd = xk[i : i + 16384].to(torch.float64)
            wx = xd if w is None else xd * w[i : i + 16384, None].to(torch.float64)
            s1 += wx.sum(0)
            s2 += (wx * xd).sum(0)
        s1, s2 = comm.sum(s1), comm.sum(s2)
        wt = float(comm.sum(torch.tensor([float(x.shape[0]) if w is None else float(w.double().sum())],
                                         dtype=torch.float64))[0])
        tol_abs = tol * float((s2 / wt - (s1 / wt) ** 2).mean())

    every = 1 if balanced else _check_every(x)  # iterations between host reads (1: each iteration)
    mcand = min(candidates, k)  # candidate lists: on the per-iteration loop of an engine that has them
    if balanced or every != 1 or eng.assign_topm is None or mcand >= k:
        mcand = 0
    bounded = (eng.bounded_assign(xk) if eng.bounded_assign is not None and not balanced and every == 1
               and not mcand else None)  # stateful: only where no iteration is ever rolled back

    def step_assign(c: Tensor) -> tuple[Tensor, Tensor]:
        if balanced:
            return _balanced_assign(xk, c, balance_candidates)
        if bounded is not None:  # the same result as eng.assign, searching fewer rows
            return bounded(c)
        return eng.assign(xk, c)

    def weighted(dist: Tensor) -> Tensor:  # w_i * D_i, float64 [N]
        return dist.double() if w is None else dist.double() * w

    def assign(c: Tensor):
        """(codes, dist, inertia): few whole-row operations per iteration (each one wakes the
        thread pool; on a busy machine that costs more than the arithmetic)."""
        codes, dist = step_assign(c)
        total = dist.sum(dtype=torch.float64) if w is None else weighted(dist).sum()  # the same bits
        return codes, dist, comm.sum(total[None])[0]

    cand = None  # [N, m] int32: each row's candidate centroids (candidate lists)
    since = 0  # iterations since the lists were made

    def assign_lists(c: Tensor, full: bool):
        """(codes, dist, inertia, exact): a full search that renews the lists, or the search
        restricted to them."""
        nonlocal cand, since
        if full or cand is None or since >= CANDIDATE_REFRESH:
            codes, dist, cand = eng.assign_topm(xk, c, mcand)
            since, exact = 0, True
        else:
            codes, dist = eng.assign_candidates(xk, c, cand)
            exact = False
        total = dist.sum(dtype=torch.float64) if w is None else weighted(dist).sum()
        return codes, dist, comm.sum(total[None])[0], exact

    def update(c: Tensor, codes: Tensor, dist: Tensor, exact: bool) -> tuple[Tensor, Tensor, Tensor]:
        """The next centroids, their move (the total squared shift; with tol = 0 only whether
        they moved) and whether a cluster was empty (device tensors). exact: empty clusters
        take the farthest rows (host reads); else they are only flagged (the caller redoes that
        iteration exactly)."""
        sums, counts = eng.update(xk, codes, w, k)
        sums, counts = comm.sum(sums), comm.sum(counts)
        new = (sums / counts.clamp(min=1e-300)[:, None]).to(cdtype)
        empty = counts <= 0
        if exact and bool(empty.any()):
            new[empty] = _farthest(xk, weighted(dist), int(empty.sum()), comm).to(cdtype)
        if tol_abs > 0:
            moved = ((new.double() - c.double()) ** 2).sum()
        else:  # shift <= 0 exactly when no centroid moved
            moved = (new != c).any().double()
        return new, moved, empty.any()

    t0 = time.perf_counter()
    history: list[float] = []
    converged = False
    it = 0  # updates done
    final = None  # (codes, dist, inertia) of the current centroids' assignment, when the loop has it
    bar = bars.new(iters, "Lloyd")
    redo = False  # the next iteration runs on the exact path (a cluster went empty in it)

    def stalled(h: float) -> bool:  # the relative-inertia rule
        return rtol > 0 and bool(history) and history[-1] - h <= rtol * h

    while it < iters and not converged:
        if every == 1 or redo:  # one iteration, host reads as it goes (CPU; the redo of a block's iteration)
            redo = False
            exact = True
            if mcand:
                codes, dist, inert, exact = assign_lists(centroids, full=False)
                h = _read(inert)
                if not exact and stalled(h):  # a stop is decided on a full search only
                    codes, dist, inert, exact = assign_lists(centroids, full=True)
                    h = _read(inert)
            else:
                codes, dist, inert = assign(centroids)
                h = _read(inert)
            if exact and stalled(h):  # the centroids stay; this assignment is the final one
                converged, final = True, (codes, dist, h)
                break
            history.append(h)
            centroids, shift, _ = update(centroids, codes, dist, exact=True)
            it += 1
            since += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(inertia=f"{h:.5g}")
            if _read(shift) <= tol_abs:  # with tol=0: only at an exact fixed point (nothing would change)
                converged = True
            continue
        # a block of iterations without host synchronisation, then one read of its flags;
        # every iteration kept is computed by the same operations as on the path above
        cs, flags = [centroids], []
        for _ in range(min(every, iters - it)):
            codes, dist, inert = assign(cs[-1])
            new, shift, empty = update(cs[-1], codes, dist, exact=False)
            flags.append(torch.stack([inert, shift, empty.double()]))
            cs.append(new)
        for j, (h, shift, empty) in enumerate(_read(torch.stack(flags))):
            if stalled(h):
                converged = True
                break
            if empty:  # redo iteration j on the exact path
                redo = True
                break
            history.append(h)
            centroids = cs[j + 1]
            it += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(inertia=f"{h:.5g}")
            if shift <= tol_abs:
                converged = True
                break
    if final is None:
        final = assign(centroids)
    codes, dist, inertia = final
    inertia = float(inertia)
    sizes = comm.sum(torch.bincount(codes, minlength=k))
    _sync(x)
    bars.close()
    return KMeansResult(centroids=centroids, assignments=codes, inertia=inertia, sizes=sizes.cpu(),
                        iterations=it, converged=converged, history=history,
                        seconds={"seeding": t_seed, "lloyd": time.perf_counter() - t0})


CHECK_EVERY_CUDA = 8  # Lloyd iterations between the host reads of the loop's flags on CUDA
CANDIDATE_REFRESH = 16  # kmeans(candidates=m): at most this many iterations between full searches


def _check_every(x: Tensor) -> int:
    """Iterations per host read of the Lloyd loop: 1 on the CPU (a read costs nothing there),
    ``CHECK_EVERY_CUDA`` on CUDA (each read would stall the launch queue)."""
    return CHECK_EVERY_CUDA if x.is_cuda else 1


def _read(t: Tensor):
    """The Lloyd loop's host reads: every one goes through here (tests count them)."""
    return t.item() if t.dim() == 0 else t.cpu().tolist()


def _subsample(x: Tensor, w: Tensor | None, k: int, n_total: int, init_sample: int | None,
               g: torch.Generator, comm: _Comm) -> tuple[Tensor, Tensor | None]:
    """Uniform subsample of about init_sample rows of the union (the same rows for any sharding)."""
    s = 256 * k if init_sample is None else int(init_sample)
    if s < 0:
        raise ValueError(f"init_sample must be >= 0, got {init_sample}")
    if s == 0 or s >= n_total:
        return x, w
    s = max(s, 4 * k)
    u = torch.rand(n_total, generator=g, dtype=torch.float64)  # one draw per row of the union
    off = int(comm.gather(torch.tensor([x.shape[0]], dtype=torch.int64)).flatten()[: comm.rank].sum())
    keep = (u[off : off + x.shape[0]] < s / n_total).to(x.device)
    if int(comm.sum(keep.sum()[None])[0]) < k:
        return x, w
    return x[keep], (None if w is None else w[keep])


def _skip_exact_rows(r: Tensor, w: Tensor | None, k: int, comm: _Comm) -> Tensor | None:
    """Seeding weights of residual rows r [N, D]: ``w`` (or 1), and 0 on rows that are all
    zero, when at least k rows of positive weight remain over all ranks; else ``w``."""
    live = (r.amax(1) > 0) | (r.amin(1) < 0)  # not all zero (-0.0 included); no [N, D] temporary
    if w is not None:
        live &= w > 0
    n_live = int(comm.sum(live.sum()[None].to(torch.int64))[0])
    n_rows = int(comm.sum(torch.tensor([r.shape[0]], dtype=torch.int64))[0])
    if n_live < k or (w is None and n_live == n_rows):
        return w
    return live.to(torch.float32) if w is None else torch.where(live, w, torch.zeros_like(w))


def _random_init(x: Tensor, w: Tensor | None, k: int, g: torch.Generator, eng: KMeansEngine, comm: _Comm) -> Tensor:
    """k distinct rows, drawn without replacement with probability proportional to w."""
    p = torch.ones(x.shape[0], dtype=torch.float32, device=x.device) if w is None else w.clone()
    out = []
    u = torch.rand((k,), generator=g, dtype=torch.float64)
    for c in range(k):
        idx, mine = _draw(eng.cumulative(p), u[c : c + 1], comm)
        out.append(_take(x, idx, mine, comm)[0])
        if bool(mine[0]) and x.shape[0]:
            p[idx[0]] = 0.0
    return torch.stack(out)


def _farthest(x: Tensor, wd: Tensor, m: int, comm: _Comm) -> Tensor:
    """The m rows with the largest w_i * D_i over all ranks (ties: lowest global row), float32 [m, D]."""
    n = x.shape[0]
    mm = min(m, n)
    order = torch.argsort(-wd, stable=True)[:mm]
    val = torch.full((m,), -1.0, dtype=torch.float64, device=x.device)
    rows = torch.zeros((m, x.shape[1]), dtype=torch.float32, device=x.device)
    val[:mm] = wd[order]
    rows[:mm] = x[order].to(torch.float32)
    gidx = torch.full((m,), 2**62, dtype=torch.int64, device=x.device)
    off = int(comm.gather(torch.tensor([n], dtype=torch.int64)).flatten()[: comm.rank].sum())
    gidx[:mm] = order + off
    val, gidx, rows = comm.gather(val).flatten(), comm.gather(gidx).flatten(), comm.gather(rows).flatten(0, 1)
    o = torch.argsort(gidx, stable=True)
    o = o[torch.argsort(-val[o], stable=True)][:m]
    return rows[o]


def _sync(x: Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


class _Bars:
    """Progress bars as ``progress=`` asks (``pysid._progress``: tqdm, log lines or nothing)."""

    def __init__(self, on):
        from ._progress import check_mode

        self.on = check_mode(on)
        self.bars: list = []

    def new(self, total: int, desc: str):
        from ._progress import bar

        b = bar(self.on, total, desc)
        if b is not None:
            self.bars.append(b)
        return b

    def close(self) -> None:
        for b in self.bars:
            b.close()


# --------------------------------------------------------------------------- residual k-means
def residual_kmeans(
    x: Tensor,
    levels: int,
    k: int | Sequence[int],
    **kmeans_options,
) -> Tensor | list[Tensor]:
    """Codebooks trained level by level on residuals (OneRec's RQ-KMeans).

    Level l runs :func:`kmeans` on ``x - sum of the chosen codewords of levels < l``
    (with the same options; the seed is ``seed + l``). Rows whose residual is exactly
    zero (already reconstructed exactly, e.g. the only row of an earlier cluster) are
    left out of that level's seeding (``init_weights`` 0) while at least k rows remain:
    such a row drawn as a centre sits at the residuals' mean, nearer to almost every row
    than any other seed, and the one cluster it gathers rarely breaks up in Lloyd.

    Args:
        x: [N, D] float tensor (a shard under torch.distributed).
        levels: number of levels L >= 1.
        k: codebook size, an int or one per level.
        **kmeans_options: passed to :func:`kmeans` (iters, init="auto"/"k-means++"/"k-means||"/"random", seed,
            tol, balanced, weights, ...).

    Returns:
        [L, K, D] float32 codebooks if every level has the same size, else a list of
        [K_l, D] tensors - either form goes straight into :func:`pysid.residual_quantize`.
    """
    books, _ = _residual_kmeans(x, levels, k, **kmeans_options)
    if len({b.shape[0] for b in books}) == 1:
        return torch.stack(books)
    return books


def _residual_kmeans(x: Tensor, levels: int, k: int | Sequence[int],
                     **kmeans_options) -> tuple[list[Tensor], list[Tensor]]:
    """:func:`residual_kmeans`'s codebooks (a list) and each level's final assignments [N] int64
    (each row's nearest codeword to its residual: the greedy codes of the rows)."""
    check_int("levels", levels)
    ks = [k] * levels if isinstance(k, int) else [int(v) for v in k]
    if len(ks) != levels:
        raise ValueError(f"k has {len(ks)} sizes for {levels} levels")
    if isinstance(kmeans_options.get("init"), Tensor):
        raise ValueError("residual_kmeans seeds every level itself: "
                         "init must be 'auto', 'k-means++', 'k-means||' or 'random'")
    seed = int(kmeans_options.pop("seed", 0))
    init_w = kmeans_options.pop("init_weights", None)
    if init_w is None:
        init_w = kmeans_options.get("weights")
    comm = _Comm(x.device if isinstance(x, Tensor) else torch.device("cpu"))
    r = x
    books, codes = [], []
    for lvl, kl in enumerate(ks):
        iw = init_w if lvl == 0 else _skip_exact_rows(r, init_w, kl, comm)
        res = kmeans(r, kl, seed=seed + lvl, init_weights=iw, **kmeans_options)
        books.append(res.centroids.to(torch.float32) if x.dtype != torch.float64 else res.centroids)
        codes.append(res.assignments)
        if lvl + 1 < levels:
            r = _next_residual(r, books[-1], res.assignments, own=lvl > 0)
    return books, codes


_RESIDUAL_ROWS = 4096  # rows per chunk of _next_residual (its temporaries stay in cache)


def _next_residual(r: Tensor, book: Tensor, codes: Tensor, own: bool) -> Tensor:
    """``r - book[codes]`` (float32; float64 for float64 r) in row chunks, written into r itself
    when ``own`` (r is this function's earlier output): no [N, D] temporaries, the same bits."""
    dt = torch.float64 if r.dtype == torch.float64 else torch.float32
    book = book.to(dt)
    out = r if own and r.dtype == dt and r.is_contiguous() else torch.empty(r.shape, dtype=dt, device=r.device)
    for i in range(0, r.shape[0], _RESIDUAL_ROWS):
        j = i + _RESIDUAL_ROWS
        torch.sub(r[i:j].to(dt), book.index_select(0, codes[i:j]), out=out[i:j])
    return out
