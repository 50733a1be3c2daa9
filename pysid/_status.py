"""The tables pysid's Python code shares with its native kernels, defined once in Python.

Their C++ twins are ``PYSID_STATUS_TABLE`` and ``PYSID_DTYPE_TABLE`` in ``csrc/status.h``;
``tests/test_native_tables.py`` checks that both languages agree exactly (through
``pysid._C.status_codes()`` / ``dtype_codes()``, and ``pysid._cuda``'s when built).

Status codes: every native kernel (C++, CUDA) returns one; the Triton beam step writes
the same codes into its status tensor. The bindings raise the exception named here with
the message here (``csrc/bind_common.h: raise_for_status``).

Dtype codes: the ``x_dtype`` argument of the kernels that read half-precision inputs
(the CUDA ``rq_encode``, the C++ k-means kernels).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class StatusCode(NamedTuple):
    name: str  # the C++ enumerator
    value: int
    exception: Optional[str]  # the Python exception the bindings raise (None: success)
    message: str


STATUS_CODES: tuple[StatusCode, ...] = (
    StatusCode("kOk", 0, None, "ok"),
    StatusCode("kBadArgument", 1, "ValueError", "bad argument"),
    StatusCode("kOutOfMemory", 2, "RuntimeError", "out of memory"),
    StatusCode("kCudaError", 3, "RuntimeError", "CUDA launch error"),
    StatusCode("kDuplicateCodes", 10, "ValueError", "two items share one code tuple"),
    StatusCode("kNonFinite", 11, "ValueError", "NaN in the log-probs or beam scores of a live beam"),
    StatusCode("kBadNode", 12, "ValueError", "a node id is out of range for this level"),
    StatusCode("kCodeOutOfRange", 20, "ValueError", "a code is out of range [0, k)"),
)

OK = 0
BAD_ARGUMENT = 1
OUT_OF_MEMORY = 2
CUDA_ERROR = 3
DUPLICATE_CODES = 10
NON_FINITE = 11
BAD_NODE = 12
CODE_OUT_OF_RANGE = 20

MESSAGES: dict[int, str] = {s.value: s.message for s in STATUS_CODES}


def message(status: int) -> str:
    """The text of a status code ("status <n>" for an unknown one)."""
    return MESSAGES.get(int(status), f"status {int(status)}")


# torch dtype -> the native x_dtype code (C++: enum DType in csrc/status.h)
DTYPE_CODES: dict[torch.dtype, int] = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
