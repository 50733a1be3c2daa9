"""Compile GPU kernels for sm_90 (Hopper) without a GPU; read registers, spills and the SASS.

Triton kernels compile in a subprocess (Triton cannot compile in a process that runs its
interpreter), with any Python: the installed one, or a side venv with another triton (the GPU
machines run triton 3.6: ``triton36_python()`` makes one under the repository's ignored build/
folder, cached). Spills are read where today's toolchains report them: ``ptxas -v`` ("bytes spill
stores / loads") and cuobjdump's STACK column - LOCAL stays 0 while kilobytes spill. The SASS
(cuobjdump -sass) is reduced to counts of the instruction forms the kernels are meant to use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# SASS forms counted per kernel (regular expressions over cuobjdump -sass lines)
SASS_FORMS = {
    "wgmma": r"\bHGMMA\.",                 # Hopper warpgroup MMA (wgmma)
    "mma": r"\bHMMA\.",                    # warp-level mma.sync
    "wgmma_f16": r"\bHGMMA\.\d+x\d+x16\.F32\s",   # wgmma with fp16 operands (no .TF32 / .BF16 suffix), f32 acc
    "wgmma_tf32": r"\bHGMMA\.\d+x\d+x8\.F32\.TF32\b",  # wgmma with tf32 operands
    "ldg128": r"\bLDG\.E(\.[A-Z0-9_]+)*\.128\b",
    "stg128": r"\bSTG\.E(\.[A-Z0-9_]+)*\.128\b",
    "ldgsts128": r"\bLDGSTS\.E(\.[A-Z0-9_]+)*\.128\b",  # cp.async 16 B
    "lds128": r"\bLDS(\.[A-Z0-9_]+)*\.128\b",
    "sts128": r"\bSTS(\.[A-Z0-9_]+)*\.128\b",
    "ldg32": r"\bLDG\.E(\.(?!64\b|128\b)[A-Z0-9_]+)*\s",  # 4-byte global loads (no width suffix)
    "ldgsts32": r"\bLDGSTS\.E(\.(?!64\b|128\b)[A-Z0-9_]+)*\s",
    "tma": r"\bUTMALDG\b",
    "ldl": r"\bLDL\b",                     # local memory (spills) loads
    "stl": r"\bSTL\b",
}

_PTXAS_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS_RE = re.compile(r"Used (\d+) registers")


def parse_ptxas(text: str) -> dict:
    """Registers, stack frame and spill bytes from ``ptxas -v`` output (the largest over functions)."""
    out = {"regs": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0}
    for m in _PTXAS_RE.finditer(text):
        out["stack"] = max(out["stack"], int(m.group(1)))
        out["spill_stores"] = max(out["spill_stores"], int(m.group(2)))
        out["spill_loads"] = max(out["spill_loads"], int(m.group(3)))
    for m in _REGS_RE.finditer(text):
        out["regs"] = max(out["regs"], int(m.group(1)))
    return out


def parse_res_usage(text: str) -> dict:
    """REG / STACK / LOCAL / SHARED columns of ``cuobjdump -res-usage`` (largest over functions)."""
    out = {}
    for key in ("REG", "STACK", "SHARED", "LOCAL"):
        vals = [int(v) for v in re.findall(rf"\b{key}:(\d+)", text)]
        out[key.lower() + "_res"] = max(vals) if vals else 0
    return out


def sass_counts(sass: str) -> dict:
    return {name: len(re.findall(rx, sass)) for name, rx in SASS_FORMS.items()}


_SCRIPT = r"""
import importlib.util, json, os, re, shutil, subprocess, sys, tempfile
sys.path.insert(0, sys.argv[2])
import sm90
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

tool_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
def tool(name):
    return shutil.which(name, path=tool_dir) or shutil.which(name)
cuobjdump = tool("cuobjdump")
try:  # the ptxas Triton itself uses for sm_90 (3.9 picks its newer ptxas-blackwell for its PTX 9.x)
    from triton.backends.nvidia.compiler import get_ptxas
    ptxas = get_ptxas(90).path
except Exception:
    ptxas = tool("ptxas")
