"""Kernels to profile under Nsight Compute (``ncu``) on the GPU: one run per kernel after a
warm-up, so ``ncu --launch-skip`` can skip the compiling calls. Used by bench/gpu_check.sh
(stage ``profile``); ``--device cpu`` is a dry run under TRITON_INTERPRET=1.

    ncu --kernel-name regex:_rq_greedy_kernel --launch-skip 2 --launch-count 2 \\
        python bench/gpu_profile.py rq
    python bench/gpu_profile.py kmeanspp
    ncu --kernel-name regex:"_kpp_|_kmeanspp_kernel" --launch-skip 48 --launch-count 6 \\
        python bench/gpu_profile.py seed        # the fused seeding: sample, score, commit (eager)
    python bench/gpu_profile.py summarize NCU_LOG   # ncu --csv --page raw output -> key metrics
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_residual_quantize import make_data  # noqa: E402

from pysid.kernels.kmeans import kmeanspp_candidates_triton, kmeanspp_seed_triton  # noqa: E402
from pysid.kernels.residual_quantize import residual_quantize_triton  # noqa: E402


# raw metric names worth reading first (regexes; names differ between ncu versions)
_KEYS = [r"^gpu__time_duration\.sum$", r"^launch__(registers_per_thread|grid_size|block_size|occupancy_limit_.*)$",
         r"^sm__throughput\.avg\.pct", r"^gpu__compute_memory_throughput\.avg\.pct", r"^sm__warps_active\.avg\.pct",
         r"^smsp__issue_active\.avg\.pct", r"pipe_tensor.*pct", r"^lts__t_sector_hit_rate\.pct$",
         r"^dram__throughput\.avg\.pct", r"gmma", r"^sm__pipe_tensor_cycles_active"]


def summarize(path: str) -> None:
    """Key metrics and the six largest warp-stall reasons per profiled kernel."""
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        print(f"no ncu CSV in {path}: " + " | ".join(lines[-3:]))
        return
    rows = list(csv.reader(lines[start:]))
    head, units, data = rows[0], rows[1], rows[2:]
    for row in data:
        if len(row) != len(head):
            continue
        m = dict(zip(head, row))
        print(f"--- {m.get('Kernel Name', '?')[:60]}")
        for i, name in enumerate(head):
            if any(re.search(k, name) for k in _KEYS):
                print(f"  {name:70s} {row[i]} {units[i]}")
        stalls = []
        for i, name in enumerate(head):
            if re.match(r"smsp__average_warps?_(issue_stalled|latency_issue_stalled)_.*per_issue_active", name):
                try:
                    stalls.append((float(row[i].replace(",", "")), name))
                except ValueError:
                    pass
        for v, name in sorted(stalls, reverse=True)[:6]:
            print(f"  stall {name:64s} {v:.2f}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "summarize":
        summarize(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["rq", "kmeanspp", "seed"])
    ap.add_argument("--n", type=int, default=1 << 18)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    if args.what == "rq":  # the GPU goal's shape (D = K = 256, L = 3) on a quarter of its rows
        x, cb = make_data(args.n, 256, 256, 3, args.device)
        packed = cb.reshape(-1, 256).contiguous()
        for _ in range(2):  # warm-up (compiles both launches), then the profiled call
            residual_quantize_triton(x, packed, [0, 256, 512, 768])
    elif args.what == "kmeanspp":  # one k-means++ step: 8 candidates against the default 65k-row seeding sample
        x = torch.randn(65536, 256, device=args.device)
        mind = torch.full((x.shape[0],), float("inf"), device=args.device)
        for _ in range(2):
            kmeanspp_candidates_triton(x, x[:8].clone(), mind, None)
    else:  # the fused seeding, eager (no graph: ncu sees each launch): 16 centres, 8 candidates each
        x = torch.randn(65536, 256, device=args.device)
        u = torch.rand(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        for _ in range(2):  # the first call compiles; ncu skips its launches (3 per centre)
            kmeanspp_seed_triton(x, None, u.to(x.device), graph=False)
    if args.device == "cuda":
        torch.cuda.synchronize()
    print("done")


if __name__ == "__main__":
    main()
