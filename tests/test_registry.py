"""The backend registry: one dispatch rule for every op, one error listing every candidate,
pysid.backends(), and the direct path of the public ops (no custom op when nothing needs it)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

import pysid
from conftest import backend_cases, cpu_backends
from pysid.ops import registry
from pysid.ops.registry import BackendNotSupportedError, Inputs

CPU = torch.device("cpu")
OPS = registry.ops()


def test_every_op_is_registered_with_a_reference_or_is_optional():
    assert {"residual_quantize", "kmeans_assign", "kmeans_assign_bounded", "kmeans_update", "kmeanspp_candidates",
            "kmeanspp_commit", "kmeanspp_seed", "trie_build", "trie_walk", "constrained_beam_step"} <= set(OPS)
    # capabilities of the C++ engine only (kmeans_assign_seed: C++ and the reference,
    # pysid.reference.kmeans.kmeans_assign_bf16_ref, tested against it in test_kmeans_cpu_kernels.py)
    optional = {"kmeans_assign_bounded", "kmeanspp_seed", "kmeans_assign_seed"}
    for op in set(OPS) - optional:
        assert "reference" in registry.implementations(op), op
        assert "cpu" in registry.implementations(op), op  # every op has a C++ CPU kernel


def test_backends_prints_and_returns_the_table(capsys):
    rows = pysid.backends()
    printed = capsys.readouterr().out
    assert {(r.op, r.backend) for r in rows} == {(op, b) for op in OPS for b in registry.implementations(op)}
    for r in rows:
        assert r.op in printed
        if r.backend in ("reference", "cpu"):
            assert r.available and not r.reason  # the C++ module is part of every install
        else:
            assert r.available == (not r.reason)
    cuda = [r for r in rows if r.backend == "cuda"]
    if not torch.cuda.is_available():
        assert cuda and all(not r.available and r.reason for r in cuda)
    assert str(rows).splitlines()[0].split()[:2] == ["op", "backend"]
    assert pysid.backends(show=False) == rows and capsys.readouterr().out == ""


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", ["reference", "cpu", "triton", "cuda"])
def test_a_forced_backend_means_the_same_for_every_op(op, name):
    """Forced: that implementation or an error naming it; never another one."""
    inputs = Inputs(CPU, torch.float32)
    try:
        impl = registry.select(op, inputs, name)
    except BackendNotSupportedError as e:
        assert name in e.reasons and str(e).startswith(f"backend {name!r} was forced")
        assert isinstance(e, RuntimeError)
    else:
        assert impl.backend == name


@pytest.mark.parametrize("op", OPS)
def test_native_is_the_cpp_kernel_of_the_device(op):
    assert registry.select(op, Inputs(CPU, torch.float32), "native").backend == "cpu"
    try:  # CUDA tensors: the CUDA C++ kernel or an error, never Triton or the reference
        assert registry.select(op, Inputs(torch.device("cuda"), torch.float32), "native").backend == "cuda"
    except BackendNotSupportedError as e:
        assert list(e.reasons) in (["cuda"], ["native"]) and "cuda" in str(e).lower()
    with pytest.raises(BackendNotSupportedError, match="meta tensor"):
        registry.select(op, Inputs(torch.device("meta"), torch.float32), "native")


@pytest.mark.parametrize("op", OPS)
def test_auto_picks_the_cpp_kernel_on_cpu_and_the_reference_elsewhere(op):
    assert registry.select(op, Inputs(CPU, torch.float32), "auto").backend == "cpu"
    meta = Inputs(torch.device("meta"), torch.float32)
    if "reference" in registry.implementations(op):
        assert registry.select(op, meta, "auto").backend == "reference"


def test_one_error_lists_every_candidate():
    # nothing fits under auto: int64 is no dtype of any implementation
    with pytest.raises(TypeError) as e:
        registry.select("residual_quantize", Inputs(CPU, torch.int64), "auto")
    assert isinstance(e.value, BackendNotSupportedError)
    assert set(e.value.reasons) == {"cpu", "reference"}
    assert "cpu: takes float32" in str(e.value) and "reference: takes float32" in str(e.value)
    # a device and a dtype refused: not a TypeError
    with pytest.raises(BackendNotSupportedError) as e:
        registry.select("residual_quantize", Inputs(CPU, torch.float64), "cuda")
    assert not isinstance(e.value, TypeError) and "CPU tensor" in str(e.value)
    # limits: the CUDA kernel is greedy only, the Triton kernel keeps 16 beams at most
    cuda = registry.get("residual_quantize", "cuda")
    triton = registry.get("residual_quantize", "triton")
    big = Inputs(torch.device("cuda"), torch.float32, {"beam_width": 17})
    assert any("greedily" in r for r in cuda.not_supported_reasons(big))
    assert any("16" in r for r in triton.not_supported_reasons(big))
    ok = Inputs(torch.device("cuda"), torch.float32, {"beam_width": 16})
    assert not any("16" in r for r in triton.not_supported_reasons(ok))
    # float64 runs on the reference only
    for b, impl in registry.implementations("residual_quantize").items():
        refused = impl.not_supported_reasons(Inputs(impl.devices and torch.device(impl.devices[0]) or CPU,
                                                    torch.float64))
        assert bool(refused) == (b != "reference"), b


def test_registry_rejects_pseudo_backends():
    with pytest.raises(ValueError, match="concrete"):
        registry.register("x", "auto", devices=None, dtypes=None)
    with pytest.raises(KeyError, match="unknown pysid op"):
        registry.implementations("nope")


def test_a_new_backend_is_one_registration(monkeypatch):
    """Registering an implementation is all a backend needs: its name is valid, auto picks it
    for its device by priority, forcing it never falls back, pysid.backends() lists it."""
    from pysid import _backend

    monkeypatch.setattr(_backend, "_names", list(_backend._names))
    monkeypatch.setitem(registry._REGISTRY, "residual_quantize", dict(registry._REGISTRY["residual_quantize"]))
    calls = []

    @registry.register("residual_quantize", "fake", devices=("meta",), dtypes=registry.KERNEL_DTYPES, priority=5,
                       check=lambda inp: [] if inp.params.get("beam_width", 1) == 1 else ["greedy only"])
    def _run_fake(x, cbs, beam_width):
        calls.append(x.shape)
        return x.new_empty(x.shape), x.new_empty((x.shape[0], len(cbs))), x.new_empty((x.shape[0], len(cbs)),
                                                                                      dtype=torch.int32)

    meta = Inputs(torch.device("meta"), torch.float32, {"beam_width": 1})
    assert registry.select("residual_quantize", meta).backend == "fake"  # auto: 5 > the reference's 0
    with pysid.backend("fake"):
        assert pysid.get_backend() == "fake"
        with pytest.raises(BackendNotSupportedError, match="fake: needs|fake: runs on meta"):
            registry.select("residual_quantize", Inputs(CPU, torch.float32))
        with pytest.raises(BackendNotSupportedError, match="greedy only"):
            registry.select("residual_quantize", Inputs(torch.device("meta"), torch.float32, {"beam_width": 2}))
    assert ("residual_quantize", "fake") in {(r.op, r.backend) for r in pysid.backends(show=False)}


def test_helpers_take_the_lists_from_the_registry():
    assert cpu_backends("residual_quantize") == ["reference", "cpu"]
    assert backend_cases("kmeans_assign")[:2] == ["reference", "cpu"]
    assert cpu_backends("kmeanspp_seed") == ["cpu"]


# --------------------------------------------------------------------------- direct path vs custom op


def _spy(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def wrapped(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapped)
    return calls


@pytest.mark.parametrize("case", backend_cases("residual_quantize"))
@pytest.mark.parametrize("beam", [1, 3])
def test_residual_quantize_direct_path_equals_the_custom_op(monkeypatch, case, beam):
    rq = importlib.import_module("pysid.ops.residual_quantize")
    backend, _, dev = case.partition(":")
    if backend == "cuda" and beam > 1:
        pytest.skip("the CUDA kernel encodes greedily only")
    g = torch.Generator().manual_seed(beam)
    n = 300 if backend != "triton" or dev == "cuda" else 20  # the Triton interpreter is slow
    x, cbs = torch.randn(n, 12, generator=g).to(dev or "cpu"), torch.randn(3, 20, 12, generator=g).to(dev or "cpu")
    calls = _spy(monkeypatch, rq, "_residual_quantize_op")
    with pysid.backend(backend):
        direct = pysid.residual_quantize(x, cbs, beam_width=beam)
        assert calls == []  # nothing needed the op
        via_op = torch.ops.pysid.residual_quantize(x, list(cbs.unbind(0)), beam)
        xg = x.clone().requires_grad_(True)
        graded = pysid.residual_quantize(xg, cbs, beam_width=beam)  # autograd: the custom op
        assert calls == [1]
        with torch.no_grad():
            pysid.residual_quantize(xg, cbs, beam_width=beam)  # grad mode off: direct again
        assert calls == [1]
    for a, b, c in zip(direct, via_op, graded):
        assert torch.equal(a, b) and torch.equal(a, c.detach())
    graded.quantized.sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))
    assert via_op[0].device == x.device


def test_residual_quantize_compiles_through_the_op():
    x, cbs = torch.randn(50, 8), torch.randn(2, 6, 8)
    f = torch.compile(lambda x, c: pysid.residual_quantize(x, c).codes, backend="aot_eager", fullgraph=True)
    assert torch.equal(f(x, cbs), pysid.residual_quantize(x, cbs).codes)


@pytest.mark.parametrize("backend", cpu_backends("constrained_beam_step"))
def test_beam_step_direct_path_equals_the_custom_op(backend):
    trie = pysid.Trie(torch.tensor([[0, 1], [0, 2], [1, 0], [2, 2], [2, 1]]))
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(6, 3, generator=g).log_softmax(-1)
    scores = torch.tensor([[0.0, -1.0, float("-inf")], [-0.5, 0.0, -2.0]])
    nodes = torch.tensor([[0, 1, -1], [2, 0, 1]])
    with pysid.backend(backend):
        direct = pysid.constrained_beam_step(lp, scores, nodes, trie, 1)
        via_op = torch.ops.pysid.constrained_beam_step(lp, scores, nodes, trie.offsets[1], trie.codes[1], None,
                                                       trie.max_children[1])
    for a, b in zip(direct, via_op):
        assert torch.equal(a, b)


def test_first_call_does_not_import_dynamo(tmp_path):
    code = ("import sys, torch, pysid; x = torch.randn(20, 4); pysid.residual_quantize(x, torch.randn(2, 3, 4)); "
            "t = pysid.Trie(torch.tensor([[0, 1], [1, 0]])); "
            "pysid.constrained_beam_step(torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long), t, 0); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYSID_BACKEND": "auto"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def _imports(module) -> set[str]:
    import ast
    import inspect

    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_rooms_do_not_import_each_other():
    """The trie and the beam step op do not import each other; the k-means algorithm and
    the SID table reach the kernels only through the engine (no backend names)."""
    import pysid.kmeans
    import pysid.ops.beam_search
    import pysid.trie

    assert not any("beam_search" in m for m in _imports(pysid.trie))
    assert not any("trie" in m for m in _imports(pysid.ops.beam_search))
    assert not any("registry" in m or "_backend" in m for m in _imports(pysid.kmeans))
    ops_kmeans = importlib.import_module("pysid.ops.kmeans")
    assert not any(m in ("..kmeans", "pysid.kmeans") for m in _imports(ops_kmeans))
