"""The backend registry: (op, backend) -> implementation, and the one dispatch rule.

Every kernel of every op registers here with what it can run (devices, dtypes, an
availability check for optional builds, and limits that may refuse an input with a
reason). Nothing outside ``pysid/ops`` names a backend; the ops ask :func:`select`.

The rule, the same for every op, under the backend in force (:func:`pysid.backend`,
``PYSID_BACKEND``):

* ``"auto"``: the implementations registered for the input's device type, highest
  ``priority`` first (Triton 25 > CUDA C++ 20 on CUDA tensors, C++ 30 on CPU tensors,
  the reference 0 on any device, so devices without a kernel and float64 input run on
  the reference); the first that accepts the input runs. The Triton interpreter
  (``TRITON_INTERPRET=1``) runs on CPU tensors only when forced.
* ``"reference"``, ``"cpu"``, ``"triton"``, ``"cuda"`` (any registered name): that
  implementation or an error.
* ``"native"``: the C++ kernel (``native=True``) registered for the input's device type
  (``"cpu"`` for CPU tensors, ``"cuda"`` for CUDA tensors) or an error.

A forced backend never falls back. When nothing fits, one
:class:`BackendNotSupportedError` lists every candidate and why it refused (a
:class:`TypeError` too when only dtypes were refused). The C++ CPU extension is part of
every install: it has no availability check, so a missing build is a loud error when its
kernel runs, never a silent switch to the reference.

Adding a backend (say ``"mps"`` for ``residual_quantize``): write the kernel and register
its wrapper beside the op's other implementations::

    @register("residual_quantize", "mps", devices=("mps",), dtypes=KERNEL_DTYPES, priority=10)
    def _run_mps(x, cbs, beam_width): ...

The name becomes valid for ``pysid.backend("mps")`` / ``PYSID_BACKEND``, ``auto`` picks it
for MPS tensors (priority above the reference's 0), and ``pysid.backends()``, the tests'
backend lists and the errors follow from the registration. ``available=`` takes a check
for an optional build, ``native=True`` makes it what ``"native"`` means on its device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from .. import _backend, _native

__all__ = [
    "BackendNotSupportedError",
    "Impl",
    "Inputs",
    "KERNEL_DTYPES",
    "backends",
    "get",
    "implementations",
    "ops",
    "register",
    "select",
]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FLOAT_DTYPES = KERNEL_DTYPES + (torch.float64,)



class BackendNotSupportedError(NotImplementedError):
    """No implementation of an op can run this input under the backend in force.

    ``reasons`` maps each candidate backend to why it refused."""

    def __init__(self, message: str, reasons: dict[str, list[str]]):
        super().__init__(message)
        self.reasons = reasons


class BackendDtypeError(BackendNotSupportedError, TypeError):
    """:class:`BackendNotSupportedError` where only the input's dtype was refused."""


@dataclass(frozen=True)
class Inputs:
    """What dispatch looks at: the device and dtype of the op's main tensor, and the op's
    parameters that limits depend on (e.g. ``beam_width``)."""

    device: torch.device
    dtype: Optional[torch.dtype] = None
    params: dict = field(default_factory=dict)

    @staticmethod
    def of(t: torch.Tensor, **params: Any) -> "Inputs":
        return Inputs(t.device, t.dtype, params)


def _triton_devices() -> tuple[str, ...]:
    # the interpreter runs Triton kernels on CPU tensors; checked at call time, like today
    return ("cuda", "cpu") if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",)


def _has_triton() -> Optional[str]:
    return None if _native.has_triton() else "needs the `triton` package (pip install triton)"


def _has_cuda_ext() -> Optional[str]:
    return None if _native.has_cuda() else "pysid._cuda was not built (install from source with nvcc)"


# what the built-in backends register with unless told otherwise: auto priority, whether
# "native" means it, an availability check of an optional build (the C++ CPU module is part
# of every install: none), devices computed at call time, and how a device refusal reads
_DEFAULTS: dict[str, dict[str, Any]] = {
    "reference": dict(priority=0),
    "cpu": dict(priority=30, native=True, help="needs CPU tensors"),
    "triton": dict(priority=25, available=_has_triton, run_devices=_triton_devices,
                   help="needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"),
    "cuda": dict(priority=20, native=True, available=_has_cuda_ext, help="needs CUDA tensors"),
}


