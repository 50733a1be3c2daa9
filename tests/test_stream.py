"""pysid.stream.encode_shards: shards on disk -> Parquet parts, equal to SemanticIds.encode_result on
all rows at once, resumable after a crash (kill -9 included), with clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import pysid
from pysid import stream

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

D = 16


@pytest.fixture(scope="module")
def table():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, D, generator=g)
    return pysid.fit(x, levels=2, codebook_size=8, progress=False)


def _data(n, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)).astype(dtype)
    x[5:40] = x[0]  # equal rows: long runs of one tuple
    return x


def _expected(table, x, ids):
    res = table.encode_result(torch.from_numpy(np.ascontiguousarray(x)), item_ids=torch.from_numpy(ids))
    return res


def _check(out, table, x, ids):
    res = _expected(table, x, ids)
    got = stream.read_output(out)
    L = table.num_levels
    np.testing.assert_array_equal(got["item_id"], ids)
    np.testing.assert_array_equal(np.stack([got[f"level_{j}"] for j in range(L)], 1), res.codes[:, :L].numpy())
    np.testing.assert_array_equal(got["suffix"], res.codes[:, L].numpy())
    np.testing.assert_array_equal(got["known"], res.known.numpy())
    return got


def _check_any(out, table, x, ids):
    """The output equals encode_result, with or without a suffix column (a reassign table's new rows
    get the suffix level only when some are left on a taken tuple)."""
    res = _expected(table, x, ids)
    got = stream.read_output(out)
    L = table.num_levels
    np.testing.assert_array_equal(got["item_id"], ids)
    np.testing.assert_array_equal(np.stack([got[f"level_{j}"] for j in range(L)], 1), res.codes[:, :L].numpy())
    assert ("suffix" in got) == (res.codes.shape[1] == L + 1)
    if "suffix" in got:
        np.testing.assert_array_equal(got["suffix"], res.codes[:, L].numpy())
    np.testing.assert_array_equal(got["known"], res.known.numpy())
    return got, res


def _write_npy_shards(tmp_path, x, sizes):
    d = tmp_path / "in"
    d.mkdir()
    a = 0
    for i, n in enumerate(sizes):
        np.save(d / f"shard-{i}.npy", x[a : a + n])
        a += n
    return d


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_npy_shards_equal_encode(table, tmp_path, dtype):
    """Three unequal .npy shards (a folder), chunks that do not divide them, ids from position + first_id
    overlapping the table's ids (rows 400..499 are table items: their table IDs come back)."""
    x = _data(1300, 1, dtype)
    d = _write_npy_shards(tmp_path, x, [700, 1, 599])
    out = tmp_path / "out"
    s = stream.encode_shards(table, d, out, chunk_rows=128, first_id=400)
    ids = np.arange(400, 1700)
    got = _check(out, table, x, ids)
    assert s.rows == 1300 and s.known_rows == 100 and s.new_rows == 1200 and s.chunks_skipped == 0
    assert s.chunks == 6 + 1 + 5 == len(s.parts) and all(os.path.exists(p) for p in s.parts)
    assert s.max_suffix == int(got["suffix"].max()) > 30  # the equal rows are numbered
    assert os.path.exists(out / "_SUCCESS") and not os.path.exists(out / "_work")
    assert json.loads((out / "_manifest.json").read_text())["complete"] is True
    # a second call finds the run complete and does nothing
    again = stream.encode_shards(table, d, out, chunk_rows=128, first_id=400)
    assert again.chunks_skipped == again.chunks == s.chunks and again.rows == 1300
    # a glob and an explicit list give the same
    out2 = tmp_path / "out2"
    stream.encode_shards(table, [str(d / "shard-0.npy"), str(d / "shard-[12].npy")], out2, chunk_rows=1000,
                         first_id=400, prefetch=False, progress=True)
    _check(out2, table, x, ids)


