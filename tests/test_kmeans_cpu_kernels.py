"""The C++ k-means kernels (pysid._C.kmeans_update / kmeanspp_candidates / kmeanspp_commit /
kmeanspp_pack / kmeanspp_run, called through their checked Python face pysid._native_kmeans)
against straightforward torch computations, plus determinism and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysid import _native, _native_kmeans
from pysid.reference.kmeans import kmeans_update_ref

C = _native.cpu()
K = _native_kmeans  # the k-means bindings, arguments checked and outputs allocated in Python

ISAS = ["scalar", "avx2", "avx512"]
LOW_PRECISION = [torch.float16, torch.bfloat16]

# --------------------------------------------------------------------------- references


def dist_ref(x, cand):
    """float64 squared distances [N, T] from the differences."""
    return ((x.double()[:, None, :] - cand.double()[None]) ** 2).sum(-1)


def pot_ref(dist, mind, weights):
    """float64 potentials [T] of a [N, T] distance matrix (the kernel's min rule)."""
    d64, m64 = dist.double(), mind.double()[:, None]
    closer = torch.where(d64 < m64, d64, m64)
    w64 = torch.ones(dist.shape[0], dtype=torch.float64) if weights is None else weights.double()
    return (w64[:, None] * closer).sum(0)


def make_x(g, n, d, dtype, scale=1.0):
    return (torch.randn(n, d, generator=g) * scale).to(dtype)


def check_update(x, codes, weights, k):
    sums, counts = K.kmeans_update(x, codes, weights, k)
    assert sums.dtype == torch.float64 and sums.shape == (k, x.shape[1]) and sums.is_contiguous()
    assert counts.dtype == torch.float64 and counts.shape == (k,)
    ref_s, ref_c = kmeans_update_ref(x, codes, weights, k)
    # float64 sums of float32-exact terms: only the summation order differs
    scale = float(x.double().abs().sum()) if x.numel() else 0.0
    wmax = 1.0 if weights is None or weights.numel() == 0 else float(weights.max())
    torch.testing.assert_close(sums, ref_s, rtol=1e-12, atol=1e-13 * (scale * wmax + 1.0))
    if weights is None:
        assert torch.equal(counts, ref_c)  # integer counts are exact
    else:
        torch.testing.assert_close(counts, ref_c, rtol=1e-12, atol=1e-13 * (float(weights.sum()) + 1.0))
    empty = torch.bincount(codes.long(), minlength=k) == 0
    assert (sums[empty] == 0).all() and (counts[empty] == 0).all()
    return sums, counts


def check_pp(x, cand, mind, weights):
    dist, pot = K.kmeanspp_candidates(x, cand, mind, weights)
    n, t = x.shape[0], cand.shape[0]
    assert dist.dtype == torch.float32 and dist.shape == (n, t) and dist.is_contiguous()
    assert pot.dtype == torch.float64 and pot.shape == (t,)
    ref = dist_ref(x, cand)
    # float32 sum of D non-negative float32 terms: relative error <= ~(D + 1) * 2^-24
    rtol = (x.shape[1] + 4) * 2.0**-24 * 2
    torch.testing.assert_close(dist.double(), ref, rtol=rtol, atol=1e-30)
    # the potential is an exact-order float64 sum of the kernel's own distances
    torch.testing.assert_close(pot, pot_ref(dist, mind, weights), rtol=1e-12, atol=1e-300)
    # and close to the float64 potential of the exact distances
    torch.testing.assert_close(pot, pot_ref(ref, mind, weights), rtol=rtol, atol=1e-300)
    return dist, pot


# --------------------------------------------------------------------------- kmeans_update

shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "n": st.integers(0, 3000),
        "d": st.sampled_from([1, 2, 3, 7, 8, 16, 17, 31, 64, 130]),
        "k": st.integers(1, 300),
        "dtype": st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
        "weighted": st.booleans(),
    }
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(p=shapes)
def test_update_random_shapes(p):
    g = torch.Generator().manual_seed(p["seed"])
    n, d, k = p["n"], p["d"], p["k"]
    x = make_x(g, n, d, p["dtype"], scale=3.0)
    # only some codes in use: k larger than the number of distinct codes, empty clusters
    used = torch.randint(0, k, (max(1, k // 3),), generator=g)
    codes = used[torch.randint(0, used.numel(), (n,), generator=g)].to(torch.int32)
    w = torch.rand(n, generator=g) * 4 if p["weighted"] else None
    check_update(x, codes, w, k)


@pytest.mark.parametrize("d", [1, 3, 17, 130])
@pytest.mark.parametrize("n", [0, 1, 5, 1023, 2049, 4097])
@pytest.mark.parametrize("weighted", [False, True])
def test_update_edge_sizes(n, d, weighted):
    g = torch.Generator().manual_seed(n * 1000 + d)
    k = 7
    x = make_x(g, n, d, torch.float32)
    codes = torch.randint(0, 3, (n,), generator=g, dtype=torch.int32) * 2  # clusters 1, 3, 5, 6 empty
    w = torch.rand(n, generator=g) if weighted else None
    if weighted and n > 3:
        w[:3] = 0.0  # zero weights are allowed
    sums, counts = check_update(x, codes, w, k)
    assert (sums[[1, 3, 5, 6]] == 0).all() and (counts[[1, 3, 5, 6]] == 0).all()


def test_update_k1_and_one_huge_cluster():
    """Every row in one cluster (many fixed-size chunks combined), and k = 1."""
    g = torch.Generator().manual_seed(3)
    n = 7000  # more than three of the kernel's fixed 2048-row chunks
    x = make_x(g, n, 33, torch.float32)
    check_update(x, torch.zeros(n, dtype=torch.int32), None, 1)
    codes = torch.zeros(n, dtype=torch.int32)
    codes[::97] = 4
    check_update(x, codes, torch.rand(n, generator=g), 5)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_update_low_precision_is_exact_conversion(dtype):
    """float16/bfloat16 rows are widened exactly: the same as passing x.float()."""
    g = torch.Generator().manual_seed(11)
    x = make_x(g, 3001, 45, dtype, scale=100.0)
    x[0, :3] = torch.tensor([6.0e-8, -1.0e-7, 65504.0]).to(dtype)  # float16 subnormals / max
    codes = torch.randint(0, 40, (3001,), generator=g, dtype=torch.int32)
    w = torch.rand(3001, generator=g)
    s16, c16 = check_update(x, codes, w, 40)
    s32, c32 = K.kmeans_update(x.float(), codes, w, 40)
    assert torch.equal(s16, s32) and torch.equal(c16, c32)


def test_update_deterministic_across_threads_and_isas(monkeypatch):
    """Bit-identical for 1 and 2 threads and every SIMD path (fixed order, exact products)."""
    g = torch.Generator().manual_seed(5)
    n, d, k = 30011, 37, 64
    x = make_x(g, n, d, torch.float32, scale=1e3)
    codes = torch.randint(0, k, (n,), generator=g, dtype=torch.int32)
    codes[: n // 2] = 3  # one cluster spans several chunks
    w = torch.rand(n, generator=g)
    old = torch.get_num_threads()
    results = []
    try:
        for isa in ISAS:
            monkeypatch.setenv("PYSID_CPU_ISA", isa)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                results.append(K.kmeans_update(x, codes, w, k))
    finally:
        torch.set_num_threads(old)
    for s, c in results[1:]:
        assert torch.equal(s, results[0][0]) and torch.equal(c, results[0][1])
    check_update(x, codes, w, k)


def test_update_does_not_modify_inputs():
    g = torch.Generator().manual_seed(1)
    x = make_x(g, 500, 9, torch.float32)
    codes = torch.randint(0, 4, (500,), generator=g, dtype=torch.int32)
    w = torch.rand(500, generator=g)
    xc, cc, wc = x.clone(), codes.clone(), w.clone()
    K.kmeans_update(x, codes, w, 4)
    assert torch.equal(x, xc) and torch.equal(codes, cc) and torch.equal(w, wc)


# --------------------------------------------------------------------------- kmeanspp_candidates

pp_shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "n": st.integers(0, 3000),
        "d": st.sampled_from([1, 2, 3, 7, 8, 15, 16, 17, 33, 64, 130]),
        "t": st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 12, 17, 33, 64]),
        "dtype": st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
        "weighted": st.booleans(),
        "first_step": st.booleans(),
    }
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(p=pp_shapes)
def test_pp_random_shapes(p):
    g = torch.Generator().manual_seed(p["seed"])
    n, d, t = p["n"], p["d"], p["t"]
    x = make_x(g, n, d, p["dtype"], scale=2.0)
    cand = torch.randn(t, d, generator=g) * 2
    if p["first_step"]:
        mind = torch.full((n,), math.inf)
    else:
        mind = torch.rand(n, generator=g) * 8 * d
        mind[torch.rand(n, generator=g) < 0.1] = math.inf
    w = torch.rand(n, generator=g) * 3 if p["weighted"] else None
    check_pp(x, cand, mind, w)


@pytest.mark.parametrize("d", [1, 3, 17, 130])
@pytest.mark.parametrize("t", [1, 7, 64])
@pytest.mark.parametrize("n", [0, 1, 2, 4, 1023, 1025, 2500])
def test_pp_edge_sizes(n, d, t):
    g = torch.Generator().manual_seed(n * 100 + d * 7 + t)
    x = make_x(g, n, d, torch.float32)
    cand = torch.randn(t, d, generator=g)
    mind = torch.rand(n, generator=g) * d
    mind[::3] = math.inf
    check_pp(x, cand, mind, None)
    check_pp(x, cand, mind, torch.rand(n, generator=g))


def test_pp_no_cancellation():
    """Far from the origin and close together: the difference form keeps full precision
    (the ||x||^2 - 2 x.c + ||c||^2 expansion would lose every digit here)."""
    g = torch.Generator().manual_seed(2)
    base = torch.full((1, 64), 1.0e4)
    x = base + torch.randn(2000, 64, generator=g) * 1e-2
    cand = base + torch.randn(5, 64, generator=g) * 1e-2
    dist, _ = check_pp(x, cand, torch.full((2000,), math.inf), None)
    assert (dist > 0).all()


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_pp_low_precision_is_exact_conversion(dtype):
    g = torch.Generator().manual_seed(4)
    x = make_x(g, 2001, 35, dtype, scale=10.0)
    cand = torch.randn(7, 35, generator=g)
    mind = torch.rand(2001, generator=g) * 100
    w = torch.rand(2001, generator=g)
    d16, p16 = check_pp(x, cand, mind, w)
    d32, p32 = K.kmeanspp_candidates(x.float(), cand, mind, w)
    assert torch.equal(d16, d32) and torch.equal(p16, p32)


def test_pp_mind_rule():
    """pot = sum w * min(mind, dist), mind may be +inf or 0; first step = plain distance sum."""
    g = torch.Generator().manual_seed(8)
    x = make_x(g, 100, 4, torch.float32)
    cand = torch.randn(3, 4, generator=g)
    dist, pot = K.kmeanspp_candidates(x, cand, torch.full((100,), math.inf), None)
    torch.testing.assert_close(pot, dist.double().sum(0), rtol=1e-12, atol=0)
    _, pot0 = K.kmeanspp_candidates(x, cand, torch.zeros(100), None)
    assert torch.equal(pot0, torch.zeros(3, dtype=torch.float64))
    w = torch.zeros(100)
    w[7] = 2.5
    _, potw = K.kmeanspp_candidates(x, cand, torch.full((100,), math.inf), w)
    torch.testing.assert_close(potw, 2.5 * dist[7].double(), rtol=1e-15, atol=0)


def test_pp_distance_independent_of_grouping():
    """dist[:, j] depends only on x and cand[j]: scoring candidates alone or together
    (any T, any position in the group, any row blocking) gives the same bits."""
    g = torch.Generator().manual_seed(9)
    for d in (5, 16, 130):
        x = make_x(g, 1001, d, torch.float32)
        cand = torch.randn(19, d, generator=g)
        mind = torch.full((1001,), math.inf)
        full, _ = K.kmeanspp_candidates(x, cand, mind, None)
        for j in (0, 5, 8, 13, 18):
            alone, _ = K.kmeanspp_candidates(x, cand[j : j + 1].contiguous(), mind, None)
            assert torch.equal(alone[:, 0], full[:, j])
        tail, _ = K.kmeanspp_candidates(x[1:].contiguous(), cand[3:10].contiguous(), mind[1:].contiguous(), None)
        assert torch.equal(tail, full[1:, 3:10])


@pytest.mark.parametrize("isa", ISAS)
def test_pp_each_isa(monkeypatch, isa):
    """PYSID_CPU_ISA (read on every call) lowers the SIMD path: each one matches the reference."""
    monkeypatch.setenv("PYSID_CPU_ISA", isa)
    g = torch.Generator().manual_seed(12)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for d, t in ((1, 1), (17, 7), (130, 9), (64, 64)):
            x = make_x(g, 777, d, dtype)
            cand = torch.randn(t, d, generator=g)
            mind = torch.rand(777, generator=g) * d
            check_pp(x, cand, mind, torch.rand(777, generator=g))
            codes = torch.randint(0, 5, (777,), generator=g, dtype=torch.int32)
            check_update(x, codes, None, 6)


def dist_fma_ref(x, cand):
    """The kernels' exact arithmetic on the FMA paths: per (row, candidate), over e = 0 .. D-1
    in order, acc = fma(x_e - c_e, x_e - c_e, acc) in float32 (emulated: the float32 difference
    squared is exact in float64, so one float64 add rounded to float32 is the fused result
    except in double-rounding cases, about 2^-29 per step)."""
    xf, cf = x.float(), cand.float()
    acc = torch.zeros(x.shape[0], cand.shape[0], dtype=torch.float32)
    for e in range(x.shape[1]):
        df = xf[:, None, e] - cf[None, :, e]  # float32 difference, as the kernel
        acc = (acc.double() + df.double() ** 2).float()
    return acc


def hardware_isa():
    import os

    saved = os.environ.pop("PYSID_CPU_ISA", None)
    try:
        return C.cpu_isa()
    finally:
        if saved is not None:
            os.environ["PYSID_CPU_ISA"] = saved


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_pp_fma_paths_sum_in_order(monkeypatch, isa):
    """AVX2 and AVX-512 give the documented bits: a fused multiply-add per element, in order;
    the potentials are then the same on both paths too."""
    if ISAS.index(hardware_isa()) < ISAS.index(isa):
        pytest.skip(f"this CPU has no {isa}")
    monkeypatch.setenv("PYSID_CPU_ISA", isa)
    g = torch.Generator().manual_seed(21)
    for n, d, t in ((1, 1, 1), (37, 17, 7), (1500, 130, 9), (64, 3, 64)):
        x = make_x(g, n, d, torch.float32, scale=3.0)
        cand = torch.randn(t, d, generator=g)
        mind = torch.rand(n, generator=g) * d
        w = torch.rand(n, generator=g)
        dist, pot = K.kmeanspp_candidates(x, cand, mind, w)
        assert torch.equal(dist, dist_fma_ref(x, cand))
        monkeypatch.setenv("PYSID_CPU_ISA", "avx2")
        assert torch.equal(K.kmeanspp_candidates(x, cand, mind, w)[1], pot)
        monkeypatch.setenv("PYSID_CPU_ISA", isa)


def test_pp_deterministic_across_threads():
    g = torch.Generator().manual_seed(6)
    n, d = 40000, 24
    x = make_x(g, n, d, torch.float32)
    cand = torch.randn(7, d, generator=g)
    mind = torch.rand(n, generator=g) * 30
    w = torch.rand(n, generator=g)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        d1, p1 = K.kmeanspp_candidates(x, cand, mind, w)
        torch.set_num_threads(2)
        d2, p2 = K.kmeanspp_candidates(x, cand, mind, w)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(d1, d2) and torch.equal(p1, p2)


def test_zero_width_and_zero_rows():
    """D = 0 (counts only, distances 0) and N = 0 (zero sums, zero potentials) are valid."""
    codes = torch.tensor([0, 1, 1, 3, 0], dtype=torch.int32)
    sums, counts = K.kmeans_update(torch.empty(5, 0), codes, None, 5)
    assert sums.shape == (5, 0) and torch.equal(counts, torch.tensor([2.0, 2, 0, 1, 0], dtype=torch.float64))
    mind = torch.tensor([1.0, math.inf, 0.0, 2.0, 3.0])
    dist, pot = K.kmeanspp_candidates(torch.empty(5, 0), torch.empty(2, 0), mind, None)
    assert torch.equal(dist, torch.zeros(5, 2)) and torch.equal(pot, torch.zeros(2, dtype=torch.float64))
    for dtype in (torch.float32, torch.bfloat16):
        sums, counts = K.kmeans_update(torch.empty(0, 3, dtype=dtype), torch.empty(0, dtype=torch.int32), None, 2)
        assert torch.equal(sums, torch.zeros(2, 3, dtype=torch.float64)) and torch.equal(counts, torch.zeros(2, dtype=torch.float64))
        dist, pot = K.kmeanspp_candidates(torch.empty(0, 3, dtype=dtype), torch.randn(4, 3), torch.empty(0), None)
        assert dist.shape == (0, 4) and torch.equal(pot, torch.zeros(4, dtype=torch.float64))


# --------------------------------------------------------------------------- argument checks


def _update_args():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g)
    codes = torch.randint(0, 3, (10,), generator=g, dtype=torch.int32)
    return x, codes, torch.rand(10, generator=g), 3


