"""precision="exact" | "fast" from the public APIs down to the Triton kernel, its validation, and
codes that torch's global tf32 settings never change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pysid
from conftest import backend_cases, cpu_backends, triton_devices
from pysid.nn import ResidualQuantizer

TRITON = triton_devices()
TDEV = TRITON[0] if TRITON else "cpu"
needs_triton = pytest.mark.skipif(not TRITON, reason="triton is not installed")


def data(n=120, d=12, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(6, d, generator=g) * 3
    x = c[torch.randint(0, 6, (n,), generator=g)] + torch.randn(n, d, generator=g)
    return x.to(device), (torch.randn(2, 10, d, generator=g) * 2).to(device)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", ["tf32", "EXACT", None, 1, ""])
def test_bad_precision_is_a_clear_value_error(bad):
    x, cbs = data()
    msg = 'precision must be "exact" or "fast"'
    with pytest.raises(ValueError, match=msg):
        pysid.residual_quantize(x, cbs, precision=bad)
    with pytest.raises(ValueError, match=msg):
        pysid.kmeans(x, 4, precision=bad)
    with pytest.raises(ValueError, match=msg):
        pysid.residual_kmeans(x, 2, 4, precision=bad)
    with pytest.raises(ValueError, match=msg):
        pysid.fit(x, levels=2, codebook_size=4, precision=bad, progress=False)
    with pytest.raises(ValueError, match=msg):
        ResidualQuantizer(12, 2, 4, precision=bad)
    if isinstance(bad, str):  # the custom op's schema takes a str
        with pytest.raises(ValueError, match=msg):
            torch.ops.pysid.residual_quantize(x, list(cbs.unbind(0)), 1, bad)


# --------------------------------------------------------------------------- exact backends


@pytest.mark.parametrize("backend", cpu_backends("residual_quantize"))
@pytest.mark.parametrize("beam", [1, 3])
def test_fast_equals_exact_on_cpu_backends(backend, beam):
    """The C++ and reference backends are exact either way: "fast" gives the same results."""
    x, cbs = data(seed=beam)
    with pysid.backend(backend):
        a = pysid.residual_quantize(x, cbs, beam_width=beam)
        b = pysid.residual_quantize(x, cbs, beam_width=beam, precision="fast")
        ka = pysid.kmeans(x, 5, iters=3, seed=1)
        kb = pysid.kmeans(x, 5, iters=3, seed=1, precision="fast")
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert torch.equal(ka.assignments, kb.assignments) and torch.equal(ka.centroids, kb.centroids)


def test_fit_and_quantizer_fast_equal_exact_on_cpu():
    x, _ = data(n=200, d=8, seed=3)
    a = pysid.fit(x, levels=2, codebook_size=6, iters=3, progress=False)
    b = pysid.fit(x, levels=2, codebook_size=6, iters=3, progress=False, precision="fast")
    assert torch.equal(a.codes, b.codes)
    assert all(torch.equal(u, v) for u, v in zip(a.codebooks, b.codebooks))
    qa, qb = ResidualQuantizer(8, 2, 5, seed=2), ResidualQuantizer(8, 2, 5, seed=2, precision="fast")
    qa.init_from(x)
    qb.init_from(x)
    assert torch.equal(qa.encode(x), qb.encode(x))
    assert "precision='fast'" in repr(qb) and "precision" not in repr(qa)


# --------------------------------------------------------------------------- the Triton kernel gets it


@pytest.fixture
def spy_triton(monkeypatch):
    """Records the precision every residual_quantize_triton launch receives."""
    import pysid.kernels.residual_quantize as kmod

    seen = []
    real = kmod.residual_quantize_triton

    def spy(*args, **kwargs):
        seen.append(kwargs.get("precision", "exact"))
        return real(*args, **kwargs)

    monkeypatch.setattr(kmod, "residual_quantize_triton", spy)
    return seen


@needs_triton
@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_precision_reaches_the_triton_kernel(spy_triton, precision):
    x, cbs = data(n=40, d=8, seed=5, device=TDEV)
    with pysid.backend("triton"):
        out = pysid.residual_quantize(x, cbs, precision=precision)
        assert spy_triton and set(spy_triton) == {precision}
        spy_triton.clear()
        pysid.kmeans(x, 4, iters=2, seed=0, precision=precision)  # the Lloyd assignments
        assert spy_triton and set(spy_triton) == {precision}
        spy_triton.clear()
        pysid.residual_kmeans(x, 2, 4, iters=1, precision=precision)
        assert spy_triton and set(spy_triton) == {precision}
        spy_triton.clear()
        pysid.fit(x, levels=2, codebook_size=4, iters=1, progress=False, precision=precision)  # k-means + encode
        assert spy_triton and set(spy_triton) == {precision}
        spy_triton.clear()
        q = ResidualQuantizer(8, 2, 4, precision=precision, kmeans_iters=1).to(TDEV)
        q.init_from(x)
        q.encode(x)
        q.train()
        q(x)
        assert spy_triton and set(spy_triton) == {precision}
    # "fast" codes are the proposal's choice (greedy: fp16 with power-of-two scaling; tf32 on request):
    # where they differ from the exact ones (level 0), only by a near-tie within its error of 2 x.c
    # (11-bit significands: <= 2^-9 (|x|^2 + |c|^2)); the interpreter computes tf32 dots in float32
    exact = pysid.residual_quantize(x.cpu(), cbs.cpu())
    xd, c = x.cpu().double(), cbs[0].cpu().double()
    d_fast = ((xd - c[out.codes[:, 0].long().cpu()]) ** 2).sum(1)
    d_exact = ((xd - c[exact.codes[:, 0].long()]) ** 2).sum(1)
    slack = 2.0**-8 * ((xd * xd).sum(1) + (c * c).sum(1).max())
    assert bool((d_fast <= d_exact + slack).all())
    if not TDEV.startswith("cuda"):
        assert torch.equal(out.codes.cpu(), exact.codes)


# --------------------------------------------------------------------------- torch's tf32 flags


class tf32_on:
    """torch's global tf32 / matmul precision settings switched on inside the block, restored after."""

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                      torch.get_float32_matmul_precision())
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "high"

    def __exit__(self, *exc):
        torch.set_float32_matmul_precision(self.saved[2])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved[:2]


