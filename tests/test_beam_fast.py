"""The proposing beam kernel (residual_quantize_triton, beam_width > 1, fast=True): an fp16 GEMM with
power-of-two scaling (the default; tf32 with _proposal="tf32") proposes each row's best candidates
over all its beams, the window is re-scored with the canonical
FMA chain, rows whose window cannot be proven to hold the B best go to the exact beam kernel (the
redo tier). With precision="exact" (the default) every output is the exact kernel's (fast=False)
bit for bit, on adversarial near-ties, with the redo tier forced on, with GPU-shaped tiles;
precision="fast" takes the B best tf32 keys without the proof. The proposal ranks packed keys (the
chunk-local (beam, code) in the low mantissa bits of the tf32 score): a constructed trap where the
packing reverses the order of near-equal scores shows the proof counts the packing error, and BLOCK_K
128 (the GPU's) runs with several chunks per level. Level 0 runs as a per-row top-B
(its own kernel), the later levels in the (row, beam) kernel; under the interpreter every path also
equals canonical_beam, an independent spelling of the same float32 operations, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pysid
from pysid.reference import residual_quantize_ref

from conftest import requires_cuda, triton_devices
from test_canonical_score import fma_chain, nasty_problem
from test_residual_quantize import check_consistent, make_problem

TRITON = triton_devices()
needs_triton = pytest.mark.skipif(not TRITON, reason="triton is not installed")


def launch(x, cbs, beam, **kw):
    from pysid.kernels.residual_quantize import residual_quantize_triton

    dev = TRITON[0]
    packed = torch.cat(cbs).contiguous().to(dev)
    off = [0] + [int(v) for v in np.cumsum([c.shape[0] for c in cbs])]
    out = residual_quantize_triton(x.to(dev), packed, off, beam, **kw)
    return pysid.ResidualQuantizeOutput(*(t.cpu() for t in out))


def same(a, b) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b))


def check_against_reference(x, cbs, beam, out):
    """Consistent outputs, and the final distance of the pure beam search within the reference's
    tolerance (random data: on near-ties at an early level the float32 and float64 searches can
    keep different beams, and their final distances then differ by far more than rounding)."""
    from pysid.reference.residual_quantize import _beam

    check_consistent(x, cbs, out)
    ref = _beam(x.double(), [c.double() for c in cbs], beam)
    scale = (x.double() ** 2).sum(1) + sum((c.double() ** 2).sum(1).max() for c in cbs) + 1.0
    assert ((out.distances[:, -1].double() - ref[1][:, -1]).abs() <= 1e-4 * scale).all()


def slice_sqnorm(r: np.ndarray, bu: int) -> np.ndarray:
    """||r||^2 [...] (float32) as the beam kernels sum it under the interpreter: the squares of the
    BU-wide column slices of the DP-padded row added slice by slice elementwise, then one
    ``tl.sum`` (numpy's sum) over the BU lanes."""
    dp = r.shape[-1]
    sq = np.zeros(r.shape[:-1] + (bu,), dtype=np.float32)
    for u0 in range(0, dp, bu):
        v = r[..., u0:u0 + bu]
        sq = sq + v * v
    return np.ascontiguousarray(sq).sum(-1)


def canonical_beam(x: torch.Tensor, cbs: list[torch.Tensor], beam: int, bu: int | None = None):
    """The beam kernels' outputs bit for bit, under the interpreter, computed independently: the score
    of candidate (beam b, code k) is fl(fl(cn_k - 2 dot) + rn_b), dot and cn one float32 FMA chain over
    d ascending, rn_b = slice_sqnorm(r_b); a row's B best kept in (score, beam rank, code) order; the
    next residual fl(r_b - c_k); the outputs of the best final beam (rank 0) followed back."""
    n, d = x.shape
    dp = max(16, 1 << (d - 1).bit_length())
    bu = min(dp, bu or dp)
    pad = lambda t: torch.nn.functional.pad(t.float().cpu(), (0, dp - d))  # noqa: E731
    r = [[pad(x)[i]] for i in range(n)]  # per row: its beams' residuals, in rank order
    rn = [torch.from_numpy(slice_sqnorm(torch.stack(rb).numpy(), bu)) for rb in r]  # per row: [nb]
    back = [[] for _ in range(n)]  # per row and level: (parent, code, rn) per beam
    for c in cbs:
        c = pad(c)
        cn = fma_chain(c, c)
        for i in range(n):
            rb = torch.stack(r[i])  # [nb, dp]
            dot = fma_chain(rb[:, None, :], c[None, :, :])  # [nb, K]
            s = (cn[None, :] - 2.0 * dot) + rn[i][:, None]
            nb, k = s.shape
            bb, kk = np.meshgrid(np.arange(nb), np.arange(k), indexing="ij")
            order = np.lexsort((kk.ravel(), bb.ravel(), s.numpy().ravel()))[:beam]
            par, code = bb.ravel()[order], kk.ravel()[order]
            r[i] = [rb[p] - c[q] for p, q in zip(par, code)]
            rn[i] = torch.from_numpy(slice_sqnorm(torch.stack(r[i]).numpy(), bu))
            back[i].append(list(zip(par.tolist(), code.tolist(), rn[i].tolist())))
    levels = len(cbs)
    codes = torch.zeros((n, levels), dtype=torch.int32)
    dist = torch.zeros((n, levels), dtype=torch.float32)
    for i in range(n):
        b = 0
        for lv in range(levels - 1, -1, -1):
            par, code, rnv = back[i][lv][b]
            codes[i, lv], dist[i, lv] = code, rnv
            b = par
    q = pad(x)[:, :d] - torch.stack([r[i][0][:d] for i in range(n)])
    return pysid.ResidualQuantizeOutput(q, dist, codes)


problems = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "n": st.sampled_from([1, 6, 19]),
        "d": st.sampled_from([1, 5, 16, 33]),
        "ks": st.lists(st.sampled_from([1, 2, 8, 9, 33]), min_size=1, max_size=3),
        "scale": st.sampled_from([1e-3, 1.0, 37.0]),
        "beam": st.sampled_from([2, 3, 5]),
    }
)


