"""Compile Triton kernels for sm_90 (Hopper) without a GPU and read their registers and spills.

Runs in a subprocess: Triton cannot compile kernels in a process that runs its interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_SCRIPT = r"""
import importlib.util, json, os, re, shutil, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

tool_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
cuobjdump = shutil.which("cuobjdump", path=tool_dir) or shutil.which("cuobjdump")
if cuobjdump is None:
    print(json.dumps(None))
    sys.exit(0)
modules = {}
out = []
for job in json.loads(sys.argv[1]):
    path = job["module"]
    if path not in modules:
        spec = importlib.util.spec_from_file_location(f"_sm90_{len(modules)}", path)
        modules[path] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[path])
    fn = getattr(modules[path], job["kernel"])
    # as a launch on contiguous x with D = 256 specialises: stride_xd == 1 becomes a constant,
    # pointers and D, stride_xm (multiples of 16) get the divisibility attribute
    constexprs = dict(job["constexprs"], stride_xd=1)
    signature = {k: v for k, v in job["signature"].items() if k != "stride_xd"}
    sig = dict(signature, **{name: "constexpr" for name in constexprs})
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]]
             for a, v in signature.items() if v.startswith("*") or a in ("D", "stride_xm")}
    kernel = triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": job["num_warps"], "num_stages": job.get("num_stages", 3)})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        res = subprocess.run([cuobjdump, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+).*?LOCAL:(\d+)", res)
    out.append([int(m.group(1)), int(m.group(2))])
print(json.dumps(out))
"""


def sm90_resources(jobs: list[dict]) -> list[list[int]] | None:
    """[registers, local (spill) bytes] per job, or None where Triton ships no cuobjdump.

    A job: module (file path), kernel (name), signature ({arg: type} without constexprs),
    constexprs ({name: value}), num_warps, optional num_stages."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(jobs)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
