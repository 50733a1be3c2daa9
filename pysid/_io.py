"""Safe file output: atomic replacement and checks made before any work starts.

    check_writable("out/sids.npz", inputs=["emb.npy"], force=False)   # ValueError, one line
    atomic_write("out/sids.npz", lambda f: np.savez(f, **arrays))

``atomic_write`` writes to a temporary file in the target's folder, flushes and fsyncs it,
then ``os.replace``-s it over the target (and fsyncs the folder where the platform allows):
a crash or kill at any moment leaves either the old file or the new one, never a partial
file. The temporary file is removed if writing fails.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Any, Callable, Iterable, Union

__all__ = ["atomic_write", "check_writable"]

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write_fn: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write_fn(f)`` on a binary file object, then atomically replace ``path`` with it.

    The new file gets the permissions a plain ``open(path, "wb")`` would give (umask), or the
    old file's permissions when it replaces one."""
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
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


def check_writable(path: PathLike, *, inputs: Iterable[PathLike] = (), force: bool = False) -> None:
    """Raise a one-line ValueError if ``path`` cannot or should not be written: its folder is
    missing or not writable, it is one of ``inputs`` (the same file), it is a folder, or it
    exists and ``force`` is False. Call it before the work that produces the output."""
    path = os.fspath(path)
    if not path:
        raise ValueError("the output path is empty")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{path}: the output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: the output folder {folder} is not writable")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a file")
    for inp in inputs:
        if inp is None:
            continue
        inp = os.fspath(inp)
        same = os.path.abspath(inp) == os.path.abspath(path)
        if not same and os.path.exists(inp) and os.path.exists(path):
            try:
                same = os.path.samefile(inp, path)
            except OSError:
                same = False
        if same:
            raise ValueError(f"{path}: the output is an input file; choose another output name")
    if os.path.exists(path) and not force:
        raise ValueError(f"{path}: exists (force=True overwrites it)")