if ptxas is None or cuobjdump is None:
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
    constexprs = dict(job["constexprs"])
    signature = dict(job["signature"])
    if "stride_xd" in signature:  # a launch on contiguous x specialises stride_xd == 1 to a constant
        del signature["stride_xd"]
        constexprs["stride_xd"] = 1
    sig = dict(signature, **{name: "constexpr" for name in constexprs})
    # pointers and the listed integers (D, row strides: multiples of 16 at D = 256) are 16-divisible
    div = set(job.get("divisible", []))
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]]
             for a, v in signature.items() if v.startswith("*") or a in div}
    options = {"num_warps": job["num_warps"], "num_stages": job.get("num_stages", 3)}
    if job.get("maxnreg"):  # ptxas's register limit (.maxnreg), as the launch passes it
        options["maxnreg"] = job["maxnreg"]
    kernel = triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                            options=options)
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        arch = re.search(r"^\.target\s+(sm_\w+)", kernel.asm["ptx"], re.M).group(1)
        pv = subprocess.run([ptxas, f"-arch={arch}", "-v", ptx, "-o", os.path.join(tmp, "v.cubin")],
                            capture_output=True, text=True)
        if pv.returncode != 0:
            raise RuntimeError(f"ptxas failed for {job.get('name')}: {pv.stderr[-2000:]}")
        res = subprocess.run([cuobjdump, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True).stdout
    rec = dict(name=job.get("name", job["kernel"]), triton=triton.__version__, **sm90.parse_ptxas(pv.stdout + pv.stderr))
    rec.update(sm90.parse_res_usage(res))
    rec["shared"] = int(getattr(kernel.metadata, "shared", 0) or 0)  # bytes of shared memory per program (dynamic)
    rec["sass"] = sm90.sass_counts(sass)
    out.append(rec)
print(json.dumps(out))
"""


def sm90_compile(jobs: list[dict], python: str | None = None) -> list[dict] | None:
    """Compile Triton kernels for sm_90 with ``python`` (default: this interpreter); one record per
    job: regs, stack, spill_stores, spill_loads (ptxas -v), reg_res, stack_res, local_res,
    shared_res (cuobjdump -res-usage), shared (Triton's shared memory per program), sass ({form: count}); None where no ptxas/cuobjdump.

    A job: module (file path), kernel (name), signature ({arg: type} without constexprs),
    constexprs ({name: value}), num_warps, optional num_stages and maxnreg, name, divisible (int args known
    to be multiples of 16)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([python or sys.executable, "-c", _SCRIPT, json.dumps(jobs), os.path.dirname(__file__)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sm90_resources(jobs: list[dict]) -> list[list[int]] | None:
    """[registers, spill bytes (stores + loads, from ptxas -v)] per job (the older interface)."""
    res = sm90_compile([dict(j, divisible=j.get("divisible", ["D", "stride_xm"])) for j in jobs])
    if res is None:
        return None
    return [[r["regs"], r["spill_stores"] + r["spill_loads"]] for r in res]


def nvcc_sm90(source: str, extra: list[str] | None = None) -> dict | None:
    """Compile a .cu file for sm_90 with ``nvcc -Xptxas -v``: per-kernel ptxas figures (largest over
    kernels) and SASS counts; None without nvcc."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        cmd = [nvcc, "-arch=sm_90", "-cubin", "-O3", "-Xptxas", "-v", "-std=c++17",
               "-I", os.path.join(ROOT, "csrc"), source, "-o", cubin] + (extra or [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rec = parse_ptxas(proc.stdout + proc.stderr)
        cuobjdump = shutil.which("cuobjdump") or _triton_tool("cuobjdump")
        if cuobjdump:
            res = subprocess.run([cuobjdump, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
            rec.update(parse_res_usage(res))
            sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True).stdout
            rec["sass"] = sass_counts(sass)
        rec["ptxas_log"] = proc.stderr[-4000:]
        return rec


def _triton_tool(name: str) -> str | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return shutil.which(name, path=os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin"))


def triton36_python() -> str | None:
    """A Python with triton 3.6.0 (the GPU machines' version) and numpy < 2.4 that also sees this
    environment's packages (torch): a venv under build/triton36-venv, made once and reused.
    $PYSID_TRITON36_PYTHON overrides; None where it cannot be made (no network, no wheel)."""
    given = os.environ.get("PYSID_TRITON36_PYTHON")
    if given:
        return given
    mine = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"],
                          capture_output=True, text=True)
    if mine.returncode == 0 and mine.stdout.strip().startswith("3.6"):
        return sys.executable  # this environment is a triton 3.6 one (the GPU machines')
    venv = os.path.join(ROOT, "build", "triton36-venv")
    py = os.path.join(venv, "bin", "python")
    check = "import triton, torch; assert triton.__version__.startswith('3.6'), triton.__version__"
    if os.path.exists(py) and subprocess.run([py, "-c", check], capture_output=True).returncode == 0:
        return py
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True, capture_output=True, timeout=300)
        subprocess.run([py, "-m", "pip", "install", "-q", "--retries", "1", "--timeout", "20",
                        "triton==3.6.0", "numpy<2.4"], check=True, capture_output=True, timeout=600)
        site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        here = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(site, "_pysid_main_env.pth"), "w") as f:
            f.write(here + "\n")  # torch from this environment; triton / numpy of the venv come first
        subprocess.run([py, "-c", check], check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError):
        return None
    return py
