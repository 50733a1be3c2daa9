"""Backend selection: which implementation an op runs.

``pysid/ops`` is the only place that chooses a backend: the implementations register in
``pysid.ops.registry``, whose one rule holds for every op (see its docstring), and
``pysid.backends()`` prints what each accepts and what runs on this machine. Users and
tests force a backend with the ``PYSID_BACKEND`` environment variable or the
:func:`backend` context manager (the context manager wins):

* ``"auto"`` (default): the fastest implementation that accepts the input, in the
  registry's priority order for its device (the reference last).
* ``"reference"``: the pure-PyTorch reference (``pysid.reference``).
* ``"native"``: the C++ kernel of the tensor's device (CPU or CUDA).
* ``"cpu"``, ``"triton"``, ``"cuda"``: that kernel.

A forced backend that cannot run the given input raises; it never falls back.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

BACKENDS = ("auto", "reference", "native", "cpu", "triton", "cuda")
SELECTORS = ("auto", "native")  # names that choose among the implementations

_names = list(BACKENDS)  # grows with the registry: a registered backend is a known name
_local = threading.local()


def add_name(name: str) -> None:
    """Make ``name`` a valid backend (called by ``pysid.ops.registry.register``)."""
    if name not in _names:
        _names.append(name)


def _check(name: str) -> str:
    name = name.strip().lower()
    if name not in _names:
        raise ValueError(f"unknown pysid backend {name!r}; expected one of {tuple(_names)}")
    return name


def get_backend() -> str:
    """The backend in force: the innermost :func:`backend` context, else ``$PYSID_BACKEND``, else ``"auto"``."""
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    return _check(os.environ.get("PYSID_BACKEND", "auto") or "auto")


@contextlib.contextmanager
def backend(name: str) -> Iterator[str]:
    """Force a backend inside a ``with`` block (thread-local)::

        with pysid.backend("reference"):
            out = pysid.residual_quantize(x, codebooks)
    """
    name = _check(name)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()
