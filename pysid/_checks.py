"""Input checks shared by the ops and the algorithms: one wording for each rule."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "check_int", "check_precision", "check_tensor", "nonfinite_rows"]


def check_tensor(x: Any, name: str) -> Tensor:
    """x itself; TypeError ``"<name> must be a torch.Tensor, got <type>"`` otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_int(name: str, v: Any, low: int = 1, *, what: str = "an int") -> int:
    """v itself when it is a Python int (not a bool) >= low; ValueError
    ``"<name> must be an int >= <low>, got <v!r>"`` otherwise."""
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be {what} >= {low}, got {v!r}")
    return v


PRECISIONS = ("exact", "fast")


def check_precision(precision: Any) -> str:
    """precision itself when it is "exact" or "fast"; ValueError
    ``'precision must be "exact" or "fast", got <precision!r>'`` otherwise."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f'precision must be "exact" or "fast", got {precision!r}')
    return precision


def nonfinite_rows(x: Tensor) -> Optional[Tensor]:
    """Indices of x's rows [N, D] holding NaN/Inf, or None when every value is finite.

    Fast path: the column sums of a finite matrix are finite unless they overflow, and
    NaN/Inf always reaches its column's sum, so one reduction (no [N, D] mask) clears the
    common case; only a non-finite sum pays for the exact per-row check."""
    if x.numel() == 0 or bool(torch.isfinite(x.sum(0, dtype=torch.float32)).all()):
        return None
    bad = (~torch.isfinite(x)).any(1).nonzero()[:, 0]
    return bad if bad.numel() else None
