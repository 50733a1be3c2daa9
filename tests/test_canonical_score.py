"""One canonical nearest-codeword score for every backend and path.

score_k = fl(cn_k - 2 dot_k): dot_k one float32 FMA chain ``acc = fma(r_d, c_kd, acc)`` over
d = 0..D-1 from acc = 0, cn_k = ||c_k||^2 the same chain of c_kd * c_kd (one routine:
``codeword_sqnorms`` in Triton, ``panel_sqnorms`` in C++, the CUDA kernel's tile loop), exact ties
to the lowest index; the residual of the next level is fl(r - c) elementwise. The C++ kernel
(AVX2 / AVX-512), the Triton exact pass, the Triton fast pass (tf32 proposal, float32 re-check
within a proven bound, exact redo of unproven rows) and the forced redo tier must return the
codes of that score bit for bit, on adversarial near-ties; the float64 reference agrees within
the DESIGN.md tolerance (check_greedy). Distances are float32 sums whose order differs between
backends (vector lanes in C++, tl.sum in Triton, a warp shuffle tree in CUDA): compared with the
reference's tolerance, not bit for bit.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysid import _native
from pysid.reference.kmeans import fma32, fma_chain32

from conftest import requires_cuda, triton_devices
from test_residual_quantize import check_greedy

TRITON = triton_devices()
needs_triton = pytest.mark.skipif(not TRITON, reason="triton is not installed")
# the greedy fast pass's proposal GEMM: fp16 with power-of-two scaling (the default; at D <= 256 with
# the A operand resident in shared memory, "fp16-streamed" without) or tf32
PROPOSALS = ["fp16", "fp16-streamed", "tf32"]
PROPOSAL_KW = {"fp16": dict(_proposal="fp16"), "fp16-streamed": dict(_proposal="fp16", _resident=False),
               "tf32": dict(_proposal="tf32")}


# --------------------------------------------------------------------------- the canonical score, in torch
# fma_rn32: correctly rounded float32 fma(a, b, c), elementwise, in torch (float64 product, a
# round-to-odd sum: Boldo & Melquiond); fma_chain: sum_d a[..., d] * b[..., d] as one float32 FMA chain
# over d ascending, from 0. The reference engine's (pysid.reference.kmeans), checked against exact
# rational arithmetic below (test_fma_rn32_is_correctly_rounded).
fma_rn32 = fma32
fma_chain = fma_chain32


def canonical_codes(x: torch.Tensor, cbs: list[torch.Tensor]) -> torch.Tensor:
    """Greedy codes [N, L] of the canonical score (ties to the lowest index)."""
    r = x.float().cpu()
    codes = []
    for c in cbs:
        c = c.float().cpu()
        cn = fma_chain(c, c)
        dot = fma_chain(r[:, None, :], c[None, :, :])  # [N, K]
        score = cn[None, :] - 2.0 * dot  # exact: 2 * dot is exact, one rounding
        k = torch.argmin(score, 1)  # first minimum: the lowest index
        codes.append(k)
        r = r - c[k]
    return torch.stack(codes, 1).to(torch.int32) if codes else torch.zeros((x.shape[0], 0), dtype=torch.int32)


# --------------------------------------------------------------------------- adversarial problems
def nasty_problem(seed: int, n: int, d: int, ks: list[int], scale: float):
    """Codebooks and rows built for near-ties: exact duplicates; coordinate-swapped copies (equal
    norm and, for rows equal on the swapped pair, equal dot in real arithmetic, while the float
    chains add in a different order); copies one ulp apart in one coordinate; rows on midpoints of
    two codewords (a real tie, broken only by rounding) and rows equal to codewords."""
    g = torch.Generator().manual_seed(seed)
    cbs = []
    for level, k in enumerate(ks):
        c = torch.randn(k, d, generator=g) * scale * 0.5**level
        if k >= 2:
            c[1] = c[0]  # exact duplicate
        if k >= 4 and d >= 2:
            c[3] = c[2]
            c[3, [0, 1]] = c[2, [1, 0]]  # swapped pair
        if k >= 6:
            c[5] = c[4]
            c[5, d // 2] = torch.nextafter(c[4, d // 2], torch.tensor(float("inf")))  # one ulp apart
        if k >= 8:
            c[7] = c[6] * (1 + 2.0**-23)  # every coordinate ~1 ulp larger
        cbs.append(c.contiguous())
    x = torch.randn(n, d, generator=g) * scale
    c0 = cbs[0]
    k0 = c0.shape[0]
    for i in range(n):
        kind = i % 6
        a, b = (2 * i) % k0, (2 * i + 3) % k0
        if kind == 0:  # the midpoint of two codewords, plus noise at the last-bit level
            x[i] = (c0[a] + c0[b]) / 2 + torch.randn(d, generator=g) * scale * 2.0**-22
        elif kind == 1:  # exactly a codeword (a duplicated one first)
            x[i] = c0[i % min(k0, 8)]
        elif kind == 2 and d >= 2 and k0 >= 4:  # equal on the swapped pair: codes 2 and 3 tie in real arithmetic
            x[i] = c0[2] + torch.randn(d, generator=g) * scale * 2.0**-12
            x[i, 1] = x[i, 0]
        elif kind == 3 and k0 >= 6:  # between the one-ulp pair
            x[i] = (c0[4] + c0[5]) / 2
    return x.contiguous(), cbs


def cpu_codes(x, cbs, isa=None):
    """Codes of the C++ kernel, called directly (PYSID_CPU_ISA picks the SIMD path)."""
    ext = _native.cpu()
    n, d = x.shape
    packed = torch.cat(cbs).contiguous()
    off = torch.tensor([0] + list(np.cumsum([c.shape[0] for c in cbs])), dtype=torch.int64)
    q = torch.full((n, d), float("nan"))
    dist = torch.full((n, len(cbs)), float("nan"))
    codes = torch.full((n, len(cbs)), -1, dtype=torch.int32)
    old = os.environ.get("PYSID_CPU_ISA")
    try:
        if isa is not None:
            os.environ["PYSID_CPU_ISA"] = isa
        ext.rq_encode(x.data_ptr(), n, d, packed.data_ptr(), off.data_ptr(), len(cbs), 1,
                      q.data_ptr(), dist.data_ptr(), codes.data_ptr())
    finally:
        if old is None:
            os.environ.pop("PYSID_CPU_ISA", None)
        else:
            os.environ["PYSID_CPU_ISA"] = old
    return q, dist, codes


def fma_isas() -> list[str]:
    """The C++ SIMD paths with a fused multiply-add (the portable scalar path is built without one
    on x86-64 and rounds a*b + c twice: it is held to the reference's tolerance elsewhere)."""
    order = ["scalar", "avx2", "avx512"]
    hw = _native.cpu().cpu_isa()
    return [i for i in order[1:] if order.index(i) <= order.index(hw)]


def triton_run(x, cbs, **kw):
    from pysid.kernels.residual_quantize import residual_quantize_triton

    dev = TRITON[0]
    packed = torch.cat(cbs).contiguous().to(dev)
    off = [0] + [int(v) for v in np.cumsum([c.shape[0] for c in cbs])]
    return [t.cpu() for t in residual_quantize_triton(x.to(dev), packed, off, **kw)]


# --------------------------------------------------------------------------- tests
def test_fma_rn32_is_correctly_rounded():
    """The torch emulation of a float32 fma against exact rational arithmetic, on cases built to
    sit on and next to rounding boundaries."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(3000, generator=g)
    b = torch.randn(3000, generator=g)
    c = torch.randn(3000, generator=g)
    c[:1000] = -(a[:1000] * b[:1000])  # cancellation: the float32 product is off by its rounding
    c[1000:2000] *= 2.0 ** torch.randint(-30, 30, (1000,), generator=g).float()
    got = fma_rn32(a, b, c)
    for ai, bi, ci, gi in zip(a.tolist(), b.tolist(), c.tolist(), got.tolist()):
        exact = Fraction(ai) * Fraction(bi) + Fraction(ci)
        f = np.float32(float(exact))  # within one float32 ulp; pick the nearest neighbour exactly
        cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
        errs = [abs(Fraction(float(v)) - exact) for v in cands]
        best = min(errs)
        ok = [float(v) for v, e in zip(cands, errs) if e == best]
        if len(ok) > 1:  # a tie: to even
            ok = [v for v in ok if int(np.float32(v).view(np.int32)) % 2 == 0]
        assert gi == ok[0], (ai, bi, ci, gi, ok)


@needs_triton
def test_codeword_sqnorms_is_the_fma_chain():
    """Triton's ``codeword_sqnorms`` is the canonical FMA chain bit for bit, also where a float32
    tree sum (torch's) differs."""
    from pysid.kernels.residual_quantize import codeword_sqnorms

    g = torch.Generator().manual_seed(2)
    c = torch.randn(300, 67, generator=g) * torch.logspace(-3, 3, 67)[torch.randperm(67, generator=g)]
    got = codeword_sqnorms(c.to(TRITON[0])).cpu()
    want = fma_chain(c, c)
    assert torch.equal(got, want)
    assert not torch.equal(want, (c * c).sum(1))  # the data tell the orders apart


@pytest.mark.parametrize("isa", fma_isas())
def test_cpu_kernel_norms_are_canonical(isa):
    """The C++ kernel's ||c||^2 is the canonical chain: a zero row picks the codeword of the smallest
    canonical norm, which a float64 norm (the old routine) would rank differently here."""
    g = torch.Generator().manual_seed(9)
    d, k = 61, 4000
    c = torch.randn(k, d, generator=g) * torch.logspace(-2, 2, d)
    c = c / fma_chain(c, c).sqrt()[:, None]  # all norms ~1: the minimum is decided in the last bits
    cn = fma_chain(c, c)
    x = torch.zeros(1, d)
    _, dist, codes = cpu_codes(x, [c], isa)
    assert int(codes[0, 0]) == int(torch.argmin(cn))
    cn64 = (c.double() ** 2).sum(1).float()
    assert int(torch.argmin(cn64)) != int(torch.argmin(cn))  # the data tell the two routines apart


problems = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "n": st.sampled_from([1, 6, 19, 40]),
        "d": st.sampled_from([1, 2, 5, 16, 33]),
        "ks": st.lists(st.sampled_from([1, 2, 4, 8, 9, 33, 64]), min_size=1, max_size=2),
        "scale": st.sampled_from([1e-3, 1.0, 37.0]),
    }
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems)
def test_cpu_codes_are_canonical(p):
    x, cbs = nasty_problem(p["seed"], p["n"], p["d"], p["ks"], p["scale"])
    want = canonical_codes(x, cbs)
    for isa in fma_isas():
        out = cpu_codes(x, cbs, isa)
        assert torch.equal(out[2], want), isa
        check_greedy(x, cbs, out)