@needs_triton
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems)
def test_fast_beam_is_the_exact_beam_bit_for_bit(p):
    """On near-ties (duplicates, swapped coordinates, one-ulp pairs, midpoints): the proposal with
    its proof and redo, and the redo tier forced on, return every output of the exact kernel."""
    x, cbs = nasty_problem(p["seed"], p["n"], p["d"], p["ks"], p["scale"])
    beam = p["beam"]
    exact = launch(x, cbs, beam, fast=False)
    for proposal in ("fp16", "tf32"):
        counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
        fast = launch(x, cbs, beam, _fallback_counter=counter, _proposal=proposal)
        assert same(fast, exact), proposal
        unsure, redone = counter.tolist()
        assert unsure >= redone >= 0 and redone <= x.shape[0]
    forced = launch(x, cbs, beam, _force_redo=True)
    assert same(forced, exact)
    check_consistent(x, cbs, exact)


CANONICAL_CASES = [  # seed, n, d, ks, scale, beam, tiles
    (3, 19, 33, [33, 9], 37.0, 5, {}),
    (4, 7, 5, [2, 2, 9], 1e-3, 5, {}),  # K_0 < B, and K_0 K_1 < B at level 1: invalid beams
    (5, 7, 16, [33], 1.0, 2, {}),  # L = 1
    (6, 5, 7, [3], 1.0, 5, {}),  # L = 1 with K < B
    (9, 7, 16, [9, 9, 9], 1.0, 16, {}),  # B 16 > K_0
    (10, 5, 16, [40, 9], 1.0, 12, {}),  # B > 8: the proposal's lists by a bitonic top-k, two chunks at level 0
    (2, 13, 40, [40, 17, 33], 1.0, 3, dict(block_m=2, block_k=16, block_d=16, block_u=16)),  # GPU-shaped tiles
]


