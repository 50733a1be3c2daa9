"""Triton k-means kernels (pysid.kernels.kmeans) against float64 torch on random shapes.

Runs in the Triton interpreter on CPU (conftest sets TRITON_INTERPRET=1 without a GPU) and
on CUDA where there is one. Outputs and scratch buffers are poisoned (torch.empty returns
NaN-filled tensors) so an entry the kernels fail to write shows up as NaN.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import requires_cuda, triton_devices

TRITON = triton_devices()
pytestmark = pytest.mark.skipif(not TRITON, reason="triton is not installed")
DEV = TRITON[0] if TRITON else "cpu"

if TRITON:
    from pysid.kernels.kmeans import (KMeansPPSeeder, kmeans_update_triton, kmeanspp_candidates_triton,
                                      kmeanspp_seed_triton)


@pytest.fixture
def poisoned(monkeypatch):
    """torch.empty returns NaN-filled float tensors (and -7-filled integer ones) for the test's duration."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        t.fill_(float("nan") if t.is_floating_point() else -7)
        return t

    monkeypatch.setattr(torch, "empty", empty)


# --------------------------------------------------------------------------- helpers


def make_x(n, d, dtype, seed, device=DEV):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g) * 3 + 1).to(dtype)
    return x.to(device)


def update_ref(x, codes, weights, k):
    """float64 sums / counts, and the per-cluster sum of |w x| that bounds the float32 error."""
    xd = x.double().cpu()
    w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else weights.double().cpu()
    idx = codes.long().cpu()
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, idx, xd * w[:, None])
    mag = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, idx, (xd * w[:, None]).abs())
    counts = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, w)
    return sums, counts, mag


def check_update(x, codes, weights, k, **cfg):
    sums, counts = kmeans_update_triton(x, codes, weights, k, **cfg)
    assert sums.shape == (k, x.shape[1]) and sums.dtype == torch.float32 and sums.device == x.device
    assert counts.shape == (k,) and counts.dtype == torch.float32
    assert not torch.isnan(sums).any() and not torch.isnan(counts).any(), "unwritten outputs"
    rs, rc, mag = update_ref(x, codes, weights, k)
    # float32 error bound for sums of depth <= 256 (row tile loop + tile reduction + chunk slots:
    # < 150 for every configuration used here); tight enough that one missing row shows
    rel = 2.0**-16
    assert ((sums.double().cpu() - rs).abs() <= rel * mag + 1e-30).all(), (sums.double().cpu() - rs).abs().max()
    assert ((counts.double().cpu() - rc).abs() <= rel * rc.abs() + 1e-30).all()
    if weights is None:
        assert torch.equal(counts.cpu(), rc.float()), "unweighted counts are exact"
    used = torch.zeros(k, dtype=torch.bool)
    used[codes.long().cpu()] = True
    assert (sums.cpu()[~used] == 0).all() and (counts.cpu()[~used] == 0).all(), "empty clusters must be zero"
    again = kmeans_update_triton(x, codes, weights, k, **cfg)
    assert torch.equal(sums, again[0]) and torch.equal(counts, again[1]), "not deterministic"
    return sums, counts


# small blocks and chunks: clusters spread over several chunks, several D-blocks, partial tiles
SMALL = dict(block_r=4, block_d=16, chunk_rows=8)


# --------------------------------------------------------------------------- update


@pytest.mark.parametrize(
    "n,d,k,used,dtype,weighted,cfg",
    [
        (1, 1, 1, 1, torch.float32, False, {}),
        (37, 3, 5, 5, torch.float32, True, {}),
        (101, 17, 40, 13, torch.float32, False, SMALL),
        (101, 17, 40, 13, torch.float32, True, SMALL),
        (77, 130, 9, 6, torch.float32, True, dict(block_r=8, block_d=64, chunk_rows=16)),
        (63, 33, 7, 3, torch.float16, True, SMALL),
        (63, 33, 7, 7, torch.bfloat16, False, {}),
        (90, 5, 130, 60, torch.float32, True, dict(block_r=8, chunk_rows=16)),  # k > N
    ],
)
def test_update_matches_float64(poisoned, n, d, k, used, dtype, weighted, cfg):
    x = make_x(n, d, dtype, seed=n * 1000 + d)
    g = torch.Generator().manual_seed(d)
    pool = torch.randperm(k, generator=g)[:used]  # k larger than the number of used codes: empty clusters
    codes = pool[torch.randint(0, used, (n,), generator=g)].to(torch.int32).to(DEV)
    w = (torch.rand(n, generator=g) * 2).to(DEV) if weighted else None
    check_update(x, codes, w, k, **cfg)