@dataclass(frozen=True)
class Impl:
    """One implementation of one op.

    devices: device types ``auto`` and ``native`` consider it for (None: any).
    dtypes: dtypes of the main tensor (None: any). limits: a short text of its other
    limits, for :func:`backends`; ``check(inputs)`` returns the reasons an input breaks
    them. priority: ``auto`` tries higher first. native: what ``"native"`` means on its
    devices. available: why an optional build is missing (None: present). devices_now:
    the devices it runs on when forced, computed at call time (Triton: CPU too under
    ``TRITON_INTERPRET=1``). traits: properties the algorithms may ask about (e.g. the
    k-means assignment's ``"greedy_codes"``)."""

    op: str
    backend: str
    fn: Callable
    devices: Optional[tuple[str, ...]]
    dtypes: Optional[tuple[torch.dtype, ...]]
    limits: str = ""
    check: Optional[Callable[[Inputs], Iterable[str]]] = None
    priority: int = 10
    native: bool = False
    available: Optional[Callable[[], Optional[str]]] = None
    devices_now: Optional[Callable[[], tuple[str, ...]]] = None
    device_help: str = ""
    traits: frozenset = frozenset()

    def run_devices(self) -> Optional[tuple[str, ...]]:
        return self.devices_now() if self.devices_now is not None else self.devices

    def unavailable(self) -> Optional[str]:
        """Why this implementation cannot run on this machine at all (None: it can)."""
        return self.available() if self.available is not None else None

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        """Why this implementation refuses ``inputs`` (empty: it accepts them)."""
        reasons = []
        devices = self.run_devices()
        if devices is not None and inputs.device.type not in devices:
            help_ = self.device_help or f"runs on {', '.join(devices)} tensors"
            reasons.append(f"{help_}, got a {_device_name(inputs.device)} tensor")
        if self.dtypes is not None and inputs.dtype is not None and inputs.dtype not in self.dtypes:
            reasons.append(f"takes {_dtype_list(self.dtypes)}, got {inputs.dtype}"
                           + (" (float64 runs on the reference)" if inputs.dtype == torch.float64 else ""))
        if not reasons and self.check is not None:
            reasons.extend(self.check(inputs))
        if not reasons:
            why = self.unavailable()
            if why:
                reasons.append(why)
        return reasons


def _device_name(device: torch.device) -> str:
    return "CPU" if device.type == "cpu" else ("CUDA" if device.type == "cuda" else device.type)


