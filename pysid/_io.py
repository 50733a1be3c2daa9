"""Atomic file outputs and output-path checks (shared by ``SemanticIds.save`` and the CLI).

    check_writable("out.npz", inputs=["emb.npy"], force=False)   # before the work starts
    atomic_write("out.npz", lambda f: np.savez(f, **arrays))     # old file or new file, never half

``atomic_write`` writes to a temporary file in the target's folder, flushes and fsyncs it,
renames it over the target (``os.replace``, atomic on POSIX and Windows within one file
system) and fsyncs the folder, so that a crash or ``kill -9`` at any moment leaves either the
old file or the complete new one. The temporary file is removed on any error (a process
killed by SIGKILL cannot clean up: its ``.<name>.<random>.tmp`` file stays behind, the target
is intact).
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Callable, Iterable, Union

__all__ = ["atomic_write", "check_writable"]

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write_fn: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` atomically: ``write_fn(f)`` writes the bytes to a binary file object.

    The target is replaced only after ``write_fn`` returned and the data reached the disk; on
    any error (raised by ``write_fn``, a full disk, ...) the target is untouched and the
    temporary file (``.<name>.<random>.tmp`` in the same folder) is removed. A new file gets
    the permissions a plain ``open(path, "wb")`` would give it (umask applied); an existing
    file keeps its mode."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open a folder
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a folder
        pass
    finally:
        os.close(dfd)


def check_writable(path: PathLike, *, inputs: Iterable[PathLike] = (), force: bool = False) -> None:
    """Raise ``ValueError`` (one line) unless ``path`` can be written as a new output.

    Refused: a missing output folder, a folder without write permission, an output that is
    one of ``inputs`` (same file, also through links), an output that is a folder, and an
    existing output when ``force`` is False. Call it before the work starts."""
    p = os.fspath(path)
    if p == "":
        raise ValueError("output path is empty")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise ValueError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {folder} is not writable")
    if os.path.isdir(p):
        raise ValueError(f"output {p} is a folder")
    real = os.path.realpath(p)
    for inp in inputs:
        q = os.fspath(inp)
        same = os.path.realpath(q) == real
        if not same and os.path.exists(p) and os.path.exists(q):
            try:
                same = os.path.samefile(p, q)
            except OSError:
                same = False
        if same:
            raise ValueError(f"output {p} is also an input: choose another output file")
    if os.path.exists(p) and not force:
        raise ValueError(f"output {p} exists: refusing to overwrite it (--force / force=True overwrites)")