def test_update_skewed_clusters(poisoned):
    """One cluster holding most rows (spread over many chunks) beside single-row clusters, unsorted codes."""
    n, d, k = 150, 10, 12
    x = make_x(n, d, torch.float32, seed=5)
    codes = torch.full((n,), 7, dtype=torch.int32)
    codes[::37] = torch.arange(len(codes[::37]), dtype=torch.int32)  # a few tiny clusters
    codes[-1] = k - 1
    codes = codes.to(DEV)
    w = torch.rand(n).to(DEV)
    check_update(x, codes, None, k, block_r=4, chunk_rows=16)
    check_update(x, codes, w, k, block_r=4, chunk_rows=16)
    check_update(x, codes, w, k)


def test_update_int64_codes_and_strided_x(poisoned):
    n, d, k = 45, 9, 6
    base = make_x(n, 2 * d, torch.float32, seed=3)
    x = base[:, ::2]  # non-contiguous rows and columns
    codes = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(1)).to(DEV)
    check_update(x, codes, None, k, block_r=4, chunk_rows=8)
    s1, c1 = kmeans_update_triton(x, codes, None, k)
    s2, c2 = kmeans_update_triton(x.contiguous(), codes.to(torch.int32), None, k)
    # Not bit-identical on a GPU (seen on an H200): Triton specialises the kernel on the strides
    # (stride 1 or not), and the compiled layouts reduce in different orders. Bit-identity holds
    # per input layout (check_update runs every case twice); across layouts, float32 rounding only.
    torch.testing.assert_close(s1, s2, rtol=1e-6, atol=1e-5)
    assert torch.equal(c1, c2)


def test_update_empty_input(poisoned):
    x = torch.zeros(0, 4, device=DEV)
    codes = torch.zeros(0, dtype=torch.int32, device=DEV)
    sums, counts = kmeans_update_triton(x, codes, None, 3)
    assert sums.shape == (3, 4) and (sums == 0).all() and (counts == 0).all()


def test_update_rejects_bad_arguments():
    x = make_x(4, 2, torch.float32, seed=0)
    codes = torch.zeros(4, dtype=torch.int32, device=DEV)
    with pytest.raises(ValueError):
        kmeans_update_triton(x, codes, None, 0)
    with pytest.raises(ValueError):
        kmeans_update_triton(x, codes[:3], None, 2)
    with pytest.raises(TypeError):
        kmeans_update_triton(x.double(), codes, None, 2)


# --------------------------------------------------------------------------- k-means++ candidates


def kpp_ref(x, cand, mind, weights):
    xd, cd = x.double().cpu(), cand.double().cpu()
    dist = torch.stack([((xd - c) ** 2).sum(1) for c in cd], 1)  # [N, T], no [N, T, D] temporary
    w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else weights.double().cpu()
    pot = (w[:, None] * torch.minimum(mind.double().cpu()[:, None], dist)).sum(0)
    return dist, pot


@pytest.mark.parametrize(
    "n,d,t,dtype,weighted,cfg",
    [
        (1, 1, 1, torch.float32, False, {}),
        (53, 3, 7, torch.float32, True, {}),
        (97, 17, 64, torch.float32, False, {}),
        (97, 17, 64, torch.float32, True, dict(block_n=16, block_d=4)),
        (41, 130, 7, torch.float32, True, dict(block_n=16, block_d=8)),
        (300, 130, 1, torch.float32, False, {}),
        (33, 20, 5, torch.float16, True, {}),
        (33, 20, 16, torch.bfloat16, False, dict(block_n=16, block_d=8)),
    ],
)
def test_candidates_match_float64(poisoned, n, d, t, dtype, weighted, cfg):
    g = torch.Generator().manual_seed(n + d + t)
    x = make_x(n, d, dtype, seed=n + 7 * d)
    cand = (torch.randn(t, d, generator=g) * 3 + 1).to(DEV)
    mind = (torch.rand(n, generator=g) * 4 * d).to(DEV)
    mind[::3] = float("inf")  # rows with no centre yet
    w = (torch.rand(n, generator=g) * 2).to(DEV) if weighted else None
    dist, pot = kmeanspp_candidates_triton(x, cand, mind, w, **cfg)
    assert dist.shape == (n, t) and dist.dtype == torch.float32 and dist.device == x.device
    assert pot.shape == (t,) and pot.dtype == torch.float64
    assert not torch.isnan(dist).any() and not torch.isnan(pot).any(), "unwritten outputs"
    rd, rp = kpp_ref(x, cand, mind, w)
    # float32 sum of d squared differences, each exact to 1 ulp: relative error <= ~d ulp
    assert ((dist.double().cpu() - rd).abs() <= (d + 2) * 2.0**-23 * rd + 1e-30).all()
    assert torch.allclose(pot.cpu(), rp, rtol=(d + 2) * 2.0**-23, atol=0)
    again = kmeanspp_candidates_triton(x, cand, mind, w, **cfg)
    assert torch.equal(dist, again[0]) and torch.equal(pot, again[1]), "not deterministic"


