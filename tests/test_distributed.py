"""fit and streamed encode under torch.distributed (gloo, 2-4 CPU processes spawned here):
each rank passes its own, unequal shard; the result equals one process on the union, bit for bit."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import pysid
from conftest import embedding_catalogue

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")

FIT = dict(levels=3, codebook_size=16, iters=4, seed=3, progress=False)
SHARDS = {2: [400, 1100], 3: [700, 123, 677], 4: [1, 600, 299, 600]}


def _entry(rank, world, init_file, out_dir, name, arg):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        try:
            res = globals()[name](rank, world, arg)
        except Exception as e:  # the test asserts every rank's error
            import traceback

            res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        torch.save(res, os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


def spawn(name, world, tmp_path, arg=None) -> list:
    """Run ``name(rank, world, arg) -> dict`` (a function of this module) on ``world`` spawned
    gloo ranks; the ranks' dicts ({"error": ...} when it raised)."""
    import torch.multiprocessing as mp

    sys.path.insert(0, os.path.dirname(__file__))
    mp.start_processes(_entry, args=(world, str(tmp_path / "store"), str(tmp_path), name, arg), nprocs=world,
                       start_method="spawn")
    return [torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in range(world)]


def _bounds(world):
    s = np.cumsum([0] + SHARDS[world])
    return s[:-1], s[1:]


def _catalogue():
    return embedding_catalogue(m=1500, d=12, topics=30, seed=4)


def _table(t: pysid.SemanticIds) -> dict:
    return {"codes": t.codes, "ids": t.item_ids, "books": t.codebooks, "fps": t.fingerprints,
            "collisions": t.collisions, "settings": t.settings, "sizes": t.codebook_sizes}


def _fit_rank(rank, world, opts):
    a, b = _bounds(world)
    x = _catalogue()[a[rank] : b[rank]]
    kw = dict(FIT, **(opts or {}))
    if "sample_by" in kw:
        kw["sample_by"] = kw["sample_by"][a[rank] : b[rank]]
    if kw.pop("own_ids", False):
        kw["item_ids"] = 20_000 - 7 * torch.arange(a[rank], b[rank])
    return _table(pysid.fit(x, **kw))


def _assert_same(got: dict, want: pysid.SemanticIds):
    w = _table(want)
    assert torch.equal(got["codes"], w["codes"])
    assert torch.equal(got["ids"], w["ids"])
    assert torch.equal(got["fps"], w["fps"])
    assert len(got["books"]) == len(w["books"])
    for g, c in zip(got["books"], w["books"]):
        assert torch.equal(g, c)  # bit for bit
    assert got["collisions"] == w["collisions"]
    assert got["settings"] == w["settings"]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_fit_sharded_equals_one_process(world, tmp_path):
    ranks = spawn("_fit_rank", world, tmp_path)
    one = pysid.fit(_catalogue(), **FIT)
    assert one.codes.shape[1] == 4 and int(one.codes[:, 3].max()) > 0  # collisions: the suffix is exercised
    for r in ranks:
        assert "error" not in r, r
        _assert_same(r, one)


@pytest.mark.parametrize("world", [2, 4])
def test_fit_sharded_reassign_equals_one_process(world, tmp_path):
    """dedup="reassign" over 2 and 4 ranks (one of them holds a single row): movers found over the
    union, candidates computed by the rank that holds the row, prefixes solved by their owner."""
    opts = dict(dedup="reassign", reassign_candidates=4)
    ranks = spawn("_fit_rank", world, tmp_path, opts)
    one = pysid.fit(_catalogue(), **FIT, **opts)
    moved = one.codes[:, :3] != pysid.fit(_catalogue(), **FIT, dedup="none").codes
    assert bool(moved.any()) and one.codes.shape[1] == 4   # rows moved, and some left for the suffix
    for r in ranks:
        assert "error" not in r, r
        _assert_same(r, one)


def _labels():
    return torch.arange(1500) % 7


OPTIONS = {"sample": dict(sample=0.4, sample_seed=2), "sample_by": dict(sample=500, sample_by="labels"),
           "ids": dict(own_ids=True), "none": dict(dedup="none"), "beam": dict(beam_width=3, iters=2),
           "reassign": dict(dedup="reassign", reassign_candidates=4)}


def _fit_options(rank, world, _):
    out = {}
    for name, opts in OPTIONS.items():
        opts = dict(opts)
        if opts.get("sample_by") == "labels":
            opts["sample_by"] = _labels()
        out[name] = _fit_rank(rank, world, opts)
    return out