@needs_triton
@pytest.mark.skipif(bool(TRITON) and TRITON[0] == "cuda", reason="the interpreter's sums (numpy) are the oracle's")
@pytest.mark.parametrize("case", CANONICAL_CASES, ids=lambda c: f"B{c[5]}-ks{'.'.join(map(str, c[3]))}")
def test_beam_kernels_are_the_canonical_beam(case):
    """Every beam path (the exact kernels, the tf32 proposal with proof and redo, the redo tier forced
    on) returns the canonical beam search's outputs bit for bit: codes, distances and quantized rows
    from an independent torch/numpy spelling of the same float32 operations (canonical_beam), on
    near-ties, with fewer codewords than beams, one level, B up to 16 and GPU-shaped tiles."""
    seed, n, d, ks, scale, beam, tiles = case
    x, cbs = nasty_problem(seed, n, d, ks, scale)
    want = canonical_beam(x, cbs, beam, tiles.get("block_u"))
    assert same(launch(x, cbs, beam, fast=False, **tiles), want)
    for proposal in ("fp16", "tf32"):
        counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
        assert same(launch(x, cbs, beam, _fallback_counter=counter, _proposal=proposal, **tiles), want), proposal
        assert 0 <= counter[1] <= counter[0] and counter[1] <= n
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, beam, _force_redo=True, _fallback_counter=counter, **tiles), want)
    if max(ks) > beam:  # rows with more candidates than the window: every row listed once, redone once
        assert counter[1] == n, counter
    check_consistent(x, cbs, want)


@needs_triton
@pytest.mark.parametrize("beam,tiles", [(2, dict(block_m=8, block_k=16, block_d=16, block_u=16)),
                                        (3, dict(block_m=2, block_k=16, block_d=16, block_u=16)),
                                        (5, dict(block_m=4, block_k=32, block_d=16, block_u=32)),
                                        (16, dict(block_m=1, block_k=16, block_d=32, block_u=16))])
def test_fast_beam_gpu_tiles(beam, tiles):
    """GPU-shaped tiles: the proposal GEMM over D in BLOCK_D steps (fp16; tf32 too below B 16), several
    codeword chunks per level, several tiles per persistent program, a partial last tile; forced redo
    and a wider window too."""
    # (B 16: K_0 < B, and 7 rows: under the interpreter each launch takes seconds)
    x, cbs = nasty_problem(beam, 13 if beam != 16 else 7, 40, [40, 17, 33] if beam != 16 else [5, 17, 33], 1.0)
    exact = launch(x, cbs, beam, fast=False, **tiles)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, beam, _fallback_counter=counter, **tiles), exact)
    if beam != 16:  # (B 16 under the interpreter: ~15 s a launch)
        assert same(launch(x, cbs, beam, _proposal="tf32", **tiles), exact)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, beam, _force_redo=True, _fallback_counter=counter, **tiles), exact)
    assert counter[1] == x.shape[0]  # every row redone (each has more candidates than the window)
    assert same(launch(x, cbs, beam, beam_window=2 * beam + 1, **tiles), exact)
    check_consistent(x, cbs, exact)
    # random data (no near-ties): the float64 reference's beam search within tolerance
    x, cbs = make_problem(21 + beam, 13, 40, [40, 17, 33])
    out = launch(x, cbs, beam, **tiles)
    assert same(out, launch(x, cbs, beam, fast=False, **tiles))
    check_against_reference(x, cbs, beam, out)