def test_candidates_exact_hits_and_zero_weights(poisoned):
    """A candidate equal to a row gives distance exactly 0; zero weights drop rows from the potential."""
    n, d = 20, 6
    x = make_x(n, d, torch.float32, seed=11)
    cand = x[[3, 3, 17]].clone()
    mind = torch.full((n,), float("inf"), device=DEV)
    w = torch.ones(n, device=DEV)
    w[5:] = 0
    dist, pot = kmeanspp_candidates_triton(x, cand, mind, w)
    assert dist[3, 0] == 0 and dist[3, 1] == 0 and dist[17, 2] == 0
    rd, rp = kpp_ref(x, cand, mind, w)
    assert torch.allclose(pot.cpu(), rp, rtol=1e-6)
    assert torch.equal(dist[:, 0], dist[:, 1])


def test_candidates_strided_x(poisoned):
    n, d, t = 30, 5, 3
    base = make_x(n, 3 * d, torch.float32, seed=2)
    x = base[:, ::3]
    cand = torch.randn(t, d).to(DEV)
    mind = torch.rand(n).to(DEV) * 10
    dist, pot = kmeanspp_candidates_triton(x, cand, mind, None)
    d2, p2 = kmeanspp_candidates_triton(x.contiguous(), cand, mind, None)
    assert torch.equal(dist, d2) and torch.equal(pot, p2)


def test_candidates_reject_bad_arguments():
    x = make_x(4, 2, torch.float32, seed=0)
    mind = torch.zeros(4, device=DEV)
    with pytest.raises(ValueError):
        kmeanspp_candidates_triton(x, torch.zeros(65, 2, device=DEV), mind, None)
    with pytest.raises(ValueError):
        kmeanspp_candidates_triton(x, torch.zeros(0, 2, device=DEV), mind, None)
    with pytest.raises(ValueError):
        kmeanspp_candidates_triton(x, torch.zeros(3, 3, device=DEV), mind, None)


# --------------------------------------------------------------------------- fused k-means++ seeding


def seed_step_loop(x, w, u, block_d=None):
    """The step-by-step greedy k-means++ (the spec of the fused seeding): sequential float64 prefix
    sums, torch.searchsorted draws, the step candidates kernel, argmin of the potentials, commit.
    Returns (chosen rows [k], mind after each step, pot of each step)."""
    n = x.shape[0]
    mind = torch.full((n,), float("inf"), device=x.device)
    p = w if w is not None else torch.ones(n, device=x.device)
    cum = torch.cumsum(p.double().cpu(), 0)
    chosen, minds, pots = [], [], []
    for c in range(u.shape[0]):
        t = 1 if c == 0 else u.shape[1]
        idx = torch.searchsorted(cum, u[c, :t].cpu() * cum[-1], right=True).clamp(0, n - 1).to(x.device)
        dist, pot = kmeanspp_candidates_triton(x, x[idx].float(), mind, w, block_d=block_d)
        best = int(torch.argmin(pot))
        chosen.append(int(idx[best]))
        mind = torch.minimum(mind, dist[:, best])
        minds.append(mind.clone())
        pots.append(pot)
        cum = torch.cumsum((mind if w is None else w * mind).double().cpu(), 0)
    return torch.tensor(chosen), minds, pots


def _cpu_seed(x, w, u):
    from pysid.ops.registry import implementations

    return implementations("kmeanspp_seed")["cpu"].fn(x.float().cpu().contiguous(), None if w is None else w.cpu(), u.cpu())


