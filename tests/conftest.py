"""Test setup: Triton runs in its interpreter when no GPU is present; the native
module must be importable (a missing extension fails loudly, never skips)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest  # noqa: E402

import pysid  # noqa: E402
from pysid import _native  # noqa: E402

# The C++ extension is part of every install: its absence is a broken build.
_native.cpu()

from hypothesis import settings  # noqa: E402

settings.register_profile("default", deadline=None, print_blob=True)
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_report_header(config):
    return (
        f"pysid {pysid.__version__}: cpu isa {_native.cpu().cpu_isa()}, cuda ext {_native.has_cuda()}, "
        f"triton {_native.has_triton()}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}, "
        f"torch {torch.__version__}, cuda available {torch.cuda.is_available()}"
    )


def triton_devices():
    """Devices on which the Triton backend can be exercised here."""
    if not _native.has_triton():
        return []
    return ["cuda"] if torch.cuda.is_available() else ["cpu"]


def random_catalogue(seed: int, L: int, vocab: list[int], M: int, skew: float = 1.0) -> torch.Tensor:
    """Up to M unique code tuples, codes skewed towards 0 by ``skew`` (>= 1), shuffled."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(M, L, generator=g) ** skew
    codes = (u * torch.tensor(vocab)).long().clamp(max=torch.tensor(vocab) - 1)
    codes = torch.unique(codes, dim=0)
    return codes[torch.randperm(codes.shape[0], generator=g)]


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


_ORDER = ("reference", "cpu", "triton", "cuda")


def _impls(op):
    from pysid.ops import registry

    impls = registry.implementations(op)
    return [impls[b] for b in sorted(impls, key=lambda b: _ORDER.index(b) if b in _ORDER else len(_ORDER))]


def cpu_backends(op):
    """Registered backends of ``op`` that run CPU tensors natively (no interpreter), e.g.
    ["reference", "cpu"]: taken from pysid's backend registry, not listed by hand."""
    return [i.backend for i in _impls(op) if i.devices is None or "cpu" in i.devices]


def backend_cases(op):
    """Every registered backend of ``op`` that can run here: "name" for those that run CPU
    tensors natively, "name:device" for the others (Triton under TRITON_INTERPRET=1 on
    "cpu", Triton / CUDA kernels on "cuda" when a GPU is present)."""
    cases = cpu_backends(op)
    for impl in _impls(op):
        if impl.backend in cases or impl.unavailable():
            continue
        here = [d for d in impl.run_devices() or () if _device_here(d)]
        if here:  # a real device before the interpreter on CPU
            cases.append(f"{impl.backend}:{sorted(here, key=lambda d: d == 'cpu')[0]}")
    return cases


def _device_here(device):
    if device == "cpu":
        return True
    mod = getattr(torch, device, None)
    return bool(mod is not None and hasattr(mod, "is_available") and mod.is_available())


def _gloo_entry(rank, world, init_file, out_dir, module, name):
    import importlib

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        res = getattr(importlib.import_module(module), name)(rank)
        torch.save(res, os.path.join(out_dir, f"r{rank}.pt"))
        dist.barrier()  # no rank tears the group (and its file store) down while another still uses it
    finally:
        dist.destroy_process_group()


def run_two_processes(fn, tmp_path):
    """Run ``fn(rank) -> dict`` (a module-level function of a test module) in two spawned
    processes of one gloo process group; returns the two ranks' dicts."""
    import sys

    import torch.multiprocessing as mp

    sys.path.insert(0, os.path.dirname(__file__))
    mp.start_processes(_gloo_entry, args=(2, str(tmp_path / "store"), str(tmp_path), fn.__module__, fn.__name__),
                       nprocs=2, start_method="spawn")
    return torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")


def embedding_catalogue(m: int = 3000, d: int = 24, topics: int = 40, seed: int = 0, noise: float = 0.3) -> torch.Tensor:
    """[m, d] float32 item embeddings around ``topics`` random centres (a catalogue with collisions)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(topics, d, generator=g)
    return c[torch.randint(0, topics, (m,), generator=g)] + noise * torch.randn(m, d, generator=g)


def unique_rows(codes: torch.Tensor) -> bool:
    return torch.unique(codes, dim=0).shape[0] == codes.shape[0]
