"""The ``pysid`` command line.

    pysid fit EMBEDDINGS -o SIDS.npz [--levels 3 --codebook-size 256 --method rq-kmeans --dedup suffix]
    pysid encode SIDS.npz EMBEDDINGS -o CODES.npy     # cold-start items, the table's dedup rule
    pysid stats SIDS.npz [--embeddings EMBEDDINGS]    # metrics report
    pysid bench [rq|beam|kmeans|sid|all] [--full]     # the benchmark scripts (quick by default)
    pysid demo                                        # embeddings -> SIDs -> trie -> decoding

EMBEDDINGS: .npy, .pt (a tensor, or a dict of tensors with --key) or .npz (--key, default the
first array), [M, D] floating point. Errors exit with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch


class CliError(Exception):
    """A user error: printed as 'pysid: error: ...', exit status 2."""


def load_embeddings(path: str, key: str | None = None) -> torch.Tensor:
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            arr = torch.from_numpy(np.load(path, allow_pickle=False))
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if not names:
                    raise CliError(f"{path}: the archive is empty")
                name = key or names[0]
                if name not in names:
                    raise CliError(f"{path}: no array {name!r} (has {names})")
                arr = torch.from_numpy(z[name])
        elif ext in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if key is None and len(obj) != 1:
                    raise CliError(f"{path}: a dict of {len(obj)} entries; choose one with --key ({list(obj)[:8]})")
                obj = obj[key] if key is not None else next(iter(obj.values()))
            if not isinstance(obj, torch.Tensor):
                raise CliError(f"{path}: expected a tensor, found {type(obj).__name__}")
            arr = obj
        else:
            raise CliError(f"{path}: unknown extension {ext!r} (use .npy, .npz or .pt)")
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        if isinstance(e, CliError):
            raise
        raise CliError(f"{path}: cannot read: {e}") from None
    from .sid import _as_embeddings

    try:  # shape, dtype and NaN/Inf rows (named by index): the same checks as pysid.fit
        return _as_embeddings(arr, "the array")
    except (ValueError, TypeError) as e:
        raise CliError(f"{path}: {e}") from None


def _load_sids(path: str):
    from .sid import SemanticIds

    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    try:
        return SemanticIds.load(path)
    except (OSError, ValueError, KeyError) as e:
        raise CliError(f"{path}: not a pysid SemanticIds file ({e})") from None


# --------------------------------------------------------------------------- commands
def cmd_fit(a) -> int:
    from .sid import fit

    x = load_embeddings(a.embeddings, a.key)
    sizes = [int(v) for v in a.codebook_size.split(",")]
    t0 = time.perf_counter()
    try:
        sids = fit(x, method=a.method, levels=a.levels, codebook_size=sizes[0] if len(sizes) == 1 else sizes,
                   dedup=a.dedup, seed=a.seed, iters=a.iters, beam_width=a.beam_width, device=a.device,
                   progress=not a.quiet)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    sids.save(a.output)
    c = sids.collisions
    print(f"fit {len(sids)} items x {x.shape[1]} dims in {time.perf_counter() - t0:.2f} s: {sids.num_levels} levels "
          f"{sids.codebook_sizes}, collision rate {c['before']['collision_rate']:.4f} before dedup "
          f"({c['before']['distinct']} distinct tuples), {c['after']['collision_rate']:.4f} after ({a.dedup}) "
          f"-> {a.output}")
    return 0


def cmd_encode(a) -> int:
    sids = _load_sids(a.sids)
    x = load_embeddings(a.embeddings, a.key)
    try:
        codes = sids.encode(x)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    np.save(a.output, codes.numpy())
    print(f"encoded {codes.shape[0]} items -> {a.output} ({codes.shape[1]} columns)")
    return 0


def cmd_stats(a) -> int:
    sids = _load_sids(a.sids)
    x = load_embeddings(a.embeddings, a.key) if a.embeddings else None
    if x is not None and x.shape[0] != len(sids):
        raise CliError(f"{a.embeddings}: {x.shape[0]} rows for a table of {len(sids)} items")
    print(sids)
    print(sids.report(x))
    return 0


_BENCHES = {"rq": "bench_residual_quantize.py", "beam": "bench_beam_search.py", "kmeans": "bench_kmeans.py",
            "sid": "bench_sid.py"}


def bench_dir() -> str:
    from . import bench

    return os.path.dirname(bench.__file__)


def cmd_bench(a) -> int:
    names = list(_BENCHES) if a.which == "all" else [a.which]
    rc = 0
    for name in names:
        cmd = [sys.executable, os.path.join(bench_dir(), _BENCHES[name]), "--out",
               os.path.join(a.out_dir, f"pysid_bench_{name}.json")] + ([] if a.full else ["--quick"])
        print("$", " ".join(cmd), flush=True)
        rc = max(rc, subprocess.call(cmd))
    return rc


def cmd_demo(a) -> int:
    from .search import beam_search
    from .sid import fit

    torch.manual_seed(a.seed)
    if a.data:
        from .collab import item_embeddings
        from .data import read_sequences

        seqs = read_sequences(a.data)
        x = item_embeddings([s[:-2] for s in seqs], dim=64, seed=a.seed)
        x = x[x.norm(dim=1) > 0]
        print(f"catalogue: collaborative embeddings of {a.data}: {x.shape[0]} items x {x.shape[1]}")
    else:
        g = torch.Generator().manual_seed(a.seed)
        topics = torch.randn(200, 64, generator=g)
        lab = torch.multinomial(1.0 / torch.arange(1, 201) ** 0.7, a.items, replacement=True, generator=g)
        x = topics[lab] + 0.5 * torch.randn(a.items, 64, generator=g)
        print(f"catalogue: {a.items} synthetic items x 64 dims (200 topics, Zipf sizes); --data FILE for real data")
    t0 = time.perf_counter()
    sids = fit(x, levels=3, codebook_size=min(256, x.shape[0]), dedup="suffix", seed=a.seed, progress=not a.quiet)
    print(f"\nfit (rq-kmeans, 3 x {sids.codebook_sizes[0]} + suffix) in {time.perf_counter() - t0:.2f} s")
    print(sids.report(x))
    trie = sids.trie()
    print(f"\ntrie: {trie.num_items} items, {trie.nbytes / trie.num_items:.1f} bytes/item")
    print("tokens of item 0:", sids.to_tokens(codes=sids.codes[:1])[0])

    # decode: queries are noisy item embeddings; the 'model' scores the next code by how close
    # the partial reconstruction comes to the query; the trie keeps only existing SIDs
    q_items = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(a.seed))[: a.queries]
    q = x[q_items] + 0.1 * torch.randn(a.queries, x.shape[1])
    cbs = sids.codebooks
    L, K = sids.num_levels, a.beam

    def step_fn(tokens, parent):
        t = tokens.shape[1]
        qq = q.repeat_interleave(K, 0)
        if t >= L:  # the suffix level: no preference
            return torch.zeros(tokens.shape[0], trie.vocab_sizes[t])
        prefix = sum((cbs[j][tokens[:, j]] for j in range(t)), torch.zeros_like(qq))
        r = qq - prefix
        return -(((r[:, None, :] - cbs[t][None]) ** 2).sum(-1))

    out = beam_search(step_fn, trie, a.queries, K, topk=5)
    hits = (out.items == q_items[:, None]).any(1)
    print(f"\nconstrained beam search (beam {K}) for {a.queries} noisy item embeddings:")
    for i in range(a.queries):
        print(f"  query {int(q_items[i]):6d} -> top-5 items {out.items[i].tolist()}  {'hit' if hits[i] else 'miss'}")
    print(f"recall@5 {hits.float().mean():.2f}, invalid items {int((out.items < 0).sum())}")
    return 0


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pysid", description="Semantic IDs: fit, encode, inspect, benchmark.")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="train codebooks and assign Semantic IDs")
    f.add_argument("embeddings")
    f.add_argument("-o", "--output", required=True, help="output .npz (SemanticIds)")
    f.add_argument("--key", help="array name inside .npz / .pt")
    f.add_argument("--levels", type=int, default=3)
    f.add_argument("--codebook-size", default="256", help="K, or one per level: 256,256,128")
    f.add_argument("--method", choices=["rq-kmeans", "rq-vae"], default="rq-kmeans")
    f.add_argument("--dedup", choices=["suffix", "reassign", "none"], default="suffix")
    f.add_argument("--iters", type=int, default=20, help="k-means iterations per level")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--beam-width", type=int, default=1, help="codes by beam search over the levels (1: greedy)")
    f.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_fit)

    e = sub.add_parser("encode", help="Semantic IDs for new (cold-start) items")
    e.add_argument("sids")
    e.add_argument("embeddings")
    e.add_argument("-o", "--output", required=True, help="output .npy of codes")
    e.add_argument("--key")
    e.set_defaults(func=cmd_encode)

    s = sub.add_parser("stats", help="print a table's metrics")
    s.add_argument("sids")
    s.add_argument("--embeddings", help="the fitted embeddings: adds the reconstruction error")
    s.add_argument("--key")
    s.set_defaults(func=cmd_stats)

    b = sub.add_parser("bench", help="run the benchmark scripts (quick mode unless --full)")
    b.add_argument("which", nargs="?", default="all", choices=["all", *_BENCHES])
    b.add_argument("--full", action="store_true")
    b.add_argument("--out-dir", default=".", help="where the JSON results go (default: the current directory)")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="embeddings -> SIDs -> metrics -> trie -> constrained decoding")
    d.add_argument("--items", type=int, default=20000)
    d.add_argument("--data", help="an Amazon-format sequence file: collaborative embeddings instead of synthetic")
    d.add_argument("--queries", type=int, default=5)
    d.add_argument("--beam", type=int, default=10)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"pysid: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
