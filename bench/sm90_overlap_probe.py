"""Can Triton overlap one chunk's wgmma with the previous chunk's epilogue inside one program? (issue 15)

Compiles (sm_90, no GPU needed) a chunk loop in the greedy kernel's shape - A [128, 256] fp16 resident,
B chunks [256, 64] streamed, a per-row top-1 epilogue - in two forms: one accumulator, and the "two
accumulators by hand" form (issue the next chunk's dot, then run the epilogue of the previous chunk's
result). Prints, per Triton, the ``ttng.warp_group_dot_wait`` of every dot: ``pendings = 0`` right after
a dot means the program waits for that MMA before it does anything else, so nothing overlaps (a
dot without a wait is synchronous).

    python bench/sm90_overlap_probe.py            # the installed triton
    python bench/sm90_overlap_probe.py --triton36 # also triton 3.6 (tests/sm90.triton36_python's venv)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

_KERNEL = r'''
import triton
import triton.language as tl


@triton.jit
def _epilogue(acc, cn, kb, best, bidx, BK: tl.constexpr):
    kk = tl.arange(0, BK)
    s = cn[None, :] - 2.0 * acc
    m = tl.min(s, 1)
    i = tl.min(tl.where(s == m[:, None], kk[None, :], BK), 1) + kb
    take = m < best
    return tl.where(take, m, best), tl.where(take, i, bidx)


@triton.jit
def probe(a_ptr, b_ptr, cn_ptr, out_ptr, K, BM: tl.constexpr, BK: tl.constexpr, DP: tl.constexpr,
          TWO_ACC: tl.constexpr):
    mm = tl.arange(0, BM)
    kk = tl.arange(0, BK)
    dd = tl.arange(0, DP)
    rows = tl.program_id(0) * BM + mm
    best = tl.full([BM], float("inf"), tl.float32)
    bidx = tl.zeros([BM], dtype=tl.int32)
    a = tl.load(a_ptr + rows[:, None] * DP + dd[None, :])
    if TWO_ACC:  # the next chunk's dot is issued before the previous chunk's epilogue
        prev = tl.dot(a, tl.load(b_ptr + kk[None, :] * DP + dd[:, None]), out_dtype=tl.float32)
        for kb in range(BK, K, BK):
            acc = tl.dot(a, tl.load(b_ptr + (kb + kk)[None, :] * DP + dd[:, None]), out_dtype=tl.float32)
            best, bidx = _epilogue(prev, tl.load(cn_ptr + kb - BK + kk), kb - BK, best, bidx, BK)
            prev = acc
        best, bidx = _epilogue(prev, tl.load(cn_ptr + K - BK + kk), K - BK, best, bidx, BK)
    else:
        for kb in range(0, K, BK):
            acc = tl.dot(a, tl.load(b_ptr + (kb + kk)[None, :] * DP + dd[:, None]), out_dtype=tl.float32)
            best, bidx = _epilogue(acc, tl.load(cn_ptr + kb + kk), kb, best, bidx, BK)
    tl.store(out_ptr + rows, bidx)
'''

_COMPILE = r'''
import importlib.util, json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
spec = importlib.util.spec_from_file_location("probe_kernel", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
fn = mod.probe
sig = {"a_ptr": "*fp16", "b_ptr": "*fp16", "cn_ptr": "*fp32", "out_ptr": "*i32", "K": "i32"}
out = {}
for two in (False, True):
    ce = dict(BM=128, BK=64, DP=256, TWO_ACC=two)
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in sig if sig[a].startswith("*")}
    k = triton.compile(ASTSource(fn, dict(sig, **{n: "constexpr" for n in ce}), constexprs=ce, attrs=attrs),
                       target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "num_stages": 2})
    ir = k.asm["ttgir"]
    out["two accumulators" if two else "one accumulator"] = dict(
        dots=len(re.findall(r"ttng\.warp_group_dot ", ir)), async_dots=len(re.findall(r"isAsync = true", ir)),
        waits=[int(p) for p in re.findall(r"warp_group_dot_wait .*?pendings = (\d+)", ir)])
print(json.dumps(dict(triton=triton.__version__, forms=out)))
'''


def run(python: str, kernel_path: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([python, "-c", _COMPILE, kernel_path], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triton36", action="store_true", help="also compile with triton 3.6 (the GPU machines')")
    args = ap.parse_args()
    import tempfile

    pythons = [sys.executable]
    if args.triton36:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        from sm90 import triton36_python

        py36 = triton36_python()
        if py36 is None:
            sys.exit("triton 3.6 could not be installed here")
        pythons.append(py36)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe_kernel.py")
        with open(path, "w") as f:
            f.write(_KERNEL)
        for py in pythons:
            res = run(py, path)
            for form, r in res["forms"].items():
                verdict = "no overlap (every dot waited for at once)" if all(w == 0 for w in r["waits"]) else "async"
                print(f"triton {res['triton']:6s} {form:17s} dots {r['dots']} (async {r['async_dots']})  "
                      f"wait pendings {r['waits']}  -> {verdict}")


if __name__ == "__main__":
    main()