@needs_triton
@pytest.mark.parametrize("proposal", PROPOSALS)
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems)
def test_every_triton_path_returns_the_canonical_codes(proposal, p):
    """Exact pass, fast pass (with its own unproven-row redo) and the forced redo tier: the canonical
    codes bit for bit, the same as the C++ kernel's; the reference within tolerance. Both proposals."""
    x, cbs = nasty_problem(p["seed"], p["n"], p["d"], p["ks"], p["scale"])
    want = canonical_codes(x, cbs)
    exact = triton_run(x, cbs, fast=False)
    assert torch.equal(exact[2], want)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    fast = triton_run(x, cbs, fast=True, _fallback_counter=counter, **PROPOSAL_KW[proposal])
    assert torch.equal(fast[2], want)
    redo = triton_run(x, cbs, fast=True, _force_redo=True, **PROPOSAL_KW[proposal])
    assert torch.equal(redo[2], want)
    # every row through the second tier (its window re-scored with the canonical FMA chain decides ties)
    tier = triton_run(x, cbs, fast=True, _force_tier2=True, **PROPOSAL_KW[proposal])
    assert torch.equal(tier[2], want)
    for out in (exact, fast, redo, tier):
        check_greedy(x, cbs, out)
    # the redone rows are the exact pass's rows, bit for bit (outputs included)
    nz = x.norm(dim=1) > 0
    for a, b in zip(redo, exact):
        assert torch.equal(a[nz], b[nz])
    if fma_isas():
        assert torch.equal(cpu_codes(x, cbs)[2], want)


