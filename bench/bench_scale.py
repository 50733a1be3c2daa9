"""Benchmark: catalogue scale - fit on a sample, streamed encode from disk, suffix dedup.

Rows (each measured in a child process, so that its peak RSS - ``resource.getrusage`` max RSS -
is its own; the data is generated on the fly to disk and deleted at the end):

* ``fit-sample``: ``pysid.fit(x, sample=f)`` against the full fit (3 x 256, rq-kmeans, seeds
  0..S-1): relative reconstruction error of all items sum ||x - x_hat||^2 / sum ||x||^2,
  collision rate before dedup, fit time. Data: synthetic (``bench_kmeans.make_data``) and the
  Amazon Toys collaborative vectors (``pysid.collab.item_embeddings``, dim 64, zero rows
  dropped) when the data file is present.
* ``kernel``: the in-memory kernel, ``pysid.residual_quantize`` on a float16 block held in
  memory (the reference throughput of the encode goal).
* ``stream``: ``pysid.stream.encode_shards`` of an N x D float16 .npy file on disk (one shard)
  to Parquet parts: rows/s of the chunk pass and of the whole call (final dedup pass and
  Parquet writes included), peak RSS.
* ``dedup``: ``pysid.dedup.tuple_keys`` + ``suffix_of_keys`` over N code tuples (uint8, 3 x 256,
  Zipf-skewed so that tuples collide), peak RSS; and the earlier in-memory path
  (``pysid.sid._suffix`` on an int64 [N, 3] tensor) at sizes up to 10M.
* ``reassign``: the "reassign" rule at scale, ``pysid.dedup.tuple_keys`` + ``reassign_moves``
  (+ ``suffix_of_keys`` over the moved keys when some rows are left over) on N code tuples
  (uint8, 4 x 256: uniform, then 15 % of the rows overwritten by the tuple of a random row, so
  that ~12 % of the rows collide, as fitted tables do before dedup), with synthetic candidate
  lists (m = 32: the row's own code, then 31 other codes from one of 8 fixed orders; scores from
  64 fixed increasing rows, so that equal scores happen) computed by a callback for the movers
  only. The callback's time is reported apart: in real use it is the m nearest last-level
  codewords of the movers' residuals, i.e. encode work on ~12 % of the rows.

Then a model of the wall time for 10^9 items on M machines from the measured rates.

    python bench/bench_scale.py --quick                 # seconds (CI smoke)
    python bench/bench_scale.py --stream-n 1000000 --dedup-n 10000000
    python bench/bench_scale.py --stream-n 10000000 --dedup-n 100000000 --no-fit-sample --tmp /tmp/pysid-scale
    python bench/bench_scale.py --no-fit-sample --stream-n "" --dedup-n 100000000 --reassign-n 10000000,100000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ (never the repo root: it would
# shadow the installed pysid with the source tree, which has no compiled module)

from common import environment  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
# the repository's sibling shared/ folder (a checkout in /work/main, or a worktree one level deeper)
TOYS = next((p for p in (os.path.join(_HERE, *[".."] * up, "shared", "data", "amazon", "toys.txt") for up in (2, 3))
             if os.path.exists(p)), os.path.join(_HERE, "..", "..", "shared", "data", "amazon", "toys.txt"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------------- data on disk
def write_npy(path: str, n: int, d: int, seed: int = 0, block: int = 1 << 16) -> None:
    """N x D float16 clustered rows (1024 Gaussian clusters, Zipf sizes), written block by block."""
    g = torch.Generator().manual_seed(seed)
    m = 1024
    centres = torch.randn(m, d, generator=g)
    p = 1.0 / torch.arange(1, m + 1, dtype=torch.float64) ** 0.8
    scale = 0.3 + 0.4 * torch.rand(m, generator=g)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(np.float16).str, "fortran_order": False,
                                                 "shape": (n, d)})
        for a in range(0, n, block):
            b = min(n, a + block)
            lab = torch.multinomial(p, b - a, replacement=True, generator=g)
            x = centres[lab] + torch.randn(b - a, d, generator=g) * scale[lab, None]
            f.write(x.to(torch.float16).numpy().tobytes())


def read_rows(path: str, n: int) -> np.ndarray:
    return np.load(path, mmap_mode="r")[:n].copy()


# --------------------------------------------------------------------------- children
def child_kernel(a) -> dict:
    import pysid

    torch.set_num_threads(a.threads)
    table = pysid.SemanticIds.load(a.table)
    x = torch.from_numpy(read_rows(a.data, a.n))
    cbs = table.codebooks
    pysid.residual_quantize(x[:4096], cbs)  # warm-up
    t = time.perf_counter()
    pysid.residual_quantize(x, cbs)
    dt = time.perf_counter() - t
    return {"rows": a.n, "seconds": dt, "rows_per_s": a.n / dt, "peak_rss_mb": peak_rss_mb()}


def child_stream(a) -> dict:
    import pysid
    from pysid import stream

    torch.set_num_threads(a.threads)
    table = pysid.SemanticIds.load(a.table)
    pysid.residual_quantize(torch.zeros(16, table.codebooks[0].shape[1], dtype=torch.float16), table.codebooks)  # warm-up
    t = time.perf_counter()
    s = stream.encode_shards(table, a.data, a.out, chunk_rows=a.chunk_rows)
    dt = time.perf_counter() - t
    return {"rows": s.rows, "seconds": dt, "encode_s": s.encode_s, "dedup_s": s.dedup_s,
            "rows_per_s": s.rows / dt, "encode_rows_per_s": s.rows_per_s, "chunks": s.chunks,
            "max_suffix": s.max_suffix, "suffixed_rows": s.suffixed_rows, "peak_rss_mb": peak_rss_mb()}


def child_dedup(a) -> dict:
    from pysid.dedup import suffix_of_keys, tuple_keys

    rng = np.random.default_rng(0)
    n = a.n
    codes = np.empty((n, 3), np.uint8)
    for s in range(0, n, 1 << 22):  # Zipf-skewed first level: many collisions, as real tables have
        e = min(n, s + (1 << 22))
        codes[s:e, 0] = np.minimum(rng.zipf(1.3, e - s) - 1, 255)
        codes[s:e, 1:] = rng.integers(0, 256, (e - s, 2), dtype=np.uint8)
    base = peak_rss_mb()
    t = time.perf_counter()
    keys = tuple_keys(codes, [256] * 3)
    t1 = time.perf_counter()
    suf = suffix_of_keys(keys)
    dt = time.perf_counter() - t
    out = {"rows": n, "seconds": dt, "keys_s": t1 - t, "suffix_s": dt - (t1 - t), "rows_per_s": n / dt,
           "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base, "max_suffix": int(suf.max()),
           "collision_rate": float((suf > 0).mean())}
    if a.old and n <= 10_000_000:
        from pysid.sid import _suffix

        torch.set_num_threads(a.threads)
        c64 = torch.from_numpy(codes.astype(np.int64))
        t = time.perf_counter()
        old = _suffix(c64, [256] * 3)
        out["old_seconds"] = time.perf_counter() - t
        out["old_same"] = bool((old.numpy() == suf).all())
    return out


def child_reassign(a) -> dict:
    from pysid.dedup import reassign_moves, suffix_of_keys, tuple_keys

    rng = np.random.default_rng(0)
    n, m, k = a.n, 32, 256
    codes = np.empty((n, 4), np.uint8)
    blk = 1 << 22
    for s in range(0, n, blk):
        e = min(n, s + blk)
        codes[s:e] = rng.integers(0, k, (e - s, 4), dtype=np.uint8)
    for s in range(0, int(0.15 * n), blk):  # collisions: copies of random rows' tuples
        c = min(blk, int(0.15 * n) - s)
        codes[rng.integers(0, n, c)] = codes[rng.integers(0, n, c)]
    orders = np.stack([rng.permutation(np.arange(1, k))[: m - 1] for _ in range(8)])
    table = np.empty((k, 8, m), np.int32)  # [own code, order] -> candidate list
    table[:, :, 0] = np.arange(k)[:, None]
    table[:, :, 1:] = (np.arange(k)[:, None, None] + orders[None]) % k
    sbase = np.cumsum(rng.integers(1, 4, (64, m)), 1).astype(np.float32)
    cand_s = [0.0, 0]

    def candidates(rows):
        t0 = time.perf_counter()
        c, sc = table[codes[rows, 3], rows % 8], sbase[rows % 64]
        cand_s[0] += time.perf_counter() - t0
        cand_s[1] += rows.size
        return c, sc

    base = peak_rss_mb()
    t = time.perf_counter()
    keys = tuple_keys(codes, [k] * 4)
    t1 = time.perf_counter()
    rows, new = reassign_moves(keys, k, candidates)
    t2 = time.perf_counter()
    left = cand_s[1] - rows.size  # movers out of candidates: the table then adds a suffix level
    max_suffix = 0
    if left:
        keys[rows] += new - keys[rows] % k
        max_suffix = int(suffix_of_keys(keys).max())
    dt = time.perf_counter() - t
    return {"rows": n, "seconds": dt, "keys_s": t1 - t, "reassign_s": t2 - t1, "suffix_s": dt - (t2 - t),
            "candidates_s": cand_s[0], "seconds_without_candidates": dt - cand_s[0],
            "rows_per_s": n / dt, "movers": cand_s[1], "collision_rate": cand_s[1] / n, "moved": int(rows.size),
            "left_over": int(left), "max_suffix": max_suffix, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base}


def child_fit_sample(a) -> dict:
    import pysid

    torch.set_num_threads(a.threads)
    if a.case == "amazon-toys":
        from pysid.collab import item_embeddings
        from pysid.data import leave_one_out, read_sequences

        emb = item_embeddings(leave_one_out(read_sequences(TOYS)).train, dim=64)
        x = emb[emb.abs().sum(1) > 0].contiguous()
    else:
        from bench_kmeans import make_data

        x = make_data(a.n, 128, "cpu")
    rows = []
    for frac in [None] + [float(f) for f in a.fractions.split(",")]:
        for seed in range(a.seeds):
            t = time.perf_counter()
            s = pysid.fit(x, levels=3, codebook_size=256, seed=seed, sample=frac, sample_seed=seed, progress=False)
            dt = time.perf_counter() - t
            rec = sum(s.codebooks[j][s.codes[:, j]] for j in range(3))
            err = float(((x - rec) ** 2).sum() / (x**2).sum())
            rows.append({"sample": frac, "seed": seed, "fit_s": dt, "recon_err": err,
                         "collision_rate": s.collision_summary()["collision_rate_before"],
                         "train_items": s.settings.get("sample", x.shape[0])})
    return {"items": int(x.shape[0]), "dim": int(x.shape[1]), "fits": rows}


def run_child(kind: str, **kw) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k.replace('_', '-')}")
        elif v is not None and v is not False:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"child {kind} failed: {res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- model
def model_text(enc_core: float, dedup_rate: float, machines=(1, 8, 64, 512), cores: int = 32, n: float = 1e9) -> list[str]:
    """Wall time of fit-on-a-sample + encode + dedup for n items on M machines of `cores` cores."""
    lines = [f"model: {n:.0e} items, machines of {cores} cores; encode {enc_core:,.0f} rows/s per core (measured, "
             f"streamed); sharded dedup: each machine sorts its n/M keys at {dedup_rate:,.0f} rows/s (measured, one "
             "core) and exchanges 16 bytes per distinct key per machine twice (at 1 GB/s per machine, assumed)."]
    for m in machines:
        enc = n / (m * cores * enc_core)
        ded = n / m / dedup_rate
        net = 2 * 16 * min(n / m, 2**24) / 1e9
        lines.append(f"  M={m:4d}: encode {enc:9.0f} s + dedup {ded:7.1f} s + exchange {net:5.2f} s "
                     f"= {(enc + ded + net) / 60:8.1f} min")
    return lines


# --------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="JSON output (default: bench/results/bench_scale.json)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stream-n", type=str, default="1000000", help="rows of the streamed encode (comma list)")
    p.add_argument("--dedup-n", type=str, default="1000000,10000000", help="rows of the dedup rows (comma list)")
    p.add_argument("--reassign-n", type=str, default="1000000,10000000",
                   help="rows of the reassign dedup rows (comma list)")
    p.add_argument("--stream-dedup", default="suffix", help="dedup rules of the streamed tables (comma list: "
                   "suffix,reassign)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--chunk-rows", type=int, default=65536)
    p.add_argument("--kernel-n", type=int, default=262144, help="rows of the in-memory kernel timing")
    p.add_argument("--tmp", default=None, help="folder for the generated data (default: a temporary folder)")
    p.add_argument("--no-fit-sample", action="store_true")
    p.add_argument("--no-toys", action="store_true")
    p.add_argument("--no-synthetic", action="store_true", help="fit-sample rows: skip the synthetic case")
    p.add_argument("--fractions", default="0.1,0.25,0.5")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--synthetic-n", type=int, default=100000)
    # child-process arguments
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    for k in ("table", "data", "case"):
        p.add_argument(f"--{k}", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--old", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps({"kernel": child_kernel, "stream": child_stream, "dedup": child_dedup,
                          "fit-sample": child_fit_sample, "reassign": child_reassign}[args.child](args)))
        return
    if args.quick:
        args.stream_n, args.dedup_n, args.kernel_n, args.dim = "20000", "200000", 8192, 64
        args.reassign_n = "200000"
        args.synthetic_n, args.fractions, args.seeds, args.no_toys = 5000, "0.25", 1, True
        args.chunk_rows = 4096
    torch.set_num_threads(args.threads)
    import pysid

    rows: list[dict] = []
    tmp = args.tmp or tempfile.mkdtemp(prefix="pysid-scale-")
    os.makedirs(tmp, exist_ok=True)
    try:
        if not args.no_fit_sample:
            cases = ([] if args.no_synthetic else ["synthetic"]) + ([] if args.no_toys or not os.path.exists(TOYS) else ["amazon-toys"])
            for case in cases:
                r = run_child("fit-sample", case=case, n=args.synthetic_n, threads=args.threads,
                              fractions=args.fractions, seeds=args.seeds)
                full = [f for f in r["fits"] if f["sample"] is None]
                base_err = sum(f["recon_err"] for f in full) / len(full)
                base_t = sum(f["fit_s"] for f in full) / len(full)
                for frac in [None] + [float(f) for f in args.fractions.split(",")]:
                    fs = [f for f in r["fits"] if f["sample"] == frac]
                    err = sum(f["recon_err"] for f in fs) / len(fs)
                    row = {"part": "fit-sample", "case": case, "method": "pysid.fit rq-kmeans 3x256",
                           "items": r["items"], "dim": r["dim"], "sample": frac or 1.0,
                           "train_items": fs[0]["train_items"], "recon_err": err,
                           "recon_err_vs_full": err / base_err - 1.0,
                           "collision_rate": sum(f["collision_rate"] for f in fs) / len(fs),
                           "fit_s": sum(f["fit_s"] for f in fs) / len(fs),
                           "speedup": base_t / (sum(f["fit_s"] for f in fs) / len(fs)), "per_seed": fs}
                    rows.append(row)
                    print(f"fit-sample {case:12s} sample={row['sample']:<5} train={row['train_items']:>7} "
                          f"err={err:.4f} ({100 * row['recon_err_vs_full']:+.2f} % vs full) "
                          f"coll={row['collision_rate']:.4f} fit={row['fit_s']:.2f} s (x{row['speedup']:.2f})",
                          flush=True)
        d = args.dim
        stream_ns = [int(v) for v in args.stream_n.split(",") if v]
        if stream_ns:
            data = os.path.join(tmp, "emb.npy")
            write_npy(data, max(stream_ns), d)
            # a table trained on a sample of the data (what a catalogue-scale user does)
            x = torch.from_numpy(read_rows(data, min(max(stream_ns), 50000 if not args.quick else 5000))).float()
            tpaths = {}
            for rule in args.stream_dedup.split(","):
                table = pysid.fit(x, levels=3, codebook_size=256 if not args.quick else 32, progress=False, dedup=rule)
                tpaths[rule] = os.path.join(tmp, f"table-{rule}.npz")
                table.save(tpaths[rule])
            tpath = next(iter(tpaths.values()))
            kn = min(args.kernel_n, max(stream_ns))
            k = run_child("kernel", table=tpath, data=data, n=kn, threads=args.threads)
            rows.append({"part": "kernel", "method": "pysid.residual_quantize (in memory, float16)", "dim": d, **k})
            print(f"kernel  in-memory fp16 {kn:>10} rows: {k['rows_per_s']:12,.0f} rows/s  "
                  f"peak RSS {k['peak_rss_mb']:.0f} MB", flush=True)
            for n in stream_ns:
                src = data
                if n != max(stream_ns):  # a smaller file: its own shard
                    src = os.path.join(tmp, f"emb{n}.npy")
                    write_npy(src, n, d)
                for rule, tp in tpaths.items():
                    out = os.path.join(tmp, f"out{n}")
                    s = run_child("stream", table=tp, data=src, out=out, chunk_rows=args.chunk_rows,
                                  threads=args.threads)
                    s["vs_kernel"] = s["encode_rows_per_s"] / k["rows_per_s"]
                    s["vs_kernel_total"] = s["rows_per_s"] / k["rows_per_s"]
                    rows.append({"part": "stream", "method": "pysid.stream.encode_shards (.npy float16 -> Parquet)",
                                 "dedup": rule, "dim": d, **s})
                    print(f"stream  {n:>10} rows ({rule}): chunk pass {s['encode_rows_per_s']:12,.0f} rows/s "
                          f"(x{s['vs_kernel']:.2f} of the kernel), whole call {s['rows_per_s']:12,.0f} rows/s "
                          f"(x{s['vs_kernel_total']:.2f}; final pass {s['dedup_s']:.1f} s), "
                          f"peak RSS {s['peak_rss_mb']:.0f} MB", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
                if src != data:
                    os.remove(src)
            os.remove(data)
        for n in [int(v) for v in args.dedup_n.split(",") if v]:
            r = run_child("dedup", n=n, threads=args.threads, old=True)
            rows.append({"part": "dedup", "method": "pysid.dedup.suffix_of_keys (3x256 uint8 codes)", **r})
            old = (f"; earlier path _suffix {r['old_seconds']:.2f} s (same: {r['old_same']})"
                   if "old_seconds" in r else "")
            print(f"dedup   {n:>10} rows: {r['seconds']:.2f} s (keys {r['keys_s']:.2f} + suffix {r['suffix_s']:.2f}), "
                  f"{r['rows_per_s']:12,.0f} rows/s, peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(codes alone {r['rss_before_mb']:.0f} MB){old}", flush=True)
        for n in [int(v) for v in args.reassign_n.split(",") if v]:
            r = run_child("reassign", n=n, threads=args.threads)
            rows.append({"part": "reassign", "method": "pysid.dedup.reassign_moves (4x256 uint8 codes, m=32)", **r})
            print(f"reassign {n:>10} rows: {r['seconds']:.2f} s (keys {r['keys_s']:.2f} + reassign {r['reassign_s']:.2f}"
                  f" + suffix {r['suffix_s']:.2f}; of which synthetic candidates {r['candidates_s']:.2f}), "
                  f"{r['rows_per_s']:12,.0f} rows/s, movers {r['collision_rate']:.3f}, moved {r['moved']}, "
                  f"left {r['left_over']}, peak RSS {r['peak_rss_mb']:.0f} MB (codes alone {r['rss_before_mb']:.0f} MB)",
                  flush=True)
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    enc = [r for r in rows if r["part"] == "stream"]
    ded = [r for r in rows if r["part"] == "dedup"]
    model = []
    if enc and ded:
        big = max(enc, key=lambda r: r["rows"])
        model = model_text(big["rows"] / big["seconds"] / args.threads, max(ded, key=lambda r: r["rows"])["rows_per_s"])
        print("\n".join(model))
    out = args.out or os.path.join(os.path.dirname(__file__), "results", "bench_scale.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"env": environment(), "args": vars(args), "rows": rows, "model": model}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
