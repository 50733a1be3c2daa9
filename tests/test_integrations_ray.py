"""pysid.integrations.ray: SidEncoder on plain batches (numpy dict, pandas) and in Ray Data map_batches
on a local cluster started here; with assign_suffixes ("suffix" tables) or reassign_movers + assign_moves
("reassign" tables: two passes), equal to SemanticIds.encode_result of all rows. The driver functions are
tested without Ray too (these tests run where ray is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pysid
from pysid.integrations.ray import Moves, SidEncoder, assign_moves, assign_suffixes, reassign_movers

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
    with pytest.raises(ValueError, match="no column 'embedding'"):
        enc({"vec": x[:2], "item_id": ids[:2]})
    with pytest.raises(ValueError, match="D=5, the table expects D=12"):
        enc({"embedding": x[:2, :5], "item_id": ids[:2]})
    with pytest.raises(ValueError, match="NaN/Inf"):
        bad = x[:3].copy()
        bad[1, 1] = np.nan
        enc({"embedding": bad, "item_id": ids[:3]})
    reassign = pysid.fit(torch.randn(100, D), levels=2, codebook_size=4, dedup="reassign", progress=False)
    SidEncoder(reassign)  # reassign tables are encoded too (then reassign_movers + assign_moves)
    with pytest.raises(ValueError, match="'reassign' moves rows first: use reassign_movers and assign_moves"):
        assign_suffixes(reassign, out["key"], out["known"], out["table_suffix"])
    hybrid = pysid.fit([torch.randn(60, 4), torch.randn(60, 3)], levels=2, codebook_size=4, progress=False)
    with pytest.raises(ValueError, match="SidEncoder takes one embedding input per row.*hybrid"):
        SidEncoder(hybrid)
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"item_id": ids[:50], "embedding": list(x[:50])})
    r = enc(df)
    assert isinstance(r, pd.DataFrame)
    np.testing.assert_array_equal(r["level_0"].to_numpy(), want.codes[:50, 0].numpy())


@pytest.fixture(scope="module")
def ray_cluster():
    """One small local Ray cluster for this module's Ray tests (2 CPUs), shut down after them."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_data_map_batches(table, ray_cluster):
    ray = ray_cluster
    t, path = table
    x, ids = _rows(600)
    ds = ray.data.from_items([{"item_id": int(i), "embedding": v} for i, v in zip(ids, x)])
    coded = ds.map_batches(SidEncoder, fn_constructor_kwargs={"table": path}, batch_format="numpy",
                           batch_size=100, concurrency=2)
    rows = coded.to_pandas().sort_values("item_id")
    out = {k: rows[k].to_numpy() for k in rows.columns}
    want = t.encode_result(torch.from_numpy(x), item_ids=torch.from_numpy(ids))
    np.testing.assert_array_equal(out["item_id"], ids)
    np.testing.assert_array_equal(out["known"], want.known.numpy())
    np.testing.assert_array_equal(_full(t, out, len(ids), 2), want.codes.numpy())


# --------------------------------------------------------------------------- "reassign" tables: two passes
def _reassign_case(case):
    """A reassign table and a catalogue (embeddings, ids) in shuffled order with many collisions: runs of
    equal rows, table items (known by id, half with their table embedding) mixed with new ones."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(120, D, generator=g)
    if case == "table-suffix":  # equal rows at fit: the table itself has a suffix level
        x0[10:30] = x0[0]
    kw = {"method": "rq-vae", "rqvae_options": {"epochs": 2, "latent": 4}} if case == "rq-vae" else {}
    t = pysid.fit(x0, levels=2, codebook_size=16, dedup="reassign", progress=False, **kw)
    rng = np.random.default_rng(11)
    n = 16 if case == "all-moved" else 700
    x = rng.standard_normal((n, D)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) + 1000
    if case != "all-moved":
        x[50:90] = x[50]  # a run of one tuple: all but one move or stay on a taken tuple
        ids[:60] = np.arange(60)  # table items (known by id), half with their table embedding
        x[:60:2] = x0[:60:2].numpy()
    perm = rng.permutation(n)  # catalogue order: not the id order
    return t, x[perm], ids[perm]


def _pass1(t, x, ids, sizes=(97, 3, 200, 64)):
    """SidEncoder over uneven batches (numpy dicts, and pandas DataFrames where pandas is there), joined."""
    enc = SidEncoder(t)
    try:
        import pandas as pd
    except ImportError:
        pd = None
    outs, a, i = [], 0, 0
    while a < len(ids):
        b = min(len(ids), a + sizes[i % len(sizes)])
        if pd is not None and i % 2:
            r = enc(pd.DataFrame({"item_id": ids[a:b], "embedding": list(x[a:b])}))
            r = {k: r[k].to_numpy() for k in r.columns}
        else:
            r = enc({"embedding": x[a:b], "item_id": ids[a:b]})
        outs.append(r)
        a, i = b, i + 1
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _final(out, moves, L):
    """The IDs of every row from pass 1's columns and the moves (as a user would apply them)."""
    codes = np.stack([out[f"level_{j}"] for j in range(L)], 1).astype(np.int64)
    codes[moves.rows, L - 1] = moves.last
    if moves.suffix is not None:
        codes = np.concatenate([codes, moves.suffix[:, None]], 1)
    return codes