@pytest.mark.parametrize("bad", [3, 100, -1, -(2**31)])
def test_update_code_out_of_range(bad):
    x, codes, w, k = _update_args()
    codes[6] = bad
    before = (x.clone(), codes.clone(), w.clone())
    with pytest.raises(ValueError, match=rf"codes\[6\] = {bad} is out of range \[0, 3\)"):
        K.kmeans_update(x, codes, w, k)
    # inputs untouched; the outputs never escape a failing call (the binding allocates them)
    assert torch.equal(x, before[0]) and torch.equal(codes, before[1]) and torch.equal(w, before[2])


@pytest.mark.parametrize(
    "mutate, exc, pattern",
    [
        (lambda a: {**a, "x": a["x"].double()}, TypeError, "x must be torch.float32, torch.float16 or torch.bfloat16"),
        (lambda a: {**a, "x": a["x"].int()}, TypeError, "x must be torch.float32"),
        (lambda a: {**a, "x": a["x"].numpy()}, TypeError, "x must be a torch.Tensor"),
        (lambda a: {**a, "x": a["x"][:, None]}, ValueError, "x must be 2-D"),
        (lambda a: {**a, "x": a["x"].t().contiguous().t()}, ValueError, "x must be contiguous"),
        (lambda a: {**a, "x": a["x"][:, ::2]}, ValueError, "x must be contiguous"),
        (lambda a: {**a, "x": torch.empty(10, 4, device="meta")}, ValueError, "x must be on the CPU"),
        (lambda a: {**a, "codes": a["codes"].long()}, TypeError, "codes must be torch.int32"),
        (lambda a: {**a, "codes": a["codes"][:9]}, ValueError, r"codes must have shape \[N\]"),
        (lambda a: {**a, "codes": a["codes"][:, None]}, ValueError, r"codes must have shape \[N\]"),
        (lambda a: {**a, "codes": torch.stack([a["codes"], a["codes"]], 1)[:, 0]}, ValueError, "codes must be contiguous"),
        (lambda a: {**a, "weights": a["weights"].double()}, TypeError, "weights must be torch.float32"),
        (lambda a: {**a, "weights": a["weights"][:5]}, ValueError, r"weights must have shape \[N\]"),
        (lambda a: {**a, "weights": torch.rand(20)[::2]}, ValueError, "weights must be contiguous"),
        (lambda a: {**a, "weights": [1.0] * 10}, TypeError, "weights must be a torch.Tensor"),
        (lambda a: {**a, "k": 0}, ValueError, "k must be >= 1"),
    ],
)
def test_update_bad_arguments(mutate, exc, pattern):
    x, codes, w, k = _update_args()
    a = mutate({"x": x, "codes": codes, "weights": w, "k": k})
    with pytest.raises(exc, match=pattern):
        K.kmeans_update(a["x"], a["codes"], a["weights"], a["k"])


