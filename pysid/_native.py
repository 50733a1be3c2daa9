"""Loading of the compiled extensions (``pysid._C`` CPU, ``pysid._cuda`` GPU).

A missing module is reported by the op that needs it, with the import error,
never silently replaced by the reference.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_cache: dict[str, ModuleType | BaseException] = {}


def _load(name: str) -> ModuleType | BaseException:
    if name not in _cache:
        try:
            _cache[name] = importlib.import_module(f"pysid.{name}")
        except ImportError as e:  # pragma: no cover - depends on the build
            _cache[name] = e
    return _cache[name]


def cpu() -> ModuleType:
    """The C++ CPU extension; raises RuntimeError if it was not built."""
    mod = _load("_C")
    if isinstance(mod, BaseException):
        raise RuntimeError(
            "pysid's C++ extension (pysid._C) is not available: reinstall pysid from source "
            f"(pip install .). Import error: {mod}"
        ) from mod
    return mod


def cuda() -> ModuleType:
    """The CUDA extension; raises RuntimeError if it was not built (no nvcc at install time)."""
    mod = _load("_cuda")
    if isinstance(mod, BaseException):
        raise RuntimeError(
            "pysid's CUDA extension (pysid._cuda) is not available: install pysid from source on a "
            f"machine with nvcc (PYSID_CUDA=ON pip install .). Import error: {mod}"
        ) from mod
    return mod


def has_cpu() -> bool:
    return not isinstance(_load("_C"), BaseException)


def has_cuda() -> bool:
    return not isinstance(_load("_cuda"), BaseException)


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