@pytest.mark.parametrize("case", ["leftovers", "all-moved", "table-suffix", "rq-vae"])
def test_reassign_two_passes_equal_encode_result(case):
    """pass 1 (SidEncoder's greedy codes + keys, batch by batch), reassign_movers from the keys, pass 2
    (assign_moves on the movers' embeddings: one array, uneven array batches, a tensor, or id-carrying
    batches checked against item_ids): encode_result of all rows at once in catalogue order, bit for
    bit - moved last codes, the suffix level exactly when the rule adds one, known rows the table's."""
    t, x, ids = _reassign_case(case)
    L = t.num_levels
    want = t.encode_result(torch.from_numpy(x), item_ids=torch.from_numpy(ids))
    out = _pass1(t, x, ids)
    np.testing.assert_array_equal(out["item_id"], ids)
    np.testing.assert_array_equal(out["known"], want.known.numpy())
    mv = reassign_movers(t, out["key"], out["known"])
    assert mv.dtype == np.int64 and (np.diff(mv) > 0).all() and not out["known"][mv].any()
    assert mv.size > 0
    forms = {
        "array": x[mv],
        "tensor": torch.from_numpy(x[mv]),
        "batches": [x[mv[a : a + 7]] for a in range(0, mv.size, 7)] + [np.zeros((0, D), np.float32)],
        "id-batches": ({"item_id": ids[mv[a : a + 50]], "embedding": x[mv[a : a + 50]]} for a in range(0, mv.size, 50)),
        "one-batch": {"item_id": ids[mv], "embedding": list(x[mv])},  # a dict with a list column
    }
    results = {}
    for name, emb in forms.items():
        results[name] = assign_moves(t, out["key"], out["known"], emb, table_suffix=out["table_suffix"],
                                     item_ids=ids if name in ("id-batches", "one-batch") else None)
    m = results["array"]
    assert isinstance(m, Moves)
    for name, r in results.items():  # every form: the same moves
        for f in Moves._fields:
            a, b = getattr(m, f), getattr(r, f)
            assert (a is None) == (b is None), (name, f)
            if a is not None:
                np.testing.assert_array_equal(a, b, err_msg=f"{name}: {f}")
    got = _final(out, m, L)
    np.testing.assert_array_equal(got, want.codes.numpy())
    assert m.rows.size and np.isin(m.rows, mv).all()  # the rule moved rows, movers only
    np.testing.assert_array_equal(m.keys, pysid.dedup.tuple_keys(want.codes[:, :L].numpy(), t.codebook_sizes))
    if case == "all-moved":
        assert m.suffix is None and want.codes.shape[1] == L
    else:
        assert m.suffix is not None and (m.suffix[~out["known"]] > 0).any()
    if case == "table-suffix":
        assert (m.suffix[out["known"]] > 0).any()  # known rows keep the table's suffix
    # the same applied batch by batch (Moves.batch_fn, as in map_batches), dict and pandas batches
    fn = m.batch_fn(ids)
    for a in range(0, len(ids), 128):
        r = fn({k: v[a : a + 128] for k, v in out.items()})
        np.testing.assert_array_equal(r[f"level_{L - 1}"], got[a : a + 128, L - 1])
        np.testing.assert_array_equal(r["level_0"], got[a : a + 128, 0])
        assert ("suffix" in r) == (m.suffix is not None)
        if m.suffix is not None:
            np.testing.assert_array_equal(r["suffix"], got[a : a + 128, L])