def _pp_args():
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(10, 4, generator=g),
        "cand": torch.randn(3, 4, generator=g),
        "mind": torch.rand(10, generator=g),
        "weights": torch.rand(10, generator=g),
    }


@pytest.mark.parametrize(
    "mutate, exc, pattern",
    [
        (lambda a: {**a, "x": a["x"].double()}, TypeError, "x must be torch.float32"),
        (lambda a: {**a, "x": a["x"].t()}, ValueError, "cand must have shape|x must be contiguous"),
        (lambda a: {**a, "x": a["x"].t().contiguous().t()}, ValueError, "x must be contiguous"),
        (lambda a: {**a, "x": a["x"].flatten()}, ValueError, "x must be 2-D"),
        (lambda a: {**a, "cand": a["cand"].half()}, TypeError, "cand must be torch.float32"),
        (lambda a: {**a, "cand": a["cand"][:, :3]}, ValueError, r"cand must have shape \[T, D\]"),
        (lambda a: {**a, "cand": a["cand"][0]}, ValueError, r"cand must have shape \[T, D\]"),
        (lambda a: {**a, "cand": a["cand"].t().contiguous().t()}, ValueError, "cand must be contiguous"),
        (lambda a: {**a, "cand": torch.empty(0, 4)}, ValueError, r"must be in \[1, 64\], got 0"),
        (lambda a: {**a, "cand": torch.randn(65, 4)}, ValueError, r"must be in \[1, 64\], got 65"),
        (lambda a: {**a, "mind": a["mind"].double()}, TypeError, "mind must be torch.float32"),
        (lambda a: {**a, "mind": a["mind"][:9]}, ValueError, r"mind must have shape \[N\]"),
        (lambda a: {**a, "mind": torch.rand(20)[::2]}, ValueError, "mind must be contiguous"),
        (lambda a: {**a, "mind": None}, TypeError, "mind must be a torch.Tensor"),
        (lambda a: {**a, "weights": a["weights"].half()}, TypeError, "weights must be torch.float32"),
        (lambda a: {**a, "weights": a["weights"][:, None]}, ValueError, r"weights must have shape \[N\]"),
    ],
)
def test_pp_bad_arguments(mutate, exc, pattern):
    a = mutate(_pp_args())
    with pytest.raises(exc, match=pattern):
        K.kmeanspp_candidates(a["x"], a["cand"], a["mind"], a["weights"])


