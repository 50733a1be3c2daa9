"""The benchmark scripts run end to end in --quick mode and write well-formed JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.mark.parametrize("script", ["bench_residual_quantize.py", "bench_beam_search.py", "bench_kmeans.py", "bench_sid.py",
                                    "bench_startup.py", "bench_scale.py"])
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


def test_bench_sid_seeds(tmp_path):
    """--seeds 2 on the cheapest case (1 thread: the peers stay fast on a busy machine): rows keep the per-seed
    values, and the quality columns are their means."""
    out = tmp_path / "result.json"
    res = subprocess.run([sys.executable, os.path.join(BENCH, "bench_sid.py"), "--quick", "--n", "1500", "--no-toys",
                          "--seeds", "2", "--seeds-cases", "synthetic", "--threads", "1", "--out", str(out)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "recon_err_std" in res.stdout and "median over the seeds" in res.stdout
    rows = [r for r in json.loads(out.read_text())["rows"] if r.get("case") == "synthetic" and "fit_s" in r]
    assert rows and rows[0]["method"].startswith("pysid")  # peers that are installed add rows of their own
    for r in rows:
        per = r["per_seed"]
        assert r["seeds"] == per["seed"] == [0, 1]
        for key in ("recon_err", "collision_rate", "distinct", "max_per_tuple", "fit_s", "encode_s"):
            assert len(per[key]) == 2
        for key in ("recon_err", "collision_rate", "distinct", "max_per_tuple"):
            assert r[key] == pytest.approx(sum(per[key]) / 2, rel=1e-12), (r["method"], key)
        assert r["fit_s"] == pytest.approx(sum(per["fit_s"]) / 2)  # the median of two
        assert r["recon_err_min"] == min(per["recon_err"]) and r["recon_err_max"] == max(per["recon_err"])
        assert r["recon_err_std"] == pytest.approx(abs(per["recon_err"][0] - per["recon_err"][1]) / 2 ** 0.5)


def test_gpu_profile_summary(tmp_path):
    """gpu_check.sh's profile stage: the ncu CSV (raw page, after the program's own output) is read
    into key metrics and the largest stall reasons, largest first; a log without CSV says so."""
    log = tmp_path / "ncu.log"
    log.write_text(
        "==PROF== Connected\ndone\n"
        '"ID","Kernel Name","gpu__time_duration.sum","launch__registers_per_thread","other__metric",'
        '"smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio",'
        '"smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio"\n'
        '"","","usecond","register/thread","","ratio","ratio"\n'
        '"0","_rq_greedy_kernel","10,500.2","255","7","0.5","7.25"\n')
    res = subprocess.run([sys.executable, os.path.join(BENCH, "gpu_profile.py"), "summarize", str(log)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "_rq_greedy_kernel" in out and "10,500.2 usecond" in out and "255" in out and "other__metric" not in out
    assert out.index("long_scoreboard") < out.index("stalled_barrier")
    log.write_text("==ERROR== ERR_NVGPUCTRPERM\n")
    res = subprocess.run([sys.executable, os.path.join(BENCH, "gpu_profile.py"), "summarize", str(log)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "no ncu CSV" in res.stdout and "ERR_NVGPUCTRPERM" in res.stdout


def test_bench_kmeans_text_npy(tmp_path):
    """--text-npy on a small .npy: every row (pysid defaults and previous defaults, and the faiss
    rows where faiss is installed) with its time per round and its quality; fit rows carry the
    error and the collision share, k-means rows the inertia per item."""
    import numpy as np

    g = np.random.default_rng(0)
    emb = (g.standard_normal((40, 8)) * 3)[g.integers(0, 40, 1500)] + g.standard_normal((1500, 8))
    path = tmp_path / "emb.npy"
    np.save(path, emb.astype(np.float32))
    out = tmp_path / "result.json"
    res = subprocess.run([sys.executable, os.path.join(BENCH, "bench_kmeans.py"), "--text-npy", str(path), "--repeat",
                          "2", "--threads", "1", "--no-beam-rq", "--out", str(out)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    methods = [r["method"] for r in rows]
    assert "pysid.kmeans (defaults)" in methods and "pysid.fit (defaults, dedup none)" in methods
    assert any(m.startswith("pysid, previous fit defaults") for m in methods)
    for r in rows:
        assert len(r["seconds_all"]) == 2 and r["seconds"] > 0
        if r["task"].startswith("fit"):
            assert 0 < r["error"] < float((emb ** 2).sum(1).mean()) and 0 <= r["collisions"] <= 1
        else:
            assert r["inertia_per_item"] > 0


def test_bench_kmeans_cpu_time_needs_one_thread(tmp_path):
    """--cpu-time times rows by the calling thread's CPU time: refused with more than one thread."""
    res = subprocess.run([sys.executable, os.path.join(BENCH, "bench_kmeans.py"), "--text-npy", "x.npy", "--threads",
                          "2", "--cpu-time"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "--cpu-time needs --text-npy and --threads 1" in res.stderr
