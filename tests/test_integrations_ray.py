"""pysid.integrations.ray: SidEncoder on plain batches (numpy dict, pandas) and in Ray Data map_batches
on a local cluster started here; with assign_suffixes, equal to SemanticIds.encode_result of all rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pysid
from pysid.integrations.ray import SidEncoder, assign_suffixes

D = 12


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    t = pysid.fit(torch.randn(400, D, generator=torch.Generator().manual_seed(0)), levels=2, codebook_size=8,
                  progress=False)
    path = tmp_path_factory.mktemp("t") / "t.npz"
    t.save(path)
    return t, str(path)


def _rows(n=1000):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, D)).astype(np.float32)
    x[10:60] = x[0]
    ids = np.arange(300, 300 + n, dtype=np.int64)  # 300..399 are table items
    return x, ids


def _full(table, out, n, L):
    codes = np.stack([out[f"level_{j}"] for j in range(L)], 1)
    suf = assign_suffixes(table, out["key"], out["known"], out["table_suffix"])
    return np.concatenate([codes, suf[:, None]], 1)


def test_encoder_plain_batches(table):
    t, path = table
    x, ids = _rows()
    want = t.encode_result(torch.from_numpy(x), item_ids=torch.from_numpy(ids))
    enc = SidEncoder(path)
    out = {k: [] for k in ("item_id", "level_0", "level_1", "known", "table_suffix", "key")}
    for a in range(0, len(ids), 128):  # batches, as map_batches would cut them
        r = enc({"embedding": x[a : a + 128], "item_id": ids[a : a + 128]})
        for k in out:
            out[k].append(r[k])
    out = {k: np.concatenate(v) for k, v in out.items()}
    np.testing.assert_array_equal(out["item_id"], ids)
    np.testing.assert_array_equal(out["known"], want.known.numpy())
    np.testing.assert_array_equal(_full(t, out, len(ids), 2), want.codes.numpy())
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"item_id": ids[:50], "embedding": list(x[:50])})
    r = enc(df)
    assert isinstance(r, pd.DataFrame)
    np.testing.assert_array_equal(r["level_0"].to_numpy(), want.codes[:50, 0].numpy())
    with pytest.raises(ValueError, match="no column 'embedding'"):
        enc({"vec": x[:2], "item_id": ids[:2]})
    with pytest.raises(ValueError, match="D=5, the table expects D=12"):
        enc({"embedding": x[:2, :5], "item_id": ids[:2]})
    with pytest.raises(ValueError, match="NaN/Inf"):
        bad = x[:3].copy()
        bad[1, 1] = np.nan
        enc({"embedding": bad, "item_id": ids[:3]})
    with pytest.raises(ValueError, match="'reassign'"):
        SidEncoder(pysid.fit(torch.randn(100, D), levels=2, codebook_size=4, dedup="reassign", progress=False))


def test_ray_data_map_batches(table):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    t, path = table
    x, ids = _rows(600)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        ds = ray.data.from_items([{"item_id": int(i), "embedding": v} for i, v in zip(ids, x)])
        coded = ds.map_batches(SidEncoder, fn_constructor_kwargs={"table": path}, batch_format="numpy",
                               batch_size=100, concurrency=2)
        rows = coded.to_pandas().sort_values("item_id")
    finally:
        ray.shutdown()
    out = {k: rows[k].to_numpy() for k in rows.columns}
    want = t.encode_result(torch.from_numpy(x), item_ids=torch.from_numpy(ids))
    np.testing.assert_array_equal(out["item_id"], ids)
    np.testing.assert_array_equal(out["known"], want.known.numpy())
    np.testing.assert_array_equal(_full(t, out, len(ids), 2), want.codes.numpy())
