"""GPU diagnosis of the Triton residual-quantize kernel (greedy): time per variant.

For each shape and data kind: the default config, the exact path (fast=False), the fallback
counters ((row, level) pairs the tf32 path could not prove, rows the exact pass re-encoded), tile
variants, and the CUDA kernel. Writes JSON; prints a table.

    python bench/gpu_rq_sweep.py --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_residual_quantize import make_data  # noqa: E402
from common import time_fn  # noqa: E402

from pysid.kernels.residual_quantize import residual_quantize_triton  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1 << 20)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run under TRITON_INTERPRET=1")
    args = ap.parse_args()
    rows = []
    n = args.n
    shapes = [(256, 256, 3), (256, 256, 1), (256, 4096, 1)] if args.device == "cuda" else [(16, 32, 3), (16, 64, 1)]
    variants = [("default", {}), ("exact", {"fast": False}), ("bm32 bk64 w4", dict(block_m=32, block_k=64, num_warps=4)),
                ("bm64 bk32 w4", dict(block_m=64, block_k=32, num_warps=4)),
                ("bm128 bk32 w8 s1", dict(block_m=128, block_k=32, num_warps=8, num_stages=1)),
                ("bm64 bk64 w4 s1", dict(block_m=64, block_k=64, num_warps=4, num_stages=1)),
                # sm_90 compile (2026-11-28): the default (8 warps, BK 64) splits each 64-code chunk over
                # two warpgroups (wgmma n32, row minima across warps); these keep n64 per warpgroup
                ("bm64 bk64 w4", dict(block_m=64, block_k=64, num_warps=4)),
                ("bm64 bk128 w8 s1", dict(block_m=64, block_k=128, num_warps=8, num_stages=1)),
                # BM 32 / 4 warps compiles to mma.sync with ~98 KB shared: two programs fit per SM
                ("bm32 bk64 w4 2/SM", dict(block_m=32, block_k=64, num_warps=4, programs_per_sm=2))]
    for d, k, levels in shapes:
        for kind in ("clustered", "gaussian"):
            if kind == "clustered":
                x, cb = make_data(n, d, k, levels, args.device)
            else:
                g = torch.Generator(device=args.device).manual_seed(0)
                x = torch.randn(n, d, device=args.device, generator=g)
                cb = torch.randn(levels, k, d, device=args.device, generator=g) * 0.5
            packed = cb.reshape(-1, d).contiguous()
            offs = [i * k for i in range(levels + 1)]
            ref = None
            for name, kw in variants if (k <= 256 and levels == 3) else variants[:2]:
                try:
                    f = lambda: residual_quantize_triton(x, packed, offs, 1, quantized=levels > 1, **kw)  # noqa: E731
                    ms = 1e3 * time_fn(f, device=args.device, repeat=10, warmup=1)
                    codes = f()[2]
                    if ref is None:
                        ref = codes
                    row = dict(d=d, k=k, levels=levels, data=kind, variant=name, ms=ms,
                               same_codes_as_default=float((codes == ref).all(1).float().mean()))
                    if name == "default":
                        cnt = torch.zeros(2, dtype=torch.int32, device=args.device)
                        residual_quantize_triton(x, packed, offs, 1, _fallback_counter=cnt)
                        row["unsure_row_levels"], row["redone_rows"] = cnt.tolist()
                except Exception as e:  # noqa: BLE001 - a failing variant is a row
                    row = dict(d=d, k=k, levels=levels, data=kind, variant=name, error=f"{type(e).__name__}: {e}"[:200])
                rows.append(row)
                print(json.dumps(row), flush=True)
            try:
                import pysid

                with pysid.backend("cuda"):
                    f = lambda: pysid.residual_quantize(x, cb)  # noqa: E731
                    rows.append(dict(d=d, k=k, levels=levels, data=kind, variant="cuda kernel (op)",
                                     ms=1e3 * time_fn(f, device=args.device, repeat=10, warmup=1)))
                    print(json.dumps(rows[-1]), flush=True)
            except Exception as e:  # noqa: BLE001
                rows.append(dict(d=d, k=k, levels=levels, data=kind, variant="cuda kernel (op)", error=str(e)[:200]))
            del x, cb, packed
            if args.device == "cuda":
                torch.cuda.empty_cache()
    with open(args.out, "w") as fh:
        json.dump(rows, fh, indent=1)
    for r in rows:
        print(f"{r['d']:4d} {r['k']:5d} L{r['levels']} {r['data']:9s} {r['variant']:18s} "
              f"{r.get('ms', float('nan')):9.3f} ms  {r.get('unsure_row_levels', '')} {r.get('redone_rows', '')} "
              f"{r.get('error', '')[:60]}")


if __name__ == "__main__":
    main()
