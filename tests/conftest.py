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
        devices = impl.run_devices() or ()
        if "cuda" in devices and torch.cuda.is_available():
            cases.append(f"{impl.backend}:cuda")
        elif "cpu" in devices:
            cases.append(f"{impl.backend}:cpu")
    return cases
