"""Benchmark: k-means (seeding + Lloyd) against its peers, one run, the same data.

Rows (CPU): pysid (greedy k-means++ + Lloyd, C++ kernels), pysid balanced, the PyTorch
reference (pysid's reference backend), faiss.Kmeans, scikit-learn KMeans (k-means++, one
init, the same iteration count, tol=0), fast-pytorch-kmeans.
Rows (GPU, --gpu): pysid (Triton), the PyTorch reference (eager), flash-kmeans,
fast-pytorch-kmeans; and per-iteration / seeding timings with CUDA events, among them the
seeding kernels alone (ms per centre): the fused kernels with and without CUDA graphs beside
the step loop they replace, with a check that all chose the same rows.

Every row reports: wall time, seeding time, time per Lloyd iteration, the inertia of the
returned centroids (each row's nearest centroid, computed here the same way for every
method) and the cluster-size spread (min / max / coefficient of variation).

    python bench/bench_kmeans.py            # N=100k D=128 k=256, 20 iterations (the CPU goal)
    python bench/bench_kmeans.py --quick    # seconds, for CI
    python bench/bench_kmeans.py --gpu      # N=2^20 D=256, k=256 and k=4096 (needs CUDA)
    python bench/bench_kmeans.py --text-npy ~/.cache/pysid/minilm_items_*.npy --threads 2 --repeat 3

``--cpu-time`` (with ``--threads 1``): rows timed by the calling thread's CPU time, for a loaded VM.

``--text-npy FILE ...``: real embeddings (.npy [N, D] float32, e.g. the MiniLM caches of
bench/text_embeddings.py and examples/text_sids.py). Per file, ``--repeat`` rounds, every row
once per round in turn (the shared VM's speed drifts: alternated rows see the same drift),
medians reported: pysid.kmeans k=256 (defaults; and the previous defaults: k-means++ on every
row, 20 iterations) against faiss.Kmeans (niter 20 and its default 25); pysid.fit 3 x 256
(defaults, dedup="none") and the previous defaults (residual_kmeans with k-means++ and 20
iterations, then residual_quantize) against faiss's ResidualQuantizer trained greedily
(train_type 0, max_beam_size 1: its fast residual k-means) and its default (beam-trained).
Quality: inertia / N (k-means), mean squared reconstruction error per item and the share of
items in a shared code tuple (fit), identical formulas for every row.

Data: a synthetic embedding-like catalogue: 1024 Gaussian clusters with Zipf-distributed
sizes and per-cluster scales, seeded (see make_data).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, print_table, time_fn, write_json  # noqa: E402

import pysid  # noqa: E402
from pysid.ops import kmeans as kops  # noqa: E402


def make_data(n: int, d: int, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = 1024
    centres = torch.randn(m, d, generator=g)
    p = 1.0 / torch.arange(1, m + 1, dtype=torch.float64) ** 0.8  # Zipf-like cluster sizes
    lab = torch.multinomial(p, n, replacement=True, generator=g)
    scale = 0.3 + 0.4 * torch.rand(m, generator=g)
    x = centres[lab] + torch.randn(n, d, generator=g) * scale[lab, None]
    return x.to(device)


def quality(x: torch.Tensor, c: torch.Tensor) -> dict[str, Any]:
    """Inertia of the nearest centroids (exact float32 argmin, float64 sum) and size spread."""
    with pysid.backend("auto"):
        eng = kops.engine(x)
        codes, dist = eng.assign(eng.prepare(x), c.to(x.device, torch.float32))
    sizes = torch.bincount(codes, minlength=c.shape[0]).double()
    return {"inertia": float(dist.double().sum()), "size_min": int(sizes.min()), "size_max": int(sizes.max()),
            "size_cv": float(sizes.std() / sizes.mean())}


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def pysid_rows(x: torch.Tensor, k: int, iters: int, backend: str, label: str, balanced: bool = False,
               init_sample: int | None = None) -> dict[str, Any]:
    dev = x.device.type
    with pysid.backend(backend):
        pysid.kmeans(x[: max(4 * k, 2048)], k, iters=1)  # warm-up (kernel compilation)
        t, res = timed(lambda: pysid.kmeans(x, k, iters=iters, tol=0, rtol=0, balanced=balanced,
                                            init_sample=init_sample), dev)
    row = {"method": label, "seconds": t, "seeding_s": res.seconds["seeding"],
           "iter_ms": 1e3 * res.seconds["lloyd"] / max(res.iterations, 1), "iters": res.iterations}
    row.update(quality(x, res.centroids))
    if balanced:  # what a balanced user gets: its own assignment's inertia and sizes
        sizes = res.sizes.double()
        row.update(inertia_nearest=row["inertia"], inertia=res.inertia, size_min=int(sizes.min()),
                   size_max=int(sizes.max()), size_cv=float(sizes.std() / sizes.mean()))
    return row


def iteration_ms(x: torch.Tensor, k: int, backend: str, repeat: int, precision: str = "exact") -> float:
    """One Lloyd iteration (assignment + update + division) timed alone."""
    with pysid.backend(backend):
        eng = kops.engine(x, precision=precision)
    xk = eng.prepare(x)
    g = torch.Generator().manual_seed(0)
    c = x[torch.randperm(x.shape[0], generator=g)[:k].to(x.device)].float()

    def step():
        codes, _ = eng.assign(xk, c)
        sums, counts = eng.update(xk, codes, None, k)
        return (sums / counts.clamp(min=1)[:, None]).float()

    ms = 1e3 * time_fn(step, device=x.device.type, repeat=repeat, warmup=2)
    if not x.is_cuda:
        return ms, None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = step()
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base - out.numel() * 4) / 2**20
    return ms, extra  # extra peak MB of one iteration (an N x k fp32 matrix would be N*k*4 bytes)


def seeding_ms(x: torch.Tensor, k: int, backend: str, init_sample: int | None, repeat: int) -> float:
    with pysid.backend(backend):
        return 1e3 * time_fn(lambda: pysid.kmeans(x, k, iters=0, init_sample=init_sample), device=x.device.type,
                             repeat=repeat, warmup=1)


def seeding_kernel_rows(x: torch.Tensor, k: int, sample: int, repeat: int) -> list[dict[str, Any]]:
    """Greedy k-means++ (2 + ln k candidates per centre) on the first ``sample`` rows: ms in all and per
    centre for the fused kernels (pysid.kernels.kmeans.kmeanspp_seed_triton, with and without CUDA
    graphs) and for the step loop (pysid.kmeans._kmeanspp(fused=False), graph on / off), plus whether
    they chose the same rows."""
    import math

    from pysid._dist import Comm
    from pysid.kernels.kmeans import kmeanspp_seed_triton

    xs = x[:sample].contiguous()
    trials = 2 + int(math.log(k))
    u = torch.rand((k, trials), generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(x.device)
    dev = x.device.type
    rows: list[dict[str, Any]] = []
    ref = None
    variants = [("fused kernels, CUDA graphs", lambda: kmeanspp_seed_triton(xs, None, u, graph=True)),
                ("fused kernels, launched one by one", lambda: kmeanspp_seed_triton(xs, None, u, graph=False))]
    if k <= 1024:  # tile sweep of the scoring kernel (default: 128 rows, one per thread, 4 columns)
        for bn, bd, nw in [(256, 4, 4), (128, 8, 4), (128, 2, 4), (64, 4, 2), (256, 4, 8)]:
            variants.append((f"fused kernels, CUDA graphs, block_n {bn} block_d {bd} {nw} warps",
                             lambda bn=bn, bd=bd, nw=nw: kmeanspp_seed_triton(xs, None, u, graph=True, block_n=bn,
                                                                              block_d=bd, num_warps=nw)))
    km = sys.modules["pysid.kmeans"]
    eng = kops.engine(xs, "triton")
    for graph in (True, False):  # the step loop returns the centres: compared as the rows they are
        variants.append((f"step loop, {'one-step CUDA graph' if graph else 'no CUDA graph'}",
                         lambda graph=graph: km._kmeanspp(xs, None, k, trials, torch.Generator().manual_seed(0),
                                                          eng, Comm(x.device), None, fused=False, graph=graph)))
    for name, fn in variants:
        if k > 1024 and "step loop" in name:
            continue  # 4.9 s at k = 4096 (H200, 2026-12-04): not again
        try:
            out = fn()  # compiles the kernels (and gives the rows)
            ms = 1e3 * time_fn(fn, device=dev, repeat=repeat, warmup=0)
            chosen = xs[out] if out.dim() == 1 else out
            same = None if ref is None else bool(torch.equal(chosen.float(), ref))
            ref = chosen.float() if ref is None else ref
            rows.append({"method": f"k-means++ seeding kernels {k} centres, {sample} rows: {name}", "seeding_ms": ms,
                         "ms_per_centre": ms / k, "same_rows_as_fused": same})
        except Exception as e:  # noqa: BLE001 - a failed variant is a row, not a crash
            rows.append({"method": f"k-means++ seeding kernels {k} centres: {name}",
                         "note": f"failed: {type(e).__name__}: {e}"[:160]})
    return rows


def peer_rows(x: torch.Tensor, k: int, iters: int, gpu: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    dev = x.device.type
    if not gpu:
        try:
            import faiss

            xn = x.numpy()
            km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=1, verbose=False)
            t, _ = timed(lambda: km.train(xn), dev)
            rows.append({"method": "faiss.Kmeans (random init, default 256 pts/centroid)", "seconds": t,
                         "iter_ms": 1e3 * t / iters, **quality(x, torch.from_numpy(km.centroids))})
        except ImportError:
            rows.append({"method": "faiss.Kmeans", "note": "faiss not installed"})
        try:
            from sklearn.cluster import KMeans, kmeans_plusplus

            km = KMeans(k, init="k-means++", n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=0)
            t, _ = timed(lambda: km.fit(x.numpy()), dev)
            ts, _ = timed(lambda: kmeans_plusplus(x.numpy(), k, random_state=0), dev)
            rows.append({"method": "scikit-learn KMeans (greedy k-means++)", "seconds": t, "seeding_s": ts,
                         "iter_ms": 1e3 * (t - ts) / iters, "iters": int(km.n_iter_),
                         **quality(x, torch.from_numpy(km.cluster_centers_).float())})
        except ImportError:
            rows.append({"method": "scikit-learn KMeans", "note": "scikit-learn not installed"})
    try:
        from fast_pytorch_kmeans import KMeans as FKMeans

        km = FKMeans(n_clusters=k, max_iter=iters, tol=-1.0, mode="euclidean", verbose=0)
        t, _ = timed(lambda: km.fit(x), dev)
        rows.append({"method": "fast-pytorch-kmeans (random init)", "seconds": t, "iter_ms": 1e3 * t / iters,
                     **quality(x, km.centroids.float())})
    except ImportError:
        rows.append({"method": "fast-pytorch-kmeans", "note": "not installed"})
    except Exception as e:  # noqa: BLE001 - a peer's failure is a row, not a crash
        rows.append({"method": "fast-pytorch-kmeans", "note": f"failed: {type(e).__name__}: {e}"[:120]})
    if gpu:
        try:
            from flash_kmeans import batch_kmeans_Euclid

            batch_kmeans_Euclid(x[None, : 4 * k], k, max_iters=2)  # warm-up (autotune/compile)
            t, (_, cents, *_) = timed(lambda: batch_kmeans_Euclid(x[None], k, max_iters=iters, tol=0.0), dev)
            rows.append({"method": "flash-kmeans (random init)", "seconds": t, "iter_ms": 1e3 * t / iters,
                         **quality(x, cents[0].float())})
        except ImportError:
            rows.append({"method": "flash-kmeans", "note": "not installed"})
        except Exception as e:  # noqa: BLE001
            rows.append({"method": "flash-kmeans", "note": f"failed: {type(e).__name__}: {e}"[:120]})
    return rows


def bench_case(n: int, d: int, k: int, iters: int, device: str, args) -> list[dict[str, Any]]:
    x = make_data(n, d, device)
    gpu = args.gpu  # GPU rows (a CPU --device runs them under TRITON_INTERPRET=1: a dry run)
    print(f"\n# N={n} D={d} k={k} iterations={iters} on {device}", flush=True)
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        row.update(n=n, d=d, k=k, device=device)
        rows.append(row)
        print(f"  {row['method']}: {row.get('seconds', row.get('note'))}", flush=True)

    native = "triton" if gpu else "cpu"
    add(pysid_rows(x, k, iters, native, f"pysid {native}"))
    if not args.quick and 256 * k < n:  # the default seeds on a 256*k-row subsample
        add(pysid_rows(x, k, iters, native, f"pysid {native}, seeding on all rows", init_sample=0))
    if not gpu:
        add(pysid_rows(x, k, iters, native, f"pysid {native} balanced", balanced=True))
    if not (gpu and k > 1024):
        add(pysid_rows(x, k, iters, "reference", "torch reference (pysid reference backend)"))
    if gpu:  # the GPU goals: one Lloyd iteration and the seeding, timed alone with CUDA events
        for name, backend, precision in (("pysid triton", "triton", "exact"),
                                         ('pysid triton, precision="fast"', "triton", "fast"),
                                         ("torch eager", "reference", "exact")):
            ms, extra = iteration_ms(x, k, backend, args.repeat, precision)
            add({"method": f"one Lloyd iteration: {name}", "iter_ms": ms, "peak_extra_mb": extra,
                 "n_by_k_fp32_mb": n * k * 4 / 2**20})
        # the update kernel alone (sums and counts of the rows per cluster): today's 16 rows per tile
        # beside the 32 of 2026-12-04 (which spilled 4 bytes on triton 3.6)
        from pysid.kernels.kmeans import kmeans_update_triton

        codes = torch.randint(0, k, (x.shape[0],), generator=torch.Generator().manual_seed(1)).to(torch.int32).to(x.device)
        for label, cfg in (("default (16 rows per tile at D 256)", {}), ("32 rows per tile (2026-12-04)", {"block_r": 32})):
            ms = 1e3 * time_fn(lambda cfg=cfg: kmeans_update_triton(x, codes, None, k, **cfg), device=x.device.type,
                               repeat=args.repeat, warmup=2)
            add({"method": f"k-means update kernel alone: {label}", "iter_ms": ms})
        if k <= 1024:
            add({"method": f"k-means++ seeding {k} centres: pysid triton", "seeding_ms": seeding_ms(x, k, "triton", None, 3)})
            add({"method": f"k-means++ seeding {k} centres: pysid triton, all rows",
                 "seeding_ms": seeding_ms(x, k, "triton", 0, 3)})
            add({"method": f"k-means++ seeding {k} centres: torch eager, all rows",
                 "seeding_ms": seeding_ms(x, k, "reference", 0, 1)})
        # the seeding kernels alone on the default 256*k-row sample (all rows at k = 4096, N = 2^20):
        # fused (3 launches per centre, CUDA graphs of 16 steps), fused launched one by one, and the
        # step loop (~20 small kernels per centre) with and without its one-step CUDA graph
        for row in seeding_kernel_rows(x, k, min(x.shape[0], 256 * k), repeat=3 if k <= 1024 else 1):
            add(row)
    if not args.no_peers:
        for row in peer_rows(x, k, iters, gpu):
            add(row)
    return rows


def _collision_rate(codes: torch.Tensor) -> float:
    from pysid.sid import collision_stats

    return collision_stats(codes.long(), [256] * codes.shape[1])["collision_rate"]


def text_case(path: str, args) -> list[dict[str, Any]]:
    """The rows of one real embedding file (module docstring: --text-npy)."""
    import numpy as np
    import statistics

    x = torch.from_numpy(np.load(os.path.expanduser(path))).float().contiguous()
    n, d = x.shape
    xn = x.numpy()
    name = os.path.basename(path)
    print(f"\n# {name}: N={n} D={d}, k=256 / 3 x 256, {args.repeat} alternated rounds", flush=True)
    try:
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
    except ImportError:
        faiss = None

    def km_quality(c: torch.Tensor) -> dict[str, Any]:
        q = quality(x, c)
        return {"inertia_per_item": q["inertia"] / n, "size_min": q["size_min"], "size_max": q["size_max"]}

    def fit_quality(books: torch.Tensor, codes: torch.Tensor) -> dict[str, Any]:
        rec = sum(books[j][codes[:, j].long()] for j in range(books.shape[0]))
        return {"error": float(((x - rec).double() ** 2).sum(1).mean()), "collisions": _collision_rate(codes)}

    def pysid_km(**kw):
        def run():
            res = pysid.kmeans(x, 256, **kw)
            return res.centroids, {"iters": res.iterations, "seeding_s": res.seconds["seeding"]}
        return run

    def faiss_km(niter: int):
        def run():
            km = faiss.Kmeans(d, 256, niter=niter, seed=1234, verbose=False)
            km.train(xn)
            return torch.from_numpy(km.centroids), {"iters": niter}
        return run

    def pysid_fit():
        s = pysid.fit(x, dedup="none", progress=False)
        return torch.stack(s.codebooks), s.codes, {}

    def pysid_fit_before():
        books = pysid.residual_kmeans(x, 3, 256, iters=20, init="k-means++", rtol=0)
        return books, pysid.residual_quantize(x, books).codes, {"iters": 20}

    def faiss_rq(greedy: bool):
        def run():
            rq = faiss.ResidualQuantizer(d, 3, 8)
            if greedy:
                rq.train_type = 0  # Train_default: greedy residual k-means
                rq.max_beam_size = 1
            rq.train(xn)
            codes = torch.from_numpy(rq.compute_codes(xn).astype(np.int64))  # 8 bits: one byte per level
            return torch.from_numpy(faiss.vector_to_array(rq.codebooks).reshape(3, 256, d)), codes, {
                "iters": rq.cp.niter}
        return run

    cases: list[tuple[str, str, Callable]] = [
        ("kmeans k=256", "pysid.kmeans (defaults)", pysid_km()),
        ("fit 3x256", "pysid.fit (defaults, dedup none)", pysid_fit),
    ]
    if not args.no_previous:
        cases += [("kmeans k=256", "pysid.kmeans, previous defaults (k-means++ all rows, 20 it)",
                   pysid_km(init="k-means++", iters=20, rtol=0)),
                  ("fit 3x256", "pysid, previous fit defaults (k-means++, 20 it)", pysid_fit_before)]
    if faiss is not None:
        cases += [("kmeans k=256", "faiss.Kmeans niter=20", faiss_km(20)),
                  ("kmeans k=256", "faiss.Kmeans niter=25 (its default)", faiss_km(25)),
                  ("fit 3x256", "faiss ResidualQuantizer greedy (train_type 0, beam 1)", faiss_rq(True))]
        if not args.no_beam_rq:
            cases.append(("fit 3x256", "faiss ResidualQuantizer default (beam-trained)", faiss_rq(False)))
    times: dict[str, list[float]] = {label: [] for _, label, _ in cases}
    out: dict[str, Any] = {}
    pysid.kmeans(x[:4096], 256, iters=1)  # warm-up
    clock = time.thread_time if args.cpu_time else time.perf_counter
    for r in range(args.repeat):
        for task, label, fn in (cases if r % 2 == 0 else cases[::-1]):
            t0 = clock()
            got = fn()
            times[label].append(clock() - t0)
            out[label] = (task, got)
        print(f"  round {r + 1}: " + ", ".join(f"{lab.split(' (')[0]} {times[lab][-1]:.2f}" for _, lab, _ in cases),
              flush=True)
    rows = []
    for task, label, _ in cases:
        t, got = out[label]
        q = km_quality(got[0]) if task.startswith("kmeans") else fit_quality(got[0], got[1])
        rows.append({"data": name, "n": n, "task": task, "method": label, "seconds": statistics.median(times[label]),
                     "seconds_all": times[label], **q, **got[-1]})
    for task in ("kmeans k=256", "fit 3x256"):
        peers = [r for r in rows if r["task"] == task and r["method"].startswith("faiss")]
        best = min((r["seconds"] for r in peers), default=None)
        for r in rows:
            if r["task"] == task and best:
                r["speedup_vs_fastest_faiss"] = best / r["seconds"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, seconds (CI smoke run)")
    p.add_argument("--gpu", action="store_true", help="N=2^20 D=256, k=256 and 4096 (needs CUDA)")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--text-npy", nargs="+", default=None,
                   help="real embeddings (.npy files): pysid.kmeans / pysid.fit against faiss on each (docstring)")
    p.add_argument("--no-beam-rq", action="store_true", help="--text-npy: skip faiss's beam-trained RQ row (slow)")
    p.add_argument("--no-previous", action="store_true", help="--text-npy: skip the rows of pysid's previous defaults")
    p.add_argument("--cpu-time", action="store_true",
                   help="--text-npy: time rows by the calling thread's CPU time (time.thread_time), not wall time; "
                        "needs --threads 1 (on a loaded VM the time a row spends descheduled does not count)")
    p.add_argument("--device", default=None, help="override (e.g. --gpu --device cpu --n 4096: dry run)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_kmeans.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time and (args.threads != 1 or not args.text_npy):
        p.error("--cpu-time needs --text-npy and --threads 1 (a thread's CPU time misses the other threads' work)")
    if args.text_npy:
        rows = []
        for path in args.text_npy:
            rows += text_case(path, args)
        print()
        print_table(rows, ["data", "task", "method", "seconds", "speedup_vs_fastest_faiss", "inertia_per_item", "error",
                           "collisions", "iters", "seeding_s"])
        out = args.out if args.out != p.get_default("out") else args.out.replace(".json", "_text.json")
        write_json(out, {"benchmark": "kmeans_text", "env": environment(), "args": vars(args), "rows": rows})
        return
    if args.gpu:
        dev = args.device or "cuda"
        if dev == "cuda" and not torch.cuda.is_available():
            sys.exit("--gpu needs a CUDA GPU")
        n = args.n or 1 << 20
        cases = [(n, 256, 256, args.iters, dev), (n, 256, 4096, max(1, args.iters // 2), dev)]
        if dev == "cpu":  # dry run of the GPU code path in the interpreter: tiny shapes
            cases = [(n, 16, 16, 3, dev), (n, 16, 64, 2, dev)]
    elif args.quick:
        cases = [(args.n or 3000, 16, 32, 5, "cpu")]
    else:
        cases = [(args.n or 100_000, 128, 256, args.iters, "cpu")]
    rows = []
    for n, d, k, iters, dev in cases:
        rows += bench_case(n, d, k, iters, dev, args)
    print()
    print_table(rows, ["n", "d", "k", "method", "seconds", "seeding_s", "iter_ms", "seeding_ms", "ms_per_centre", "same_rows_as_fused", "inertia",
                       "size_min", "size_max", "size_cv", "peak_extra_mb", "note"])
    write_json(args.out, {"benchmark": "kmeans", "env": environment(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