def _dtype_list(dtypes: Sequence[torch.dtype]) -> str:
    names = [str(d).replace("torch.", "") for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


_REGISTRY: dict[str, dict[str, Impl]] = {}


def register(op: str, backend: str, *, devices: Optional[Sequence[str]], dtypes: Optional[Sequence[torch.dtype]],
             limits: str = "", check: Optional[Callable[[Inputs], Iterable[str]]] = None,
             priority: Optional[int] = None, native: Optional[bool] = None,
             available: Optional[Callable[[], Optional[str]]] = None, traits: Sequence[str] = ()) -> Callable:
    """Decorator: register ``fn`` as the ``backend`` implementation of ``op`` (see
    :class:`Impl`; a built-in backend's priority, native flag and availability check
    default to its usual ones)."""
    if backend in _backend.SELECTORS or not backend.isidentifier() or backend != backend.lower():
        raise ValueError(f"cannot register backend {backend!r}: expected a concrete lower-case name, "
                         f"not one of {_backend.SELECTORS}")
    d = _DEFAULTS.get(backend, {})

    def deco(fn: Callable) -> Callable:
        _REGISTRY.setdefault(op, {})[backend] = Impl(
            op, backend, fn, None if devices is None else tuple(devices), None if dtypes is None else tuple(dtypes),
            limits, check, d.get("priority", 10) if priority is None else priority,
            d.get("native", False) if native is None else native, available or d.get("available"),
            d.get("run_devices"), d.get("help", ""), frozenset(traits))
        _backend.add_name(backend)
        return fn

    return deco


# the modules that register implementations (each registers on import)
_MODULES = ("pysid.ops.residual_quantize", "pysid.ops.kmeans", "pysid.ops.beam_search", "pysid.trie")


def _load_ops() -> None:
    import importlib

    for m in _MODULES:
        importlib.import_module(m)


def ops() -> list[str]:
    """Names of the registered ops."""
    _load_ops()
    return list(_REGISTRY)


def implementations(op: str) -> dict[str, Impl]:
    """backend name -> :class:`Impl` of ``op``."""
    _load_ops()
    if op not in _REGISTRY:
        raise KeyError(f"unknown pysid op {op!r}; registered: {sorted(_REGISTRY)}")
    return dict(_REGISTRY[op])


def get(op: str, backend: str) -> Optional[Impl]:
    """The ``backend`` implementation of ``op``, or None."""
    return _REGISTRY.get(op, {}).get(backend)


def candidates(op: str, name: str, device: torch.device) -> list[str]:
    """The implementations of ``op`` the backend ``name`` may run for a tensor on ``device``,
    in the order tried."""
    if name not in _backend.SELECTORS:
        return [name]
    here = [i for i in _REGISTRY.get(op, {}).values() if i.devices is None or device.type in i.devices]
    if name == "native":
        here = [i for i in here if i.native]
    return [i.backend for i in sorted(here, key=lambda i: -i.priority)]


def select(op: str, inputs: Inputs, backend: Optional[str] = None) -> Impl:
    """The implementation of ``op`` that runs ``inputs`` under ``backend`` (default: the
    backend in force). Raises :class:`BackendNotSupportedError` listing every candidate's
    reason when none fits."""
    name = _backend.get_backend() if backend is None else backend
    impls = _REGISTRY.get(op, {})
    reasons: dict[str, list[str]] = {}
    tried = candidates(op, name, inputs.device)
    if not tried:
        what = "C++ " if name == "native" else ""
        reasons[name] = [f"pysid has no {what}implementation of {op} for {_device_name(inputs.device)} tensors"]
    for b in tried:
        impl = impls.get(b)
        if impl is None:
            reasons[b] = [f"pysid has no {b} implementation of {op}"]
            continue
        why = impl.not_supported_reasons(inputs)
        if not why:
            return impl
        reasons[b] = why
    detail = "; ".join(f"{b}: {', '.join(r)}" for b, r in reasons.items())
    what = f"{inputs.dtype} " if inputs.dtype is not None else ""
    msg = (f"backend {name!r} cannot run {op} on this input ({what}on {inputs.device}): {detail}"
           if name == "auto" else f"backend {name!r} was forced but cannot run {op} here: {detail}")
    only_dtype = all(r and all(s.startswith("takes ") for s in r) for r in reasons.values())
    raise (BackendDtypeError if only_dtype else BackendNotSupportedError)(msg, reasons)


# --------------------------------------------------------------------------- pysid.backends()


@dataclass(frozen=True)
class BackendInfo:
    """One row of :func:`backends`: an implementation and whether it runs here."""

    op: str
    backend: str
    devices: str
    dtypes: str
    limits: str
    priority: int
    available: bool
    reason: str

    def cells(self) -> tuple[str, ...]:
        return (self.op, self.backend, self.devices, self.dtypes, self.limits, str(self.priority),
                "yes" if self.available else f"no: {self.reason}")


class BackendTable(list):
    """A list of :class:`BackendInfo` that prints as a table."""

    _HEAD = ("op", "backend", "devices", "dtypes", "limits", "auto priority", "runs here")

    def __str__(self) -> str:
        rows = [self._HEAD] + [r.cells() for r in self]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEAD) - 1)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        lines.insert(1, "-" * max(len(line) for line in lines))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def _machine_reason(impl: Impl) -> str:
    why = impl.unavailable()
    if why:
        return why
    if impl.backend == "cpu" and not _native.has_cpu():
        try:
            _native.cpu()
        except RuntimeError as e:
            return str(e).split(". Import error")[0]
    devices = impl.run_devices()
    if devices is not None and "cpu" not in devices and not any(
            d == "cuda" and torch.cuda.is_available() for d in devices):
        return f"no {' / '.join(d.upper() for d in devices)} device here"
    return ""


def backends(*, show: bool = True) -> BackendTable:
    """Every registered (op, backend) implementation, what it accepts, and whether it runs
    on this machine (and if not, why). Prints the table when ``show`` (the default)::

        >>> pysid.backends()            # doctest: +SKIP
        op                  backend  devices  dtypes ...  runs here
        residual_quantize   cpu      cpu      float32, float16 or bfloat16  yes
        residual_quantize   cuda     cuda     ...         no: pysid._cuda was not built ...

    The backend in force picks among them (``pysid.backend(...)``, ``PYSID_BACKEND``);
    ``auto`` tries the implementations of the input's device, highest priority first.
    """
    _load_ops()
    rows = BackendTable()
    for op, impls in _REGISTRY.items():
        for b, impl in impls.items():
            devices = impl.run_devices()
            reason = _machine_reason(impl)
            rows.append(BackendInfo(
                op, b, "any" if devices is None else ", ".join(devices),
                "any" if impl.dtypes is None else _dtype_list(impl.dtypes), impl.limits or "-", impl.priority,
                not reason, reason))
    if show:
        print(rows)
    return rows


# --------------------------------------------------------------------------- direct calls


def direct_call_ok(tensors: Iterable[torch.Tensor]) -> bool:
    """True when an op may call its implementation directly instead of entering its
    ``torch.library`` custom op: not compiling or tracing, no autograd needed, plain
    tensors and no dispatch mode active. The custom op's first call imports
    ``torch._dynamo`` (~2 s); the direct path never does."""
    if torch.compiler.is_compiling():
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
            return False
        if grad and t.requires_grad:
            return False
    if torch._C._is_torch_function_mode_enabled():
        return False
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is None and \
        torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is None and \
        not _python_dispatch_mode()


def _python_dispatch_mode() -> bool:
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is not None