@pytest.mark.parametrize("kind", ["fixed", "list"])
def test_parquet_shards_equal_encode(table, tmp_path, kind):
    """Parquet with an id column and a list / fixed-size list column, several row groups not aligned
    with the chunks; ids not in order, some of them table items."""
    x = _data(900, 2)
    rng = np.random.default_rng(3)
    ids = 1000 + rng.permutation(5000)[:900].astype(np.int64)
    ids[:50] = np.arange(50)  # table items
    d = tmp_path / "in"
    d.mkdir()
    for i, (a, b) in enumerate([(0, 400), (400, 900)]):
        flat = pa.array(x[a:b].reshape(-1))
        col = (pa.FixedSizeListArray.from_arrays(flat, D) if kind == "fixed"
               else pa.ListArray.from_arrays(pa.array(np.arange(0, (b - a) * D + 1, D, dtype=np.int32)), flat))
        pq.write_table(pa.table({"item_id": ids[a:b], "embedding": col}), d / f"p{i}.parquet", row_group_size=70)
    s = stream.encode_shards(table, str(d / "*.parquet"), tmp_path / "out", chunk_rows=128)
    _check(tmp_path / "out", table, x, ids)
    assert s.known_rows == 50


def test_mismatched_dim_and_bad_inputs(table, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "a.npy", _data(10, 0))
    np.save(d / "b.npy", np.zeros((10, D + 1), np.float32))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"b\.npy: embeddings have D=17, the table expects D=16"):
        stream.encode_shards(table, d, out)
    assert not out.exists()  # checked before any work
    os.remove(d / "b.npy")
    np.save(d / "c.npy", np.zeros((4, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"c\.npy: embeddings must be \[N, D\]"):
        stream.encode_shards(table, d, out)
    os.remove(d / "c.npy")
    np.save(d / "t.npy", _data(100, 0))
    with open(d / "t.npy", "r+b") as f:  # truncated
        f.truncate(os.path.getsize(d / "t.npy") - 100)
    with pytest.raises(ValueError, match=r"t\.npy is truncated"):
        stream.encode_shards(table, d, out)
    with pytest.raises(ValueError, match="matches no file"):
        stream.encode_shards(table, str(tmp_path / "nothing-*.npy"), out)
    with pytest.raises(ValueError, match="no such file"):
        stream.encode_shards(table, tmp_path / "missing.npy", out)
    with pytest.raises(ValueError, match="chunk_rows"):
        stream.encode_shards(table, d / "a.npy", out, chunk_rows=0)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"\.npy or \.parquet"):
        stream.encode_shards(table, tmp_path / "x.txt", out)
    pq.write_table(pa.table({"item_id": [1], "vec": [[1.0] * D]}), tmp_path / "n.parquet")
    with pytest.raises(ValueError, match="no column 'embedding'"):
        stream.encode_shards(table, tmp_path / "n.parquet", out)
    pq.write_table(pa.table({"embedding": [[1.0] * D, [1.0] * (D - 1)]}), tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match="row 1 has an embedding of length 15, expected 16"):
        stream.encode_shards(table, tmp_path / "ragged.parquet", tmp_path / "out3")


def test_output_folder_problems(table, tmp_path):
    np.save(tmp_path / "a.npy", _data(50, 0))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        stream.encode_shards(table, tmp_path / "a.npy", tmp_path / "file")
    with pytest.raises(ValueError, match="does not exist"):
        stream.encode_shards(table, tmp_path / "a.npy", tmp_path / "no" / "such" / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty .*notes.txt"):
        stream.encode_shards(table, tmp_path / "a.npy", busy)
    assert os.listdir(busy) == ["notes.txt"]
    out = tmp_path / "out"
    stream.encode_shards(table, tmp_path / "a.npy", out, chunk_rows=16)
    # another table / a changed input: refused, unless overwrite
    other = pysid.fit(torch.randn(300, D), levels=2, codebook_size=8, progress=False)
    with pytest.raises(ValueError, match="other inputs, settings or table"):
        stream.encode_shards(other, tmp_path / "a.npy", out, chunk_rows=16)
    x2 = _data(60, 5)
    np.save(tmp_path / "a.npy", x2)
    with pytest.raises(ValueError, match="other inputs"):
        stream.encode_shards(table, tmp_path / "a.npy", out, chunk_rows=16)
    stream.encode_shards(table, tmp_path / "a.npy", out, chunk_rows=16, overwrite=True)
    _check(out, table, x2, np.arange(60))
    assert len([f for f in os.listdir(out) if f.startswith("part-")]) == 4
    with pytest.raises(ValueError, match="inside the output folder"):
        stream.encode_shards(table, str(out / "*.parquet"), out)
    reassign = pysid.fit(torch.randn(300, D), levels=2, codebook_size=8, dedup="reassign", progress=False)
    stream.encode_shards(reassign, tmp_path / "a.npy", tmp_path / "out4")  # reassign tables stream too
    _check_any(tmp_path / "out4", reassign, x2, np.arange(60))


def test_shard_failing_mid_run_then_resume(table, tmp_path, monkeypatch):
    """NaN rows in the second shard: ValueError naming the shard and rows after the first shard's chunks were
    written; the output is not complete. A crash (an exception in chunk 5) then a rerun: the chunks done
    are skipped, the result equals the one-shot run."""
    x = _data(600, 4)
    bad = x.copy()
    bad[450] = np.nan
    d = _write_npy_shards(tmp_path, bad, [300, 300])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"shard-1\.npy rows 100\.\.199 has NaN/Inf in 1 row"):
        stream.encode_shards(table, d, out, chunk_rows=100)
    with pytest.raises(ValueError, match="not complete"):
        stream.read_output(out)
    assert not os.path.exists(out / "_SUCCESS") and not any(f.startswith("part-") for f in os.listdir(out))
    assert sorted(os.listdir(out / "_work")) == [f"chunk-{j:06d}.npz" for j in range(4)]

    d2 = tmp_path / "good"
    d2.mkdir()
    np.save(d2 / "a.npy", x[:300])
    np.save(d2 / "b.npy", x[300:])
    real = stream._encode_chunk
    calls = []

    def crash(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(stream, "_encode_chunk", crash)
    out2 = tmp_path / "out2"
    with pytest.raises(KeyboardInterrupt):
        stream.encode_shards(table, d2, out2, chunk_rows=100)
    monkeypatch.setattr(stream, "_encode_chunk", real)
    s = stream.encode_shards(table, d2, out2, chunk_rows=100)
    assert s.chunks == 6 and s.chunks_skipped == 4
    _check(out2, table, x, np.arange(600))


_KILL_SCRIPT = r"""
import sys, time, torch, pysid
from pysid import stream
real = stream._encode_chunk
def slow(*a, **k):
    time.sleep(0.15)
    return real(*a, **k)
stream._encode_chunk = slow
table = pysid.SemanticIds.load(sys.argv[1])
stream.encode_shards(table, sys.argv[2], sys.argv[3], chunk_rows=50)
print("finished")
"""


def test_kill9_mid_run_then_resume_equals_one_shot(table, tmp_path):
    x = _data(1500, 6)
    d = _write_npy_shards(tmp_path, x, [800, 700])
    table.save(tmp_path / "t.npz")
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "t.npz"), str(d), str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    work = out / "_work"
    while time.time() < deadline:
        done = len([f for f in os.listdir(work) if f.endswith(".npz")]) if work.exists() else 0
        if done >= 5 or p.poll() is not None:
            break
        time.sleep(0.02)
    assert p.poll() is None, p.communicate()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = len([f for f in os.listdir(work) if f.endswith(".npz")])
    assert 5 <= done < 30 and not os.path.exists(out / "_SUCCESS")
    s = stream.encode_shards(table, d, out, chunk_rows=50)
    assert s.chunks == 30 and s.chunks_skipped == done
    one = tmp_path / "one"
    stream.encode_shards(table, d, one, chunk_rows=50)
    a, b = stream.read_output(out), stream.read_output(one)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    _check(out, table, x, np.arange(1500))
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["none", "rq-vae"])
def test_other_tables(tmp_path, kind):
    """dedup="none": no suffix column, codes as encode_result gives them; rq-vae: the encoder's latents."""
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(300, D, generator=g)
    if kind == "none":
        t = pysid.fit(x0, levels=2, codebook_size=8, dedup="none", progress=False)
    else:
        t = pysid.fit(x0, method="rq-vae", levels=2, codebook_size=8, progress=False,
                      rqvae_options={"epochs": 2, "latent": 4})
    x = _data(500, 8)
    np.save(tmp_path / "a.npy", x)
    stream.encode_shards(t, tmp_path / "a.npy", tmp_path / "out", chunk_rows=64)
    got = stream.read_output(tmp_path / "out")
    res = _expected(t, x, np.arange(500))
    L = t.num_levels
    np.testing.assert_array_equal(np.stack([got[f"level_{j}"] for j in range(L)], 1), res.codes[:, :L].numpy())
    if kind == "none":
        assert "suffix" not in got and res.codes.shape[1] == L
    else:
        np.testing.assert_array_equal(got["suffix"], res.codes[:, L].numpy())


