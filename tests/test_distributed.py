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
            res = {"error": f"{type(e).__name__}: {e}"}
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
        kw["item_ids"] = 10_000 - 7 * torch.arange(a[rank], b[rank])
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
    torch.set_num_threads(1)
    one = pysid.fit(_catalogue(), **FIT)
    assert one.codes.shape[1] == 4 and int(one.codes[:, 3].max()) > 0  # collisions: the suffix is exercised
    for r in ranks:
        assert "error" not in r, r
        _assert_same(r, one)