def test_module_constants():
    assert C.kmeanspp_max_candidates == 64
    assert C.cpu_isa() in ISAS


# --------------------------------------------------------------------------- kmeanspp_commit


@pytest.mark.parametrize("n,t,weighted", [(1, 1, False), (7, 3, True), (5000, 7, False), (5000, 8, True)])
def test_commit_matches_torch_ops(n, t, weighted):
    """mind <- min(mind, dist[:, best]) in place; cum = torch.cumsum((w * mind).double()) bit for bit."""
    g = torch.Generator().manual_seed(n + t)
    dist = torch.rand(n, t, generator=g) * 10
    mind = torch.rand(n, generator=g) * 10
    mind[::3] = math.inf
    w = torch.rand(n, generator=g) if weighted else None
    for best in range(t):
        m = mind.clone()
        want_m = torch.minimum(mind, dist[:, best])
        want_cum = torch.cumsum((want_m if w is None else w * want_m).double(), 0)
        cum = K.kmeanspp_commit(dist, best, m, w)
        assert torch.equal(m, want_m)
        assert cum.dtype == torch.float64 and torch.equal(cum, want_cum)


def test_commit_errors():
    dist, mind = torch.rand(4, 3), torch.rand(4)
    with pytest.raises(ValueError, match="out of range"):
        K.kmeanspp_commit(dist, 3, mind, None)
    with pytest.raises(ValueError, match="out of range"):
        K.kmeanspp_commit(dist, -1, mind, None)
    with pytest.raises(ValueError, match=r"\[N\]"):
        K.kmeanspp_commit(dist, 0, torch.rand(5), None)
    with pytest.raises(TypeError, match="float32"):
        K.kmeanspp_commit(dist.double(), 0, mind, None)
    with pytest.raises(ValueError, match="contiguous"):
        K.kmeanspp_commit(torch.rand(3, 4).t(), 0, mind, None)
    before = mind.clone()
    with pytest.raises(ValueError):
        K.kmeanspp_commit(dist, 0, mind, torch.rand(3))  # bad weights: mind untouched
    assert torch.equal(mind, before)


