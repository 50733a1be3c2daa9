"""pysid.kmeans / residual_kmeans: every backend against the reference, seeding statistics,
balanced sizes, empty clusters, residual k-means feeding residual_quantize, 2 processes,
errors."""

from __future__ import annotations

import math

import pytest
import torch

import pysid
from conftest import backend_cases, cpu_backends, run_two_processes
from pysid.reference import residual_quantize_ref

BACKENDS = backend_cases("kmeans_assign")  # from the backend registry


def _run(backend: str, x: torch.Tensor, *args, **kw):
    name, _, dev = backend.partition(":")
    if dev:
        x = x.to(dev)
        for key in ("init", "weights", "init_weights"):
            if isinstance(kw.get(key), torch.Tensor):
                kw[key] = kw[key].to(dev)
    with pysid.backend(name):
        return pysid.kmeans(x, *args, **kw)


def blobs(n: int, d: int, centers: int, seed: int = 0, spread: float = 4.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centers, d, generator=g) * spread
    return c[torch.randint(0, centers, (n,), generator=g)] + torch.randn(n, d, generator=g)


def check_consistent(x: torch.Tensor, res, weights=None) -> None:
    """assignments are the nearest centroids and inertia/sizes match them."""
    xd, c = x.double().cpu(), res.centroids.double().cpu()
    d2 = torch.cdist(xd, c) ** 2
    a = res.assignments.cpu()
    mine = d2.gather(1, a[:, None])[:, 0]
    assert bool((mine <= d2.min(1).values * (1 + 1e-5) + 1e-4).all())
    w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else weights.double().cpu()
    assert res.inertia == pytest.approx(float((w * mine).sum()), rel=1e-4)
    assert torch.equal(res.sizes, torch.bincount(a, minlength=c.shape[0]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,d,k,dtype", [(500, 8, 7, torch.float32), (1031, 33, 50, torch.float32),
                                         (300, 5, 300, torch.float32), (400, 16, 9, torch.bfloat16)])