@needs_triton
def test_fast_beam_bk128_several_chunks():
    """The GPU's tf32 BLOCK_K (128: packed keys of log2(BP) + 7 bits in the levels kernel, 7 in the
    first) with GPU-shaped tiles and several chunks per level (K 300: 3 chunks, K 140: 2), exact
    duplicates in different chunks at the same chunk-local place (equal packed keys: the list's tie
    goes to the lower id), the near-ties of nasty_problem: the default path, the forced redo and
    wider windows return the exact kernel's bits, and canonical_beam's; precision="fast" stays
    consistent."""
    x, cbs = nasty_problem(17, 9, 24, [300, 140], 1.0)
    for c in cbs:
        c[128] = c[0]  # chunk 1, local 0: the same key as code 0
        c[129] = c[1]
    cbs[0][256] = cbs[0][0]  # chunk 2
    x[1] = cbs[0][0]  # rows on the duplicated codeword
    beam, tiles = 5, dict(block_m=2, block_k=128, block_d=16, block_u=16)
    exact = launch(x, cbs, beam, fast=False, **tiles)
    assert same(exact, canonical_beam(x, cbs, beam, 16))
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, beam, _fallback_counter=counter, **tiles), exact)
    assert 0 <= counter[1] <= counter[0] and counter[1] <= x.shape[0]
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, beam, _force_redo=True, _fallback_counter=counter, **tiles), exact)
    assert counter[1] == x.shape[0]
    assert same(launch(x, cbs, beam, beam_window=15, **tiles), exact)
    assert same(launch(x, cbs, beam, beam_window=31, **tiles), exact)  # (lists of 32: the bitonic top-k)
    tf32 = launch(x, cbs, beam, precision="fast", **tiles)
    check_consistent(x, cbs, tf32)
    assert tf32.codes[1, 0] == 0  # the tied keys of codes 0, 128, 256: the lowest id first


@needs_triton
def test_beam_block_k_must_be_a_power_of_two():
    """The packed keys hold the chunk-local (beam, code) in log2(BP * BLOCK_K) mantissa bits: a BLOCK_K
    that is not a power of two in [16, 1024] is a clear error, before any launch."""
    x, cbs = nasty_problem(1, 3, 5, [9], 1.0)
    for bad in (48, 8, 2048):
        with pytest.raises(ValueError, match="block_k"):
            launch(x, cbs, 3, block_k=bad)
    assert same(launch(x, cbs, 3, block_k=16), launch(x, cbs, 3, fast=False))


