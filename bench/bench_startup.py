"""Benchmark: start-up time of the ``pysid`` command line and of ``import pysid``.

Each row runs one command in a fresh process (from a temporary folder, so that the installed
package is imported, not a source tree) ``--repeat`` times after one warm-up run, and reports
the median and the minimum wall time (``time.perf_counter`` around ``subprocess.run``):

* ``python -c pass``: the interpreter alone (the floor of every row).
* ``python -c "import torch"``: torch alone (the floor of every row that needs torch).
* ``pysid --version`` and ``pysid --help``: must not import torch (goal <= 0.5 s).
* ``python -c "import pysid"``: the lazy package (no torch).
* ``pysid encode`` of 1,000 rows x 64 dims with a table of 4,096 items (3 x 256 codes + suffix,
  fitted here before timing): loads torch, the table and the embeddings, runs the first op
  call, writes the codes (goal <= 1.5 s end to end). ``torch._dynamo`` is imported on the first
  call of a ``torch.library.custom_op`` unless the op path avoids it: the row says whether the
  process imported it (``dynamo`` column, from ``python -X importtime``).

    python bench/bench_startup.py            # 7 runs per row
    python bench/bench_startup.py --quick    # 3 runs per row (CI smoke run)

The ``pysid`` console script next to this Python is used when present, else ``python -m pysid``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, print_table, write_json  # noqa: E402

GOALS = {"pysid --help": 0.5, "pysid --version": 0.5, "import pysid": 0.5, "pysid encode 1k": 1.5}


def pysid_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "pysid")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("pysid")
    return [found] if found else [sys.executable, "-m", "pysid"]


def run_times(cmd: list[str], repeat: int, cwd: str, env: dict[str, str]) -> tuple[list[float], str]:
    """Wall times of ``repeat`` runs after one warm-up run; raises on a non-zero exit."""
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {res.returncode}: {res.stderr.strip()[-500:]}")
        if i:
            times.append(dt)
    return times, res.stdout


def imported(cmd: list[str], module: str, cwd: str, env: dict[str, str]) -> bool:
    """Whether running cmd imports ``module`` (python -X importtime)."""
    py = [sys.executable, "-X", "importtime"]
    full = py + cmd[1:] if cmd[0] == sys.executable else py + [cmd[0]] + cmd[1:]
    res = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True)
    return any(line.startswith("import time:") and line.split("|")[-1].strip() == module
               for line in res.stderr.splitlines())


def make_inputs(folder: str, n_table: int, n_new: int, d: int) -> tuple[str, str]:
    import numpy as np
    import torch

    import pysid

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(64, d, generator=g)
    x = centres[torch.randint(0, 64, (n_table + n_new,), generator=g)] + 0.3 * torch.randn(n_table + n_new, d, generator=g)
    sids = pysid.fit(x[:n_table], levels=3, codebook_size=256, dedup="suffix", seed=0, progress=False)
    table, new = os.path.join(folder, "sids.npz"), os.path.join(folder, "new.npy")
    sids.save(table)
    np.save(new, x[n_table:].numpy())
    return table, new


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 runs per row (CI smoke run)")
    p.add_argument("--repeat", type=int, default=None, help="runs per row (default 7, quick 3)")
    p.add_argument("--rows", type=int, default=1000, help="rows encoded by the 'pysid encode' row")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_startup.json"))
    args = p.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    pysid = pysid_command()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        table, new = make_inputs(tmp, 4096, args.rows, 64)
        out = os.path.join(tmp, "codes.npy")
        cases = [
            ("python (empty)", [sys.executable, "-c", "pass"]),
            ("torch import", [sys.executable, "-c", "import torch"]),
            ("pysid --version", pysid + ["--version"]),
            ("pysid --help", pysid + ["--help"]),
            ("import pysid", [sys.executable, "-c", "import pysid"]),
            (f"pysid encode {args.rows // 1000}k" if args.rows % 1000 == 0 else f"pysid encode {args.rows}",
             pysid + ["encode", table, new, "-o", out, "--force"]),
        ]
        for name, cmd in cases:
            shown = [os.path.basename(cmd[0])] + [c.replace(tmp + os.sep, "") for c in cmd[1:]]
            row: dict[str, Any] = {"method": name, "command": " ".join(shown)}
            try:
                times, _ = run_times(cmd, repeat, tmp, env)
                row.update(median_s=statistics.median(times), min_s=min(times), runs=len(times))
                goal = GOALS.get(name)
                if goal is not None:
                    row.update(goal_s=goal, meets_goal=row["median_s"] <= goal)
                if name != "python (empty)":
                    row["torch"] = imported(cmd, "torch", tmp, env)
                    row["dynamo"] = imported(cmd, "torch._dynamo", tmp, env)
            except (RuntimeError, OSError) as e:
                row["note"] = f"failed: {e}"
            rows.append(row)
    print(f"start-up (median of {repeat} runs after a warm-up; command run from a temporary folder)\n")
    print_table(rows, ["method", "median_s", "min_s", "goal_s", "meets_goal", "torch", "dynamo", "note"])
    write_json(args.out, {"benchmark": "startup", "env": environment(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
