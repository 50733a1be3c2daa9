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
