"""The benchmark scripts run end to end in --quick mode and write well-formed JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.mark.parametrize("script", ["bench_residual_quantize.py", "bench_beam_search.py", "bench_kmeans.py", "bench_sid.py"])
def test_bench_quick(script, tmp_path):
    out = tmp_path / "result.json"
    res = subprocess.run([sys.executable, os.path.join(BENCH, script), "--quick", "--out", str(out)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    payload = json.loads(out.read_text())
    assert payload["env"]["torch"] and payload["rows"]
    pysid_rows = [r for r in payload["rows"] if str(r.get("method", "")).startswith("pysid")]
    assert pysid_rows and all("failed" not in str(r.get("note", "")) for r in pysid_rows)
    for r in pysid_rows:
        if "invalid_items" in r:
            assert r["invalid_items"] == 0
        if r.get("same_codes") is not None:
            assert r["same_codes"] > 0.99