@needs_triton
@pytest.mark.parametrize("tiles", [dict(block_m=16, block_k=16, block_d=16, block_u=16),
                                   dict(block_m=32, block_k=32, block_d=16, block_u=32)])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_gpu_tile_shapes_return_the_canonical_codes(tiles, seed, proposal):
    """The interpreter's default tiles cover D in one step; the GPU's do not: the tf32 GEMM over
    D in BLOCK_D steps, the re-check and the exact pass in BLOCK_D slices, the residual passes in
    BLOCK_U slices, several codeword chunks and tiles (persistent programs). Every path returns
    the canonical codes with those tiles, and the redone rows are the exact pass's bit for bit."""
    x, cbs = nasty_problem(seed, 40, 40 + seed, [64, 33], [1.0, 37.0][seed])
    want = canonical_codes(x, cbs)
    exact = triton_run(x, cbs, fast=False, **tiles)
    assert torch.equal(exact[2], want)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    fast = triton_run(x, cbs, fast=True, _fallback_counter=counter, **PROPOSAL_KW[proposal], **tiles)
    assert torch.equal(fast[2], want)
    redo = triton_run(x, cbs, fast=True, _force_redo=True, **PROPOSAL_KW[proposal], **tiles)
    assert torch.equal(redo[2], want)
    for out in (exact, fast, redo):
        check_greedy(x, cbs, out)
    nz = x.norm(dim=1) > 0
    exact_default_tiles = triton_run(x, cbs, fast=False, block_m=tiles["block_m"])
    for a, b in zip(redo, exact_default_tiles):  # the redo pass runs the exact pass's own tiles
        assert torch.equal(a[nz], b[nz])