def window_trap(n: int = 6, d: int = 16, copies: int = 12):
    """A codebook whose first `copies` codewords differ only below tf32's precision, on coordinate
    0: c_j[0] = 1 + j 2^-16. For a row with x[0] = 2 the exact scores fall with j (the last copy
    is nearest), while the tf32 scores (same c_hi for every copy, the canonical ||c_j||^2 rising
    with j) rank the copies by index: the window holds the wrong end of them."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(d, generator=g).clamp(-1, 1)
    base = (base * 64).round() / 64  # tf32-exact
    base[0] = 1.0
    c = torch.randn(copies + 20, d, generator=g) * 4 + 10  # far away
    c[:copies] = base
    c[:copies, 0] = 1.0 + torch.arange(copies) * 2.0**-16
    x = base.repeat(n, 1)
    x[:, 0] = 2.0
    return x.contiguous(), [c.contiguous()]


@needs_triton
def test_window_misses_are_proven_unsure_and_redone():
    """The exact best (the last copy) lies outside the tf32 window: the proof must fail on every
    row, the redo tier must give the exact kernel's answer; precision="fast" keeps the tf32 order
    and picks the first copy."""
    x, cbs = window_trap()
    beam = 3
    exact = launch(x, cbs, beam, fast=False)
    assert (exact.codes[:, 0] == 11).all()  # the nearest copy (float64 agrees: a clear margin)
    assert (residual_quantize_ref(x.double(), [cbs[0].double()], beam)[2][:, 0] == 11).all()
    counter = torch.zeros(3, dtype=torch.int32, device=TRITON[0])
    fast = launch(x, cbs, beam, _fallback_counter=counter)
    assert counter.tolist() == [x.shape[0], x.shape[0], 0]  # equal keys: never separated
    assert same(fast, exact)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    tf32 = launch(x, cbs, beam, precision="fast", _fallback_counter=counter)
    assert counter.tolist() == [0, 0]
    assert (tf32.codes[:, 0] == 0).all()
    # a window wide enough to hold every copy proves every row without the redo tier
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    wide = launch(x, cbs, beam, beam_window=15, _fallback_counter=counter)
    assert counter.tolist() == [0, 0]
    assert same(wide, exact)


@needs_triton
def test_one_beam_fills_the_window():
    """A row's window may hold one beam's candidates only. Level 1 holds window_trap's 24 near-equal copies
    (equal fp16 keys, so the proposal ranks them by index, the exact order the reverse); beam 0 (x - 0) is
    near them, the other four beams (x - 100) far from everything. Window 31 (lists of 32: the bitonic
    top-k of (key, id)) holds all 24 copies of beam 0: the exact best 5 (copies 23..19) are re-scored
    there and proven. Window 15 holds copies 0..14 only, and the 16th key (copy 15) ties them: every row
    unsure, redone. Both give the exact kernel's outputs."""
    x, cbs = window_trap(n=3, copies=24)
    c0 = torch.full((5, x.shape[1]), 100.0)
    c0[0] = 0.0
    cbs = [c0] + cbs
    n, beam = x.shape[0], 5
    exact = launch(x, cbs, beam, fast=False)
    assert (exact.codes[:, 0] == 0).all() and (exact.codes[:, 1] == 23).all()
    for window, unsure in ((31, 0), (15, n)):
        counter = torch.zeros(3, dtype=torch.int32, device=TRITON[0])
        fast = launch(x, cbs, beam, beam_window=window, _fallback_counter=counter)
        assert counter.tolist() == [unsure, unsure, 0]  # (equal keys: never separated)
        assert same(fast, exact)


def packing_trap(n: int = 3, d: int = 2, k: int = 64):
    """Scores that the packed keys order against the tf32 (and exact) order. x = (4096, 0, ...) and
    c_j = (-m_j / 8192, 0, ...), tf32-exact: every score (tf32 and exact) is fl(2^24 + m_j) = 2^24 + m_j
    (ulp 2). The nine codes 0, 8, ..., 56, 60 have m < 128: equal above the low 6 mantissa bits, the
    packing bits of a 64-codeword chunk (more with beams: 8 or 9 at level 1), so their keys are
    2^24 + 2 * (their packed number) and rank them by index, while code 60 (m 2) is the nearest, then
    codes 0, 8, 16 (m 4, 6, 8); the others (m >= 4096) are out of every bucket, and so far that a
    15-wide window proves the row even at level 1 (2^(P-22) |key| = 1024 at P = 8). With B = 3 and window 7
    the list holds codes 0..56, the window 0..48, the NP-th key is 2^24 + 112 (codes 56) and the 3rd
    exact score 2^24 + 8: a proof that ignored the packing error (the tf32 bound is ~12 here) would accept
    the window's (0, 8, 16) and miss code 60; with it (2^(P-22) |key| = 256 at P = 6) the row is unsure."""
    trap = {0: 4, 8: 6, 16: 8, 24: 100, 32: 102, 40: 104, 48: 106, 56: 108, 60: 2}
    m = torch.tensor([trap.get(j, 4096 + 32 * j) for j in range(k)], dtype=torch.float32)
    c = torch.zeros(k, d)
    c[:, 0] = -m / 8192
    x = torch.zeros(n, d)
    x[:, 0] = 4096.0
    return x, [c]