# --------------------------------------------------------------------------- kmeanspp_pack / kmeanspp_run


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,d", [(1, 1), (31, 3), (32, 5), (33, 130), (100, 16)])
def test_pack_layout(n, d, dtype):
    """panels[q, j, l] = x[16 q + l, j] (float32, exact), zero rows up to a multiple of 32."""
    g = torch.Generator().manual_seed(n * 31 + d)
    x = make_x(g, n, d, dtype, scale=5.0)
    p = K.kmeanspp_pack(x)
    rows = (n + 31) // 32 * 32
    assert p.dtype == torch.float32 and p.shape == (rows // 16, d, 16)
    want = torch.zeros(rows, d)
    want[:n] = x.float()
    assert torch.equal(p, want.reshape(rows // 16, 16, d).transpose(1, 2))


def step_loop(x, w, u):
    """The k-means++ steps one by one, as pysid.kmeans runs them on several processes:
    searchsorted draws, kmeanspp_candidates, argmin, kmeanspp_commit."""
    n = x.shape[0]
    mind = torch.full((n,), math.inf)
    cum = torch.cumsum((torch.ones(n) if w is None else w).double(), 0)
    chosen = []
    for c in range(u.shape[0]):
        t = 1 if c == 0 else u.shape[1]
        idx = torch.searchsorted(cum, u[c, :t] * cum[-1], right=True).clamp_(0, n - 1)
        dist, pot = K.kmeanspp_candidates(x, x[idx].float().contiguous(), mind, w)
        best = int(torch.argmin(pot))
        chosen.append(int(idx[best]))
        cum = K.kmeanspp_commit(dist, best, mind, w)
    return torch.tensor(chosen), mind, cum


@pytest.mark.parametrize("n,d,k,t,weighted", [(1, 3, 1, 1, False), (50, 2, 10, 3, True), (1100, 17, 24, 5, False),
                                              (2500, 33, 40, 8, True), (700, 130, 12, 9, False)])
def test_run_matches_step_loop(n, d, k, t, weighted):
    """The fused loop gives the step-by-step loop's choices, mind and cum bit for bit, in one
    call or in segments (progress bars), for any thread count."""
    g = torch.Generator().manual_seed(n + d + k)
    x = make_x(g, n, d, torch.float32, scale=2.0)
    x[: n // 4] = x[n // 4 : 2 * (n // 4)]  # duplicate rows: zero distances, zero weights to draw
    w = torch.rand(n, generator=g) * 2 if weighted else None
    u = torch.rand(k, t, generator=g, dtype=torch.float64)
    want, want_mind, want_cum = step_loop(x, w, u)
    p = K.kmeanspp_pack(x)
    old = torch.get_num_threads()
    try:
        for threads, cuts in ((2, [0, k]), (1, sorted({0, 1, k // 2, k}))):
            torch.set_num_threads(threads)
            mind = torch.full((n,), math.inf)
            cum = torch.cumsum((torch.ones(n) if w is None else w).double(), 0)
            got = torch.cat([K.kmeanspp_run(p, n, w, u[a:b].contiguous(), a, mind, cum) for a, b in zip(cuts, cuts[1:])])
            assert torch.equal(got, want) and torch.equal(mind, want_mind) and torch.equal(cum, want_cum)
        none = K.kmeanspp_run(p, n, w, torch.empty(0, t, dtype=torch.float64), k, mind, cum)
        assert none.shape == (0,) and torch.equal(mind, want_mind) and torch.equal(cum, want_cum)
    finally:
        torch.set_num_threads(old)


def _run_args():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    return {"panels": K.kmeanspp_pack(x), "n": 40, "weights": torch.rand(40, generator=g),
            "u": torch.rand(3, 2, generator=g, dtype=torch.float64), "c0": 0,
            "mind": torch.full((40,), math.inf), "cum": torch.arange(1, 41, dtype=torch.float64)}


@pytest.mark.parametrize(
    "mutate, exc, pattern",
    [
        (lambda a: {**a, "n": 0}, ValueError, "N must be >= 1"),
        (lambda a: {**a, "n": 70}, ValueError, r"panels must have shape \[6, D, 16\]"),
        (lambda a: {**a, "c0": -1}, ValueError, "c0 must be >= 0"),
        (lambda a: {**a, "panels": a["panels"].double()}, TypeError, "panels must be torch.float32"),
        (lambda a: {**a, "panels": a["panels"][:, :, :8]}, ValueError, r"panels must have shape"),
        (lambda a: {**a, "u": a["u"].float()}, TypeError, "u must be torch.float64"),
        (lambda a: {**a, "u": torch.rand(3, 65, dtype=torch.float64)}, ValueError, r"u must have shape \[steps, T\]"),
        (lambda a: {**a, "u": torch.rand(3, dtype=torch.float64)}, ValueError, r"u must have shape"),
        (lambda a: {**a, "mind": a["mind"][:5]}, ValueError, r"mind must have shape \[N\]"),
        (lambda a: {**a, "cum": a["cum"].float()}, TypeError, "cum must be torch.float64"),
        (lambda a: {**a, "weights": a["weights"][:3]}, ValueError, r"weights must have shape \[N\]"),
    ],
)
def test_run_bad_arguments(mutate, exc, pattern):
    a = mutate(_run_args())
    mind, cum = a["mind"].clone(), a["cum"].clone()
    with pytest.raises(exc, match=pattern):
        K.kmeanspp_run(a["panels"], a["n"], a["weights"], a["u"], a["c0"], a["mind"], a["cum"])
    assert torch.equal(a["mind"], mind) and torch.equal(a["cum"], cum)  # nothing written


def test_pack_bad_arguments():
    with pytest.raises(TypeError, match="x must be torch.float32"):
        K.kmeanspp_pack(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="2-D"):
        K.kmeanspp_pack(torch.zeros(3))


# --------------------------------------------------------------------------- bounded assignment
def _lloyd_sequence(x, k, steps, seed, jump=False):
    """Centroid sets of a short Lloyd run (float32), with an optional far jump of one centre."""
    g = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    out = [c]
    from pysid.ops import kmeans as kops

    for s in range(steps):
        codes, _ = kops.engine(x, "cpu").assign(x, c)
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, codes, x.double())
        cnt = torch.bincount(codes, minlength=k).double()
        new = (sums / cnt.clamp(min=1)[:, None]).float()
        new[cnt == 0] = c[cnt == 0]
        if jump and s == 1:
            new[0] = x[-1] * 3  # a centre moved far (as the empty-cluster rule does)
        if k > 1 and jump and s == 2:
            new[1] = new[2]  # two equal centres: every row between them is a tie
        c = new
        out.append(c)
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,d,k", [(1, 4, 1), (700, 1, 3), (3000, 17, 40), (5000, 33, 70), (2100, 130, 16),
                                   (4500, 8, 1)])
def test_bounded_assign_is_bit_identical(monkeypatch, isa, n, d, k):
    """BoundedAssign returns exactly what the plain search returns, call after call, on every
    SIMD path, with centres that jump and centres that coincide."""
    from pysid.ops import kmeans as kops

    monkeypatch.setenv("PYSID_CPU_ISA", isa)
    g = torch.Generator().manual_seed(n + d + k)
    x = (torch.randn(n, d, generator=g) + 5 * torch.randn(n, 1, generator=g).sign()).contiguous()
    b = kops.BoundedAssign(x)
    b.give_up = 2.0  # never fall back: test the bounds on every call
    for c in _lloyd_sequence(x, k, 8, seed=k, jump=True):
        want_codes, want_dist = kops.engine(x, "cpu").assign(x, c)
        got_codes, got_dist = b(c)
        assert torch.equal(got_codes, want_codes)
        assert torch.equal(got_dist, want_dist)
    assert b.searched[0] == n  # the first call searches every row


def test_bounded_assign_prunes_separated_clusters():
    """On well-separated blobs the bounds skip most rows once the centres settle."""
    from pysid.ops import kmeans as kops

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 16, generator=g) * 10
    x = (centres[torch.randint(0, 20, (6000,), generator=g)] + torch.randn(6000, 16, generator=g)).contiguous()
    b = kops.BoundedAssign(x)
    b.give_up = 2.0
    for c in _lloyd_sequence(x, 20, 10, seed=1):
        b(c)
    assert b.searched[0] == 6000 and min(b.searched[1:]) < 600, b.searched


def test_bounded_assign_falls_back_when_bounds_do_not_prune():
    from pysid.ops import kmeans as kops

    x = torch.randn(3000, 8)
    b = kops.BoundedAssign(x)
    b.give_up = 0.0  # any search counts as "not pruning"
    seq = _lloyd_sequence(x, 30, 6, seed=2)
    for c in seq:
        want = kops.engine(x, "cpu").assign(x, c)
        got = b(c)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert len(b.searched) == 3  # two bounded calls after the first, then the plain search


def test_bounded_assign_bad_arguments():
    x = torch.randn(10, 3)
    c = torch.randn(4, 3)
    codes = torch.full((10,), 7, dtype=torch.int32)  # out of range for k = 4
    dist = torch.empty(10)
    lower = torch.zeros(10, dtype=torch.float64)
    xn = torch.zeros(10, dtype=torch.float64)
    shift = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError):
        C.kmeans_assign_bounded(x.data_ptr(), 10, 3, c.data_ptr(), 4, shift.data_ptr(), codes.data_ptr(),
                                dist.data_ptr(), lower.data_ptr(), xn.data_ptr())
    codes.zero_()
    shift[2] = float("nan")
    with pytest.raises(ValueError):
        C.kmeans_assign_bounded(x.data_ptr(), 10, 3, c.data_ptr(), 4, shift.data_ptr(), codes.data_ptr(),
                                dist.data_ptr(), lower.data_ptr(), xn.data_ptr())
    assert C.kmeans_assign_bounded(x.data_ptr(), 0, 3, c.data_ptr(), 4, 0, 0, 0, 0, 0) == 0



# --------------------------------------------------------------------------- candidate lists
def _scores64(x, c):
    """float64 kernel scores ||c||^2 - 2 x.c [N, k]."""
    xd, cd = x.double(), c.double()
    return (cd * cd).sum(1)[None] - 2.0 * xd @ cd.t()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,d,k,m", [(1, 4, 1, 1), (700, 1, 3, 2), (3000, 17, 40, 8), (2500, 33, 70, 16),
                                     (1000, 130, 16, 16), (999, 24, 300, 8), (500, 8, 100, 40), (200, 16, 33, 33)])
def test_topm_assign_is_the_exact_assignment_plus_the_m_nearest(monkeypatch, isa, n, d, k, m):
    """kmeans_assign_topm: codes and distances bit-identical to the plain search (same SIMD path);
    each row's list holds m distinct codes in increasing order, its code among them, and no code
    left out scores clearly lower than one kept (float64 scores, float32 margin)."""
    from pysid.ops import kmeans as kops

    monkeypatch.setenv("PYSID_CPU_ISA", isa)
    g = torch.Generator().manual_seed(n + d + k + m)
    x = (torch.randn(n, d, generator=g) + 3 * torch.randn(n, 1, generator=g).sign()).contiguous()
    c = torch.randn(k, d, generator=g).contiguous()
    eng = kops.engine(x, "cpu")
    want_codes, want_dist = eng.assign(x, c)
    codes, dist, cand = eng.assign_topm(x, c, m)
    assert torch.equal(codes, want_codes) and torch.equal(dist, want_dist)
    assert cand.shape == (n, m) and cand.dtype == torch.int32
    cl = cand.long()
    assert bool((cl[:, 1:] > cl[:, :-1]).all()) if m > 1 else True  # distinct, increasing
    assert bool((cl == codes[:, None]).any(1).all())
    s = _scores64(x, c)
    kept = s.gather(1, cl)
    out = s.scatter(1, cl, float("inf"))
    tol = 1e-4 * (1 + s.abs().max(1).values)
    assert bool((out.min(1).values >= kept.max(1).values - tol).all())


def test_topm_assign_ties_go_to_the_lower_codes():
    """Equal centroids score equally: the list keeps the lower codes among them."""
    from pysid.ops import kmeans as kops

    x = torch.zeros(5, 4)
    x[:, 0] = 1.0
    c = torch.zeros(10, 4)
    c[:, 0] = 5.0  # all far, all equal ...
    c[[3, 7, 8], 0] = 1.0  # ... but for three equal nearest ones
    codes, _, cand = kops.engine(x, "cpu").assign_topm(x, c, 2)
    assert torch.equal(codes, torch.full((5,), 3)) and torch.equal(cand, torch.tensor([[3, 7]] * 5, dtype=torch.int32))
    _, _, cand = kops.engine(x, "cpu").assign_topm(x, c, 4)
    assert torch.equal(cand, torch.tensor([[0, 3, 7, 8]] * 5, dtype=torch.int32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,d,k,m", [(1, 3, 1, 1), (3000, 17, 40, 8), (1200, 50, 9, 3), (800, 384, 256, 8)])
def test_candidate_assign_is_the_nearest_candidate(monkeypatch, isa, n, d, k, m):
    """kmeans_assign_candidates: the candidate of least distance (float64 check, float32 margin)
    and its squared distance; with lists from the same centroids it is the full assignment."""
    from pysid.ops import kmeans as kops

    monkeypatch.setenv("PYSID_CPU_ISA", isa)
    g = torch.Generator().manual_seed(n * 7 + d)
    x = torch.randn(n, d, generator=g).contiguous()
    c = torch.randn(k, d, generator=g).contiguous()
    cand = torch.stack([torch.randperm(k, generator=g)[:m] for _ in range(n)]).to(torch.int32).contiguous()
    eng = kops.engine(x, "cpu")
    codes, dist = eng.assign_candidates(x, c, cand)
    d64 = dist_ref(x, c).gather(1, cand.long())
    assert bool((cand.long() == codes[:, None]).any(1).all())
    mine = dist_ref(x, c).gather(1, codes[:, None])[:, 0]
    assert bool((mine <= d64.min(1).values * (1 + 1e-5) + 1e-5).all())
    torch.testing.assert_close(dist.double(), mine, rtol=1e-5, atol=1e-5)
    full_codes, full_dist, lists = eng.assign_topm(x, c, m)
    again, again_dist = eng.assign_candidates(x, c, lists)
    assert torch.equal(again, full_codes)
    torch.testing.assert_close(again_dist, full_dist, rtol=1e-5, atol=1e-6)


def test_candidate_primitives_deterministic_across_threads():
    from pysid.ops import kmeans as kops

    g = torch.Generator().manual_seed(3)
    x = torch.randn(9000, 40, generator=g)
    c = torch.randn(128, 40, generator=g)
    eng = kops.engine(x, "cpu")
    old = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            codes, dist, cand = eng.assign_topm(x, c, 8)
            out.append((codes, dist, cand, *eng.assign_candidates(x, c + 0.01, cand)))
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, b) for a, b in zip(out[0], out[1]))


def test_candidate_primitives_match_the_reference():
    """The reference pair (pysid.reference.kmeans) picks the same lists and codes on separated data."""
    from pysid.ops import kmeans as kops

    g = torch.Generator().manual_seed(8)
    x = torch.randn(1500, 12, generator=g) * 0.1 + torch.randn(1500, 1, generator=g)
    c = torch.randn(30, 12, generator=g)
    cpu, ref = kops.engine(x, "cpu"), kops.engine(x, "reference")
    a, b = cpu.assign_topm(x, c, 5), ref.assign_topm(x, c, 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    ca, cb = cpu.assign_candidates(x, c * 1.1, a[2]), ref.assign_candidates(x, c * 1.1, b[2])
    assert torch.equal(ca[0], cb[0])
    torch.testing.assert_close(ca[1], cb[1], rtol=1e-5, atol=1e-5)


def test_candidate_primitives_bad_arguments():
    from pysid.ops import kmeans as kops

    x, c = torch.randn(10, 3), torch.randn(4, 3)
    eng = kops.engine(x, "cpu")
    for m in (0, 5):
        with pytest.raises(ValueError, match="m must be in"):
            eng.assign_topm(x, c, m)
    bad = torch.zeros(10, 2, dtype=torch.int32)
    bad[3, 1] = 4  # out of range for k = 4: refused before anything is written
    with pytest.raises(ValueError, match="bad argument"):
        eng.assign_candidates(x, c, bad)
    with pytest.raises(ValueError, match="int32"):
        eng.assign_candidates(x, c, bad.long())
    with pytest.raises(ValueError, match="N = 10"):
        eng.assign_candidates(x, c, bad[:5])
    codes, dist, cand = eng.assign_topm(x[:0], c, 2)
    assert codes.shape == (0,) and dist.shape == (0,) and cand.shape == (0, 2)


# --------------------------------------------------------------------------- k-means|| seeding (bfloat16)
SEED_PATHS = [("avx512", "1"), ("avx512", "0"), ("avx2", "1"), ("scalar", "1")]  # (PYSID_CPU_ISA, PYSID_CPU_BF16)


def seed_paths(monkeypatch):
    """Every seeding path this CPU has: (name, setter). avx512bf16 (the instruction) only where the
    hardware has AVX512_BF16; the emulation on every SIMD path."""
    out = []
    for isa, bf in SEED_PATHS:
        if ISAS.index(hardware_isa()) < ISAS.index(isa):
            continue
        monkeypatch.setenv("PYSID_CPU_ISA", isa)
        monkeypatch.setenv("PYSID_CPU_BF16", bf)
        out.append(C.kmeans_seed_path())
    monkeypatch.delenv("PYSID_CPU_ISA")
    monkeypatch.delenv("PYSID_CPU_BF16")
    return sorted(set(out))


def set_seed_path(monkeypatch, path):
    monkeypatch.setenv("PYSID_CPU_ISA", "avx512" if path.startswith("avx512") else path)
    monkeypatch.setenv("PYSID_CPU_BF16", "1" if path == "avx512bf16" else "0")
    assert C.kmeans_seed_path() == path


seed_shapes = st.tuples(st.integers(0, 400), st.integers(1, 70), st.integers(1, 80), st.integers(0, 2**31 - 1))


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
@given(p=seed_shapes)
def test_seed_assign_random_shapes_every_path_is_the_reference(monkeypatch, p):
    """Every path gives the reference's codes and distances bit for bit (ragged row blocks, k not a
    multiple of the 16-wide panels, odd D), with the outputs poisoned before the call."""
    from pysid.reference.kmeans import kmeans_assign_bf16_ref

    n, d, k, seed = p
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * float(torch.rand(1, generator=g) * 10 + 0.01)
    cand = torch.randn(k, d, generator=g)
    if n and k:  # some candidates are rows (distance ~0) and a duplicate candidate (a tie)
        cand[: min(k, n, 3)] = x[: min(k, n, 3)]
        if k > 4:
            cand[4] = cand[1]
    rc, rd = kmeans_assign_bf16_ref(x, cand)
    for path in seed_paths(monkeypatch):
        set_seed_path(monkeypatch, path)
        codes, dist = K.kmeans_assign_bf16(x, cand)
        assert torch.equal(codes.long(), rc), path
        assert torch.equal(dist, rd), path


@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (191, 3, 16), (193, 384, 17), (385, 129, 512), (1000, 2, 40)])
def test_seed_assign_edge_sizes(monkeypatch, n, d, k):
    """Block edges (192 rows), one candidate, k = 16 / 17 / 512, D = 1 / 2 / odd; the instruction
    (where the CPU has it) and the emulations agree with the reference bit for bit."""
    from pysid.reference.kmeans import kmeans_assign_bf16_ref

    g = torch.Generator().manual_seed(n + d + k)
    x, cand = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    rc, rd = kmeans_assign_bf16_ref(x, cand)
    for path in seed_paths(monkeypatch):
        set_seed_path(monkeypatch, path)
        codes, dist = K.kmeans_assign_bf16(x, cand)
        assert torch.equal(codes.long(), rc) and torch.equal(dist, rd), path