@needs_triton
@pytest.mark.parametrize("proposal", ["fp16-streamed", "tf32"])
def test_wide_rows_loop_over_their_slices(proposal):
    """Beyond DP 256 (D 300: DP 512) the passes over the residual loop over their BLOCK_U slices
    instead of unrolling them (the GPU's D 768 / 1024): every greedy path with BLOCK_U 32 returns the
    canonical codes, the redone rows are the exact pass's; the beam kernels (the same loop) return
    the canonical beam's outputs bit for bit."""
    from test_beam_fast import canonical_beam, launch, same

    x, cbs = nasty_problem(7, 24, 300, [40, 17], 1.0)
    tiles = dict(block_m=16, block_k=32, block_d=64, block_u=32)
    want = canonical_codes(x, cbs)
    exact = triton_run(x, cbs, fast=False, **tiles)
    assert torch.equal(exact[2], want)
    for kw in (dict(), dict(_force_redo=True), dict(_force_tier2=True)):
        out = triton_run(x, cbs, fast=True, **kw, **PROPOSAL_KW[proposal], **tiles)
        assert torch.equal(out[2], want), kw
        check_greedy(x, cbs, out)
    beam = 3
    want_beam = canonical_beam(x, cbs, beam, 32)
    for kw in (dict(fast=False), dict(_proposal=proposal[:4])):
        assert same(launch(x, cbs, beam, block_u=32, block_d=64, **kw), want_beam), kw


@needs_triton
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_fast_path_sends_re_check_ties_to_the_exact_pass(proposal):
    """Rows whose best candidates tie within the re-check's distance to the canonical score (here:
    duplicated codewords, an exact tie) are not decided by the tree-summed re-check: the exact
    pass re-encodes them, and the lowest index wins."""
    g = torch.Generator().manual_seed(4)
    d, k, n = 24, 40, 30
    c = torch.randn(k, d, generator=g)
    c[7] = c[3]  # duplicate
    x = c[3] + torch.randn(n, d, generator=g) * 1e-3
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    fast = triton_run(x, [c], _fallback_counter=counter, **PROPOSAL_KW[proposal])
    assert (fast[2][:, 0] == 3).all()
    unsure, redone = counter.tolist()
    assert redone == n and unsure == n


# --------------------------------------------------------------------------- GPU (skipped on CPU)
@requires_cuda
@pytest.mark.parametrize("seed", range(4))
def test_gpu_every_path_returns_the_canonical_codes(seed):
    """On the GPU: tl.dot(ieee) (Triton's FMA lowering: the same chain), the spelled-out tl.fma
    chain, the fast pass, the forced redo tier, the CUDA kernel and the C++ kernel agree bit for
    bit on the codes."""
    import pysid
    from pysid.kernels.residual_quantize import residual_quantize_triton

    x, cbs = nasty_problem(seed, 600, 64 + 8 * seed, [256, 64], 1.0)
    want = canonical_codes(x, cbs)
    packed = torch.cat(cbs).contiguous().cuda()
    off = [0] + [int(v) for v in np.cumsum([c.shape[0] for c in cbs])]
    xc = x.cuda()
    for kw in (dict(fast=False), dict(fast=False, _fma_chain=True), dict(fast=True), dict(fast=True, _force_redo=True)):
        got = residual_quantize_triton(xc, packed, off, **kw)[2].cpu()
        assert torch.equal(got, want), kw
    with pysid.backend("cuda"):
        assert torch.equal(pysid.residual_quantize(xc, [c.cuda() for c in cbs]).codes.cpu(), want)
    if fma_isas():
        assert torch.equal(cpu_codes(x, cbs)[2], want)


