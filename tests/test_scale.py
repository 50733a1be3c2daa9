"""pysid.dedup (the suffix rule at scale, single process and sharded over ranks) and fit(sample=...)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

import pysid
from pysid.dedup import key_counts, sharded_suffix, suffix, suffix_of_keys, tuple_keys
from pysid.sid import _rank_within_key, _suffix, _tuple_keys


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 30000])
@pytest.mark.parametrize("k", [1, 3, 256])
def test_suffix_matches_table_rule(n, k):
    rng = np.random.default_rng(n * 7 + k)
    codes = rng.integers(0, k, (n, 3)).astype(np.uint8)
    want = _suffix(torch.from_numpy(codes.astype(np.int64)), [k] * 3).numpy()
    got = suffix(codes, [k] * 3)
    assert got.dtype == np.int32 and got.shape == (n,)
    np.testing.assert_array_equal(got, want)
    # the keys are _tuple_keys' mixed-radix keys
    np.testing.assert_array_equal(tuple_keys(codes, [k] * 3), _tuple_keys(torch.from_numpy(codes), [k] * 3).numpy())
    u, c = key_counts(tuple_keys(codes, [k] * 3))
    uu, cc = np.unique(tuple_keys(codes, [k] * 3), return_counts=True)
    np.testing.assert_array_equal(u, uu)
    np.testing.assert_array_equal(c, cc)
    s2, u2, c2, inv = suffix_of_keys(tuple_keys(codes, [k] * 3), return_inverse=True)
    _, inv_ref = np.unique(tuple_keys(codes, [k] * 3), return_inverse=True)
    np.testing.assert_array_equal(inv, inv_ref.reshape(-1))
    np.testing.assert_array_equal(s2, want)


def test_suffix_of_keys_wide_keys_and_chunks(monkeypatch):
    """Keys too wide to pack with the row number take the argsort path; chunk borders inside a
    run of equal keys carry the run over."""
    rng = np.random.default_rng(1)
    keys = rng.integers(-2**62, 2**62, 5000)
    keys[::3] = keys[0]
    want = _rank_within_key(torch.from_numpy(keys)).numpy()
    np.testing.assert_array_equal(suffix_of_keys(keys), want)
    monkeypatch.setattr("pysid.dedup._CHUNK", 7)
    small = rng.integers(0, 4, 1000)
    want = _rank_within_key(torch.from_numpy(small)).numpy()
    np.testing.assert_array_equal(suffix_of_keys(small), want)
    _, u, c, inv = suffix_of_keys(small, return_inverse=True)  # group ids carried over chunk borders
    np.testing.assert_array_equal(u[inv], small)
    np.testing.assert_array_equal(c, np.bincount(small))
    np.testing.assert_array_equal(suffix_of_keys(keys), _rank_within_key(torch.from_numpy(keys)).numpy())


def test_dedup_bad_input():
    with pytest.raises(ValueError, match="outside"):
        tuple_keys(np.array([[0, 5]]), [4, 4])
    with pytest.raises(ValueError, match="2\\*\\*63"):
        tuple_keys(np.zeros((2, 3), np.int64), [2**30] * 3)
    with pytest.raises(ValueError, match="integer"):
        tuple_keys(np.zeros((2, 3), np.float32), [4] * 3)
    with pytest.raises(ValueError, match="1-d integer"):
        suffix_of_keys(np.zeros((2, 2), np.int64))
    with pytest.raises(RuntimeError, match="init_process_group"):
        sharded_suffix(np.zeros(3, np.int64))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, keys_per_rank, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        got = sharded_suffix(keys_per_rank[rank])
        np.save(os.path.join(out_dir, f"rank{rank}.npy"), got)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_suffix_equals_single_process(world, tmp_path):
    """Unequal shards (one empty with 3 ranks), keys shared across ranks: each rank's suffixes are
    exactly the single-process suffixes of the concatenation at its rows."""
    rng = np.random.default_rng(world)
    sizes = [3000, 1234, 0][:world] if world == 3 else [2500, 777]
    keys = [rng.integers(0, 300, n).astype(np.int64) for n in sizes]
    torch.multiprocessing.spawn(_rank_main, args=(world, _free_port(), keys, str(tmp_path)), nprocs=world, join=True)
    want = suffix_of_keys(np.concatenate(keys))
    got = np.concatenate([np.load(tmp_path / f"rank{r}.npy") for r in range(world)])
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got.max() > 5  # keys repeat across ranks: offsets were exercised


# --------------------------------------------------------------------------- fit(sample=...)
def _blobs(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(64, d, generator=g) * 3
    return centres[torch.randint(0, 64, (n,), generator=g)] + torch.randn(n, d, generator=g)


def test_fit_sample_trains_on_sample_and_encodes_all():
    x = _blobs(3000, 16, 0)
    s = pysid.fit(x, levels=2, codebook_size=16, sample=500, sample_seed=3, progress=False)
    assert len(s) == 3000 and s.settings["sample"] == 500 and s.settings["sample_seed"] == 3
    # the codebooks are those of a fit on the sampled rows
    rows = torch.randperm(3000, generator=torch.Generator().manual_seed(3))[:500].sort().values
    sub = pysid.fit(x[rows], levels=2, codebook_size=16, progress=False)
    for a, b in zip(s.codebooks, sub.codebooks):
        torch.testing.assert_close(a, b)
    # every item: the greedy codes of the trained codebooks, then the suffix over all items
    codes = pysid.residual_quantize(x, s.codebooks).codes.long()
    torch.testing.assert_close(s.codes[:, :2], codes)
    torch.testing.assert_close(s.codes[:, 2], _suffix(codes, [16, 16]))
    assert s.collision_summary()["collision_rate_after"] == 0.0
    # a float share; 1.0 and the full int are a full fit
    assert pysid.fit(x, levels=2, codebook_size=16, sample=0.25, progress=False).settings["sample"] == 750
    full = pysid.fit(x, levels=2, codebook_size=16, progress=False)
    for smp in (1.0, 3000):
        t = pysid.fit(x, levels=2, codebook_size=16, sample=smp, progress=False)
        torch.testing.assert_close(t.codes, full.codes)


def test_fit_sample_error_close_to_full_fit():
    x = _blobs(6000, 16, 1)

    def err(t):
        r = t.codebooks[0][t.codes[:, 0]] + t.codebooks[1][t.codes[:, 1]]
        return float(((x - r) ** 2).sum() / (x**2).sum())

    full = err(pysid.fit(x, levels=2, codebook_size=32, progress=False))
    part = err(pysid.fit(x, levels=2, codebook_size=32, sample=0.2, progress=False))
    assert part < full * 1.10, (part, full)


def test_fit_sample_rqvae_and_reassign():
    x = _blobs(800, 8, 2)
    s = pysid.fit(x, method="rq-vae", levels=2, codebook_size=8, sample=300, progress=False,
                  rqvae_options={"epochs": 2, "latent": 4})
    assert len(s) == 800 and s.collision_summary()["collision_rate_after"] == 0.0
    lat = pysid.sid.METHODS["rq-vae"].latents(s, x)  # every item through the model trained on the sample
    torch.testing.assert_close(s.codes[:, :2], pysid.residual_quantize(lat, s.codebooks).codes.long())
    r = pysid.fit(x, levels=2, codebook_size=8, dedup="reassign", sample=0.5, progress=False)
    assert len(r) == 800 and r.collision_summary()["collision_rate_after"] == 0.0


@pytest.mark.parametrize("bad,err", [(0, ValueError), (801, ValueError), (0.0, ValueError), (1.5, ValueError),
                                     (-0.1, ValueError), (True, TypeError), ("10", TypeError)])
def test_fit_sample_bad(bad, err):
    x = _blobs(800, 8, 2)
    with pytest.raises(err, match="sample"):
        pysid.fit(x, levels=2, codebook_size=8, sample=bad, progress=False)


def test_fit_sample_smaller_than_codebook():
    with pytest.raises(ValueError, match="codebook_size 64 is larger than the number of items 10"):
        pysid.fit(_blobs(800, 8, 2), levels=1, codebook_size=64, sample=10, progress=False)


def test_fit_sample_stratified():
    x = _blobs(1000, 8, 4)
    labels = np.repeat([7, 3, 9], [600, 300, 100])
    s = pysid.fit(x, levels=2, codebook_size=8, sample=100, sample_by=labels, sample_seed=1, progress=False)
    rows = pysid.sid._stratified(torch.from_numpy(labels), 100, 1000, 1)
    assert rows.numel() == 100 and bool((rows[1:] > rows[:-1]).all())
    assert np.bincount(labels[rows.numpy()], minlength=10)[[7, 3, 9]].tolist() == [60, 30, 10]
    sub = pysid.fit(x[rows], levels=2, codebook_size=8, progress=False)
    for a, b in zip(s.codebooks, sub.codebooks):
        torch.testing.assert_close(a, b)
    # rounding: 7 of 3 labels 5/3/2 -> quotas 3.5/2.1/1.4 -> 3, 2, 1 and the remainder to the largest fraction
    r = pysid.sid._stratified(torch.tensor([0] * 5 + [1] * 3 + [2] * 2), 7, 10, 0)
    assert np.bincount(np.array([0] * 5 + [1] * 3 + [2] * 2)[r.numpy()]).tolist() == [4, 2, 1]
    # another seed, another sample of the same sizes
    r2 = pysid.sid._stratified(torch.from_numpy(labels), 100, 1000, 2)
    assert not torch.equal(rows, r2) and np.bincount(labels[r2.numpy()])[[7, 3, 9]].tolist() == [60, 30, 10]
    with pytest.raises(ValueError, match="pass sample= too"):
        pysid.fit(x, levels=2, codebook_size=8, sample_by=labels, progress=False)
    with pytest.raises(ValueError, match="999 labels for 1000 items"):
        pysid.fit(x, levels=2, codebook_size=8, sample=100, sample_by=labels[:999], progress=False)