def test_fit_sharded_options_equal_one_process(tmp_path):
    """fit(sample=), stratified samples, the caller's item ids, dedup "none", beam search and dedup
    "reassign" (4 candidates: some rows find no free code, so the suffix level is exercised too)."""
    ranks = spawn("_fit_options", 3, tmp_path)
    for name, opts in OPTIONS.items():
        kw = dict(FIT, **opts)
        if kw.pop("own_ids", False):
            kw["item_ids"] = 20_000 - 7 * torch.arange(1500)
        if kw.get("sample_by") == "labels":
            kw["sample_by"] = _labels()
        one = pysid.fit(_catalogue(), **kw)
        for r in ranks:
            assert "error" not in r, r
            assert "error" not in r[name], (name, r[name])
            _assert_same(r[name], one)


def _bad_case(rank, world, case):
    a, b = _bounds(world)
    x = _catalogue()[a[rank] : b[rank]]
    kw = dict(FIT)
    if case == "dim" and rank == 1:
        x = x[:, :-1]
    elif case == "empty" and rank == 1:
        x = x[:0]
    elif case == "nan" and rank == 1:
        x = x.clone()
        x[5, 2] = float("nan")
    elif case == "settings" and rank == 1:
        kw["seed"] = 4
    elif case == "dtype" and rank == 1:
        x = x.half()
    elif case == "ids":
        kw["item_ids"] = torch.arange(x.shape[0])  # every rank: 0, 1, ...
    elif case == "too_big":
        kw["codebook_size"] = 1501
    return _table(pysid.fit(x, **kw))


BAD = {"dim": "differ in dimension: rank 0 has D=12, rank 1 D=11",
       "empty": "rank 1: embeddings must be a non-empty",
       "nan": "rank 1: embeddings has NaN/Inf in 1 row",
       "settings": "other settings on rank 1",
       "dtype": "differ in dtype",
       "ids": "unique over all ranks",
       "too_big": "larger than the number of items 1500",
       "ok": "no error"}  # after all that, the ranks still agree


def _bad_cases(rank, world, _):
    out = {}
    for case in BAD:
        try:
            _bad_case(rank, world, case)
            out[case] = "no error"
        except (ValueError, TypeError) as e:
            out[case] = str(e)
    return out


def test_fit_sharded_bad_input_stops_every_rank(tmp_path):
    """A bad shard or setting on one rank: every rank raises (none waits in a collective), naming
    the cause; then the process group is still usable (the next case runs)."""
    ranks = spawn("_bad_cases", 2, tmp_path)
    for case, msg in BAD.items():
        for r, res in enumerate(ranks):
            if case in ("empty", "nan") and r == 1:  # the failing rank raises its own error
                msg_r = msg.split("rank 1: ", 1)[1]
            else:
                msg_r = msg
            assert msg_r in res[case], (case, r, res[case])


# --------------------------------------------------------------------------- the CLI under torchrun
def _torchrun(args, nproc, cwd, prelude="", timeout=300):
    """``torchrun --nproc_per_node nproc -m pysid ARGS`` (with ``prelude``: python code run first
    in each process, then pysid.cli.main)."""
    code = f"import sys, os\n{prelude}\nfrom pysid.cli import main\nsys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--no-python", sys.executable, "-c", code, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _write_shards(folder, x, sizes):
    folder.mkdir()
    s = np.cumsum([0] + sizes)
    for i in range(len(sizes)):
        np.save(folder / f"emb-{i:02d}.npy", x[s[i] : s[i + 1]].numpy())