@pytest.mark.parametrize("n,d,k,t,dtype,weighted,cfg", [
    (1, 3, 1, 3, torch.float32, False, {}),
    (300, 7, 12, 4, torch.float32, False, {}),
    (300, 7, 12, 4, torch.float32, True, dict(commit_rows=16, block_n=16)),  # 19 commit blocks, 19 score blocks
    (257, 33, 9, 64, torch.float32, True, dict(block_n=16, block_d=8, commit_rows=32)),
    (200, 20, 10, 5, torch.bfloat16, True, {}),
    (150, 16, 8, 3, torch.float16, False, dict(commit_rows=64)),
])
def test_fused_seed_matches_step_loop(poisoned, n, d, k, t, dtype, weighted, cfg):
    """Every step of the fused seeding against the step loop: the same rows, the same min-distances
    bit for bit (the shared distance loop), the same potentials up to float64 summation order; and
    the same rows as the C++ seeding loop."""
    g = torch.Generator().manual_seed(n + k)
    x = make_x(n, d, dtype, seed=n + d)
    w = None
    if weighted:
        w = torch.rand(n, generator=g)
        w[::4] = 0  # never drawn
        w = w.to(DEV)
    u = torch.rand((k, t), generator=g, dtype=torch.float64).to(DEV)
    ref, minds, pots = seed_step_loop(x, w, u, cfg.get("block_d"))  # the same column blocks: the same bits
    s = KMeansPPSeeder(x, w, u, **cfg)
    for c in range(k):
        s.step()
        assert torch.equal(s.mind, minds[c]), f"step {c}: min-distances differ"
        tt = 1 if c == 0 else t
        torch.testing.assert_close(s.pot[:tt].cpu(), pots[c].cpu(), rtol=1e-12, atol=0)
    assert torch.equal(s.chosen.cpu(), ref)
    assert torch.equal(ref, _cpu_seed(x, w, u))
    if weighted:
        assert bool((w.cpu()[ref] > 0).all()), "a row of weight 0 was drawn"
    again = kmeanspp_seed_triton(x, w, u, **cfg)
    assert torch.equal(again.cpu(), ref)


def test_fused_seed_degenerate_rows():
    """Few distinct rows: once every distinct row is a centre the potential is 0 and each draw takes
    the last row (searchsorted + clamp, as the step loop and the C++ loop); rows equal to a chosen
    centre (p = 0) are never drawn before that, and whole commit blocks of weight 0 never."""
    base = make_x(5, 4, torch.float32, seed=1).cpu()
    g = torch.Generator().manual_seed(3)
    x = base[torch.randint(0, 5, (96,), generator=g)].contiguous().to(DEV)
    w = torch.rand(96, generator=g)
    w[16:48] = 0  # two whole commit blocks of 16 rows
    w = w.to(DEV)
    u = torch.rand((8, 4), generator=g, dtype=torch.float64).to(DEV)
    for weights in (None, w):
        ref, _, _ = seed_step_loop(x, weights, u)
        got = kmeanspp_seed_triton(x, weights, u, commit_rows=16)
        assert torch.equal(got.cpu(), ref) and torch.equal(ref, _cpu_seed(x, weights, u))
        distinct = {tuple(r) for r in x.cpu()[ref[:5]].tolist()}
        assert len(distinct) == 5, "a row equal to a chosen centre was drawn while others remained"
        if weights is not None:
            assert not bool(((ref[:5] >= 16) & (ref[:5] < 48)).any())


def test_fused_seed_rejects_bad_arguments():
    x = make_x(10, 3, torch.float32, seed=0)
    with pytest.raises(ValueError, match="float64"):
        KMeansPPSeeder(x, None, torch.rand(4, 2).to(DEV))
    with pytest.raises(ValueError, match="candidates"):
        KMeansPPSeeder(x, None, torch.rand(4, 65, dtype=torch.float64).to(DEV))
    with pytest.raises(ValueError, match="at least one row"):
        KMeansPPSeeder(x[:0], None, torch.rand(1, 2, dtype=torch.float64).to(DEV))
    with pytest.raises(ValueError, match="weights"):
        KMeansPPSeeder(x, torch.ones(9, device=DEV), torch.rand(4, 2, dtype=torch.float64).to(DEV))