@needs_triton
@pytest.mark.parametrize("levels", [1, 2], ids=["first-kernel", "levels-kernel"])
def test_packing_error_is_in_the_proof(levels):
    """Packed keys order near-equal tf32 scores by candidate number, not by score (packing_trap): the
    proof must count the packing error and send every row to the redo tier (the exact kernel's bits,
    canonical_beam's too); a window holding the whole bucket proves every row; precision="fast" keeps
    the key order (code 0 first). levels 2: a one-codeword level 0, the trap at level 1 (the levels
    kernel: packed (beam, code) numbers). Window 31: the lists of 32 keys are kept by a bitonic top-k of
    (key, id), the same order."""
    x, cbs = packing_trap()
    if levels == 2:
        cbs = [torch.zeros(1, x.shape[1])] + cbs
    n, beam, tiles = x.shape[0], 3, dict(block_k=64)
    exact = launch(x, cbs, beam, fast=False, **tiles)
    assert (exact.codes[:, -1] == 60).all()
    assert (residual_quantize_ref(x.double(), [c.double() for c in cbs], beam)[2][:, -1] == 60).all()
    assert same(exact, canonical_beam(x, cbs, beam))
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    fast = launch(x, cbs, beam, _fallback_counter=counter, **tiles)
    assert same(fast, exact)
    assert counter.tolist() == [n, n]
    for window in (15, 31):  # (31: the lists of 32 by a bitonic top-k)
        counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
        wide = launch(x, cbs, beam, beam_window=window, _fallback_counter=counter, **tiles)
        assert counter.tolist() == [0, 0]
        assert same(wide, exact)
    tf32 = launch(x, cbs, beam, precision="fast", **tiles)
    assert (tf32.codes[:, -1] == 0).all()


@needs_triton
@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e15])
def test_fp16_beam_scaling_keeps_rows_provable(scale):
    """The fp16 proposal scales each level's residuals by a power of two (per row at level 0, per tile
    later) and the codebook by one per level: rows and codebooks at 1e-12 (fp16 would flush them to
    zero unscaled) and 1e15 (beyond fp16's range) are proposed as well as at 1: every row proven, no
    redo, the exact kernel's outputs; the tf32 proposal agrees."""
    x, cbs = make_problem(1, 64, 40, [40, 17, 33])
    x, cbs = x * scale, [c * scale for c in cbs]
    exact = launch(x, cbs, 5, fast=False)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, 5, _fallback_counter=counter), exact)
    assert counter.tolist() == [0, 0]
    assert same(launch(x, cbs, 5, _proposal="tf32"), exact)


@needs_triton
def test_fp16_beam_mixed_scales_in_one_tile():
    """Rows of 1e10 and 1e-3 in one tile of the levels kernel (its fp16 scale is per tile), codebooks
    at 1e-3: the large rows' residuals stay ~1e10, so from level 1 on the small rows' residuals fall
    below fp16's subnormals (fp16(r s) = 0); the proof's bound on ||r - r_hi|| (2^-11 ||r|| + DP 2^-24
    / s) sees it and sends them to the exact redo: the exact kernel's outputs, every small row redone
    (without the subnormal term the proof accepts the empty proposal)."""
    g = torch.Generator().manual_seed(5)
    n, d = 16, 24
    big = torch.arange(n) % 2 == 0
    x = torch.randn(n, d, generator=g) * torch.where(big, 1e10, 1e-3)[:, None]
    cbs = [torch.randn(40, d, generator=g) * 1e-3 * f for f in (1.0, 0.5, 0.25)]
    exact = launch(x, cbs, 5, fast=False)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, 5, _fallback_counter=counter), exact)
    assert counter[1] >= int((~big).sum()), counter