def test_seed_assign_rounding_edges(monkeypatch):
    """Values that round up across a bfloat16 binade, halfway cases (to even), tiny values (flushed
    to 0: never a denormal in the instruction) and a wide dynamic range: every path = the reference."""
    from pysid.reference.kmeans import kmeans_assign_bf16_ref

    g = torch.Generator().manual_seed(5)
    d = 37
    x = torch.randn(300, d, generator=g) * torch.exp2(torch.randint(-30, 20, (300, 1), generator=g).float())
    bits = torch.randint(0, 2**16, (300, d), generator=g, dtype=torch.int32)
    x = (x.view(torch.int32) & ~0xFFFF | bits).view(torch.float32)  # every low half, incl. 0x8000 (halfway)
    x[:20] = x[:20] * 2.0**-70  # below 2^-56: flushed
    x[20:40, :5] = 2.0**-56  # at the threshold: kept
    x[40:45] = torch.tensor(1.9960938).expand(5, d)  # rounds up to 2.0
    cand = x[torch.randperm(300, generator=g)[:45]].clone() * 1.0001
    rc, rd = kmeans_assign_bf16_ref(x, cand)
    assert bool((rd >= 0).all())
    for path in seed_paths(monkeypatch):
        set_seed_path(monkeypatch, path)
        codes, dist = K.kmeans_assign_bf16(x, cand)
        assert torch.equal(codes.long(), rc) and torch.equal(dist, rd), path


