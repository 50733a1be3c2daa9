"""Bad inputs to the ``pysid`` command line, table-driven: each ends with exactly one line
``pysid: error: ...`` naming the cause, exit status 2, no traceback, and no file in the working
folder created, changed or removed (names, bytes and modification times compared)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pysid
from pysid.cli import main

# (argv, substring of the error message); {cuda} cases are skipped on a machine with CUDA.
CASES = [
    # ---- unreadable embeddings
    (["fit", "missing.npy", "-o", "out.npz"], "missing.npy: no such file"),
    (["fit", "empty.npy", "-o", "out.npz"], "empty.npy: the file is empty (0 bytes)"),
    (["fit", "empty.npz", "-o", "out.npz"], "empty.npz: the file is empty (0 bytes)"),
    (["fit", "text.npy", "-o", "out.npz"], "text.npy: not a numpy .npy file"),
    (["fit", "trunc_emb.npz", "-o", "out.npz"], "trunc_emb.npz: cannot read: the file is truncated or corrupt"),
    (["fit", "corrupt.npz", "-o", "out.npz"], "corrupt.npz: cannot read: the file is truncated or corrupt"),
    (["fit", "trunc.npy", "-o", "out.npz"], "trunc.npy: cannot read"),
    (["fit", "object.npy", "-o", "out.npz"], "object.npy: cannot read"),
    (["fit", "emb.txt", "-o", "out.npz"], "unknown extension '.txt'"),
    (["fit", "folder", "-o", "out.npz"], "folder: the folder holds no .npy/.npz/.pt/.pth file"),
    (["fit", "good.npz", "--key", "nope", "-o", "out.npz"], "no array 'nope'"),
    (["fit", "good.npy", "--key", "x", "-o", "out.npz"], "--key applies to .npz and .pt"),
    (["fit", "dict.pt", "-o", "out.npz"], "choose one with --key"),
    # ---- bad embedding values
    (["fit", "nan.npy", "-o", "out.npz"], "NaN/Inf in 2 row(s), e.g. rows [4, 17]"),
    (["fit", "flat.npy", "-o", "out.npz"], "non-empty [N, D] matrix"),
    (["fit", "int.npy", "-o", "out.npz"], "floating point"),
    (["fit", "huge.npy", "-o", "out.npz"], "would overflow float32 - divide the embeddings"),
    (["fit", "tiny.npy", "-o", "out.npz"], "would underflow float32 (all items in one tuple) - multiply"),
    # ---- bad options
    (["fit", "good.npy", "-o", "out.npz", "--codebook-size", "abc"], "argument --codebook-size: invalid value 'abc'"),
    (["fit", "good.npy", "-o", "out.npz", "--codebook-size", "8,0"], "argument --codebook-size: invalid value '8,0'"),
    (["fit", "good.npy", "-o", "out.npz", "--levels", "2", "--codebook-size", "8,8,8"], "3 sizes for --levels 2"),
    (["fit", "good.npy", "-o", "out.npz", "--codebook-size", "1000"], "larger than the number of items 300"),
    (["fit", "good.npy", "-o", "out.npz", "--levels", "0"], "argument --levels: invalid value '0'"),
    (["fit", "good.npy", "-o", "out.npz", "--iters", "0"], "argument --iters: invalid value '0': expected an integer >= 1"),
    (["fit", "good.npy", "-o", "out.npz", "--sample", "0"], "argument --sample: invalid value '0': expected an item count >= 1"),
    (["fit", "good.npy", "-o", "out.npz", "--sample", "1.5"], "argument --sample: invalid value '1.5': a fraction must be in (0, 1]"),
    (["fit", "good.npy", "-o", "out.npz", "--sample", "abc"], "argument --sample: invalid value 'abc': expected an item count"),
    (["fit", "good.npy", "-o", "out.npz", "--beam-width", "0"], "argument --beam-width"),
    (["fit", "good.npy", "-o", "out.npz", "--seed", "1.5"], "argument --seed: invalid int value"),
    (["fit", "good.npy", "-o", "out.npz", "--method", "pq"], "argument --method: invalid choice"),
    (["fit", "good.npy", "-o", "out.npz", "--device", "bogus"], "--device bogus: not a device"),
    (["fit", "good.npy", "-o", "out.npz", "--device", "cuda"], "{cuda}--device cuda: CUDA is not available"),
    (["fit", "good.npy", "-o", "out.npz", "--device", "meta"], "--device meta: pysid runs on cpu or cuda"),
    (["fit", "good.npy", "-o", "out.npz", "--epochs", "3"], "--epochs applies to --method rq-vae"),
    (["fit", "good.npy", "-o", "out.npz", "--method", "rq-vae", "--balanced"], "--balanced applies to --method rq-kmeans"),
    (["fit", "good.npy", "-o", "out.npz", "--method", "rq-vae", "--epochs", "0"], "argument --epochs"),
    (["fit", "good.npy"], "the following arguments are required: -o/--output"),
    # ---- outputs (checked before the work)
    (["fit", "good.npy", "-o", "good.npy", "--force"], "good.npy is also an input: choose another output file"),
    (["fit", "good.npy", "-o", "sids.npz"], "output sids.npz exists: refusing to overwrite it"),
    (["fit", "good.npy", "-o", "nodir/out.npz"], "does not exist"),
    (["fit", "good.npy", "-o", "folder"], "output folder is a folder"),
    (["fit", "nan.npy", "-o", "sids.npz"], "output sids.npz exists"),  # the output check comes first
    # ---- item ids
    (["fit", "good.npy", "-o", "out.npz", "--item-ids", "ids_float.npy"], "item ids must be integers, got dtype float64"),
    (["fit", "good.npy", "-o", "out.npz", "--item-ids", "ids_float.txt"], "ids_float.txt:3: item ids must be integers, found '2.5'"),
    (["fit", "good.npy", "-o", "out.npz", "--item-ids", "ids_dup.txt"], "duplicate item id 7"),
    (["fit", "good.npy", "-o", "out.npz", "--item-ids", "ids_neg.txt"], "negative item id -1"),
    (["fit", "good.npy", "-o", "out.npz", "--item-ids", "ids_short.txt"], "10 item ids for 300 embedding rows"),
    (["fit", "good.npy", "-o", "out.npz", "--item-ids", "ids_2d.npy"], "1-D array"),
    (["fit", "good.npy", "-o", "out.npz", "--item-ids", "text.npy"], "not a numpy .npy file"),
    # ---- encode
    (["encode", "trunc.npz", "good.npy", "-o", "c.npy"], "trunc.npz: cannot read: the file is truncated or corrupt"),
    (["encode", "corrupt.npz", "good.npy", "-o", "c.npy"], "cannot read: the file is truncated or corrupt"),
    (["encode", "empty.npz", "good.npy", "-o", "c.npy"], "the file is empty (0 bytes)"),
    (["encode", "good.npy", "good.npy", "-o", "c.npy"], "not a pysid SemanticIds file"),
    (["encode", "good.npz", "good.npy", "-o", "c.npy"], "not a pysid SemanticIds file"),
    (["encode", "sids.npz", "text.npy", "-o", "c.npy"], "text.npy: not a numpy .npy file"),
    (["encode", "sids.npz", "empty.npy", "-o", "c.npy"], "empty.npy: the file is empty"),
    (["encode", "sids.npz", "wide.npy", "-o", "c.npy"], "D=5"),
    (["encode", "sids.npz", "good.npy", "-o", "codes.npy"], "output codes.npy exists: refusing to overwrite it"),
    (["encode", "sids.npz", "good.npy", "-o", "codes"], "output codes.npy exists"),  # the name numpy would write
    (["encode", "sids.npz", "good.npy", "-o", "good", "--force"], "good.npy is also an input: choose another output file"),
    (["encode", "sids.npz", "good.npy"], "-o/--output is required"),
    (["encode", "sids.npz", "good.npy", "--add"], "--add needs --in-place"),
    (["encode", "sids.npz", "good.npy", "-o", "c.npy", "--in-place"], "apply with --add"),
    (["encode", "sids.npz", "good.npy", "--add", "--table-out", "sids.npz"], "sids.npz is also an input"),
    (["encode", "sids.npz", "good.npy", "--add", "--in-place", "--item-ids", "ids_float.txt"], "must be integers"),
    # ---- several embedding files (fit) and streamed encode (--out-dir)
    (["fit", "good.npy", "wide.npy", "-o", "out.npz"], "wide.npy: embeddings have D=5, good.npy has D=8"),
    (["fit", "nomatch*.npy", "-o", "out.npz"], "nomatch*.npy: the pattern matches no file"),
    (["encode", "sids.npz", "good.npy", "good.npy", "-o", "c.npy"], "give --out-dir DIR"),
    (["encode", "sids.npz", "folder", "-o", "c.npy"], "give --out-dir DIR"),
    (["encode", "sids.npz", "good.npy", "-o", "c.npy", "--chunk-rows", "10"], "--chunk-rows applies with --out-dir"),
    (["encode", "sids.npz", "good.npy", "--out-dir", "out", "-o", "c.npy"], "-o/--output does not apply with --out-dir"),
    (["encode", "sids.npz", "good.npy", "--out-dir", "out", "--add"], "--add does not apply with --out-dir"),
    (["encode", "sids.npz", "good.npy", "--out-dir", "out", "--chunk-rows", "0"], "argument --chunk-rows"),
    (["encode", "sids.npz", "folder", "--out-dir", "out"], "folder holds no .npy or .parquet file"),
    (["encode", "sids.npz", "nomatch*.npy", "--out-dir", "out"], "matches no file"),
    (["encode", "sids.npz", "emb.txt", "--out-dir", "out"], "inputs must be .npy or .parquet files"),
    (["encode", "sids.npz", "good.npy", "wide.npy", "--out-dir", "out"], "wide.npy: embeddings have D=5, the table expects D=8"),
    (["encode", "sids.npz", "text.npy", "--out-dir", "out"], "text.npy is not a readable .npy file"),
    (["encode", "sids.npz", "trunc.npy", "--out-dir", "out"], "trunc.npy is truncated"),
    (["encode", "sids.npz", "good.npy", "--out-dir", "good.npy"], "is a file, not a folder"),
    (["encode", "sids.npz", "good.npy", "--out-dir", "nodir/out"], "does not exist"),
    (["encode", "trunc.npz", "good.npy", "--out-dir", "out"], "trunc.npz: cannot read"),
    # ---- stats
    (["stats", "trunc.npz"], "trunc.npz: cannot read: the file is truncated or corrupt"),
    (["stats", "empty.npz"], "empty.npz: the file is empty"),
    (["stats", "text.npy"], "not a pysid SemanticIds file"),
    (["stats", "flat.npy"], "not a pysid SemanticIds file"),
    (["stats", "missing.npz"], "missing.npz: no such file"),
    (["stats", "sids.npz", "--embeddings", "wide.npy"], "10 rows for a table of 300 items"),
    (["stats", "sids.npz", "--embeddings", "trunc.npy"], "trunc.npy: cannot read"),
    # ---- demo
    (["demo", "--items", "0"], "argument --items: invalid value '0'"),
    (["demo", "--beam", "0"], "argument --beam: invalid value '0'"),
    (["demo", "--beam", "3", "--topk", "5"], "--topk 5 is larger than --beam 3"),
    (["demo", "--queries", "0"], "argument --queries: invalid value '0'"),
    (["demo", "--items", "10", "--queries", "20"], "--queries 20 is larger than the catalogue (10 items)"),
    (["demo", "--noise", "-1"], "argument --noise"),
    (["demo", "--data", "missing.txt"], "interaction file not found"),
    (["demo", "--data", "empty.txt"], "no interaction sequences"),
    (["demo", "--data", "malformed.txt"], "malformed.txt:2: expected 'user_id item_id ...' as integers, found 'a'"),
    (["demo", "--data", "short.txt"], "fewer than 3 items"),
    (["demo", "--data", "binary.txt"], "not a text file"),
    (["demo", "--data", "folder"], "is a directory"),
    # ---- commands
    (["bench", "nope"], "argument which: invalid choice: 'nope'"),
    (["bench", "--out-dir", "nodir"], "--out-dir nodir: no such folder"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    g = np.random.default_rng(0)
    x = g.normal(size=(300, 8)).astype("float32")
    np.save(d / "good.npy", x)
    np.savez(d / "good.npz", emb=x)
    torch.save({"a": torch.from_numpy(x), "b": torch.from_numpy(x)}, d / "dict.pt")
    (d / "empty.npy").write_bytes(b"")
    (d / "empty.npz").write_bytes(b"")
    (d / "text.npy").write_text("0.1 0.2 0.3\n0.4 0.5 0.6\n")
    (d / "emb.txt").write_text("0.1 0.2\n")
    raw = (d / "good.npz").read_bytes()
    (d / "trunc_emb.npz").write_bytes(raw[: len(raw) // 2])
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    raw = (d / "good.npy").read_bytes()
    (d / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    np.save(d / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "folder").mkdir()
    y = x.copy()
    y[[4, 17], 2] = np.nan
    np.save(d / "nan.npy", y)
    np.save(d / "flat.npy", np.zeros(5, dtype="float32"))
    np.save(d / "int.npy", np.ones((30, 4), dtype="int64"))
    np.save(d / "huge.npy", (x * 1e20).astype("float64"))
    np.save(d / "tiny.npy", x * 1e-30)
    np.save(d / "wide.npy", g.normal(size=(10, 5)).astype("float32"))
    np.save(d / "ids_float.npy", np.arange(300, dtype="float64"))
    np.save(d / "ids_2d.npy", np.arange(300, dtype="int64").reshape(150, 2))
    (d / "ids_float.txt").write_text("0\n1\n2.5\n" + "".join(f"{i}\n" for i in range(3, 300)))
    (d / "ids_dup.txt").write_text("".join(f"{i}\n" for i in range(299)) + "7\n")
    (d / "ids_neg.txt").write_text("-1\n" + "".join(f"{i}\n" for i in range(1, 300)))
    (d / "ids_short.txt").write_text(" ".join(str(i) for i in range(10)))
    (d / "empty.txt").write_text("\n\n")
    (d / "malformed.txt").write_text("1 2 3 4\na b c\n")
    (d / "short.txt").write_text("1 10 11\n2 12 13\n")
    (d / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 50)
    s = pysid.fit(torch.from_numpy(x), levels=2, codebook_size=8, progress=False)
    s.save(d / "sids.npz")
    pysid.fit(torch.from_numpy(x), levels=2, codebook_size=8, dedup="reassign", progress=False).save(d / "reassign.npz")
    raw = (d / "sids.npz").read_bytes()
    (d / "trunc.npz").write_bytes(raw[: len(raw) * 2 // 3])
    np.save(d / "codes.npy", np.zeros((2, 2), dtype="int64"))
    os.utime(d / "codes.npy", ns=(1_000_000_000, 1_000_000_000))  # an old mtime: any rewrite would change it
    return d


def snapshot(folder) -> dict[str, tuple]:
    out = {}
    for root, dirs, names in os.walk(folder):
        for n in dirs + names:
            p = os.path.join(root, n)
            st = os.stat(p)
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest() if os.path.isfile(p) else "dir"
            out[os.path.relpath(p, folder)] = (digest, st.st_mtime_ns, st.st_size)
    return out


@pytest.mark.parametrize("argv,msg", CASES, ids=[" ".join(a) or "(none)" for a, _ in CASES])
def test_bad_input(argv, msg, files, capsys, monkeypatch):
    if msg.startswith("{cuda}"):
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        msg = msg[len("{cuda}"):]
    monkeypatch.chdir(files)
    monkeypatch.delenv("PYSID_DEBUG", raising=False)
    before = snapshot(files)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pysid: error: "), err
    assert msg in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert snapshot(files) == before  # nothing created, changed or removed


def test_the_table_has_enough_cases():
    assert len(CASES) >= 30 and len({tuple(a) for a, _ in CASES}) == len(CASES)


def _pysid_script() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "pysid")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "pysid"]


@pytest.mark.parametrize("runner", ["script", "module"])
@pytest.mark.parametrize("argv,msg", [
    (["fit", "text.npy", "-o", "out.npz"], "not a numpy .npy file"),
    (["fit", "good.npy", "-o", "out.npz", "--codebook-size", "abc"], "invalid value 'abc'"),
    (["stats", "trunc.npz"], "truncated or corrupt"),
    (["demo", "--beam", "0"], "argument --beam"),
    (["fit", "good.npy", "-o", "out.npz", "--device", "bogus"], "not a device"),
])
def test_bad_input_subprocess(runner, argv, msg, files, tmp_path):
    """The same through a real process: the console script and ``python -m pysid``."""
    work = tmp_path / "w"
    shutil.copytree(files, work)
    before = snapshot(work)
    cmd = _pysid_script() if runner == "script" else [sys.executable, "-m", "pysid"]
    env = {k: v for k, v in os.environ.items() if k != "PYSID_DEBUG"}
    res = subprocess.run(cmd + argv, cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pysid: error: ") and msg in lines[0], res.stderr
    assert snapshot(work) == before


def test_debug_shows_the_traceback(files, monkeypatch):
    """PYSID_DEBUG=1: the error propagates (for bug reports) instead of the one-line message."""
    monkeypatch.chdir(files)
    monkeypatch.setenv("PYSID_DEBUG", "1")
    from pysid.cli import CliError

    with pytest.raises(CliError, match="not a numpy .npy file"):
        main(["fit", "text.npy", "-o", "out.npz"])


def test_encode_out_dir_failure_mid_run_leaves_it_incomplete(files, tmp_path, capsys):
    """A shard that fails mid-run (NaN rows in its second chunk): one error line, exit 2, and the
    output folder is marked incomplete (no _SUCCESS, no parts); --force after the fix completes it."""
    from pysid import stream

    x = np.load(files / "good.npy")
    x[250, 3] = np.nan
    np.save(tmp_path / "bad.npy", x)
    out = tmp_path / "out"
    rc = main(["encode", str(files / "sids.npz"), str(tmp_path / "bad.npy"), "--out-dir", str(out),
               "--chunk-rows", "200", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.npy rows 200..299" in err[0] and "NaN/Inf" in err[0], err
    assert not (out / "_SUCCESS").exists() and not list(out.glob("part-*"))
    with pytest.raises(ValueError, match="not complete"):
        stream.read_output(out)
    np.save(tmp_path / "bad.npy", np.load(files / "good.npy"))
    assert main(["encode", str(files / "sids.npz"), str(tmp_path / "bad.npy"), "--out-dir", str(out),
                 "--chunk-rows", "200", "--quiet"]) == 2  # the input changed: refused without --force
    assert "pass --force" in capsys.readouterr().err
    assert main(["encode", str(files / "sids.npz"), str(tmp_path / "bad.npy"), "--out-dir", str(out),
                 "--chunk-rows", "200", "--quiet", "--force"]) == 0
    assert stream.read_output(out)["item_id"].size == 300
