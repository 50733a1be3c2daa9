"""Loading of the compiled extensions (``pysid._C`` CPU, ``pysid._cuda`` GPU).

A missing module is reported by the op that needs it, with the import error,
never silently replaced by the reference.
"""

from __future__ import annotations

import glob
import importlib
import os
from types import ModuleType

_cache: dict[str, ModuleType | BaseException] = {}


def _load(name: str) -> ModuleType | BaseException:
    if name not in _cache:
        try:
            _cache[name] = importlib.import_module(f"pysid.{name}")
        except ImportError as e:  # pragma: no cover - depends on the build
            _cache[name] = e
    return _cache[name]


def source_tree(package_dir: str | None = None) -> str | None:
    """The source checkout pysid is imported from, when the package folder has no compiled
    module and sits in a checkout (a ``pyproject.toml`` beside it): Python found the source
    tree (e.g. the current folder) before the installed package. None otherwise."""
    package_dir = package_dir or os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package_dir)
    built = glob.glob(os.path.join(package_dir, "_C.*")) + glob.glob(os.path.join(package_dir, "_C", "__init__.py"))
    if built or not os.path.isfile(os.path.join(root, "pyproject.toml")):
        return None
    return root


def _missing_cpu_message(err: BaseException, package_dir: str | None = None) -> str:
    root = source_tree(package_dir)
    if root is not None:
        return (f"pysid's C++ extension (pysid._C) is not available: you are importing pysid from the source tree "
                f"at {root}, which holds no compiled module; run from another folder or pip install -e . "
                f"Import error: {err}")
    return ("pysid's C++ extension (pysid._C) is not available: reinstall pysid from source "
            f"(pip install .). Import error: {err}")


def cpu() -> ModuleType:
    """The C++ CPU extension; raises RuntimeError if it was not built (or if Python imports
    the source tree, which has no compiled module, instead of the installed package)."""
    mod = _load("_C")
    if isinstance(mod, BaseException):
        raise RuntimeError(_missing_cpu_message(mod)) from mod
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
