"""GPU diagnosis of the Triton residual-quantize kernels (greedy and beam 5): time per variant.

For each shape and data kind: the default config (greedy: the fp16 proposal), the exact path
(fast=False), the tf32 proposal (``_proposal="tf32"``, with and without the proof), the second tier
off / on (``_tier2``; by default it runs where a level has K >= 1024), the fallback counters
((row, level) pairs the proposal pass could not prove, rows it listed; greedy: the second tier's
unproven pairs and the rows it sent to the exact pass), tile variants, and the CUDA kernel; at D 256 K 256 L 3 beam 5 as well: the exact beam kernel, the
tf32-proposing one with its proof and redo (its unsure / redone counts, and the (row, level) pairs
whose window re-score the fp16 proposal skipped) and without (precision fast), x_greedy = time / greedy
default time (issue 15's goal: <= 6), same_codes_as_default of a beam row = share of rows with the exact
beam kernel's codes (1.0 expected unless precision fast);
beam BLOCK_K rows: the default 128 against 64 and 32 (the tf32 pass's packed-key epilogue).
Rows run in priority order (greedy variants on every shape, then beam 5, then tiles) and the JSON is
rewritten after each, so a run cut short by its time limit keeps what matters most.
Writes JSON; prints a table.

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


def _save(path: str, rows: list) -> None:
    with open(path, "w") as fh:
        json.dump(rows, fh, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1 << 20)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run under TRITON_INTERPRET=1")
    args = ap.parse_args()
    rows = []
    n = args.n
    shapes = ([(256, 256, 3), (64, 256, 3), (256, 1024, 4), (256, 256, 1), (256, 4096, 1)] if args.device == "cuda"
              else [(16, 32, 3), (16, 64, 1)])
    # 2026-12-04 (rqkernel): the tf32 pass is a pipelined GEMM over D per chunk of BLOCK_K codewords (BM 128,
    # 8 warps, BD 16, BU 16, 3 stages, 1 program per SM); the exact / redo pass BK 64, BD 16, BU 32. Variants:
    # the tiles around that default (BD 32 and BU 32 spill a little on triton 3.6 per the sm_90 compile:
    # measure whether it matters), and the beam kernel's tiles.
    # 2026-12-05 (issue 15): the greedy proposal GEMM is fp16 with exact power-of-two scaling per row and level
    # (the default); "greedy tf32 proposal" is the former tf32 GEMM (same proof, same codes), measured on every shape.
    # At D <= 256 the default keeps the tile's fp16 A operand in shared memory for the whole level (BK 64, 2 stages:
    # 128 KB); "greedy fp16 streamed A" streams both operands per chunk in D-slices (BK 128, 3 stages), every shape.
    # (bk256 with the resident A needs 320 KB of shared memory: it fails to launch, a row with the error.)
    variants = [("default", {}), ("exact", {"fast": False}), ("precision fast (no proof)", {"precision": "fast"}),
                ("greedy tf32 proposal", {"_proposal": "tf32"}),
                ("greedy tf32 proposal, precision fast", {"_proposal": "tf32", "precision": "fast"}),
                ("greedy fp16 streamed A", {"_resident": False}),
                # the second tier (default where a level has K >= 1024): off, and forced on at K < 1024
                ("greedy no second tier", {"_tier2": False}), ("greedy second tier on", {"_tier2": True}),
                ("bk32", dict(block_k=32)), ("bk128", dict(block_k=128)), ("bk256", dict(block_k=256)),
                ("bd32", dict(block_d=32)), ("bu32", dict(block_u=32)), ("bu64", dict(block_u=64)),
                ("s2", dict(num_stages=2)), ("s4", dict(num_stages=4)),
                ("bm64 w4", dict(block_m=64, num_warps=4)), ("2/SM", dict(programs_per_sm=2)),
                # two co-resident programs per SM (resident A: 96 KB each): one's epilogue overlaps the other's
                # MMA, which Triton does not do inside one program (bench/sm90_overlap_probe.py)
                ("bm64 w4 2/SM", dict(block_m=64, num_warps=4, programs_per_sm=2)),
                ("exact bk32", {"fast": False, "block_k": 32}), ("exact bk128", {"fast": False, "block_k": 128}),
                ("exact bd32", {"fast": False, "block_d": 32}),
                # beam 5 (2026-12-05): the exact FMA kernel (the old path, also the redo tier) first, then the
                # proposing kernel: window re-scored exactly + proof + redo of unproven rows (the default),
                # without the proof (precision fast), a wider window, and tiles
                ("beam 5 exact kernel", {"beam": 5, "fast": False}),
                ("beam 5", {"beam": 5}), ("beam 5 precision fast", {"beam": 5, "precision": "fast"}),
                # 2026-12-05 (fifth session): the beam proposal is fp16 (scaled per row / tile and level, A rounded
                # from the float32 slot on the way to the MMA); the former tf32 proposal beside it
                ("beam 5 tf32 proposal", {"beam": 5, "_proposal": "tf32"}),
                # two co-resident programs per SM (one's epilogue under the other's MMA and streaming): 64 pairs
                # (12 rows x 5 beams since the dense tiles of 2026-12-05, sixth session), 4 warps; sm_90: 255
                # registers and 4 / 4 B spilled on triton 3.6 (3.9: 203, none). Before the dense tiles (8 rows x 8
                # slots): 240 registers on 3.6, no spill
                ("beam 5 bm8 w4 2/SM", {"beam": 5, "block_m": 8, "num_warps": 4, "programs_per_sm": 2}),
                ("beam 5 window 15", {"beam": 5, "beam_window": 15}),
                ("beam 5 bm8", {"beam": 5, "block_m": 8}), ("beam 5 bk64", {"beam": 5, "block_k": 64}),
                ("beam 5 bd32", {"beam": 5, "block_d": 32}), ("beam 5 w4", {"beam": 5, "num_warps": 4}),
                # (the exact kernel's default is BK 32 / 2 stages since the dense tiles; BK 64 spills 4 B on 3.6)
                ("beam 5 exact kernel bk64", {"beam": 5, "fast": False, "block_k": 64}),
                # 2026-12-05 (beamk2): the tf32 pass's epilogue on packed (score, candidate) keys, default BLOCK_K
                # 128 in both beam kernels (A re-read 2x per level at K 256); "beam 5 bk64" above: BK 64 spills a
                # little on 3.6 (8 / 8 B); BK 32 was the default before (then with the unpacked epilogue). One more
                # compiled configuration only (the rq_sweep stage of gpu_check.sh has SWEEP_TIMEOUT, default 150 s)
                ("beam 5 bk32", {"beam": 5, "block_k": 32})]
    # priority order (a stage cut short by its time limit keeps the most important rows; the JSON is rewritten
    # after every row): 1. the greedy proposal / tier variants and the CUDA kernel at D 256 K 256 L 3 on clustered
    # data, 2. the beam rows there (the exact kernel first: the reference of same_codes_as_default; then the
    # default, two programs per SM, the tf32 proposal, precision fast), 3. the greedy rows on the other shapes and
    # data kinds (side_by_side times the goal shapes' defaults in the first call), 4. the beam rows on gaussian
    # data, 5. the tile variants
    greedy_rows, beam_rows = variants[:8], [v for v in variants if "beam" in v[1]]
    first_beams = ("beam 5 exact kernel", "beam 5", "beam 5 bm8 w4 2/SM", "beam 5 tf32 proposal", "beam 5 precision fast")
    beam_rows = sorted(beam_rows, key=lambda v: first_beams.index(v[0]) if v[0] in first_beams else len(first_beams))
    tile_rows = [v for v in variants[8:] if "beam" not in v[1]]
    main_shape = shapes[0]
    plan = [(main_shape, "clustered", greedy_rows, True), (main_shape, "clustered", beam_rows, False)]
    plan += [((d, k, levels), kind, greedy_rows, True) for d, k, levels in shapes for kind in ("clustered", "gaussian")
             if ((d, k, levels), kind) != (main_shape, "clustered")]
    plan += [(main_shape, "gaussian", beam_rows, False), (main_shape, "clustered", tile_rows, False)]
    refs: dict = {}  # (shape, kind) -> (codes of the greedy default, its ms, codes of the exact beam kernel)
    for (d, k, levels), kind, chosen, with_cuda in plan:
        if kind == "clustered":
            x, cb = make_data(n, d, k, levels, args.device)
        else:
            g = torch.Generator(device=args.device).manual_seed(0)
            x = torch.randn(n, d, device=args.device, generator=g)
            cb = torch.randn(levels, k, d, device=args.device, generator=g) * 0.5
        packed = cb.reshape(-1, d).contiguous()
        offs = [i * k for i in range(levels + 1)]
        ref, default_ms, ref_beam = refs.get((d, k, levels, kind), (None, float("nan"), None))
        for name, kw in chosen:
            kw = dict(kw)
            beam = kw.pop("beam", 1)
            try:
                f = lambda: residual_quantize_triton(x, packed, offs, beam, quantized=levels > 1 or beam > 1,  # noqa: E731
                                                     **kw)
                ms = 1e3 * time_fn(f, device=args.device, repeat=10, warmup=1)
                codes = f()[2]
                if ref is None and beam == 1:
                    ref = codes
                if beam > 1 and ref_beam is None:
                    ref_beam = codes
                row = dict(d=d, k=k, levels=levels, data=kind, variant=name, ms=ms,
                           same_codes_as_default=float((codes == (ref if beam == 1 else ref_beam)).all(1)
                                                       .float().mean()))
                if name == "default":
                    default_ms = ms
                if beam > 1:  # the goal: beam 5 <= 6x greedy (issue 15)
                    row["x_greedy"] = ms / default_ms
                counted = ("default", "greedy tf32 proposal", "greedy no second tier", "greedy second tier on",
                           "greedy fp16 streamed A")
                if name in counted or (beam > 1 and kw.get("fast", True) and kw.get("precision") != "fast"):
                    cnt = torch.zeros(4 if beam == 1 else 3, dtype=torch.int32, device=args.device)
                    residual_quantize_triton(x, packed, offs, beam, _fallback_counter=cnt, **kw)
                    # greedy: redone_rows = rows the top-4 pass lists (for the second tier where it
                    # runs, else the exact pass); tier2_*: the tier's unproven pairs and rows it sends on
                    row["unsure_row_levels"], row["redone_rows"] = cnt.tolist()[:2]
                    if beam == 1:
                        row["tier2_unsure_row_levels"], row["tier2_to_exact_rows"] = cnt.tolist()[2:]
                    else:  # row-levels whose first B + 1 keys proved the order: no window re-score
                        row["window_skipped_row_levels"] = cnt.tolist()[2]
            except Exception as e:  # noqa: BLE001 - a failing variant is a row
                row = dict(d=d, k=k, levels=levels, data=kind, variant=name, error=f"{type(e).__name__}: {e}"[:200])
            rows.append(row)
            print(json.dumps(row), flush=True)
            _save(args.out, rows)
        refs[(d, k, levels, kind)] = (ref, default_ms, ref_beam)
        if with_cuda:
            try:
                import pysid

                with pysid.backend("cuda"):
                    f = lambda: pysid.residual_quantize(x, cb)  # noqa: E731
                    rows.append(dict(d=d, k=k, levels=levels, data=kind, variant="cuda kernel (op)",
                                     ms=1e3 * time_fn(f, device=args.device, repeat=10, warmup=1)))
                    print(json.dumps(rows[-1]), flush=True)
            except Exception as e:  # noqa: BLE001
                rows.append(dict(d=d, k=k, levels=levels, data=kind, variant="cuda kernel (op)", error=str(e)[:200]))
            _save(args.out, rows)
        del x, cb, packed
        if args.device == "cuda":
            torch.cuda.empty_cache()
    _save(args.out, rows)
    for r in rows:
        print(f"{r['d']:4d} {r['k']:5d} L{r['levels']} {r['data']:9s} {r['variant']:18s} "
              f"{r.get('ms', float('nan')):9.3f} ms  {r.get('unsure_row_levels', '')} {r.get('redone_rows', '')} "
              f"{r.get('error', '')[:60]}")


if __name__ == "__main__":
    main()