def _kernel_cases():
    return [c for c in backend_cases("residual_quantize") if c != "reference"]


@pytest.mark.parametrize("case", _kernel_cases())
@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_tf32_flags_never_change_codes(case, precision):
    """Every kernel backend (C++, Triton under the interpreter or on CUDA, CUDA C++): the same codes,
    distances and k-means results with torch's tf32 flags on as off."""
    backend, _, dev = case.partition(":")
    x, cbs = data(n=60 if backend == "triton" and dev != "cuda" else 400, d=8, seed=7, device=dev or "cpu")

    def run():
        with pysid.backend(backend):
            rq = pysid.residual_quantize(x, cbs, precision=precision)
            km = pysid.kmeans(x, 5, iters=2, seed=2, precision=precision) if backend != "cuda" else None
        return rq, km

    assert not torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "highest"
    before = run()
    with tf32_on():
        after = run()
    for u, v in zip(before[0], after[0]):
        assert torch.equal(u, v)
    if before[1] is not None:
        assert torch.equal(before[1].assignments, after[1].assignments)
        assert torch.equal(before[1].centroids, after[1].centroids)


def test_tf32_flags_never_change_fit_codes():
    """pysid.fit (the CPU kernels; the Triton ones on a GPU machine's CUDA tensors) with the flags on:
    the table of a run with them off."""
    x, _ = data(n=300, d=8, seed=9, device="cuda" if torch.cuda.is_available() else "cpu")
    off = pysid.fit(x, levels=2, codebook_size=6, iters=3, progress=False)
    with tf32_on():
        on = pysid.fit(x, levels=2, codebook_size=6, iters=3, progress=False)
    assert torch.equal(on.codes, off.codes)
    assert all(torch.equal(u, v) for u, v in zip(on.codebooks, off.codebooks))


# --------------------------------------------------------------------------- CLI


def test_cli_fit_precision(tmp_path, monkeypatch):
    from pysid.cli import main

    monkeypatch.chdir(tmp_path)
    x, _ = data(n=200, d=8, seed=4)
    np.save("emb.npy", x.numpy())
    args = ["fit", "emb.npy", "--levels", "2", "--codebook-size", "6", "--quiet"]
    assert main([*args, "-o", "a.npz"]) == 0
    assert main([*args, "-o", "b.npz", "--precision", "fast"]) == 0
    assert torch.equal(pysid.SemanticIds.load("a.npz").codes, pysid.SemanticIds.load("b.npz").codes)  # CPU: exact
    assert main([*args, "-o", "c.npz", "--precision", "tf32"]) == 2  # the CLI's usage error
    assert not (tmp_path / "c.npz").exists()