def test_reassign_batch_fn_pandas():
    """Moves.batch_fn on pandas DataFrames (Spark's mapInPandas, Ray's batch_format="pandas")."""
    pd = pytest.importorskip("pandas")
    t, x, ids = _reassign_case("table-suffix")
    want = t.encode_result(torch.from_numpy(x), item_ids=torch.from_numpy(ids)).codes.numpy()
    out = _pass1(t, x, ids)
    mv = reassign_movers(t, out["key"], out["known"])
    m = assign_moves(t, out["key"], out["known"], pd.DataFrame({"embedding": list(x[mv])}),
                     table_suffix=out["table_suffix"])
    fn = m.batch_fn(pd.Series(ids))
    for a in range(0, len(ids), 300):
        r = fn(pd.DataFrame({k: v[a : a + 300] for k, v in out.items()}))
        assert isinstance(r, pd.DataFrame)
        np.testing.assert_array_equal(np.stack([r["level_0"], r["level_1"], r["suffix"]], 1), want[a : a + 300])


def test_reassign_bad_input():
    """Clear errors (ValueError/TypeError naming the cause) for every misuse of the two-pass driver."""
    t, x, ids = _reassign_case("table-suffix")
    out = _pass1(t, x, ids)
    keys, known, ts = out["key"], out["known"], out["table_suffix"]
    mv = reassign_movers(t, keys, known)
    emb = x[mv]
    with pytest.raises(ValueError, match=r"known has shape \(699,\) for 700 keys"):
        reassign_movers(t, keys, known[:-1])
    with pytest.raises(ValueError, match=r"known has shape \(699,\) for 700 keys"):
        assign_moves(t, keys, known[:-1], emb, table_suffix=ts)
    with pytest.raises(ValueError, match="known must be booleans"):
        assign_moves(t, keys, known.astype(np.int64), emb, table_suffix=ts)
    with pytest.raises(ValueError, match="keys must be a 1-D integer array"):
        reassign_movers(t, keys.astype(np.float64), known)
    with pytest.raises(ValueError, match="keys out of range"):
        reassign_movers(t, keys + 16 * 16, known)
    with pytest.raises(ValueError, match=f"the embeddings of the {mv.size} movers are missing"):
        assign_moves(t, keys, known, None, table_suffix=ts)
    with pytest.raises(ValueError, match=f"{mv.size - 1} mover embeddings for the {mv.size} movers"):
        assign_moves(t, keys, known, emb[:-1], table_suffix=ts)
    with pytest.raises(ValueError, match=f"0 mover embeddings for the {mv.size} movers"):
        assign_moves(t, keys, known, [], table_suffix=ts)
    with pytest.raises(ValueError, match=f"more mover embeddings than the {mv.size} movers"):
        assign_moves(t, keys, known, [emb, emb[:1]], table_suffix=ts)
    with pytest.raises(ValueError, match="batch 0 has D=5, the table expects D=12"):
        assign_moves(t, keys, known, emb[:, :5], table_suffix=ts)
    with pytest.raises(ValueError, match="NaN/Inf"):
        bad = emb.copy()
        bad[3, 2] = np.inf
        assign_moves(t, keys, known, bad, table_suffix=ts)
    with pytest.raises(ValueError, match="are not the movers' in catalogue order"):
        rev = mv[::-1]
        assign_moves(t, keys, known, [{"item_id": ids[rev], "embedding": x[rev]}], table_suffix=ts, item_ids=ids)
    with pytest.raises(ValueError, match="has no column 'embedding'"):
        assign_moves(t, keys, known, [{"vec": emb}], table_suffix=ts)
    with pytest.raises(TypeError, match="embeddings must be the movers' embeddings"):
        assign_moves(t, keys, known, "emb.npy", table_suffix=ts)
    with pytest.raises(ValueError, match="known rows need their table_suffix"):
        assign_moves(t, keys, known, emb)
    with pytest.raises(ValueError, match=r"table_suffix has shape \(3,\) for 700 keys"):
        assign_moves(t, keys, known, emb, table_suffix=ts[:3])
    with pytest.raises(ValueError, match=r"item_ids has shape \(3,\) for 700 keys"):
        assign_moves(t, keys, known, emb, table_suffix=ts, item_ids=ids[:3])
    m = assign_moves(t, keys, known, emb, table_suffix=ts)
    with pytest.raises(ValueError, match=r"item_ids must be \[700\] integers"):
        m.batch_fn(ids[:5])
    with pytest.raises(ValueError, match="item_ids are not unique"):
        m.batch_fn(np.zeros_like(ids))
    with pytest.raises(ValueError, match="batch_fn takes SidEncoder output batches"):
        m.batch_fn(ids)({"item_id": ids[:3]})
    suffix_table = pysid.fit(torch.randn(100, D), levels=2, codebook_size=4, progress=False)
    with pytest.raises(ValueError, match="rule is 'suffix': use assign_suffixes"):
        reassign_movers(suffix_table, keys[:3] % 16, np.zeros(3, bool))
    with pytest.raises(ValueError, match="rule is 'suffix': use assign_suffixes"):
        assign_moves(suffix_table, keys[:3] % 16, np.zeros(3, bool), emb[:1])
    hybrid = pysid.fit([torch.randn(60, 4), torch.randn(60, 3)], levels=2, codebook_size=4, dedup="reassign",
                       progress=False)
    with pytest.raises(ValueError, match="reassign_movers takes one embedding input per row.*hybrid"):
        reassign_movers(hybrid, np.zeros(3, np.int64), np.zeros(3, bool))
    with pytest.raises(ValueError, match="assign_moves takes one embedding input per row.*hybrid"):
        assign_moves(hybrid, np.zeros(3, np.int64), np.zeros(3, bool), np.zeros((1, 7), np.float32))
    with pytest.raises(ValueError, match="SidEncoder takes one embedding input per row.*hybrid"):
        SidEncoder(hybrid)


