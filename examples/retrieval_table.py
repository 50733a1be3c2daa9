"""Print one Markdown table from the JSON files of examples/generative_retrieval.py runs.

    python examples/retrieval_table.py bench/results/gr/*.json

One row per method of each file (MostPop and SASRec-style rows are printed once per data set
and budget: they do not depend on the SIDs). Columns: data, SIDs (input / dedup), collision
rate before dedup, ID length, R@5, R@10, N@5, N@10, invalid rate, training steps, training
minutes of CPU (time.process_time) and of wall time, and what stopped the training.
"""

from __future__ import annotations

import argparse
import json
import os


def rows(paths: list[str]) -> list[str]:
    out = ["| data | method | SIDs | collisions | ID length | R@5 | R@10 | N@5 | N@10 | invalid | steps | "
           "CPU min | wall min | stopped by | file |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for path in paths:
        with open(path) as f:
            res = json.load(f)
        a = res["args"]
        data = os.path.basename(a["data"]).split(".")[0]
        s = res.get("sids", {})
        sid = f"{s.get('sid_input', a.get('sid_input', 'collab'))} / {s.get('dedup', a.get('dedup', 'suffix'))}"
        if s.get("input_weights"):
            sid += " w=" + ",".join(f"{w:g}" for w in s["input_weights"])
        for name, m in res["methods"].items():
            tiger = name.endswith("(pysid)")   # a generative model over this run's SIDs
            key = (data, name, a.get("max_cpu_minutes"), a.get("max_minutes"))
            if not tiger and key in seen:
                continue
            seen.add(key)
            coll = f"{100 * s['collision_rate_before_dedup']:.1f} %" if tiger and s else "-"
            length = str(len(s["vocab_sizes"])) if tiger and s else "-"
            out.append(
                f"| {data} | {name} | {sid if tiger else '-'} | {coll} | {length} | "
                f"{m['R@5']:.4f} | {m['R@10']:.4f} | {m['N@5']:.4f} | {m['N@10']:.4f} | {m['invalid_rate']:.4f} | "
                f"{m.get('steps', '-')} | {m.get('train_cpu_minutes', 0.0):.1f} | {m.get('train_minutes', 0.0):.1f} | "
                f"{m.get('stopped_by', '-')} | {os.path.basename(path)} |")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="+", help="--out files of examples/generative_retrieval.py")
    print("\n".join(rows(p.parse_args(argv).json)))


if __name__ == "__main__":
    main()
