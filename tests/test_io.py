"""pysid._io: atomic writes (old or new file, temp file removed on error) and output checks."""

from __future__ import annotations

import os

import pytest

from pysid._io import atomic_write, check_writable


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_atomic_write_replaces_and_keeps_mode(tmp_path):
    p = tmp_path / "out.bin"
    atomic_write(p, lambda f: f.write(b"new"))
    assert p.read_bytes() == b"new" and not leftovers(tmp_path)
    os.chmod(p, 0o640)
    atomic_write(str(p), lambda f: f.write(b"newer"))
    assert p.read_bytes() == b"newer" and (os.stat(p).st_mode & 0o777) == 0o640


def test_atomic_write_error_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old" and not leftovers(tmp_path)
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "fresh.bin", boom)
    assert not (tmp_path / "fresh.bin").exists() and not leftovers(tmp_path)


def test_atomic_write_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "nope" / "out.bin", lambda f: f.write(b"x"))


def test_check_writable(tmp_path):
    inp = tmp_path / "emb.npy"
    inp.write_bytes(b"data")
    check_writable(tmp_path / "new.npz", inputs=[inp])  # fine
    cases = [
        (dict(path=tmp_path / "missing" / "o.npz"), "does not exist"),
        (dict(path=inp, inputs=[inp], force=True), "also an input"),
        (dict(path=str(tmp_path / "." / "emb.npy"), inputs=[str(inp)], force=True), "also an input"),
        (dict(path=inp), "exists"),
        (dict(path=tmp_path, force=True), "is a folder"),
        (dict(path=""), "empty"),
    ]
    os.symlink(inp, tmp_path / "link.npy")
    cases.append((dict(path=tmp_path / "link.npy", inputs=[inp], force=True), "also an input"))
    os.link(inp, tmp_path / "hard.npy")
    cases.append((dict(path=tmp_path / "hard.npy", inputs=[inp], force=True), "also an input"))
    for kw, msg in cases:
        path = kw.pop("path")
        with pytest.raises(ValueError, match=msg) as e:
            check_writable(path, **kw)
        assert "\n" not in str(e.value)
    check_writable(inp, force=True)  # an existing non-input output with force
    assert inp.read_bytes() == b"data"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_check_writable_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            check_writable(ro / "o.npz")
    finally:
        os.chmod(ro, 0o700)