@needs_triton
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_precision_option(proposal):
    """precision="exact" (default) is the canonical answer; "fast" is the proposal's choice without
    the proof: no row is re-checked or redone, every code is optimal within the proposal's error
    (the reference's tolerance), and on these near-ties some differ from the canonical codes."""
    x, cbs = nasty_problem(3, 40, 33, [64, 33], 37.0)
    want = canonical_codes(x, cbs)
    assert torch.equal(triton_run(x, cbs, precision="exact", **PROPOSAL_KW[proposal])[2], want)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    fast = triton_run(x, cbs, precision="fast", _fallback_counter=counter, **PROPOSAL_KW[proposal])
    assert counter.tolist() == [0, 0]
    check_greedy(x, cbs, fast, rtol=1e-3)
    assert not torch.equal(fast[2], want)  # the proof matters on these rows
    with pytest.raises(ValueError, match="precision"):
        triton_run(x, cbs, precision="tf32")
    with pytest.raises(ValueError, match="_proposal"):
        triton_run(x, cbs, _proposal="bf16")
    with pytest.raises(ValueError, match="_resident"):  # resident A: fp16 only, D <= 256 (shared memory)
        triton_run(x, cbs, _proposal="tf32", _resident=True)
    with pytest.raises(ValueError, match="_resident"):
        triton_run(torch.zeros(4, 300), [torch.randn(8, 300)], _resident=True)


@needs_triton
def test_fp16_codebook_split_is_exact():
    """The fp16 proposal's codebook (host): per level a power of two sc_l with max|c sc_l| < 2^15,
    c_hi = fp16(c sc_l) / sc_l, and the bound's figures (max ||c_hi||, max ||c - c_hi||, max ||c||^2,
    the exponent of sc_l, max |c_d|) cover the codebook; padding rows stay zero."""
    from pysid.kernels.residual_quantize import _fp16_stats, codeword_sqnorms

    g = torch.Generator().manual_seed(1)
    ks = [5, 7, 3]
    levels = [torch.randn(ks[0], 20, generator=g) * 1e-20, torch.randn(ks[1], 20, generator=g) * 3e4,
              torch.zeros(ks[2], 20)]
    levels[1][0, :10] *= 1e-25  # wide range inside a codeword: the small part goes to c_lo exactly
    dp, pad = 32, 8
    cb = torch.zeros(3 * pad, dp)
    dst = torch.cat([torch.arange(k) + i * pad for i, k in enumerate(ks)])
    cb[dst, :20] = torch.cat(levels)
    cn = torch.full((3 * pad,), 3e38)
    cn[dst] = codeword_sqnorms(torch.cat(levels))
    cb16, stat = _fp16_stats(cb, cn, dst, ks)
    assert cb16.dtype == torch.float16 and cb16.shape == cb.shape and torch.isfinite(cb16).all()
    pad_rows = torch.ones(3 * pad, dtype=torch.bool)
    pad_rows[dst] = False
    assert (cb16[pad_rows] == 0).all() and (cb16[:, 20:] == 0).all()
    for lvl, c in enumerate(levels):
        rows = dst[sum(ks[:lvl]):sum(ks[:lvl + 1])]
        ec = int(stat[lvl, 3])
        assert stat[lvl, 3] == ec and -100 <= ec <= 100
        hi = cb16[rows, :20].double() * 2.0**-ec
        assert (cb16[rows].float().abs() < 2.0**15).all()
        if c.abs().max() > 0:
            assert cb16[rows].float().abs().max() >= 2.0**13  # the scale uses fp16's range
            assert (hi - c.double()).abs().max() <= c.double().abs().max() * 2.0**-11
        assert float(stat[lvl, 0]) >= hi.norm(dim=1).max()
        assert float(stat[lvl, 1]) >= (c.double() - hi).norm(dim=1).max()
        assert float(stat[lvl, 2]) == float(cn[rows].max())
        assert float(stat[lvl, 4]) == float(c.abs().max())