def test_ray_data_reassign(ray_cluster, tmp_path):
    """The module docstring's recipe on a local Ray cluster: pass 1 (SidEncoder actors, batches split over
    2 actors), the movers from the gathered keys, pass 2 on the dataset filtered to the movers (sorted by
    item id = catalogue order), the moves applied with map_batches: encode_result of all rows, bit for bit."""
    ray = ray_cluster
    t, x, ids = _reassign_case("table-suffix")
    ids = ids * 7 + 3  # ids not 0..n-1; the table's items keep their ids
    known_ids = np.isin(ids, t.item_ids.numpy() * 7 + 3)
    ids[known_ids] = (ids[known_ids] - 3) // 7
    path = str(tmp_path / "t.npz")
    t.save(path)
    ds = ray.data.from_items([{"item_id": int(i), "embedding": v} for i, v in zip(ids, x)])  # shuffled ids
    coded = ds.map_batches(SidEncoder, fn_constructor_kwargs={"table": path}, batch_format="numpy",
                           batch_size=64, concurrency=2).materialize()
    cols = coded.select_columns(["item_id", "key", "known", "table_suffix"]).to_pandas().sort_values("item_id")
    cids, keys, known = cols["item_id"].to_numpy(), cols["key"].to_numpy(), cols["known"].to_numpy()
    movers = reassign_movers(t, keys, known)

    def keep(batch, ids):
        hit = np.isin(batch["item_id"], ids)
        return {k: v[hit] for k, v in batch.items()}

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    mv = ds.map_batches(keep, fn_kwargs={"ids": cids[movers]}, batch_format="numpy").sort("item_id")
    moves = assign_moves(t, keys, known, mv.iter_batches(batch_format="numpy", batch_size=40),
                         table_suffix=cols["table_suffix"].to_numpy(), item_ids=cids)
    final = coded.map_batches(moves.batch_fn(cids), batch_format="numpy").to_pandas().sort_values("item_id")
    order = np.argsort(ids, kind="stable")
    want = t.encode_result(torch.from_numpy(x[order]), item_ids=torch.from_numpy(ids[order]))
    np.testing.assert_array_equal(final["item_id"].to_numpy(), ids[order])
    np.testing.assert_array_equal(final["known"].to_numpy(), want.known.numpy())
    got = np.stack([final["level_0"], final["level_1"], final["suffix"]], 1)
    np.testing.assert_array_equal(got, want.codes.numpy())
    assert moves.rows.size and (moves.suffix > 0).any() and want.known.any()