@needs_triton
def test_separated_rows_skip_the_window_re_score():
    """Clustered data, codebooks from residual k-means: in most rows the first B + 1 proposal keys are
    apart by more than their error bounds, so (fp16 proposal) their window's exact re-score is skipped;
    the outputs stay the exact kernel's. The third counter entry counts the skipped (row, level) pairs:
    about half of them here (199 of 384 when written); none with the tf32 proposal, which re-scores every
    row, nor with precision="fast", which has no window."""
    g = torch.Generator().manual_seed(0)
    n, d = 128, 32
    x = torch.randn(32, d, generator=g)[torch.randint(0, 32, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)
    cbs = [c.float().contiguous() for c in pysid.residual_kmeans(x, 3, 32, seed=0)]
    exact = launch(x, cbs, 5, fast=False)
    counter = torch.zeros(3, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, 5, _fallback_counter=counter), exact)
    assert 0.25 * 3 * n <= counter[2] <= 3 * n, counter
    counter = torch.zeros(3, dtype=torch.int32, device=TRITON[0])
    assert same(launch(x, cbs, 5, _fallback_counter=counter, _proposal="tf32"), exact)
    assert counter[2] == 0, counter
    counter = torch.zeros(3, dtype=torch.int32, device=TRITON[0])
    launch(x, cbs, 5, precision="fast", _fallback_counter=counter)
    assert counter.tolist() == [0, 0, 0]


@needs_triton
@pytest.mark.parametrize("beam", [5, 12])
def test_precision_fast_beam_skips_the_proof(beam):
    """precision="fast": no row listed, no redo launch; distances consistent with the codes and the
    final distance within the tf32 tolerance of the exact beam's (B 12: the lists by the bitonic top-k)."""
    x, cbs = nasty_problem(3, 19, 33, [33, 9], 37.0)
    counter = torch.zeros(2, dtype=torch.int32, device=TRITON[0])
    out = launch(x, cbs, beam, precision="fast", _fallback_counter=counter)
    assert counter.tolist() == [0, 0]
    check_consistent(x, cbs, out)
    exact = launch(x, cbs, beam, fast=False)
    scale = (x.double() ** 2).sum(1) + sum((c.double() ** 2).sum(1).max() for c in cbs) + 1.0
    assert ((out.distances[:, -1].double() - exact.distances[:, -1].double()).abs() <= 2e-3 * scale).all()


@needs_triton
def test_op_runs_the_fast_beam_kernel(monkeypatch):
    """pysid.residual_quantize(beam_width=B) on the Triton backend runs level 0 as a per-row top-B (the
    first kernel: one pair per row, M rows per tile) and the later levels in the (row, beam) kernel:
    the proposal with the caller's precision, then the exact redo of both (with ptxas's register
    limit 255); the codes are the exact kernels'."""
    import pysid.kernels.residual_quantize as kmod

    seen = []

    class Spy:
        def __init__(self, name, real):
            self.name, self.real = name, real

        def __getitem__(self, grid):
            def go(*args, **kw):
                seen.append((self.name, kw["FAST"], kw["REDO"], kw["PROVE"], kw["BM"] * (kw["BP"] if self.name == "levels" else 1),
                             kw.get("maxnreg")))
                return self.real[grid](*args, **kw)
            return go

    monkeypatch.setattr(kmod, "_rq_beam_first_kernel", Spy("first", kmod._rq_beam_first_kernel))
    monkeypatch.setattr(kmod, "_rq_beam_kernel", Spy("levels", kmod._rq_beam_kernel))
    x, cbs = nasty_problem(5, 19, 16, [33, 9], 1.0)
    with pysid.backend("triton"):
        out = pysid.residual_quantize(x.to(TRITON[0]), [c.to(TRITON[0]) for c in cbs], beam_width=4)
    m = seen[0][4]  # rows of the dot: the first kernel's rows per tile = the levels kernel's pairs per tile
    # (the exact kernels' launches carry ptxas's register limit: 255)
    assert seen == [("first", True, False, True, m, None), ("levels", True, False, True, m, None),
                    ("first", False, True, False, m, 255), ("levels", False, True, False, m, 255)]
    seen.clear()
    with pysid.backend("triton"):
        pysid.residual_quantize(x.to(TRITON[0]), [c.to(TRITON[0]) for c in cbs], beam_width=4, precision="fast")
    assert seen == [("first", True, False, False, m, None), ("levels", True, False, False, m, None)]
    exact = launch(x, cbs, 4, fast=False)
    greedy = launch(x, cbs, 1, fast=False)
    take = greedy.distances[:, -1] < exact.distances[:, -1]  # the op's "never worse than greedy"
    assert torch.equal(out.codes.cpu(), torch.where(take[:, None], greedy.codes, exact.codes))


