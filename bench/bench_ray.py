"""Ray Data encode of a "reassign" table in two passes (pysid.integrations.ray) on a local cluster:
wall time of each step against ``SemanticIds.encode_result`` of all rows in one process, and a
bit-for-bit check of the result.

    python bench/bench_ray.py --rows 100000 --dim 64 --codebook 64 --cpus 2 --actors 1 [--out out.json]

The embeddings are written as Parquet shards first (not timed; pyarrow), read back with
``ray.data.read_parquet``; the table is fitted on the first min(rows / 5, 20,000) rows (not
timed; its items have ids 0.., so that as many catalogue rows are known by id).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ (not the repo root: see bench_scale.py)

from common import environment, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--codebook", type=int, default=64)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--actors", type=int, default=1, help="SidEncoder actors (leave CPUs for the read and sort tasks)")
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--quick", action="store_true", help="20,000 rows")
    ap.add_argument("--out", default=None, help="JSON output (default: none)")
    a = ap.parse_args()
    if a.quick:
        a.rows = 20_000

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    import pysid
    from pysid.integrations.ray import SidEncoder, assign_moves, reassign_movers

    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.rows, a.dim)).astype(np.float32)
    x[:, : a.dim // 4] *= 3  # some structure: the first dimensions dominate
    ids = rng.permutation(a.rows).astype(np.int64)
    t = pysid.fit(torch.from_numpy(x[: min(a.rows // 5, 20_000)]), levels=a.levels, codebook_size=a.codebook, dedup="reassign",
                  progress=False)
    tmp = tempfile.mkdtemp(prefix="bench_ray_")
    path = os.path.join(tmp, "t.npz")
    t.save(path)
    shards = 8
    for s in range(shards):
        lo, hi = s * a.rows // shards, (s + 1) * a.rows // shards
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[lo:hi].ravel()), a.dim)
        pq.write_table(pa.table({"item_id": ids[lo:hi], "embedding": emb}), os.path.join(tmp, f"part-{s}.parquet"))

    ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
    steps: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        ds = ray.data.read_parquet(tmp)
        coded = ds.map_batches(SidEncoder, fn_constructor_kwargs={"table": path}, batch_format="numpy",
                               batch_size=a.batch, concurrency=a.actors).materialize()
        steps["pass1_encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cols = coded.select_columns(["item_id", "key", "known", "table_suffix"]).to_pandas().sort_values("item_id")
        cids, keys, known = cols["item_id"].to_numpy(), cols["key"].to_numpy(), cols["known"].to_numpy()
        steps["gather_keys_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        movers = reassign_movers(t, keys, known)
        steps["movers_s"] = time.perf_counter() - t0

        def keep(batch, ids):
            hit = np.isin(batch["item_id"], ids)
            return {k: v[hit] for k, v in batch.items()}

        t0 = time.perf_counter()
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        mv = ds.map_batches(keep, fn_kwargs={"ids": cids[movers]}, batch_format="numpy").sort("item_id")
        moves = assign_moves(t, keys, known, mv.iter_batches(batch_format="numpy", batch_size=a.batch),
                             table_suffix=cols["table_suffix"].to_numpy(), item_ids=cids)
        steps["pass2_filter_sort_assign_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        final = coded.map_batches(moves.batch_fn(cids), batch_format="numpy").to_pandas()
        steps["apply_s"] = time.perf_counter() - t0
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    final = final.sort_values("item_id")
    torch.set_num_threads(a.cpus)
    order = np.argsort(ids)
    t0 = time.perf_counter()
    want = t.encode_result(torch.from_numpy(x[order]), item_ids=torch.from_numpy(ids[order]))
    ref_s = time.perf_counter() - t0
    L = t.num_levels
    got = np.stack([final[f"level_{j}"].to_numpy() for j in range(L)], 1).astype(np.int64)
    if moves.suffix is not None:
        got = np.concatenate([got, final["suffix"].to_numpy()[:, None]], 1)
    equal = bool(np.array_equal(got, want.codes.numpy()))
    res = {"rows": a.rows, "dim": a.dim, "levels": a.levels, "codebook": a.codebook, "cpus": a.cpus,
           "actors": a.actors,
           "movers": int(movers.size), "moved": int(moves.rows.size),
           "suffixed": 0 if moves.suffix is None else int((moves.suffix > 0).sum()), **steps,
           "ray_total_s": sum(steps.values()), "encode_result_s": ref_s, "equal_to_encode_result": equal}
    for k, v in res.items():
        print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
    if a.out:
        write_json(a.out, {"env": environment(), "args": vars(a), "rows": [res]})
    if not equal:
        raise SystemExit("the Ray result differs from encode_result")


if __name__ == "__main__":
    main()