def extreme_rows(seed: int, n: int, d: int):
    """Rows of very different magnitudes: huge (1e18: ||x||^2 stays finite), tiny (1e-20, 1e-30,
    1e-38: subnormal float32 elements), zero, a 1e17 / 1e-20 mix inside one row, ordinary rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    scales = [1e18, 1e-20, 0.0, 1e-30, None, 1e-38, 1.0, 3e-3]
    for i in range(n):
        s = scales[i % len(scales)]
        if s is None:
            x[i, : d // 2] *= 1e17
            x[i, d // 2:] *= 1e-20
        else:
            x[i] *= s
    return x


@needs_triton
@pytest.mark.parametrize("proposal", PROPOSALS)
@pytest.mark.parametrize("cscale", [1.0, 1e-15, 1e15])
def test_extreme_rows_return_the_canonical_codes(proposal, cscale):
    """Rows with huge, tiny, zero norms and a wide dynamic range inside a row, against codebooks at
    several scales (the fp16 proposal scales each row and level by a power of two; rows it cannot
    prove go to the exact pass): the canonical codes, the exact pass's outputs, finite distances."""
    g = torch.Generator().manual_seed(11)
    d = 24
    x = extreme_rows(3, 48, d)
    cbs = [torch.randn(40, d, generator=g) * cscale, torch.randn(17, d, generator=g) * cscale * 0.3]
    want = canonical_codes(x, cbs)
    exact = triton_run(x, cbs, fast=False)
    assert torch.equal(exact[2], want)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    fast = triton_run(x, cbs, _fallback_counter=counter, **PROPOSAL_KW[proposal])
    assert torch.equal(fast[2], want)
    for out in (exact, fast):
        assert all(torch.isfinite(t).all() for t in out)
    assert torch.equal(fast[0], exact[0])  # the same codes: the same chain of fl(r - c), bit for bit
    assert torch.allclose(fast[1], exact[1], rtol=1e-5, atol=0.0)  # distances: sums in another order
    forced = triton_run(x, cbs, _force_redo=True, **PROPOSAL_KW[proposal])
    assert torch.equal(forced[2], want)
    fast_only = triton_run(x, cbs, precision="fast", **PROPOSAL_KW[proposal])
    assert all(torch.isfinite(t).all() for t in fast_only)


@needs_triton
@pytest.mark.parametrize("scale", [1e-12, 1e15, 1e-30])
def test_fp16_scaling_keeps_far_from_one_rows_provable(scale):
    """Without its per-row and per-level power-of-two scales, fp16 would flush rows of 1e-12 to
    zero (or overflow at 1e15) and leave every row unproven; with them the fp16 proposal proves as
    many rows as tf32's (same 11-bit significand) and the codes are the canonical ones. (At 1e-15
    the scores, ~1e-30, meet the bound's absolute 1e-30 term: both proposals leave rows unproven.)"""
    g = torch.Generator().manual_seed(5)
    d, n = 32, 96
    c0 = torch.randn(64, d, generator=g)
    cbs = [c0 * scale, torch.randn(32, d, generator=g) * 0.4 * scale]
    x = (c0[torch.randint(0, 64, (n,), generator=g)] + torch.randn(n, d, generator=g) * 0.5) * scale
    if scale == 1e-30:  # tiny rows against an ordinary codebook (squares of 1e-30 codewords underflow)
        cbs = [c0, torch.randn(32, d, generator=g) * 0.4]
    want = canonical_codes(x, cbs)
    counts = {}
    for proposal in PROPOSALS:
        counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
        out = triton_run(x, cbs, _fallback_counter=counter, **PROPOSAL_KW[proposal])
        assert torch.equal(out[2], want), proposal
        counts[proposal] = counter.tolist()
    assert counts["fp16"][1] <= n // 8, counts
    assert counts["fp16"][1] <= counts["tf32"][1] + 4, counts


# --------------------------------------------------------------------------- the second tier
def wide_tie_problem(n: int = 40, d: int = 16, seed: int = 0):
    """Level 0: codewords 0..7 along the axes with squared norms 1 + (7 - j) 2^-18 (the best for a zero
    row is code 7, with 7 others within 2^-16 of it), the others of squared norm 4. The top-4 pass cannot
    prove the zero rows (more than 3 candidates inside its error window, the index packing's included);
    16 kept and 15 re-checked can (their scores are apart by more than the re-check's error)."""
    g = torch.Generator().manual_seed(seed)
    c0 = torch.nn.functional.normalize(torch.randn(48, d, generator=g), dim=1) * 2.0
    c0[:8] = 0
    for j in range(8):
        c0[j, j] = (1 + (7 - j) * 2.0**-18) ** 0.5
    x = torch.randn(n, d, generator=g)
    x[::2] = 0
    return x, [c0, torch.randn(16, d, generator=g)]