def test_seed_assign_is_near_the_exact_assignment():
    """bfloat16 distances: within ~1 % of the float64 distances to the chosen candidate, and the
    chosen candidate is the exact nearest for almost every row."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3000, 64, generator=g)
    cand = torch.randn(300, 64, generator=g)
    codes, dist = K.kmeans_assign_bf16(x, cand)
    d64 = dist_ref(x, cand)
    exact = d64.argmin(1)
    assert float((codes.long() == exact).double().mean()) > 0.97
    chosen = d64.gather(1, codes.long()[:, None])[:, 0]
    assert float(((dist.double() - chosen).abs() / chosen).max()) < 0.02
    # a near tie never costs more than the rounding: the chosen one is nearly the nearest
    assert float(((chosen - d64.min(1).values) / d64.min(1).values).max()) < 0.02


def test_seed_assign_deterministic_across_threads():
    g = torch.Generator().manual_seed(9)
    x, cand = torch.randn(5000, 48, generator=g), torch.randn(200, 48, generator=g)
    old = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append(K.kmeans_assign_bf16(x, cand))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_seed_assign_bad_arguments():
    x, c = torch.randn(10, 3), torch.randn(4, 3)
    with pytest.raises(TypeError, match="float32"):
        K.kmeans_assign_bf16(x.double(), c)
    with pytest.raises(TypeError, match="float32"):
        K.kmeans_assign_bf16(x, c.half())
    with pytest.raises(ValueError, match=r"shape \[k, D\]"):
        K.kmeans_assign_bf16(x, c[:, :2])
    with pytest.raises(ValueError, match=r"k >= 1"):
        K.kmeans_assign_bf16(x, c[:0])
    with pytest.raises(ValueError, match="D >= 1"):
        K.kmeans_assign_bf16(x[:, :0], c[:, :0])
    with pytest.raises(ValueError, match="contiguous"):
        K.kmeans_assign_bf16(torch.randn(3, 10).t(), c)
    with pytest.raises(TypeError, match="torch.Tensor"):
        K.kmeans_assign_bf16(x.numpy(), c)
    codes, dist = K.kmeans_assign_bf16(x[:0], c)
    assert codes.shape == (0,) and dist.shape == (0,)


def near_tie_problem(n=3000, k=64, d=32, seed=0):
    """Rows tight around centres (distance << ||x||^2) and centroids in near-equal pairs around the
    same centres: many rows whose two nearest centroids differ by less than the float32 error of
    the score ||c||^2 - 2 x.c, where the summation order decides the code."""
    g = torch.Generator().manual_seed(seed)
    cen = torch.randn(k, d, generator=g) * 2
    x = cen[torch.randint(0, k, (n,), generator=g)] + 0.01 * torch.randn(n, d, generator=g)
    c = cen + 0.004 * torch.randn(k, d, generator=g)
    c = torch.cat([c[: k // 2], c[: k // 2] + 0.004 * torch.randn(k // 2, d, generator=g)])
    return x.contiguous(), c.contiguous(), g


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [32, 37])
def test_restricted_assign_takes_the_canonical_score_on_near_ties(monkeypatch, isa, d):
    """kmeans_assign_candidates (C++, every SIMD path, and the reference) picks the candidate of least
    canonical score fl(||c||^2 - 2 x.c) (dot: one float32 FMA chain over d; the full search's score),
    the first in list order among equal ones: on near-ties the code is that of the plain definition
    (pysid.reference.kmeans.canonical_scores_ref), and a list holding the full search's code gives
    that code, bit for bit - so candidate lists never change a code the full search would keep."""
    from pysid.ops import kmeans as kops
    from pysid.reference.kmeans import canonical_scores_ref

    monkeypatch.setenv("PYSID_CPU_ISA", isa)
    x, c, g = near_tie_problem(d=d, seed=d)
    n, k = x.shape[0], c.shape[0]
    score = canonical_scores_ref(x, c)  # [N, K]: the plain definition
    full = torch.argmin(score, 1)  # first minimum: the lowest code
    # lists holding the full code and its near-equal twin (and six others), in increasing code order
    cand = torch.stack([full, (full + k // 2) % k] + [torch.randint(0, k, (n,), generator=g) for _ in range(6)], 1)
    cand = cand.sort(1).values.to(torch.int32).contiguous()
    sc = score.gather(1, cand.long())
    want = cand.long().gather(1, torch.argmin(sc, 1)[:, None])[:, 0]  # the first in list order
    assert torch.equal(want, full)
    d64 = dist_ref(x, c)
    near = (d64.gather(1, full[:, None])[:, 0] - d64.gather(1, ((full + k // 2) % k)[:, None])[:, 0]).abs()
    assert int((near < 1e-4).sum()) >= 20  # the problem has near-ties where summation order matters
    cpu, ref = kops.engine(x, "cpu"), kops.engine(x, "reference")
    # the portable path (no FMA on x86-64) rounds a * b + c twice in its full search, and its restricted
    # search keeps that path's full-search codes instead (held to the reference's tolerance elsewhere)
    order = ["scalar", "avx2", "avx512"]
    hw = _native.cpu().cpu_isa()
    fused = order.index(isa) > 0 and order.index(hw) > 0
    for eng in (cpu, ref):
        full_e = eng.assign(x, c)[0]  # this engine's (this path's) full search
        if eng is ref or fused:
            assert torch.equal(full_e, full), f"{eng}: {int((full_e != full).sum())} codes off the canonical score"
        in_list = (cand.long() == full_e[:, None]).any(1)  # all rows, except on the portable path
        codes, dist = eng.assign_candidates(x, c, cand)
        assert torch.equal(codes[in_list], full_e[in_list]), f"{eng}: the restricted search left the full code"
        if eng is ref or fused:
            assert torch.equal(codes, want)
        torch.testing.assert_close(dist.double(), d64.gather(1, codes[:, None])[:, 0], rtol=1e-5, atol=1e-6)
        codes_m, _, lists = eng.assign_topm(x, c, 8)
        assert torch.equal(codes_m, full_e)
        assert torch.equal(eng.assign_candidates(x, c, lists)[0], full_e)
    # duplicate candidates in a list and exact ties (equal centroids): the first in list order
    c2 = c.clone()
    c2[5] = c2[40]
    cand2 = torch.tensor([[40, 5, 40], [5, 40, 5]], dtype=torch.int32).repeat(8, 1)
    xx = c2[40].repeat(16, 1) + 0.001
    for eng in (cpu, ref):
        got = eng.assign_candidates(xx.contiguous(), c2, cand2.contiguous())[0]
        assert torch.equal(got, cand2[:, 0].long())


def test_canonical_reference_matches_its_plain_definition():
    """The reference k-means primitives compute the canonical score only near each row's minimum
    (float64 scores and a proven error bound): their codes and lists equal the plain definition's."""
    from pysid.reference.kmeans import (canonical_scores_ref, kmeans_assign_canonical_ref,
                                        kmeans_assign_candidates_ref, kmeans_topm_ref)

    x, c, g = near_tie_problem(n=1500, k=48, d=20, seed=7)
    score = canonical_scores_ref(x, c)
    codes, dist = kmeans_assign_canonical_ref(x, c)
    assert torch.equal(codes, torch.argmin(score, 1))
    for m in (1, 2, 5):
        want = torch.argsort(score, dim=1, stable=True)[:, :m].sort(1).values
        assert torch.equal(kmeans_topm_ref(x, c, m), want)
    cand = torch.stack([torch.randperm(48, generator=g)[:6] for _ in range(1500)])
    want = cand.gather(1, torch.argmin(score.gather(1, cand), 1)[:, None])[:, 0]
    assert torch.equal(kmeans_assign_candidates_ref(x, c, cand)[0], want)