@requires_cuda
@pytest.mark.parametrize("weighted", [False, True])
def test_gpu_fused_seed_graph_replay(weighted):
    """On CUDA the steps after the second replay captured graphs (16 steps and 1 step): the same rows
    as eager launches and as the step loop, and no capture warning."""
    import warnings

    n, d, k, t = 20000, 64, 45, 5
    x = make_x(n, d, torch.float32, seed=2, device="cuda")
    g = torch.Generator().manual_seed(5)
    w = (torch.rand(n, generator=g) * (torch.rand(n, generator=g) > 0.2)).cuda() if weighted else None
    u = torch.rand((k, t), generator=g, dtype=torch.float64).cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = kmeanspp_seed_triton(x, w, u, graph=True)
    assert torch.equal(got, kmeanspp_seed_triton(x, w, u, graph=False))
    assert torch.equal(got.cpu(), seed_step_loop(x, w, u)[0])


# --------------------------------------------------------------------------- GPU sizes (CUDA only)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [256, 4096])
def test_gpu_update_goal_shapes(poisoned, k, dtype):
    n, d = (1 << 16) + 3, 256
    x = make_x(n, d, dtype, seed=k, device="cuda")
    g = torch.Generator().manual_seed(k)
    # skewed sizes: a quarter of the rows in cluster 0
    codes = torch.randint(0, k, (n,), generator=g)
    codes[: n // 4] = 0
    codes = codes[torch.randperm(n, generator=g)].to(torch.int32).cuda()
    w = torch.rand(n, generator=g).cuda()
    for weights in (None, w):
        check_update(x, codes, weights, k)


@requires_cuda
@pytest.mark.parametrize("t", [1, 8, 17, 64])
def test_gpu_candidates_goal_shapes(poisoned, t):
    n, d = (1 << 15) + 5, 256
    x = make_x(n, d, torch.float32, seed=t, device="cuda")
    cand = x[torch.randperm(n)[:t].cuda()] + 0.01
    mind = torch.rand(n, device="cuda") * 2 * d
    dist, pot = kmeanspp_candidates_triton(x, cand, mind, None)
    rd, rp = kpp_ref(x, cand, mind, None)
    assert ((dist.double().cpu() - rd).abs() <= (d + 2) * 2.0**-23 * rd + 1e-30).all()
    assert torch.allclose(pot.cpu(), rp, rtol=1e-5)
    again = kmeanspp_candidates_triton(x, cand, mind, None)
    assert torch.equal(dist, again[0]) and torch.equal(pot, again[1])
    assert math.isfinite(float(pot.sum()))


# --------------------------------------------------------------------------- sm_90 compilation (no GPU needed)

@pytest.mark.skipif(DEV != "cpu", reason="compile-only check for machines without a GPU")
def test_sm90_compiles_without_spills():
    """The kernels compile for sm_90 (Hopper) at their default GPU blocks, with no spills."""
    import pysid.kernels.kmeans as module
    from sm90 import sm90_resources

    f32, i32 = "*fp32", "i32"
    chunk_sig = {"x_ptr": f32, "w_ptr": f32, "order_ptr": "*i64", "scode_ptr": "*i32", "offs_ptr": "*i32",
                 "psum_ptr": f32, "pcnt_ptr": f32, "N": i32, "D": i32, "stride_xm": i32, "stride_xd": i32, "CHUNK": i32}
    kpp_sig = {"x_ptr": f32, "candt_ptr": f32, "mind_ptr": f32, "w_ptr": f32, "dist_ptr": f32, "part_ptr": "*fp64",
               "N": i32, "D": i32, "T": i32, "stride_xm": i32, "stride_xd": i32}
    jobs = [dict(module=module.__file__, kernel="_kmeans_chunk_kernel", signature=chunk_sig,
                 constexprs={"HAS_W": True, "BLOCK_R": 16, "BLOCK_D": 256}, num_warps=8)]
    for tp, bn, bd in [(8, 128, 4), (64, 128, 1)]:
        jobs.append(dict(module=module.__file__, kernel="_kmeanspp_kernel", signature=kpp_sig,
                         constexprs={"HAS_W": True, "TP": tp, "BLOCK_N": bn, "BLOCK_D": bd}, num_warps=4))
    res = sm90_resources(jobs)
    if res is None:
        pytest.skip("cuobjdump not found")
    update, kpp8, kpp64 = res
    assert update[1] == 0 and update[0] <= 128, res
    assert kpp8[1] == 0 and kpp8[0] <= 128, res
    assert kpp64[1] == 0, res