def test_cli_fit_under_torchrun_equals_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 -m pysid fit 'shards/*.npy'`: rank 0 reads the first file, rank 1
    the other two (unequal shards); the table rank 0 writes equals `pysid fit` of the same files in
    one process and pysid.fit of their rows."""
    from pysid.cli import main

    x = _catalogue()
    _write_shards(tmp_path / "shards", x, [500, 400, 600])
    opts = ["--levels", "3", "--codebook-size", "16", "--iters", "4", "--seed", "3", "--quiet"]
    p = _torchrun(["fit", str(tmp_path / "shards" / "*.npy"), "-o", str(tmp_path / "dist.npz"), *opts], 2, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "on 2 processes" in p.stdout
    assert main(["fit", str(tmp_path / "shards"), "-o", str(tmp_path / "one.npz"), *opts]) == 0
    got, one = pysid.SemanticIds.load(tmp_path / "dist.npz"), pysid.SemanticIds.load(tmp_path / "one.npz")
    _assert_same(_table(got), one)
    _assert_same(_table(got), pysid.fit(x, **FIT))
    # streamed encode by rank: `torchrun ... -m pysid encode SIDS 'shards/*.npy' --out-dir DIR`
    from pysid import stream

    enc = ["encode", str(tmp_path / "one.npz"), str(tmp_path / "shards" / "*.npy"), "--chunk-rows", "128", "--quiet"]
    p = _torchrun([*enc, "--out-dir", str(tmp_path / "parts2")], 2, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "encoded 1500 items on 2 processes in 13 parts" in p.stdout, p.stdout
    assert main([*enc, "--out-dir", str(tmp_path / "parts1")]) == 0
    a, b = stream.read_output(tmp_path / "parts2"), stream.read_output(tmp_path / "parts1")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert int(a["suffix"].max()) > 0 and not a["known"].any()


def test_cli_fit_under_torchrun_failures_leave_no_output(tmp_path):
    """Shards of different D: every rank exits with the error; a rank that dies mid-run: the run
    fails; neither leaves an output table."""
    x = _catalogue()
    _write_shards(tmp_path / "shards", x, [700, 800])
    np.save(tmp_path / "shards" / "emb-02.npy", x[:300, :-1].numpy())
    opts = ["--levels", "3", "--codebook-size", "16", "--iters", "4", "--quiet"]
    out = tmp_path / "sids.npz"
    p = _torchrun(["fit", str(tmp_path / "shards"), "-o", str(out), *opts], 2, tmp_path)
    assert p.returncode != 0
    assert "emb-02.npy: embeddings have D=11, " in p.stderr and "rank 1: " in p.stderr, p.stderr[-3000:]
    assert not out.exists()
    (tmp_path / "shards" / "emb-02.npy").unlink()
    die = ("import pysid.sid\n"
           "def _die(*a, **k):\n"
           "    if os.environ['RANK'] == '1':\n"
           "        os._exit(7)\n"
           "    return _orig(*a, **k)\n"
           "_orig, pysid.sid._sharded_dedup = pysid.sid._sharded_dedup, _die\n")
    p = _torchrun(["fit", str(tmp_path / "shards"), "-o", str(out), *opts], 2, tmp_path, prelude=die)
    assert p.returncode != 0
    assert "exitcode" in p.stderr and "7" in p.stderr, p.stderr[-3000:]
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# --------------------------------------------------------------------------- streamed encode by rank
def _encode_rank(rank, world, arg):
    from pysid import stream

    table = pysid.SemanticIds.load(arg["table"])
    if arg.get("fail_rank") == rank:  # this rank's second chunk fails mid-run
        seen = []
        orig = stream._encode_chunk

        def failing(*a, **k):
            seen.append(1)
            if len(seen) == 2:
                raise ValueError("shard rows 100..199 cannot be read (injected)")
            return orig(*a, **k)

        stream._encode_chunk = failing
    s = stream.encode_shards(table, arg["inputs"], arg["out"], chunk_rows=100, first_id=10**6)
    return {"rows": s.rows, "new": s.new_rows, "known": s.known_rows, "chunks": s.chunks,
            "skipped": s.chunks_skipped, "max_suffix": s.max_suffix, "suffixed": s.suffixed_rows}


def _encode_inputs(tmp_path, dedup="suffix"):
    """A table of 1500 items and 4 unequal shards (.npy and Parquet with ids, some of them table
    items) of 2300 rows near the table's items (many tuples of the table come back)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = _catalogue()
    table = pysid.fit(x, **FIT, dedup=dedup)
    table.save(tmp_path / "sids.npz")
    new = embedding_catalogue(m=2300, d=12, topics=30, seed=4).flip(0) + 0.01
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "a.npy", new[:250].numpy())
    np.save(d / "b.npy", new[250:1150].numpy().astype(np.float16))
    emb = new[1150:1700].numpy()
    ids = np.concatenate([np.arange(40) * 3, 5_000_000 + np.arange(510)])  # 40 table items
    pq.write_table(pa.table({"item_id": ids, "embedding": list(emb)}), d / "c.parquet", row_group_size=128)
    np.save(d / "d.npy", new[1700:].numpy())
    return str(tmp_path / "sids.npz"), str(d)


def test_encode_shards_by_rank_equals_one_process_and_resumes(tmp_path):
    """encode_shards on 3 ranks; then a run whose rank 1 fails mid-run (every rank raises, the
    output stays incomplete), resumed on 2 ranks: both equal the one-process output."""
    from pysid import stream

    table, inputs = _encode_inputs(tmp_path)
    one = stream.encode_shards(pysid.SemanticIds.load(table), inputs, tmp_path / "one", chunk_rows=100,
                               first_id=10**6)
    assert one.known_rows == 40 and one.max_suffix > 0 and one.chunks == 24
    want = stream.read_output(tmp_path / "one")
    (tmp_path / "w3").mkdir()
    ranks = spawn("_encode_rank", 3, tmp_path / "w3", dict(table=table, inputs=inputs, out=str(tmp_path / "o3")))
    for r in ranks:
        assert "error" not in r, r
        assert (r["rows"], r["new"], r["known"], r["chunks"], r["skipped"], r["max_suffix"], r["suffixed"]) == \
            (one.rows, one.new_rows, one.known_rows, 24, 0, one.max_suffix, one.suffixed_rows)
    got = stream.read_output(tmp_path / "o3")
    assert sorted(got) == sorted(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    # a rank fails mid-run: every rank raises, nothing is presented as complete; resume on 2 ranks
    (tmp_path / "f").mkdir()
    ranks = spawn("_encode_rank", 3, tmp_path / "f", dict(table=table, inputs=inputs, out=str(tmp_path / "o"),
                                                          fail_rank=1))
    assert "injected" in ranks[1]["error"]
    assert all("rank 1: " in r["error"] and "injected" in r["error"] for r in (ranks[0], ranks[2])), ranks
    with pytest.raises(ValueError, match="not complete"):
        stream.read_output(tmp_path / "o")
    assert not (tmp_path / "o" / "_SUCCESS").exists() and not list((tmp_path / "o").glob("part-*"))
    (tmp_path / "r").mkdir()
    ranks = spawn("_encode_rank", 2, tmp_path / "r", dict(table=table, inputs=inputs, out=str(tmp_path / "o")))
    assert ranks[0]["skipped"] > 0 and ranks[0]["skipped"] == ranks[1]["skipped"], ranks
    got = stream.read_output(tmp_path / "o")
    for k in want:
        assert np.array_equal(got[k], want[k]), k


def test_encode_shards_reassign_by_rank_equals_one_process(tmp_path):
    """A reassign table: the movers' candidates computed by the rank that holds them, the prefixes
    solved by their owner rank (``pysid.dedup.sharded_reassign``): on 3 ranks and on 2 ranks, the
    one-process output, which is ``encode_result`` of all rows."""
    from pysid import stream

    table, inputs = _encode_inputs(tmp_path, dedup="reassign")
    t = pysid.SemanticIds.load(table)
    one = stream.encode_shards(t, inputs, tmp_path / "one", chunk_rows=100, first_id=10**6)
    assert one.known_rows == 40 and one.chunks == 24
    want = stream.read_output(tmp_path / "one")
    raw = [stream._read_chunk(stream._scan(p, "embedding", "item_id"), 0, s.rows, "embedding", "item_id")
           for p, s in ((p, stream._scan(p, "embedding", "item_id")) for p in stream.list_shards(inputs))]
    x = torch.cat([r[0].float() for r in raw])
    ids = torch.from_numpy(want["item_id"])
    res = t.encode_result(x, item_ids=ids)
    L = t.num_levels
    assert np.array_equal(np.stack([want[f"level_{j}"] for j in range(L)], 1), res.codes[:, :L].numpy())
    assert ("suffix" in want) == (res.codes.shape[1] == L + 1)
    moved = want[f"level_{L - 1}"] != pysid.residual_quantize(x, t.codebooks).codes[:, L - 1].numpy()
    assert moved[~want["known"]].sum() > 20
    for world in (3, 2):
        (tmp_path / f"w{world}").mkdir()
        ranks = spawn("_encode_rank", world, tmp_path / f"w{world}",
                      dict(table=table, inputs=inputs, out=str(tmp_path / f"o{world}")))
        for r in ranks:
            assert "error" not in r, r
            assert (r["rows"], r["new"], r["known"], r["max_suffix"], r["suffixed"]) == \
                (one.rows, one.new_rows, one.known_rows, one.max_suffix, one.suffixed_rows)
        got = stream.read_output(tmp_path / f"o{world}")
        assert sorted(got) == sorted(want)
        for k in want:
            assert np.array_equal(got[k], want[k]), (world, k)