def test_cli_encode_out_dir(table, tmp_path, capsys):
    """`pysid encode SIDS 'in/*.npy' --out-dir DIR`: the parts of encode_shards with first_id = the
    table's largest id + 1 (rows without ids are new items); the same command again resumes."""
    from pysid.cli import main

    x = _data(900, 3)
    _write_npy_shards(tmp_path, x, [300, 100, 500])
    table.save(tmp_path / "sids.npz")
    args = ["encode", str(tmp_path / "sids.npz"), str(tmp_path / "in" / "*.npy"), "--out-dir", str(tmp_path / "o"),
            "--chunk-rows", "128", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "encoded 900 items in 8 parts: 0 known items" in out and "wrote " in out
    ids = np.arange(900) + int(table.item_ids.max()) + 1
    _check(tmp_path / "o", table, x, ids)
    assert main(args) == 0
    assert "8 of them done by an earlier run" in capsys.readouterr().out
    _check(tmp_path / "o", table, x, ids)


def test_cli_encode_out_dir_reassign(tmp_path, capsys):
    """`pysid encode REASSIGN.npz ... --out-dir DIR` (refused before reassign was streamed): the parts
    equal encode_result of all rows, moved codes included."""
    from pysid.cli import main

    g = torch.Generator().manual_seed(9)
    t = pysid.fit(torch.randn(80, D, generator=g), levels=2, codebook_size=16, dedup="reassign", progress=False)
    t.save(tmp_path / "r.npz")
    x = _data(300, 4)
    _write_npy_shards(tmp_path, x, [100, 200])
    args = ["encode", str(tmp_path / "r.npz"), str(tmp_path / "in" / "*.npy"), "--out-dir", str(tmp_path / "o"),
            "--chunk-rows", "64", "--quiet"]
    assert main(args) == 0
    assert "encoded 300 items" in capsys.readouterr().out
    got, res = _check_any(tmp_path / "o", t, x, np.arange(300) + int(t.item_ids.max()) + 1)
    raw = pysid.residual_quantize(torch.from_numpy(x), t.codebooks).codes[:, 1].numpy()
    assert (got["level_1"] != raw).any()  # rows moved


@pytest.mark.parametrize("case", ["leftovers", "all-moved", "known-rows", "parquet", "rq-vae"])
def test_reassign_table_equals_encode(tmp_path, case):
    """dedup="reassign": the final pass finds the movers from the keys, reads their rows again, computes
    their m nearest last-level codewords and moves them - the output equals encode_result of all rows
    at once, bit for bit (moved codes, suffix column only when rows are left over, table items known)."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(80, D, generator=g)
    size = 16
    kw = {"method": "rq-vae", "rqvae_options": {"epochs": 2, "latent": 4}} if case == "rq-vae" else {}
    t = pysid.fit(x0, levels=2, codebook_size=size, dedup="reassign", progress=False, **kw)
    n = 16 if case == "all-moved" else 700
    x = _data(n, 11, np.float16 if case == "parquet" else np.float32)
    if case == "all-moved":  # no run of equal rows: every colliding row finds a free code
        x = np.random.default_rng(11).standard_normal((n, D)).astype(np.float32)
    ids = np.arange(n) + (0 if case == "known-rows" else 10_000)  # known-rows: ids 0..79 are the table's
    if case == "known-rows":
        x[:80:2] = x0[::2].numpy()  # half of them with their table embedding, half with another
    if case == "parquet":  # float16-rounded values in a float32 list column, ids from the file
        tab = pa.table({"embedding": pa.array(list(x.astype(np.float32)), pa.list_(pa.float32())),
                        "item_id": pa.array(ids, pa.int64())})
        pq.write_table(tab, tmp_path / "a.parquet", row_group_size=37)
        src = tmp_path / "a.parquet"
        x = x.astype(np.float32)
    else:
        src = _write_npy_shards(tmp_path, x, [n // 3, 0, n - n // 3])
    s = stream.encode_shards(t, src, tmp_path / "out", chunk_rows=64, first_id=int(ids[0]))
    got, res = _check_any(tmp_path / "out", t, x, ids)
    if case == "known-rows":
        assert got["known"][:80].all() and not got["known"][80:].any()
    raw = t.encode_result(torch.from_numpy(np.ascontiguousarray(x)), item_ids=torch.from_numpy(ids))
    assert s.rows == n
    moved = got["level_1"] != pysid.residual_quantize(
        pysid.sid._method(t.method).latents(t, torch.from_numpy(np.ascontiguousarray(x))), t.codebooks).codes[:, 1].numpy()
    assert moved[~got["known"]].any()  # the rule moved rows
    if case == "all-moved":
        assert "suffix" not in got and raw.codes.shape[1] == 2
    elif case == "leftovers":
        assert "suffix" in got and (got["suffix"] > 0).any()


def test_reassign_resume_after_crash(tmp_path, monkeypatch):
    """A reassign run that crashes in the chunk pass, then in the reassign pass (reading a shard), then
    resumes: the result equals encode_result; the output is never marked complete before."""
    g = torch.Generator().manual_seed(5)
    t = pysid.fit(torch.randn(300, D, generator=g), levels=2, codebook_size=8, dedup="reassign", progress=False)
    x = _data(400, 12)
    d = _write_npy_shards(tmp_path, x, [200, 200])
    out = tmp_path / "out"
    real = stream._encode_chunk
    calls = []

    def crash(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(stream, "_encode_chunk", crash)
    with pytest.raises(KeyboardInterrupt):
        stream.encode_shards(t, d, out, chunk_rows=50)
    monkeypatch.setattr(stream, "_encode_chunk", real)
    real_read = stream._read_chunk
    reads = []

    def crash_read(*a, **k):  # the chunk pass reads 6 chunks; the 8th read is in the reassign pass
        reads.append(1)
        if len(reads) == 8:
            raise KeyboardInterrupt("simulated crash in the final pass")
        return real_read(*a, **k)

    monkeypatch.setattr(stream, "_read_chunk", crash_read)
    with pytest.raises(KeyboardInterrupt):
        stream.encode_shards(t, d, out, chunk_rows=50, prefetch=False)
    with pytest.raises(ValueError, match="not complete"):
        stream.read_output(out)
    assert len(reads) == 8
    monkeypatch.setattr(stream, "_read_chunk", real_read)
    s = stream.encode_shards(t, d, out, chunk_rows=50)
    assert s.chunks == 8 and s.chunks_skipped == 8
    _check_any(out, t, x, np.arange(400))