@needs_triton
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_second_tier_proves_rows_the_top4_window_cannot(proposal):
    """Rows the top-4 pass lists go through the second tier (16 proposals kept, 15 re-checked, the same
    proof) and are proven there: none reaches the exact pass; without the tier they all do. Codes and
    quantized rows: the canonical / exact pass's, bit for bit."""
    x, cbs = wide_tie_problem()
    want = canonical_codes(x, cbs)
    exact = triton_run(x, cbs, fast=False)
    zeros = int((x.norm(dim=1) == 0).sum())
    counts = {}
    for tier in (False, True):
        counter = torch.zeros(4, dtype=torch.int32, device=TRITON[0])
        out = triton_run(x, cbs, _fallback_counter=counter, **PROPOSAL_KW[proposal], _tier2=tier)
        assert torch.equal(out[2], want) and torch.equal(out[0], exact[0])
        counts[tier] = counter.tolist()
    assert counts[False] == [zeros, zeros, 0, 0]  # the tier off: the listed rows go to the exact pass
    assert counts[True] == [zeros, zeros, 0, 0]  # the tier proves every listed row: none left for the exact pass


@needs_triton
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_forced_tiers_return_the_canonical_codes(proposal):
    """Every row with ||x|| > 0 forced through the second tier (_force_tier2), and through it into the
    exact pass (_force_redo with the tier on), on adversarial near-ties and with GPU-shaped tiles: the
    canonical codes; the counters of each tier; the rows the exact pass redid are its rows bit for bit."""
    x, cbs = nasty_problem(2, 36, 20, [64, 9], 1.0)
    want = canonical_codes(x, cbs)
    nz = x.norm(dim=1) > 0
    tiles = dict(block_m=16, block_k=32, block_d=16, block_u=16)
    exact = triton_run(x, cbs, fast=False, block_m=16)
    counter = torch.zeros(4, dtype=torch.int32, device=TRITON[0])
    through = triton_run(x, cbs, _fallback_counter=counter, **PROPOSAL_KW[proposal], _force_tier2=True, **tiles)
    assert torch.equal(through[2], want)
    c = counter.tolist()
    assert c[1] == int(nz.sum()) and c[0] >= c[1]  # every nonzero row listed by the top-4 pass
    # the tier re-scores its window with the canonical score itself: it decides every listed row here,
    # the duplicated-codeword ties included (the top-4 pass's tree-summed re-check cannot)
    assert c[2] == c[3] == 0
    counter.zero_()
    into = triton_run(x, cbs, _fallback_counter=counter, **PROPOSAL_KW[proposal], _force_redo=True, _tier2=True, **tiles)
    assert torch.equal(into[2], want)
    c = counter.tolist()
    assert c[1] == c[3] == int(nz.sum())
    for a, b in zip(into, exact):
        assert torch.equal(a[nz], b[nz])
    check_greedy(x, cbs, into)


@needs_triton
def test_second_tier_runs_by_codebook_size(monkeypatch):
    """The tier runs by default where some level has K >= _TIER2_MIN_K codewords (1024; lowered here)."""
    import pysid.kernels.residual_quantize as kmod

    x, cbs = wide_tie_problem(n=20)
    want = canonical_codes(x, cbs)
    for min_k, ran in ((49, False), (48, True)):
        monkeypatch.setattr(kmod, "_TIER2_MIN_K", min_k)
        counter = torch.zeros(4, dtype=torch.int32, device=TRITON[0])
        out = triton_run(x, cbs, _fallback_counter=counter)
        assert torch.equal(out[2], want)
        assert counter.tolist() == [10, 10, 0, 0]  # the tier proves all: no count either way...
        # ...so tell the runs apart by forcing the top-4 pass to list every row: the tier then counts
        counter.zero_()
        triton_run(x, cbs, _fallback_counter=counter, _force_redo=True)
        assert (counter[2] > 0).item() == ran, counter.tolist()