@needs_triton
def test_invalid_pairs_are_never_written(monkeypatch):
    """Beams that do not exist (the missing ones where K_0 K_1 < B, and a tile's pairs beyond its rows) cost
    no residual traffic: their slot rows keep whatever they held (a sentinel here) in every pass, and
    the outputs are the exact kernels' all the same."""
    import pysid.kernels.residual_quantize as kmod

    scratch = []
    real = kmod._rq_beam_first_kernel

    class Spy:
        def __getitem__(self, grid):
            def go(*args, **kw):
                if not scratch:
                    args[9].fill_(7.0)  # the residual slots, before the first pass
                    scratch.append(args[9])
                return real[grid](*args, **kw)
            return go

    x, cbs = nasty_problem(4, 7, 5, [2, 2, 9], 1e-3)  # B 5: 2 beams after level 0, 4 after level 1
    exact = launch(x, cbs, 5, fast=False)
    monkeypatch.setattr(kmod, "_rq_beam_first_kernel", Spy())
    for kw in (dict(fast=False), dict(), dict(_force_redo=True)):
        scratch.clear()
        assert same(launch(x, cbs, 5, **kw), exact)
        (sl,) = scratch
        n = x.shape[0]
        nprog, _, m, dp = sl.shape
        assert nprog == 1 and m >= 5 * n  # one tile: its pairs are row * 5 + beam, densely
        pairs = sl[0, 1, :5 * n].view(n, 5, dp)  # slot 1 (level 1's residuals; slot 0 holds x for the first
        # kernel: written whole)
        assert (pairs[:, 4:] == 7.0).all()  # at most 4 beams exist after level 1 (K_0 K_1 = 4 < 5)
        assert (pairs[:, :4] != 7.0).all()  # the 4 that exist were written
        assert (sl[0, 1, 5 * n:] == 7.0).all()  # the tile's pairs beyond its rows


@requires_cuda
@pytest.mark.parametrize("seed", range(3))
def test_gpu_fast_beam_is_the_exact_beam(seed):
    """On the GPU (fp16 and tf32 wgmma proposals, tl.dot(ieee) exact kernel, the re-score's tl.fma chain):
    every output bit for bit, also with the redo tier forced on and with the spelled-out chain."""
    x, cbs = nasty_problem(seed, 3000, 64 + 64 * seed, [256, 256, 64], 1.0)
    exact = launch(x, cbs, 5, fast=False)
    assert same(launch(x, cbs, 5, fast=False, _fma_chain=True), exact)
    assert same(launch(x, cbs, 5), exact)
    assert same(launch(x, cbs, 5, _proposal="tf32"), exact)
    assert same(launch(x, cbs, 5, _force_redo=True), exact)
    check_consistent(x, cbs, exact)
    x, cbs = make_problem(seed, 3000, 256, [256, 256, 256])
    exact = launch(x, cbs, 5, fast=False)
    for proposal in ("fp16", "tf32"):
        counter = torch.zeros(2, dtype=torch.int32, device="cuda")
        out = launch(x, cbs, 5, _fallback_counter=counter, _proposal=proposal)
        assert counter[1] < x.shape[0] // 2, (proposal, counter)  # random data: the proof holds for most rows
        assert same(out, exact), proposal
    check_against_reference(x, cbs, 5, out)
