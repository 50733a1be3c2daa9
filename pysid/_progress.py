"""Progress reporting for long work: tqdm bars on a terminal, periodic log lines otherwise.

The ``progress=`` argument of :func:`pysid.fit`, :func:`pysid.kmeans` and
:func:`pysid.nn.train_rqvae` accepts:

* ``False`` / ``None``: nothing.
* ``True``: a tqdm bar when stderr is a terminal, nothing otherwise.
* ``"tqdm"``: a tqdm bar (wherever stderr goes).
* ``"log"``: one line on stderr every few seconds with the count, rate and ETA, e.g.
  ``pysid: Lloyd 12/20 (60%) 3.1 it/s, ETA 3 s`` (``PYSID_PROGRESS_INTERVAL`` seconds
  apart, default 5), and a last line when the work took long enough to print one.
* ``"auto"``: ``"tqdm"`` when stderr is a terminal, ``"log"`` otherwise (what the ``pysid``
  command line uses unless ``--quiet``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional

__all__ = ["MODES", "bar", "check_mode"]

MODES = (False, True, None, "tqdm", "log", "auto")


def check_mode(progress: Any) -> Any:
    """Validate a ``progress=`` value (ValueError naming the choices)."""
    if progress in (False, True, None) or progress in ("tqdm", "log", "auto"):
        return progress
    raise ValueError(f"progress must be True, False, 'tqdm', 'log' or 'auto', got {progress!r}")


def _interval() -> float:
    v = os.environ.get("PYSID_PROGRESS_INTERVAL", "")
    try:
        return max(0.0, float(v)) if v else 5.0
    except ValueError:
        return 5.0


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class LogProgress:
    """A tqdm-like object (update, set_postfix, close) that prints a line on stderr at most every
    ``interval`` seconds: ``pysid: DESC n/total (p%) rate it/s, ETA t``."""

    def __init__(self, total: int, desc: str, interval: Optional[float] = None, stream=None):
        self.total, self.desc = int(total), desc
        self.interval = _interval() if interval is None else float(interval)
        self.stream = stream
        self.n = 0
        self.t0 = self.last = time.perf_counter()
        self.printed = 0
        self.postfix = ""
        self.closed = False

    def _line(self, now: float, final: bool = False) -> str:
        el = max(now - self.t0, 1e-9)
        rate = self.n / el
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        s = f"pysid: {self.desc} {self.n}/{self.total}{pct} {rate:.3g} it/s"
        if final:
            s += f", done in {_fmt_seconds(el)}"
        elif rate > 0 and self.total:
            s += f", ETA {_fmt_seconds(max(self.total - self.n, 0) / rate)}"
        return s + (f" [{self.postfix}]" if self.postfix else "")

    def _emit(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)
        self.printed += 1

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.perf_counter()
        if now - self.last >= self.interval and not self.closed:
            self.last = now
            self._emit(self._line(now))

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.printed:  # work long enough to have reported: say when it ends
            self._emit(self._line(time.perf_counter(), final=True))


def bar(progress: Any, total: int, desc: str):
    """A progress object for ``total`` steps (``update``, ``set_postfix``, ``close``), or None."""
    progress = check_mode(progress)
    if not progress or total <= 0:
        return None
    if progress == "auto":
        progress = "tqdm" if _stderr_is_tty() else "log"
    if progress == "log":
        return LogProgress(total, desc)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return LogProgress(total, desc)
    # True: only on a terminal (tqdm's disable=None); "tqdm": always
    return tqdm(total=total, desc=desc, leave=False, disable=None if progress is True else False)