def test_lloyd_matches_reference(backend, n, d, k, dtype):
    """Same init -> same assignments and centroids on every backend."""
    x = blobs(n, d, max(2, k // 2), seed=n).to(dtype)
    init = x[torch.randperm(n, generator=torch.Generator().manual_seed(1))[:k]].float()
    ref = _run("reference", x.float(), k, iters=4, init=init, tol=0, rtol=0)  # bf16 values are exact in float32
    res = _run(backend, x, k, iters=4, init=init, tol=0, rtol=0)
    assert torch.equal(res.assignments.cpu(), ref.assignments)
    torch.testing.assert_close(res.centroids.cpu(), ref.centroids, rtol=1e-5, atol=1e-5)
    assert res.iterations == ref.iterations
    check_consistent(x, res)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_match_reference(backend):
    x = blobs(600, 12, 6, seed=3)
    w = torch.rand(600, generator=torch.Generator().manual_seed(2)) * 3
    w[::7] = 0
    init = x[:10].clone()
    ref = _run("reference", x, 10, iters=3, init=init, tol=0, rtol=0, weights=w)
    res = _run(backend, x, 10, iters=3, init=init, tol=0, rtol=0, weights=w)
    assert torch.equal(res.assignments.cpu(), ref.assignments)
    torch.testing.assert_close(res.centroids.cpu(), ref.centroids, rtol=1e-5, atol=1e-5)
    check_consistent(x, res, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kmeanspp_same_seed_same_result(backend):
    x = blobs(2000, 16, 20, seed=5)
    a = _run(backend, x, 20, iters=5, seed=3)
    b = _run(backend, x, 20, iters=5, seed=3)
    c = _run(backend, x, 20, iters=5, seed=4)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    assert not torch.equal(a.centroids, c.centroids)
    check_consistent(x, a)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kmeanspp_backends_agree(backend):
    """The greedy seeding draws the same rows on every backend (same seed, same data)."""
    x = blobs(800, 8, 10, seed=9)
    ref = _run("reference", x, 10, iters=0, seed=1)
    res = _run(backend, x, 10, iters=0, seed=1)
    torch.testing.assert_close(res.centroids.cpu(), ref.centroids)
    # every seed is a data row
    d = torch.cdist(res.centroids.cpu().double(), x.double()).min(1).values
    assert float(d.max()) < 1e-5


def _seed_rows(device, weighted, fused=False, graph=None, backend=None, n=3000):
    """k-means++ centres on the step loop (or, fused=True, the backend's fused loop: C++ on CPU
    tensors, the fused Triton kernels on CUDA) for fixed data and seed."""
    import importlib

    km = importlib.import_module("pysid.kmeans")
    x = blobs(n, 24, 30, seed=11).to(device)
    w = torch.rand(n, generator=torch.Generator().manual_seed(1)).to(device) if weighted else None
    from pysid._dist import Comm
    from pysid.ops.kmeans import engine

    eng = engine(x, backend or ("triton" if x.is_cuda else "cpu"))
    return km._kmeanspp(x, w, 40, 5, torch.Generator().manual_seed(7), eng, Comm(x.device), None,
                        fused=fused, graph=graph)


@pytest.mark.parametrize("weighted", [False, True])
def test_kmeanspp_fused_loop_matches_step_loop(weighted):
    """One CPU process seeds with the C++ loop (kmeanspp_run); it picks exactly the rows of the
    step-by-step loop that serves torch.distributed, CUDA and the reference."""
    assert torch.equal(_seed_rows("cpu", weighted, fused=True), _seed_rows("cpu", weighted))


@pytest.mark.skipif("triton:cpu" not in BACKENDS and not torch.cuda.is_available(),
                    reason="needs triton (a GPU or TRITON_INTERPRET=1)")
@pytest.mark.parametrize("weighted", [False, True])
def test_kmeanspp_triton_fused_seed_matches_step_loop_and_cpu(weighted):
    """The fused Triton seeding (kmeanspp_seed/triton: three kernels per centre, state on the device)
    picks the rows of the Triton step loop and of the C++ loop (interpreter on CPU tensors, or CUDA)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with pysid.backend("triton"):
        fused = _seed_rows(dev, weighted, fused=True, backend="triton", n=600)
        step = _seed_rows(dev, weighted, fused=False, backend="triton", graph=False, n=600)
    assert torch.equal(fused, step)
    assert torch.equal(fused.cpu(), _seed_rows("cpu", weighted, fused=True, n=600))


def test_kmeanspp_graph_capture_failure_warns_and_runs_eagerly():
    """Where a CUDA graph cannot be captured (here: CPU tensors, on a machine with or without
    CUDA), the step loop warns and runs the remaining steps eagerly: the same centres. (On a
    CUDA machine a capture of CPU work used to "succeed" with an empty graph whose replays
    left the centres unset.)"""
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed.*not on a CUDA device"):
        got = _seed_rows("cpu", True, graph=True)
    assert torch.equal(got, _seed_rows("cpu", True, graph=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_replay_steps_never_replays_an_empty_graph():
    """A step that records no CUDA work captures an empty graph: it is not replayed (a warning,
    then eager steps), and a step the capture ran instead of recording is not run twice."""
    import importlib

    km = importlib.import_module("pysid.kmeans")
    step = torch.zeros(1, dtype=torch.int64, device="cuda")
    calls = []
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed.*empty"):
        km._replay_steps(lambda t: calls.append(t), 5, 4, None, step)
    assert calls == [5] * 5  # the capture's call (recorded nothing) + 4 eager steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("weighted", [False, True])
def test_kmeanspp_cuda_graph_replay_same_centres(weighted):
    """On CUDA the steps after the second replay one captured graph: the same centres as the
    eager loop, and the capture succeeds (no warning)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = _seed_rows("cuda", weighted, graph=True)
    assert torch.equal(got, _seed_rows("cuda", weighted, graph=False))
    assert torch.equal(got, _seed_rows("cuda", weighted, graph=True))


@pytest.mark.parametrize("backend", cpu_backends("kmeans_assign"))
def test_kmeanspp_sampling_distribution(backend):
    """Plain k-means++ (one trial): the first centre is uniform, the second is drawn with
    probability proportional to D^2 (chi-square test over 3000 seeds)."""
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    counts = torch.zeros(4, 4)
    trials = 3000
    for s in range(trials):
        c = _run(backend, x, 2, iters=0, seed=s, n_local_trials=1).centroids[:, 0]
        i, j = int((x[:, 0] == c[0]).nonzero()), int((x[:, 0] == c[1]).nonzero())
        counts[i, j] += 1
    expect = torch.zeros(4, 4)
    for i in range(4):
        d2 = (x[:, 0] - x[i, 0]) ** 2
        expect[i] = trials / 4 * d2 / d2.sum()
    mask = expect > 0
    assert float(counts[~mask].sum()) == 0  # never a zero-probability row
    chi2 = float((((counts - expect) ** 2)[mask] / expect[mask]).sum())
    # 12 cells, 11 degrees of freedom: P(chi2 > 31.3) = 0.001
    assert chi2 < 31.3, (chi2, counts, expect)


def test_greedy_trials_lower_potential():
    """More candidates per step -> seeding potential no worse on average (scikit-learn's greedy variant)."""
    x = blobs(3000, 8, 40, seed=2, spread=3.0)
    pot = {}
    for trials in (1, 8):
        v = []
        for s in range(8):
            c = pysid.kmeans(x, 40, iters=0, seed=s, n_local_trials=trials).centroids
            v.append(float((torch.cdist(x, c) ** 2).min(1).values.sum()))
        pot[trials] = sum(v) / len(v)
    assert pot[8] < pot[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_cluster_reseeded_to_farthest_row(backend):
    x = torch.cat([torch.randn(100, 4), torch.tensor([[50.0, 0, 0, 0], [0, 60.0, 0, 0]])])
    init = torch.stack([x[:50].mean(0), x[50:100].mean(0), torch.full((4,), 1e4), torch.full((4,), 2e4)])
    res = _run(backend, x, 4, iters=1, init=init, tol=0)
    c = res.centroids.cpu()
    # both empty clusters (2 and 3, in index order) take the two farthest rows, farthest first
    far = x[torch.argsort(((x[:, None] - init[None, :2]) ** 2).sum(-1).min(1).values, descending=True)[:2]]
    torch.testing.assert_close(c[2:], far)
    assert bool((res.sizes > 0).all())


@pytest.mark.parametrize("backend", cpu_backends("kmeans_assign"))
@pytest.mark.parametrize("n,k", [(1000, 7), (997, 32), (64, 64), (300, 1)])
def test_balanced_sizes(backend, n, k):
    x = blobs(n, 6, 3, seed=n)  # 3 natural clusters, k of them forced to equal size
    res = _run(backend, x, k, iters=5, balanced=True)
    lo, hi = n // k, -(-n // k)
    assert int(res.sizes.min()) >= lo and int(res.sizes.max()) <= hi
    assert int(res.sizes.sum()) == n
    free = _run(backend, x, k, iters=5)
    assert res.inertia >= free.inertia * 0.999  # balancing costs inertia, never gains much
    d = ((x - res.centroids.cpu()[res.assignments]) ** 2).sum(1)
    assert res.inertia == pytest.approx(float(d.double().sum()), rel=1e-4)


def test_tolerance_stops_early():
    x = blobs(2000, 4, 5, seed=1, spread=20.0)
    res = pysid.kmeans(x, 5, iters=100, tol=1e-4)
    assert res.converged and res.iterations < 100
    assert all(a >= b - 1e-6 * a for a, b in zip(res.history, res.history[1:]))  # Lloyd never increases it


def test_random_init_and_float64():
    x = blobs(500, 3, 4, seed=4).double()
    res = pysid.kmeans(x, 4, init="random", iters=10)
    assert res.centroids.dtype == torch.float64
    check_consistent(x, res)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_kmeans_feeds_residual_quantize(backend):
    x = blobs(1500, 16, 30, seed=6)
    name, _, dev = backend.partition(":")
    xx = x.to(dev) if dev else x
    with pysid.backend(name):
        cbs = pysid.residual_kmeans(xx, 3, 16, iters=8)
        out = pysid.residual_quantize(xx, cbs)
    assert cbs.shape == (3, 16, 16)
    first = pysid.kmeans(xx, 16, iters=8, seed=0)
    torch.testing.assert_close(cbs[0].cpu(), first.centroids.cpu())  # level 0 = k-means on x
    dist = out.distances.cpu().double().mean(0)
    assert bool((dist[1:] < dist[:-1]).all())  # every level lowers the distortion
    _, ref_d, ref_c = residual_quantize_ref(x.double(), cbs.cpu().double())
    assert float((out.codes.cpu() == ref_c).all(1).double().mean()) > 0.99
    mixed = pysid.residual_kmeans(x, 2, [8, 4], iters=3)
    assert [c.shape[0] for c in mixed] == [8, 4]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("init", ["k-means++", "k-means||", "random"])
def test_init_weights_zero_rows_never_seed(backend, init):
    x = blobs(300, 5, 6, seed=9)
    iw = torch.ones(300)
    iw[::3] = 0.0  # a third of the rows may not become centres
    for seed in range(3):
        res = _run(backend, x, 12, iters=0, init=init, seed=seed, init_weights=iw)
        chosen = (torch.cdist(res.centroids.double().cpu(), x.double()) == 0).nonzero()[:, 1]
        assert chosen.numel() >= 12 and bool((iw[chosen] > 0).all())
    # Lloyd still uses every row (init_weights only steers the seeding)
    res = _run(backend, x, 6, iters=5, init_weights=iw)
    check_consistent(x, res)
    assert int(res.sizes.sum()) == 300


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_kmeans_exact_rows_skip_seeding(backend):
    # seeding only (iters=0): level 0's centres are rows of x, so those rows' residuals are
    # exactly zero; greedy k-means++ prefers such a row (nearest to every other residual)
    # unless it is left out, and level 1's codewords are then rows of the residual
    name, _, dev = backend.partition(":")
    x = blobs(120, 6, 3, seed=2)
    xx = x.to(dev) if dev else x
    with pysid.backend(name):
        for seed in range(4):
            cbs = pysid.residual_kmeans(xx, 2, [40, 16], iters=0, seed=seed)
            assert bool((cbs[1].cpu() != 0).any(1).all()), f"seed {seed}: a zero residual seeded level 1"
        # fewer non-zero residual rows than codewords: the rule stands aside
        few = pysid.residual_kmeans(xx, 2, [110, 16], iters=0)
        assert few[1].shape == (16, 6)


@pytest.mark.parametrize("bad,err", [
    (dict(k=0), ValueError), (dict(k=11), ValueError), (dict(x=torch.zeros(0, 3)), ValueError),
    (dict(x=torch.zeros(10)), ValueError), (dict(x=torch.zeros(10, 3, dtype=torch.int64)), TypeError),
    (dict(weights=torch.ones(9)), ValueError), (dict(weights=-torch.ones(10)), ValueError),
    (dict(weights=torch.zeros(10)), ValueError), (dict(init=torch.zeros(3, 2)), ValueError),
    (dict(init="nope"), ValueError), (dict(iters=-1), ValueError), (dict(k=2.5), ValueError),
    (dict(rtol=-1e-3), ValueError), (dict(tol=float("nan")), ValueError), (dict(rtol="1e-3"), ValueError),
    (dict(init_weights=torch.ones(9)), ValueError), (dict(init_weights=torch.zeros(10)), ValueError),
    (dict(init_weights=torch.full((10,), float("nan"))), ValueError),
])
def test_errors(bad, err):
    kw = dict(x=torch.randn(10, 3), k=2)
    kw.update(bad)
    with pytest.raises(err):
        pysid.kmeans(kw.pop("x"), kw.pop("k"), **kw)


def test_nan_rows_are_named():
    x = torch.randn(20, 3)
    x[7, 1] = float("nan")
    x[13, 0] = float("inf")
    with pytest.raises(ValueError, match=r"rows \[7, 13\]"):
        pysid.kmeans(x, 2)


def test_nonfinite_rows():
    """The column-sum fast path never hides a bad row, and an overflowing sum of finite
    values is not an error."""
    from pysid.kmeans import nonfinite_rows

    assert nonfinite_rows(torch.randn(50, 4)) is None
    assert nonfinite_rows(torch.empty(0, 4)) is None
    big = torch.full((4, 2), 3e38)  # finite, but its column sums overflow float32
    assert nonfinite_rows(big) is None
    pysid.kmeans(big, 1, iters=0)  # accepted
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        x = torch.randn(30, 3).to(dtype)
        x[4, 2] = float("-inf")
        x[21, 0] = float("nan")
        x[22, 1], x[22, 2] = float("inf"), float("-inf")
        assert nonfinite_rows(x).tolist() == [4, 21, 22]


def test_forced_backend_never_falls_back():
    with pysid.backend("cpu"), pytest.raises(TypeError):
        pysid.kmeans(torch.randn(10, 3, dtype=torch.float64), 2)
    with pysid.backend("cuda"), pytest.raises(RuntimeError):
        pysid.kmeans(torch.randn(10, 3), 2)


def _worker(rank: int) -> dict:
    x = blobs(1200, 8, 12, seed=11)
    w = torch.rand(1200, generator=torch.Generator().manual_seed(3)) + 0.5
    shard = slice(0, 500) if rank == 0 else slice(500, 1200)
    res = pysid.kmeans(x[shard], 12, iters=6, seed=5, weights=w[shard], init_sample=600)
    cbs = pysid.residual_kmeans(x[shard], 2, 6, iters=3, seed=1)
    par = pysid.kmeans(x[shard], 40, iters=0, seed=2, init="k-means||")
    return {"c": res.centroids, "a": res.assignments, "inertia": res.inertia, "sizes": res.sizes, "cbs": cbs,
            "par": par.centroids}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_two_processes_equal_one(tmp_path):
    r0, r1 = run_two_processes(_worker, tmp_path)
    x = blobs(1200, 8, 12, seed=11)
    w = torch.rand(1200, generator=torch.Generator().manual_seed(3)) + 0.5
    one = pysid.kmeans(x, 12, iters=6, seed=5, weights=w, init_sample=600)
    torch.testing.assert_close(r0["c"], one.centroids, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r1["c"], one.centroids, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat([r0["a"], r1["a"]]), one.assignments)
    assert r0["inertia"] == pytest.approx(one.inertia, rel=1e-9)
    assert torch.equal(r0["sizes"], one.sizes)
    cbs = pysid.residual_kmeans(x, 2, 6, iters=3, seed=1)
    torch.testing.assert_close(r0["cbs"], cbs, rtol=1e-5, atol=1e-5)
    assert math.isfinite(one.inertia)
    par = pysid.kmeans(x, 40, iters=0, seed=2, init="k-means||")  # k-means||: the draws of one process
    assert torch.equal(r0["par"], par.centroids) and torch.equal(r1["par"], par.centroids)


def test_lloyd_bounds_change_nothing(monkeypatch):
    """The CPU Lloyd loop's bounded assignment gives the same run as the plain search."""
    from pysid.ops import kmeans as kops

    x = blobs(4000, 12, 25, seed=11)
    fast = pysid.kmeans(x, 25, iters=15, seed=3, tol=0)
    from pysid.ops import registry

    assert kops.engine(x).bounded_assign is not None  # the first run used the bounds
    monkeypatch.delitem(registry._REGISTRY["kmeans_assign_bounded"], "cpu")  # the plain search
    assert kops.engine(x).bounded_assign is None
    plain = pysid.kmeans(x, 25, iters=15, seed=3, tol=0)
    assert torch.equal(fast.centroids, plain.centroids) and torch.equal(fast.assignments, plain.assignments)
    assert fast.history == plain.history and fast.inertia == plain.inertia


# --------------------------------------------------------------------------- k-means||, init="auto"
def _potential(x: torch.Tensor, c: torch.Tensor) -> float:
    return float((torch.cdist(x.double(), c.double().cpu()) ** 2).min(1).values.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_kmeans_parallel_seeds_rows_deterministically(backend):
    """k-means|| gives k distinct data rows; the same seed gives the same rows, another seed others."""
    x = blobs(3000, 12, 60, seed=4)
    a = _run(backend, x, 48, iters=0, seed=3, init="k-means||").centroids.cpu()
    b = _run(backend, x, 48, iters=0, seed=3, init="k-means||").centroids.cpu()
    c = _run(backend, x, 48, iters=0, seed=4, init="k-means||").centroids.cpu()
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = torch.cdist(a.double(), x.double())
    assert float(d.min(1).values.max()) < 1e-5  # every centre is a row of x
    assert torch.unique(a, dim=0).shape[0] == 48


def test_kmeans_parallel_potential_near_kmeanspp():
    """Seeding potential over 6 seeds: k-means|| within 25 % of greedy k-means++ on every row,
    and far below uniform random rows (blobs with 60 centres, k = 60)."""
    x = blobs(4000, 10, 60, seed=8, spread=3.0)
    pot = {init: sum(_potential(x, pysid.kmeans(x, 60, iters=0, seed=s, init=init).centroids)
                     for s in range(6)) for init in ("k-means++", "k-means||", "random")}
    assert pot["k-means||"] <= 1.25 * pot["k-means++"], pot
    assert pot["k-means||"] < 0.7 * pot["random"], pot


def test_kmeans_parallel_few_distinct_rows_falls_back():
    """Fewer distinct rows than k among the candidates: k-means++ on x seeds instead (data rows)."""
    base = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    x = base.repeat(200, 1)
    res = pysid.kmeans(x, 8, iters=0, init="k-means||")
    assert res.centroids.shape == (8, 3)
    assert float(torch.cdist(res.centroids.double(), base.double()).min(1).values.max()) < 1e-6
    assert torch.unique(res.centroids, dim=0).shape[0] == 5  # all five distinct rows chosen


def test_kmeans_parallel_rounds_use_the_bf16_assignment_on_cpu(monkeypatch):
    """On the C++ engine the k-means|| rounds (the first candidate and each round) use the bfloat16
    seeding assignment (the reference engine has its PyTorch specification)."""
    from pysid.ops import kmeans as kops

    x = blobs(3000, 12, 60, seed=4)
    assert kops.engine(x, "cpu").assign_seed is not None
    assert kops.engine(x, "reference").assign_seed is not None
    from pysid import _native_kmeans

    calls = []
    real = _native_kmeans.kmeans_assign_bf16
    monkeypatch.setattr(_native_kmeans, "kmeans_assign_bf16", lambda xx, c: calls.append(c.shape[0]) or real(xx, c))
    pysid.kmeans(x, 40, iters=0, seed=1, init="k-means||")
    assert calls == [1, 80, 80]  # 1 + 2 rounds of 2k candidates


@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans_parallel_reference_and_cpu_seed_the_same_centres(weighted):
    """The reference engine's seeding assignment has the C++ kernel's bits, so k-means|| on the
    reference and on the C++ engine picks the same centres (and Lloyd then gives the same result)."""
    x = blobs(5000, 19, 70, seed=8, spread=1.5)
    w = torch.rand(5000, generator=torch.Generator().manual_seed(3)) + 0.5 if weighted else None
    with pysid.backend("reference"):
        ref = pysid.kmeans(x, 64, iters=3, seed=5, init="k-means||", weights=w)
    res = pysid.kmeans(x, 64, iters=3, seed=5, init="k-means||", weights=w)
    assert torch.equal(res.assignments, ref.assignments)
    torch.testing.assert_close(res.centroids, ref.centroids, rtol=1e-5, atol=1e-5)


def test_kmeans_parallel_seeds_the_same_on_every_seeding_path(monkeypatch):
    """The seeding assignment gives the same bits on every path (AVX512_BF16 where the CPU has it,
    the float32 emulation on AVX-512 / AVX2), so k-means|| picks the same centres on each."""
    from pysid import _native

    C = _native.cpu()
    x = blobs(4000, 37, 50, seed=6, spread=2.0)
    hw = C.cpu_isa()
    paths = [("avx512", "1"), ("avx512", "0"), ("avx2", "1")] if hw == "avx512" else [(hw, "1")]
    seeds = {}  # path name -> centres (AVX512_BF16 only where the CPU and the build have it)
    for isa, bf in paths:
        monkeypatch.setenv("PYSID_CPU_ISA", isa)
        monkeypatch.setenv("PYSID_CPU_BF16", bf)
        seeds[C.kmeans_seed_path()] = pysid.kmeans(x, 48, iters=0, seed=2, init="k-means||").centroids
    first = next(iter(seeds.values()))
    assert all(torch.equal(first, s) for s in seeds.values()), list(seeds)
    if hw == "avx512":
        assert {"avx512", "avx2"} <= set(seeds)


def test_auto_init_rule():
    """init="auto": k-means|| from k = 32 on when the rows number >= 2 * (1 + 4k); else k-means++."""
    from pysid.kmeans import _use_parallel_seeding

    assert _use_parallel_seeding(32, 2 * (1 + 4 * 32)) and not _use_parallel_seeding(32, 2 * (1 + 4 * 32) - 1)
    assert not _use_parallel_seeding(31, 10**6)
    x = blobs(2000, 6, 40, seed=1)
    for k, other in ((40, "k-means||"), (8, "k-means++")):
        auto = pysid.kmeans(x, k, iters=2, seed=5)
        same = pysid.kmeans(x, k, iters=2, seed=5, init=other)
        assert torch.equal(auto.centroids, same.centroids)
    small = pysid.kmeans(x[:200], 40, iters=0, seed=5)  # too few rows for k-means||
    assert torch.equal(small.centroids, pysid.kmeans(x[:200], 40, iters=0, seed=5, init="k-means++").centroids)


# --------------------------------------------------------------------------- stopping rules, host reads
def test_rtol_stops_on_the_inertia():
    x = blobs(3000, 8, 50, seed=3, spread=2.0)
    full = pysid.kmeans(x, 50, iters=100, tol=0, rtol=0)
    fast = pysid.kmeans(x, 50, iters=100, tol=0, rtol=1e-3)
    assert fast.converged and fast.iterations < full.iterations
    h = fast.history + [fast.inertia]
    assert (h[-2] - h[-1]) <= 1e-3 * h[-1]  # the stop: the last assignment gained < rtol
    assert all((a - b) > 1e-3 * b for a, b in zip(h[:-2], h[1:-1]))  # ... and no earlier one did
    assert fast.inertia <= full.inertia * 1.02
    check_consistent(x, fast)  # the returned assignment is that of the returned centroids


def _lloyd_runs(monkeypatch, every: int, **kw):
    """A run with the per-iteration loop (CPU) and one with blocks of ``every`` iterations and
    one host read per block (the CUDA loop, forced on the CPU); counts the loop's host reads."""
    import importlib

    km = importlib.import_module("pysid.kmeans")
    reads = []
    real = km._read
    monkeypatch.setattr(km, "_read", lambda t: reads.append(1) or real(t))
    sync = pysid.kmeans(**kw)
    n_sync = len(reads)
    monkeypatch.setattr(km, "_check_every", lambda x: every)
    reads.clear()
    free = pysid.kmeans(**kw)
    return sync, n_sync, free, len(reads)


def _same_run(a, b) -> None:
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    assert a.history == b.history and a.inertia == b.inertia
    assert a.iterations == b.iterations and a.converged == b.converged and torch.equal(a.sizes, b.sizes)


@pytest.mark.parametrize("case", ["rtol", "iters", "tol", "weights"])
def test_sync_free_loop_same_run_one_read_per_block(monkeypatch, case):
    """The blocked loop reads the host once per 4 iterations (the per-iteration loop: twice per
    iteration) and gives the per-iteration loop's run bit for bit, whichever rule stops it."""
    x = blobs(2500, 8, 40, seed=2, spread=2.0)
    kw = dict(x=x, k=40, seed=1, tol=0, rtol=0, iters=13)
    if case == "rtol":
        kw.update(rtol=1e-3, iters=100)
    elif case == "tol":
        kw.update(tol=1e-2, iters=100)
    elif case == "weights":
        kw.update(weights=torch.rand(2500, generator=torch.Generator().manual_seed(0)) + 0.1)
    sync, n_sync, free, n_free = _lloyd_runs(monkeypatch, 4, **kw)
    _same_run(sync, free)
    if case in ("iters", "weights"):
        assert sync.iterations == 13 and not sync.converged
    else:
        assert sync.converged and sync.iterations < 100
    assert n_sync >= 2 * sync.iterations
    blocks = math.ceil((sync.iterations + (case == "rtol")) / 4)  # rtol: the stopping assignment is one more
    assert n_free == blocks, (n_free, blocks)


def test_sync_free_loop_redoes_an_empty_cluster_exactly(monkeypatch):
    """A cluster that goes empty inside a block: that iteration is redone on the exact path
    (farthest rows), then blocks go on; the same run as the per-iteration loop."""
    x = torch.cat([torch.randn(300, 4, generator=torch.Generator().manual_seed(0)),
                   torch.tensor([[50.0, 0, 0, 0], [0, 60.0, 0, 0]])])
    init = torch.stack([x[:100].mean(0), x[100:200].mean(0), torch.full((4,), 1e4), torch.full((4,), 2e4)])
    sync, _, free, n_free = _lloyd_runs(monkeypatch, 4, x=x, k=4, init=init, iters=9, tol=0, rtol=0)
    _same_run(sync, free)
    assert bool((free.sizes > 0).all()) and 2 <= free.iterations <= 9
    assert n_free > math.ceil(free.iterations / 4)  # the redo read the host


# --------------------------------------------------------------------------- candidate lists
def _count_candidate_calls(monkeypatch):
    """Counts of full (topm) and restricted assignments of every engine made from now on."""
    from pysid.ops import kmeans as kops

    calls = {"full": 0, "restricted": 0}
    init = kops.KMeansEngine.__init__

    def counted(self, *a, **kw):
        init(self, *a, **kw)
        if self.assign_topm is not None:
            topm, cands = self.assign_topm, self.assign_candidates

            def t(*args):
                calls["full"] += 1
                return topm(*args)

            def c(*args):
                calls["restricted"] += 1
                return cands(*args)

            self.assign_topm, self.assign_candidates = t, c

    monkeypatch.setattr(kops.KMeansEngine, "__init__", counted)
    return calls


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_candidate_lists_stop_on_a_full_search(backend, monkeypatch):
    """kmeans(candidates=m): most iterations are restricted, the returned assignments are the
    exact nearest centroids (the plain assignment of the returned centroids, bit for bit on the
    C++ kernels), the inertia is theirs, and the result is close to full Lloyd's."""
    from pysid.ops import kmeans as kops

    x = blobs(4000, 16, 60, seed=21, spread=1.5)
    calls = _count_candidate_calls(monkeypatch)
    res = _run(backend, x, 48, iters=50, seed=2, candidates=6, rtol=1e-4, tol=0)
    assert calls["restricted"] > calls["full"] >= 2
    check_consistent(x, res)
    with pysid.backend(backend):
        codes, dist = kops.engine(x).assign(x, res.centroids)
    assert torch.equal(res.assignments, codes)
    assert res.inertia == pytest.approx(float(dist.double().sum()), rel=1e-6)
    full = _run(backend, x, 48, iters=50, seed=2, rtol=1e-4, tol=0)
    assert res.inertia <= full.inertia * 1.02
    again = _run(backend, x, 48, iters=50, seed=2, candidates=6, rtol=1e-4, tol=0)
    assert torch.equal(again.centroids, res.centroids) and torch.equal(again.assignments, res.assignments)


def test_candidate_lists_cpu_matches_reference():
    x = blobs(3000, 10, 40, seed=5)
    init = x[torch.randperm(3000, generator=torch.Generator().manual_seed(4))[:30]].clone()
    ref = _run("reference", x, 30, iters=12, init=init, candidates=5, tol=0)
    res = _run("cpu", x, 30, iters=12, init=init, candidates=5, tol=0)
    assert torch.equal(res.assignments, ref.assignments) and res.iterations == ref.iterations
    torch.testing.assert_close(res.centroids, ref.centroids, rtol=1e-5, atol=1e-5)


def test_candidate_lists_refresh_and_large_m(monkeypatch):
    """A full search at least every CANDIDATE_REFRESH iterations; m >= k is plain Lloyd."""
    import importlib

    km = importlib.import_module("pysid.kmeans")
    x = blobs(2000, 8, 30, seed=9)
    init = x[:20].clone()
    monkeypatch.setattr(km, "CANDIDATE_REFRESH", 2)
    calls = _count_candidate_calls(monkeypatch)
    res = _run("cpu", x, 20, iters=9, init=init, candidates=4, rtol=0, tol=0)
    assert res.iterations == 9 and calls == {"full": 5, "restricted": 4}  # iterations 0, 2, 4, 6, 8 full
    check_consistent(x, res)
    plain = _run("cpu", x, 20, iters=9, init=init, rtol=0, tol=0)
    same = _run("cpu", x, 20, iters=9, init=init, candidates=20, rtol=0, tol=0)
    assert torch.equal(same.centroids, plain.centroids) and torch.equal(same.assignments, plain.assignments)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "8"])
def test_candidates_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="candidates"):
        pysid.kmeans(torch.randn(50, 3), 4, candidates=bad)


def test_fit_uses_candidate_lists_and_returns_greedy_codes(monkeypatch):
    """pysid.fit's rq-kmeans levels run with candidate lists; the codes are still exactly
    residual_quantize's for the trained codebooks."""
    calls = _count_candidate_calls(monkeypatch)
    x = blobs(3000, 24, 200, seed=13, spread=1.0)
    s = pysid.fit(x, levels=3, codebook_size=32, dedup="none", seed=1, progress=False)
    assert calls["restricted"] > 0 and calls["full"] >= 3
    assert torch.equal(s.codes[:, :3], pysid.residual_quantize(x, s.codebooks).codes.long())


def _tight_catalogue_with_copies(topics: int, noise: float, seed: int, copies: int) -> torch.Tensor:
    """4,000 x 32 rows tight around ``topics`` centres (distances << ||x||^2: the float32 score
    ||c||^2 - 2 x.c has near-ties that its summation order decides), ``copies`` rows overwritten by
    exact copies of others, and the last 400 rows 40 far points repeated 10 times (each its own
    level-0 cluster: those rows' level-1 residuals are exactly zero)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(topics, 32, generator=g)
    x = c[torch.randint(0, topics, (4000,), generator=g)] + noise * torch.randn(4000, 32, generator=g)
    g = torch.Generator().manual_seed(seed)
    x[torch.randint(0, 4000, (copies,), generator=g)] = x[torch.randint(0, 4000, (copies,), generator=g)].clone()
    x[3600:] = (6 * torch.randn(40, 32, generator=g)).repeat_interleave(10, 0)
    return x.contiguous()


@pytest.mark.parametrize("topics,noise,seed,copies", [(100, 0.01, 522, 3000), (20, 0.05, 476, 600),
                                                      (2000, 0.05, 808, 3000)])
def test_fit_reference_and_cpu_engines_agree_bit_for_bit(topics, noise, seed, copies):
    """pysid.fit (3 x 256 rq-kmeans: k-means||, Lloyd with candidate lists) on the reference engine and
    on the C++ engine: the same codebooks and codes, bit for bit, on data with exact zero residuals and
    score near-ties. Every assignment (full, top-m lists, restricted to the lists) picks codes by the
    canonical score on both engines (before, the reference's full search summed with a GEMM and its
    restricted search used the differences, the C++ restricted search a lane-wise sum: near-ties
    went different ways and Lloyd carried the difference to centroids up to ~0.7 apart)."""
    from pysid.kmeans import _next_residual

    x = _tight_catalogue_with_copies(topics, noise, seed, copies)
    fits = {}
    for name in ("reference", "cpu"):
        with pysid.backend(name):
            fits[name] = pysid.fit(x, levels=3, codebook_size=256, dedup="none", progress=False)
    a, b = fits["reference"], fits["cpu"]
    for lvl in range(3):
        assert torch.equal(a.codebooks[lvl], b.codebooks[lvl]), f"level {lvl}: codebooks differ"
    assert torch.equal(a.codes, b.codes)
    # the data has exact zero residuals at level 1 (rows equal to their level-0 centroid)
    r1 = _next_residual(x, b.codebooks[0], b.codes[:, 0], own=False)
    assert int((r1 == 0).all(1).sum()) >= 400
