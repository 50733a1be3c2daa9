"""residual_quantize: every backend against the reference on random shapes and seeds."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pysid
from pysid import _native
from pysid.reference import residual_quantize_ref, rq_vae_loss_ref

from conftest import backend_cases, cpu_backends, requires_cuda, triton_devices

# --------------------------------------------------------------------------- helpers

NEAR_TIE = 1e-4  # relative score gap under which fp32 summation order may flip a code


def make_problem(seed, n, d, ks, *, dtype=torch.float32, ties=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    cbs = [torch.randn(k, d, generator=g) * (0.5**level) for level, k in enumerate(ks)]
    if ties:
        # exact duplicates: the lowest index must win
        for c in cbs:
            if c.shape[0] >= 3:
                c[2] = c[0]
                c[-1] = c[1]
        # rows placed exactly on a codeword of level 0 (zero residual: a tie across duplicates)
        if n >= 2:
            x[: n // 2] = cbs[0][torch.arange(n // 2) % cbs[0].shape[0]]
    return x.to(device=device, dtype=dtype), [c.to(device) for c in cbs]


def check_greedy(x, cbs, out, *, rtol=2e-5):
    """The kernel's codes are optimal at every level along its own path (float64 check),
    match the float64 reference wherever the reference's choice is not a near-tie,
    and quantized/distances are consistent with the codes."""
    q, dist, codes = (t.detach().cpu() for t in out)
    x64 = x.detach().cpu().double()
    cbs64 = [c.detach().cpu().double() for c in cbs]
    n, d = x64.shape
    assert codes.dtype == torch.int32 and codes.shape == (n, len(cbs))
    assert dist.shape == (n, len(cbs)) and q.shape == (n, d)
    _, _, ref_codes = residual_quantize_ref(x64, cbs64)
    r = x64.clone()
    # fp32 rounding is relative to the magnitudes that enter the sums: ||x||^2 and the codewords'
    scale = (x64 * x64).sum(1) + sum((c * c).sum(1).max() for c in cbs64) + 1e-12
    agree_prefix = torch.ones(n, dtype=torch.bool)
    for level, c in enumerate(cbs64):
        k = codes[:, level].long()
        assert ((k >= 0) & (k < c.shape[0])).all()
        full = ((r[:, None, :] - c[None]) ** 2).sum(-1)  # [N, K] exact distances
        best = full.min(1).values
        chosen = full.gather(1, k[:, None])[:, 0]
        assert (chosen <= best + rtol * scale).all(), "a non-optimal code was chosen"
        # exact agreement where the reference's choice is not a near-tie
        srt = full.sort(1).values
        gap = (srt[:, 1] - srt[:, 0]) if c.shape[0] > 1 else torch.full((n,), float("inf"), dtype=torch.float64)
        clear = agree_prefix & (gap > NEAR_TIE * scale)
        assert (k[clear] == ref_codes[clear, level].long()).all(), "code differs from the reference away from ties"
        # exact ties: lowest index among exactly equal codewords
        agree_prefix &= k == ref_codes[:, level].long()
        r = r - c[k]
        assert ((dist[:, level].double() - (r * r).sum(1)).abs() <= 1e-4 * scale).all(), "distances off"
    qtol = max(1e-4, 2 * torch.finfo(q.dtype).eps)  # quantized is returned in x's dtype
    assert ((q.double() - (x64 - r)).abs() <= qtol * (1 + (x64 - r).abs())).all(), "quantized off"


def run(impl, x, cbs, beam_width=1):
    with pysid.backend(impl):
        return pysid.residual_quantize(x, cbs, beam_width=beam_width)


shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "n": st.sampled_from([0, 1, 2, 7, 33, 130]),
        "d": st.sampled_from([1, 2, 3, 17, 32, 65]),
        "ks": st.lists(st.sampled_from([1, 2, 3, 15, 16, 17, 40, 257]), min_size=1, max_size=4),
        "ties": st.booleans(),
        "dtype": st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
        "noncontig": st.booleans(),
    }
)


def build(p, device="cpu"):
    x, cbs = make_problem(p["seed"], p["n"], p["d"], p["ks"], dtype=p["dtype"], ties=p["ties"], device=device)
    if p["noncontig"]:
        x = torch.cat([x, x], 1)[:, ::2] if p["d"] > 0 else x
        x = x.t().contiguous().t()  # column-major: non-contiguous rows
    return x, cbs


# --------------------------------------------------------------------------- CPU kernel


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(p=shapes)
def test_cpu_matches_reference(p):
    x, cbs = build(p)
    check_greedy(x.float(), cbs, run("cpu", x, cbs))


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(p=shapes, beam=st.sampled_from([2, 3, 5, 8]))
def test_cpu_beam_matches_reference(p, beam):
    x, cbs = build(p)
    out = run("cpu", x, cbs, beam)
    ref = residual_quantize_ref(x.double(), cbs, beam)
    greedy = residual_quantize_ref(x.double(), cbs, 1)
    check_consistent(x, cbs, out)
    scale = (x.double() ** 2).sum(1) + 1.0
    final = out.distances[:, -1].double()
    # same total distortion as the reference beam (codes may differ only at ties) and never worse than greedy
    assert (final - ref[1][:, -1]).abs().le(1e-4 * scale).all()
    assert (final <= greedy[1][:, -1] + 1e-4 * scale).all()


def check_consistent(x, cbs, out):
    """quantized and distances agree with the returned codes."""
    x64 = x.detach().cpu().double()
    r = x64.clone()
    for level, c in enumerate(cbs):
        r = r - c.detach().cpu().double()[out.codes[:, level].cpu().long()]
        torch.testing.assert_close(out.distances[:, level].cpu().double(), (r * r).sum(1), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out.quantized.cpu().double(), (x64 - r).to(x.dtype).double(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("seed", range(8))
def test_beam_against_brute_force(seed):
    """With a beam as wide as every prefix, beam search finds the best tuple of all."""
    g = torch.Generator().manual_seed(seed)
    ks = [int(v) for v in torch.randint(1, 6, (3,), generator=g)]
    d = int(torch.randint(1, 6, (1,), generator=g))
    x, cbs = make_problem(seed, 9, d, ks)
    beam = ks[0] * ks[1]
    tuples = list(itertools.product(*[range(k) for k in ks]))
    quant = torch.stack([sum(cbs[l][t[l]] for l in range(3)) for t in tuples])  # [T, D]
    best = ((x[:, None, :].double() - quant[None].double()) ** 2).sum(-1).min(1).values
    for impl in cpu_backends("residual_quantize"):
        out = run(impl, x, cbs, beam)
        torch.testing.assert_close(out.distances[:, -1].double(), best, rtol=1e-5, atol=1e-5)


def test_beam_one_is_greedy_and_beam_improves():
    x, cbs = make_problem(0, 2000, 16, [64, 64, 64])
    g = run("cpu", x, cbs, 1)
    check_greedy(x, cbs, g)
    b8 = run("cpu", x, cbs, 8)
    assert (b8.distances[:, -1] <= g.distances[:, -1]).all()  # the greedy guard: exact, same kernel
    assert b8.distances[:, -1].mean() < g.distances[:, -1].mean()
    xs, small = make_problem(1, 50, 8, [3, 4, 5])
    huge = run("cpu", xs, small, 2**70)  # wider than every tuple: capped at 60, exhaustive
    assert torch.equal(huge.codes, run("cpu", xs, small, 60).codes)


def test_cpu_kernel_writes_every_output():
    """Call the extension directly with NaN-poisoned outputs: every element must be written."""
    ext = _native.cpu()
    for beam in (1, 4):
        x, cbs = make_problem(3, 257, 19, [17, 1, 40])
        packed = torch.cat(cbs).contiguous()
        off = torch.tensor([0, 17, 18, 58], dtype=torch.int64)
        q = torch.full((257, 19), float("nan"))
        dist = torch.full((257, 3), float("nan"))
        codes = torch.full((257, 3), -7, dtype=torch.int32)
        ext.rq_encode(x.data_ptr(), 257, 19, packed.data_ptr(), off.data_ptr(), 3, beam, q.data_ptr(), dist.data_ptr(), codes.data_ptr())
        assert torch.isfinite(q).all() and torch.isfinite(dist).all() and (codes >= 0).all()
        check_consistent(x, cbs, pysid.ResidualQuantizeOutput(q, dist, codes))


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_every_simd_path(isa, monkeypatch):
    """PYSID_CPU_ISA (read on every call) lowers the SIMD path: each one matches the reference."""
    order = ["scalar", "avx2", "avx512"]
    hardware = _native.cpu().cpu_isa()
    monkeypatch.setenv("PYSID_CPU_ISA", isa)
    chosen = _native.cpu().cpu_isa()
    assert chosen == order[min(order.index(isa), order.index(hardware))]  # never above the request
    for seed, n, d, ks in [(0, 300, 37, [256, 17, 1]), (1, 64, 128, [256, 256, 256]), (2, 5, 1, [3, 300])]:
        x, cbs = make_problem(seed, n, d, ks, ties=seed == 2)
        check_greedy(x, cbs, run("cpu", x, cbs))
        out = run("cpu", x, cbs, 4)
        ref = residual_quantize_ref(x.double(), cbs, 4)
        scale = (x.double() ** 2).sum(1) + 1
        assert ((out.distances[:, -1].double() - ref[1][:, -1]).abs() <= 1e-4 * scale).all()


# --------------------------------------------------------------------------- Triton (interpreter on CPU) and CUDA

TRITON = triton_devices()


@pytest.mark.skipif(not TRITON, reason="triton is not installed")
@settings(max_examples=12, suppress_health_check=[HealthCheck.too_slow])
@given(p=shapes.filter(lambda p: p["n"] <= 33 and max(p["ks"]) <= 40 and len(p["ks"]) <= 3))
def test_triton_matches_reference(p):
    x, cbs = build(p, device=TRITON[0])
    check_greedy(x.float(), cbs, run("triton", x, cbs))


@pytest.mark.skipif(not TRITON, reason="triton is not installed")
@settings(max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(p=shapes.filter(lambda p: p["n"] <= 7 and max(p["ks"]) <= 17 and len(p["ks"]) <= 3), beam=st.sampled_from([2, 4]))
def test_triton_beam_matches_reference(p, beam):
    x, cbs = build(p, device=TRITON[0])
    out = run("triton", x, cbs, beam)
    ref = residual_quantize_ref(x.double().cpu(), [c.cpu() for c in cbs], beam)
    check_consistent(x, cbs, out)
    scale = (x.double().cpu() ** 2).sum(1) + 1.0
    assert ((out.distances[:, -1].double().cpu() - ref[1][:, -1]).abs() <= 1e-4 * scale).all()


@pytest.mark.skipif(not TRITON, reason="triton is not installed")
@pytest.mark.parametrize("beam,tiles", [(3, dict(block_m=2, block_k=16, block_d=16, block_u=16)),
                                        (5, dict(block_m=4, block_k=32, block_d=16, block_u=32)),
                                        (16, dict(block_m=1, block_k=16, block_d=32, block_u=16))])
def test_triton_beam_gpu_tiles_match_reference(beam, tiles):
    """The beam kernel with GPU-shaped tiles (the interpreter's default covers D in one step): the
    score dot over D in BLOCK_D steps, the parents' residuals gathered in BLOCK_U slices from the
    scratch slots (swapped per level), several tiles per persistent program, partial last tile."""
    from pysid.kernels.residual_quantize import residual_quantize_triton

    dev = TRITON[0]
    x, cbs = make_problem(21 + beam, 13, 40, [40, 17, 33], device=dev)
    packed = torch.cat(cbs).contiguous()
    off = [0, 40, 57, 90]
    out = pysid.ResidualQuantizeOutput(*residual_quantize_triton(x, packed, off, beam, **tiles))
    check_consistent(x, cbs, out)
    ref = residual_quantize_ref(x.double().cpu(), [c.cpu() for c in cbs], beam)
    scale = (x.double().cpu() ** 2).sum(1) + 1.0
    assert ((out.distances[:, -1].double().cpu() - ref[1][:, -1]).abs() <= 1e-4 * scale).all()
    default = residual_quantize_triton(x, packed, off, beam)
    assert (out.codes == default[2]).float().mean() > 0.9  # the same search (rounding may flip a near-tie)


@pytest.mark.skipif(not TRITON, reason="triton is not installed")
@pytest.mark.parametrize("proposal", ["fp16", "tf32"])
def test_triton_fast_path_redoes_unproven_rows_exactly(proposal):
    """Rows the proposal pass (fp16 or tf32) cannot prove are re-encoded by the exact pass, every level.

    Codewords 0..5 of level 0 have squared norms 1 - 2j * 2^-24 (j = 0..5), the scores of a
    zero row: packing the chunk index into the low mantissa bits makes the keys of codes 1..5
    rank by index (code 0's, 1.0, is larger), so the float32 re-check sees codes 1..3 while
    the float32 argmin is code 5. Without the exact pass those rows get code 3 (checked)."""
    from pysid.kernels.residual_quantize import residual_quantize_triton

    dev = TRITON[0]
    g = torch.Generator().manual_seed(0)
    n, d, k = 70, 20, 40
    x = torch.randn(n, d, generator=g)
    x[::7] = 0.0  # 10 zero rows
    cbs = torch.randn(2, k, d, generator=g) + 3.0
    cbs[0, :6] = 0.0
    cbs[0, :6, 0] = torch.tensor([(1.0 - 2 * j * 2.0**-24) ** 0.5 for j in range(6)])
    packed = cbs.reshape(-1, d).contiguous().to(dev)
    x = x.to(dev)
    counter = torch.zeros(2, dtype=torch.int32, device=dev)
    fast = residual_quantize_triton(x, packed, [0, k, 2 * k], _fallback_counter=counter, _proposal=proposal)
    exact = residual_quantize_triton(x, packed, [0, k, 2 * k], fast=False)
    assert (fast[2][::7, 0] == 5).all()
    unsure_pairs, redone = counter.tolist()
    assert redone >= 10 and unsure_pairs >= redone
    zero = torch.arange(n, device=dev) % 7 == 0
    for a, b in zip(fast, exact):  # the redone rows: bit for bit the exact pass's output
        assert torch.equal(a[zero], b[zero])
    check_greedy(x, list(cbs.to(dev)), fast)
    again = residual_quantize_triton(x, packed, [0, k, 2 * k], _proposal=proposal)
    assert all(torch.equal(a, b) for a, b in zip(fast, again))
    if proposal == "tf32":  # the default (fp16) proposal: the same outputs, bit for bit
        default = residual_quantize_triton(x, packed, [0, k, 2 * k])
        assert all(torch.equal(a, b) for a, b in zip(fast, default))


@pytest.mark.skipif(not TRITON, reason="triton is not installed")
def test_exact_pass_register_limit_reaches_the_launch(monkeypatch):
    """The exact pass's ptxas register limit (_greedy_config: maxnreg 255 without the quantized rows, as in a
    k-means assignment) is passed to its launches - the redo and fast=False - and changes no output."""
    from pysid.kernels import residual_quantize as rq

    dev = TRITON[0]
    x, cbs = make_problem(3, 40, 24, [33])
    packed, off = cbs[0].contiguous().to(dev), [0, 33]
    x = x.to(dev)
    want = [rq.residual_quantize_triton(x, packed, off, quantized=False, **kw) for kw in ({}, {"fast": False})]
    config, seen = rq._greedy_config, []

    def limited(dp, n, resident=False, quantized=True):
        fast, exact = config(dp, n, resident, quantized)
        assert not quantized
        return fast, exact._replace(mr=255)

    class Spy:  # records each launch's keyword arguments, then launches
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.append((kw["FAST"], kw.get("maxnreg")))
                return self.kernel[grid](*args, **kw)
            return launch

    monkeypatch.setattr(rq, "_greedy_config", limited)
    monkeypatch.setattr(rq, "_rq_greedy_kernel", Spy(rq._rq_greedy_kernel))
    redone = rq.residual_quantize_triton(x, packed, off, quantized=False, _force_redo=True)  # every row redone
    exact = rq.residual_quantize_triton(x, packed, off, quantized=False, fast=False)
    assert torch.equal(redone[2], want[0][2])  # (distances: the passes' slices may differ on a GPU)
    assert all(torch.equal(a, b) for a, b in zip(exact, want[1]))
    assert seen == [(True, None), (False, 255), (False, 255)]


@requires_cuda
@pytest.mark.parametrize("impl", ["cuda", "triton", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_matches_reference(impl, dtype):
    if impl == "cuda" and not _native.has_cuda():
        pytest.fail("the CUDA extension was not built on a machine with a GPU")
    for seed, n, d, ks in [(0, 1000, 256, [256, 256, 256]), (1, 4099, 64, [256, 17, 1]), (2, 77, 3, [1000, 5])]:
        x, cbs = make_problem(seed, n, d, ks, dtype=dtype, device="cuda", ties=seed == 1)
        out = run(impl, x, cbs)
        check_greedy(x.float(), cbs, out)
        again = run(impl, x, cbs)
        assert torch.equal(out.codes, again.codes)  # no races: repeated runs agree


# --------------------------------------------------------------------------- autograd, loss, opcheck, compile


def st_reference(x, cbs, codes):
    """Differentiable reference for given codes: straight-through quantized and exact distances."""
    es = [c[codes[:, level].long()] for level, c in enumerate(cbs)]
    q = sum(es)
    q_st = x + (q - x).detach() + (q - q.detach())
    r = x
    dists = []
    for e in es:
        r = r - e
        dists.append((r * r).sum(1))
    return q_st, torch.stack(dists, 1)


@pytest.mark.parametrize("impl", cpu_backends("residual_quantize"))
@pytest.mark.parametrize("with_q,with_d", [(True, False), (False, True), (True, True)])
def test_gradients(impl, with_q, with_d):
    x, cbs = make_problem(5, 50, 7, [9, 4, 11])
    x = x.double() if impl == "reference" else x
    cbs = [c.to(x.dtype) for c in cbs]
    x1 = x.clone().requires_grad_()
    c1 = [c.clone().requires_grad_() for c in cbs]
    out = run(impl, x1, c1)
    gq, gd = torch.randn_like(out.quantized), torch.randn_like(out.distances)
    loss = (out.quantized * gq).sum() * with_q + (out.distances * gd).sum() * with_d
    loss.backward()
    x2 = x.clone().requires_grad_()
    c2 = [c.clone().requires_grad_() for c in cbs]
    q, dist = st_reference(x2, c2, out.codes)
    ((q * gq).sum() * with_q + (dist * gd).sum() * with_d).backward()
    tol = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    for a, b in zip(c1, c2):
        torch.testing.assert_close(a.grad, b.grad, **tol)


def test_gradcheck_reference_float64():
    """Where the op's gradient is the true derivative (codes held fixed): distances w.r.t. x and
    codebooks, quantized w.r.t. codebooks (quantized w.r.t. x is straight-through by design)."""
    x, cbs = make_problem(7, 6, 3, [4, 5])
    x = x.double().requires_grad_()
    cbs = [c.double().requires_grad_() for c in cbs]
    with pysid.backend("reference"):
        dists = lambda x, a, b: pysid.residual_quantize(x, [a, b]).distances  # noqa: E731
        quant = lambda a, b: pysid.residual_quantize(x.detach(), [a, b]).quantized  # noqa: E731
        assert torch.autograd.gradcheck(dists, (x, *cbs), eps=1e-7)
        assert torch.autograd.gradcheck(quant, tuple(cbs), eps=1e-7)


def test_rq_vae_loss():
    x, cbs = make_problem(8, 64, 12, [16, 16, 16])
    x = x.requires_grad_()
    cbs = [c.requires_grad_() for c in cbs]
    out = pysid.residual_quantize(x, cbs)
    beta = 0.3
    loss = pysid.rq_vae_loss(x, cbs, out.codes, beta=beta)
    # the value is (1 + beta) * sum_l mean(distance_l) / D: computed from the same pass
    torch.testing.assert_close(loss, (1 + beta) * out.distances.mean(0).sum() / 12, rtol=1e-5, atol=1e-6)
    loss.backward()
    # hand-derived gradients: d/de_l = -2 r_{l+1} / (N D) scattered; d/dx = 2 beta sum_l r_{l+1} / (N D)
    n, d = x.shape
    r = x.detach().clone()
    gx = torch.zeros_like(r)
    for level, c in enumerate(cbs):
        k = out.codes[:, level].long()
        r = r - c.detach()[k]
        gx += 2 * beta * r / (n * d)
        gc = torch.zeros_like(c).index_add_(0, k, -2 * r / (n * d))
        torch.testing.assert_close(c.grad, gc, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x.grad, gx, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="codes must be"):
        pysid.rq_vae_loss(x, cbs, out.codes[:, :2])


@pytest.mark.parametrize("impl", cpu_backends("residual_quantize"))
def test_opcheck(impl):
    x, cbs = make_problem(9, 20, 5, [7, 3])
    with pysid.backend(impl):
        torch.library.opcheck(torch.ops.pysid.residual_quantize.default, (x, cbs, 1))
        torch.library.opcheck(
            torch.ops.pysid.residual_quantize.default,
            (x.requires_grad_(), [c.requires_grad_() for c in cbs], 2),
            test_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
        )


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend, device):
    x, cbs = make_problem(10, 40, 8, [16, 8])
    cb = torch.stack([cbs[0][:8], cbs[1]]).to(device)  # [L, K, D] form
    x = x.to(device)

    def f(x, cb):
        out = pysid.residual_quantize(x, cb)
        return (out.quantized ** 2).sum() + pysid.rq_vae_loss(x, cb, out.codes) + out.distances.sum()

    compiled = torch.compile(f, fullgraph=True, backend=backend)
    x1, cb1 = x.clone().requires_grad_(), cb.clone().requires_grad_()
    x2, cb2 = x.clone().requires_grad_(), cb.clone().requires_grad_()
    l1 = compiled(x1, cb1)
    l2 = f(x2, cb2)
    torch.testing.assert_close(l1, l2)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(cb1.grad, cb2.grad)


# --------------------------------------------------------------------------- inputs and errors


def test_codebook_forms_and_dtypes():
    x, cbs = make_problem(11, 30, 6, [5, 5, 5])
    a = pysid.residual_quantize(x, torch.stack(cbs))
    b = pysid.residual_quantize(x, cbs)
    c = pysid.residual_quantize(x, tuple(cbs))
    assert torch.equal(a.codes, b.codes) and torch.equal(b.codes, c.codes)
    for dt in (torch.float16, torch.bfloat16):
        out = pysid.residual_quantize(x.to(dt), cbs)
        assert out.quantized.dtype == dt and out.distances.dtype == torch.float32 and out.codes.dtype == torch.int32
    out64 = pysid.residual_quantize(x.double(), [c.double() for c in cbs])  # auto: reference in float64
    assert out64.quantized.dtype == torch.float64 and out64.distances.dtype == torch.float64
    with pytest.raises(TypeError, match="float64"):
        run("cpu", x.double(), cbs)


def test_empty_input():
    x, cbs = make_problem(12, 0, 4, [3, 2])
    for case in backend_cases("residual_quantize"):
        impl, _, dev = case.partition(":")
        out = run(impl, x.to(dev or "cpu"), [c.to(dev or "cpu") for c in cbs])
        assert out.quantized.shape == (0, 4) and out.distances.shape == (0, 2) and out.codes.shape == (0, 2)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda x, c: (x[0], c), ValueError, "2-D"),
        (lambda x, c: (x[:, :0], c), ValueError, "D >= 1"),
        (lambda x, c: (x, c[0]), ValueError, r"\[L, K, D\]"),
        (lambda x, c: (x, []), ValueError, "empty"),
        (lambda x, c: (x, [c[0][:0]]), ValueError, "K = 0"),
        (lambda x, c: (x, [c[0][:, :3]]), ValueError, "D = 3"),
        (lambda x, c: (x, [c[0][0]]), ValueError, "2-D"),
        (lambda x, c: (x.long(), c), TypeError, "floating"),
        (lambda x, c: (x, [c[0].int()]), TypeError, "floating"),
        (lambda x, c: (x.numpy(), c), TypeError, "torch.Tensor"),
        (lambda x, c: (x, "codebook"), TypeError, "codebooks"),
        (lambda x, c: (x, [c[0].to("meta")]), ValueError, "is on meta but x is on cpu"),
    ],
)
def test_bad_input(make, exc, match):
    x, cbs = make_problem(13, 10, 5, [4, 4])
    args = make(x, torch.stack(cbs))
    with pytest.raises(exc, match=match):
        pysid.residual_quantize(*args)


@pytest.mark.parametrize("beam", [0, -1, 1.5, True])
def test_bad_beam_width(beam):
    x, cbs = make_problem(14, 10, 5, [4])
    with pytest.raises(ValueError, match="beam_width"):
        pysid.residual_quantize(x, cbs, beam_width=beam)


@pytest.mark.parametrize("case", backend_cases("residual_quantize"))
@pytest.mark.parametrize("where", ["x_nan", "x_inf", "cb_nan", "cb_inf"])
def test_non_finite_is_an_error(case, where):
    impl, _, device = case.partition(":")
    device = device or "cpu"
    x, cbs = make_problem(15, 10, 5, [4, 4], device=device)
    if where.startswith("x"):
        x[3, 1] = float("nan") if where == "x_nan" else float("inf")
        match = r"x has NaN/Inf .*rows \[3\]"
    else:
        cbs[1][2, 0] = float("nan") if where == "cb_nan" else float("-inf")
        match = r"codebooks\[1\] has NaN/Inf in rows \[2\]"
    with pytest.raises(ValueError, match=match):
        run(impl, x, cbs)


def test_backend_switch(monkeypatch):
    x, cbs = make_problem(16, 10, 5, [4])
    assert pysid.get_backend() == "auto"
    with pysid.backend("reference"):
        assert pysid.get_backend() == "reference"
        with pysid.backend("cpu"):
            assert pysid.get_backend() == "cpu"
        assert pysid.get_backend() == "reference"
    monkeypatch.setenv("PYSID_BACKEND", "reference")
    assert pysid.get_backend() == "reference"
    monkeypatch.setenv("PYSID_BACKEND", "bogus")
    with pytest.raises(ValueError, match="unknown pysid backend"):
        pysid.get_backend()
    monkeypatch.delenv("PYSID_BACKEND")
    with pytest.raises(RuntimeError, match="CPU tensor"):
        run("cuda", x, cbs)
    with pytest.raises(ValueError, match="unknown"):
        with pysid.backend("fastest"):
            pass


# --------------------------------------------------------------------------- packaging


def test_packaging():
    import importlib.util

    ext = _native.cpu()
    assert ext.cpu_isa() in {"scalar", "avx2", "avx512"}
    assert os.path.isfile(ext.__file__) and ext.__name__ == "pysid._C"
    spec = importlib.util.find_spec("pysid.kernels.residual_quantize")
    assert spec is not None and spec.origin and os.path.isfile(spec.origin)


def test_half_input_codebook_gradients_accumulate_in_float32():
    x = torch.randn(100_000, 4).half()
    c = torch.zeros(1, 4, requires_grad=True)
    pysid.residual_quantize(x, [c]).quantized.float().sum().backward()
    assert torch.equal(c.grad, torch.full((1, 4), 100_000.0))  # would overflow in float16


# The sm_90 compile checks of both greedy launches (and of every other GPU kernel, on the installed
# triton and on triton 3.6, with spills read from ptxas -v and the SASS forms) are in
# tests/test_sm90_compile.py: the LOCAL column this file used to read stays 0 while kilobytes spill.
