"""The ``pysid`` command line: options, outputs, progress, start-up without torch, the lazy
package. (Bad inputs: tests/test_cli_errors.py.)"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pysid
from pysid import _progress
from pysid.cli import build_parser, collision_figures, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def catalogue(m=600, d=12, topics=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(topics, d, generator=g)
    return c[torch.randint(0, topics, (m,), generator=g)] + 0.3 * torch.randn(m, d, generator=g)


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = catalogue()
    np.save(tmp_path / "emb.npy", x.numpy())
    np.save(tmp_path / "new.npy", catalogue(m=40, seed=5).numpy())
    return tmp_path


def fit_table(path="sids.npz", *extra):
    assert main(["fit", "emb.npy", "-o", path, "--levels", "2", "--codebook-size", "16", "--quiet", *extra]) == 0


# --------------------------------------------------------------------------- help, version, start-up
def _subparsers(p: argparse.ArgumentParser):
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    return {}


def test_every_option_has_help_with_its_default(capsys):
    p = build_parser()
    subs = _subparsers(p)
    assert set(subs) == {"fit", "encode", "stats", "bench", "demo"}
    for name, sp in subs.items():
        assert main([name, "--help"]) == 0
        text = capsys.readouterr().out
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help, (name, a.dest)
            if a.option_strings and a.default not in (None, False) and a.nargs != 0:
                # the help shows the default (in the text or appended by the formatter)
                shown = ",".join(map(str, a.default)) if isinstance(a.default, list) else str(a.default)
                opt = a.option_strings[-1]
                opts = text[text.index("options:"):]
                seg = opts[opts.index(opt):]
                seg = seg[: min([seg.find("\n  -", 1)] + [len(seg)] if seg.find("\n  -", 1) > 0 else [len(seg)])]
                assert f"default: {shown})" in " ".join(seg.split()), (name, opt, seg)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pysid {pysid.__version__}"


def _run_py(code: str, cwd: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_help_version_and_import_do_not_import_torch(tmp_path):
    code = ("import sys, contextlib, io\n"
            "import pysid\n"
            "v = pysid.__version__\n"
            "from pysid.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['--help']) == 0 and main(['--version']) == 0 and main(['fit', '--help']) == 0\n"
            "print(v, sorted(m for m in sys.modules if m == 'torch' or m == 'numpy' or m.startswith('torch.')))\n")
    assert _run_py(code, str(tmp_path)).split() == [pysid.__version__, "[]"]


def test_python_m_pysid_and_console_script(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pysid", "--version"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"pysid {pysid.__version__}"
    res = subprocess.run([sys.executable, "-m", "pysid", "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "usage: pysid" in res.stdout and "encode" in res.stdout
    exe = os.path.join(os.path.dirname(sys.executable), "pysid")
    if os.path.exists(exe):
        res = subprocess.run([exe, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.strip() == f"pysid {pysid.__version__}"


# --------------------------------------------------------------------------- the lazy package
def test_lazy_package_resolves_every_public_name(tmp_path):
    code = ("import sys, pysid\n"
            "assert 'torch' not in sys.modules\n"
            "names = [n for n in pysid.__all__ if n != '__version__']\n"
            "assert set(pysid.__all__) <= set(dir(pysid)), set(pysid.__all__) - set(dir(pysid))\n"
            "for n in names: getattr(pysid, n)\n"
            "ns = {}\n"
            "exec('from pysid import *', ns)\n"
            "assert set(pysid.__all__) <= set(ns)\n"
            "import pysid.kmeans\n"  # binds the submodule on the package: the name must stay the function
            "assert callable(pysid.kmeans) and pysid.kmeans.__module__ == 'pysid.kmeans'\n"
            "from pysid import kmeans, Trie, fit, residual_quantize, nn, collab, data, metrics\n"
            "assert callable(kmeans) and pysid.nn.RQVAE and pysid.data.read_sequences\n"
            "print('ok')\n")
    assert _run_py(code, str(tmp_path)).strip() == "ok"


def test_lazy_names_are_the_modules_objects():
    from pysid.kmeans import kmeans, residual_kmeans
    from pysid.ops import residual_quantize
    from pysid.sid import SemanticIds, fit
    from pysid.trie import Trie

    assert pysid.kmeans is kmeans and pysid.residual_kmeans is residual_kmeans and pysid.fit is fit
    assert pysid.SemanticIds is SemanticIds and pysid.Trie is Trie and pysid.residual_quantize is residual_quantize
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pysid.nope  # noqa: B018


def test_kmeans_name_can_be_monkeypatched(monkeypatch):
    monkeypatch.setattr(pysid, "kmeans", "patched")
    assert pysid.kmeans == "patched"
    monkeypatch.undo()
    assert callable(pysid.kmeans)


# --------------------------------------------------------------------------- fit
def test_fit_writes_and_reports(work, capsys):
    fit_table()
    out = capsys.readouterr().out
    s = pysid.SemanticIds.load("sids.npz")
    fig = collision_figures(s)
    assert f"collision rate before dedup: {fig['before_dedup']['collision_rate']:.4f}" in out
    assert "collision rate after dedup:  0.0000" in out and "wrote sids.npz" in out
    assert f"suffix level: {int(s.codes[:, -1].max()) + 1} codes" in out
    assert not [f for f in os.listdir(".") if f.endswith(".tmp") or f.startswith(".sids")]  # no temporary left


def test_fit_refuses_to_overwrite_without_force(work, capsys):
    fit_table()
    first = Path("sids.npz").read_bytes()
    assert main(["fit", "emb.npy", "-o", "sids.npz", "--levels", "2", "--codebook-size", "8", "--quiet"]) == 2
    assert "exists: refusing to overwrite it (--force" in capsys.readouterr().err and Path("sids.npz").read_bytes() == first
    assert main(["fit", "emb.npy", "-o", "sids.npz", "--levels", "2", "--codebook-size", "8", "--quiet",
                 "--force"]) == 0
    assert pysid.SemanticIds.load("sids.npz").codebook_sizes == [8, 8]


def test_fit_item_ids_npy_and_txt_and_balanced(work):
    ids = np.arange(600, dtype=np.int64) * 3 + 1000
    np.save("ids.npy", ids)
    Path("ids.txt").write_text("\n".join(map(str, ids[::-1])) + "\n")
    fit_table("a.npz", "--item-ids", "ids.npy", "--balanced")
    a = pysid.SemanticIds.load("a.npz")
    assert a.item_ids.tolist() == ids.tolist() and a.settings["balanced"] is True
    fit_table("b.npz", "--item-ids", "ids.txt")
    assert pysid.SemanticIds.load("b.npz").item_ids.tolist() == ids[::-1].tolist()


def test_fit_rq_vae_options(work):
    assert main(["fit", "emb.npy", "-o", "v.npz", "--method", "rq-vae", "--levels", "2", "--codebook-size", "8",
                 "--epochs", "2", "--latent", "4", "--batch-size", "128", "--quiet"]) == 0
    v = pysid.SemanticIds.load("v.npz")
    assert v.method == "rq-vae" and v.settings["rqvae_config"]["latent"] == 4
    assert v.settings["rqvae_train"] == {"epochs": 2, "batch_size": 128} and v.codebooks[0].shape == (8, 4)


# --------------------------------------------------------------------------- encode
def test_encode_prints_the_file_it_wrote(work, capsys):
    fit_table()
    capsys.readouterr()
    assert main(["encode", "sids.npz", "new.npy", "-o", "codes"]) == 0
    out = capsys.readouterr().out
    assert "wrote codes.npy" in out and os.path.exists("codes.npy") and not os.path.exists("codes")
    s = pysid.SemanticIds.load("sids.npz")
    codes = torch.from_numpy(np.load("codes.npy"))
    assert codes.shape == (40, s.codes.shape[1])
    table = {tuple(r) for r in s.codes.tolist()}
    assert not any(tuple(r) in table for r in codes.tolist())  # new items: fresh IDs only
    assert "0 known items (their table ID), 40 new" in out


def test_encode_known_items_get_their_table_id(work, capsys):
    """The fitted embeddings are known items (exact embedding match): each gets its table ID back."""
    fit_table()
    capsys.readouterr()
    assert main(["encode", "sids.npz", "emb.npy", "-o", "c.npy"]) == 0
    out = capsys.readouterr().out
    s = pysid.SemanticIds.load("sids.npz")
    c = np.load("c.npy")
    assert np.array_equal(c, s.codes.numpy())
    assert f"encoded 600 items ({c.shape[1]} columns): 600 known items (their table ID), 0 new" in out



def test_encode_add_in_place_and_table_out(work, capsys):
    fit_table()
    old = pysid.SemanticIds.load("sids.npz")
    np.save("new_ids.npy", np.arange(40, dtype=np.int64) + 5000)
    assert main(["encode", "sids.npz", "new.npy", "--add", "--table-out", "grown.npz", "--item-ids",
                 "new_ids.npy", "-o", "c.npy"]) == 0
    grown = pysid.SemanticIds.load("grown.npz")
    assert len(grown) == 640 and grown.item_ids[-40:].tolist() == list(range(5000, 5040))
    assert torch.equal(grown.codes[-40:], torch.from_numpy(np.load("c.npy")))
    assert torch.equal(pysid.SemanticIds.load("sids.npz").codes, old.codes)  # --table-out leaves SIDS alone
    assert torch.unique(grown.codes, dim=0).shape[0] == 640
    assert main(["encode", "sids.npz", "new.npy", "--add", "--in-place"]) == 0
    inplace = pysid.SemanticIds.load("sids.npz")
    assert len(inplace) == 640 and inplace.item_ids[-40:].tolist() == list(range(600, 640))
    assert "added to the table: 640 items -> sids.npz" in capsys.readouterr().out
    # the new ids must be new: nothing is written when they are not
    before = Path("sids.npz").read_bytes()
    assert main(["encode", "sids.npz", "new.npy", "--add", "--in-place", "--item-ids", "new_ids.npy"]) == 0
    assert main(["encode", "sids.npz", "new.npy", "--add", "--in-place", "--item-ids", "new_ids.npy"]) == 2
    assert "new, unique" in capsys.readouterr().err
    assert len(pysid.SemanticIds.load("sids.npz")) == 680 and Path("sids.npz").read_bytes() != before


# --------------------------------------------------------------------------- stats
def test_stats_text_and_json(work, capsys):
    fit_table()
    capsys.readouterr()
    assert main(["stats", "sids.npz", "--embeddings", "emb.npy"]) == 0
    text = capsys.readouterr().out
    assert "collision rate before dedup" in text and "collision rate after dedup" in text
    assert "suffix level" in text and "reconstruction" in text
    assert main(["stats", "sids.npz", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    s = pysid.SemanticIds.load("sids.npz")
    sem = [tuple(r) for r in s.codes[:, :2].tolist()]
    shared = sum(sem.count(t) > 1 for t in sem)
    assert d["items"] == 600 and d["levels"] == 2 and d["codebook_sizes"] == [16, 16]
    assert d["collisions"]["before_dedup"]["collision_rate"] == pytest.approx(shared / 600)
    assert d["collisions"]["before_dedup"]["distinct"] == len(set(sem))
    assert d["collisions"]["after_dedup"] == {"items": 600, "distinct": 600, "collision_rate": 0.0, "max_per_tuple": 1}
    assert d["collisions"]["suffix_level"]["size"] == max(sem.count(t) for t in sem)
    assert d["report"]["collision_rate"] == pytest.approx(shared / 600)


def test_stats_without_suffix_and_reassign(work, capsys):
    fit_table("n.npz", "--dedup", "none")
    fit_table("r.npz", "--dedup", "reassign")
    capsys.readouterr()
    assert main(["stats", "n.npz", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["collisions"]["suffix_level"] is None
    assert d["collisions"]["after_dedup"]["collision_rate"] == d["collisions"]["before_dedup"]["collision_rate"]
    assert main(["stats", "r.npz"]) == 0
    out = capsys.readouterr().out
    r = pysid.SemanticIds.load("r.npz")
    assert f"collision rate before dedup: {r.collisions['before']['collision_rate']:.4f}" in out and "as fitted" in out


# --------------------------------------------------------------------------- progress
def test_progress_log_lines_when_not_a_terminal(work):
    """stderr is a pipe: log lines with rate and ETA (interval 0 here: every step); --quiet: none."""
    env = dict(os.environ, PYSID_PROGRESS_INTERVAL="0")
    cmd = [sys.executable, "-m", "pysid", "fit", "emb.npy", "--levels", "2", "--codebook-size", "16", "--iters", "5"]
    res = subprocess.run(cmd + ["-o", "a.npz"], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert any(re.match(r"pysid: Lloyd \d+/5 \(\d+%\) [\d.e+]+ it/s, ETA \d+ s", ln) for ln in lines), res.stderr
    assert any(re.match(r"pysid: k-means\+\+ .* it/s", ln) for ln in lines), res.stderr
    assert any("done in" in ln for ln in lines) and "\r" not in res.stderr  # plain lines, no bar redraws
    res = subprocess.run(cmd + ["-o", "b.npz", "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0 and res.stderr == ""


def test_log_progress_rate_eta_and_interval(capsys):
    b = _progress.LogProgress(10, "work", interval=0.0)
    for _ in range(4):
        b.update(1)
    b.set_postfix(loss="0.5")
    b.update(1)
    b.close()
    b.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("pysid: work 1/10 (10%)") and "ETA" in lines[0]
    assert lines[4].endswith("[loss=0.5]") and "5/10 (50%)" in lines[4] and "done in" in lines[5]
    quiet = _progress.LogProgress(10, "work", interval=3600.0)
    for _ in range(10):
        quiet.update(1)
    quiet.close()  # nothing printed during a short job: no closing line either
    assert capsys.readouterr().err == ""


def test_progress_modes(monkeypatch):
    assert _progress.bar(False, 10, "x") is None and _progress.bar(None, 10, "x") is None
    assert _progress.bar("log", 0, "x") is None
    assert isinstance(_progress.bar("log", 10, "x"), _progress.LogProgress)
    monkeypatch.setattr(_progress, "_stderr_is_tty", lambda: False)
    assert isinstance(_progress.bar("auto", 10, "x"), _progress.LogProgress)
    monkeypatch.setattr(_progress, "_stderr_is_tty", lambda: True)
    b = _progress.bar("auto", 10, "x")
    assert type(b).__name__ == "tqdm" or "tqdm" in type(b).__module__
    b.close()
    with pytest.raises(ValueError, match="progress must be"):
        _progress.bar("bars", 10, "x")
    with pytest.raises(ValueError, match="progress must be"):
        pysid.kmeans(torch.randn(50, 3), 4, progress="bars")


def test_kmeans_progress_log_keeps_the_result(capsys, monkeypatch):
    monkeypatch.setenv("PYSID_PROGRESS_INTERVAL", "0")
    x = torch.randn(400, 6)
    a = pysid.kmeans(x, 8, iters=4, seed=1, progress="log")
    assert "pysid: Lloyd" in capsys.readouterr().err
    b = pysid.kmeans(x, 8, iters=4, seed=1, progress=False)
    assert torch.equal(a.centroids, b.centroids) and capsys.readouterr().err == ""


# --------------------------------------------------------------------------- atomic outputs
def test_fit_killed_while_writing_leaves_the_old_table(work):
    """kill -9 of a 'pysid fit --force' at several moments: the output is the old table (2 levels)
    or the new one (3 levels), loadable, and no temporary file is left besides the one being written."""
    import signal
    import time

    fit_table()
    old = Path("sids.npz").read_bytes()
    cmd = [sys.executable, "-m", "pysid", "fit", "emb.npy", "-o", "sids.npz", "--force", "--levels", "3",
           "--codebook-size", "16", "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    total = time.perf_counter() - t0
    assert pysid.SemanticIds.load("sids.npz").num_levels == 3
    seen = set()
    for i in range(5):
        Path("sids.npz").write_bytes(old)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(total * (0.6 + 0.15 * i))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        levels = pysid.SemanticIds.load("sids.npz").num_levels
        assert levels in (2, 3)
        seen.add(levels)
    for f in os.listdir("."):  # a killed run may leave its temporary file, never a broken output
        assert f in ("sids.npz", "emb.npy", "new.npy") or f.startswith(".sids.npz."), f


# --------------------------------------------------------------------------- demo
TOYS = "/work/shared/data/amazon/toys.txt"
if os.path.exists(os.path.join(ROOT, "..", "shared", "data", "amazon", "toys.txt")):
    TOYS = os.path.join(ROOT, "..", "shared", "data", "amazon", "toys.txt")


def _demo_results(out: str):
    rows = re.findall(r"item\s+(\d+) -> top-(\d+) items \[([^\]]*)\]\s+(hit|miss)", out)
    return [(int(q), int(k), [int(v) for v in items.split(",")], h) for q, k, items, h in rows]


def test_demo_data_prints_the_files_item_ids(tmp_path, capsys):
    """Item ids 5000..5299 (not row numbers): queries and results are ids of the file."""
    g = torch.Generator().manual_seed(0)
    lines = []
    for u in range(600):
        c = int(torch.randint(0, 15, (1,), generator=g))
        seq = 5000 + c * 20 + torch.randint(0, 20, (8,), generator=g)
        lines.append(f"{u} " + " ".join(map(str, seq.tolist())))
    (tmp_path / "seq.txt").write_text("\n".join(lines) + "\n")
    assert main(["demo", "--data", str(tmp_path / "seq.txt"), "--queries", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    res = _demo_results(out)
    assert len(res) == 6
    ids = set(range(5000, 5300))
    for q, k, items, _ in res:
        assert q in ids and k == 5 and set(items) <= ids
    assert re.search(r"trie: \d+ items, \d+ bytes = [\d.]+ bytes/item", out)
    assert re.search(r"tokens of item 50\d\d:", out)
    hits = sum(h == "hit" for *_, h in res)
    assert f"recall@5 {hits / 6:.2f}, invalid items 0" in out


def test_demo_topk_follows_a_small_beam(capsys):
    assert main(["demo", "--items", "600", "--beam", "3", "--queries", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    res = _demo_results(out)
    assert len(res) == 4 and all(k == 3 and len(items) == 3 for _, k, items, _ in res)
    assert "recall@3" in out and "beam 3, top 3" in out


def test_nn_distance():
    from pysid.cli import nn_distance

    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0], [10.0, 10.0], [10.0, 12.0]])
    # nearest-neighbour distances 5, 1, 1, 2, 2: median 2
    assert nn_distance(x) == pytest.approx(2.0)
    assert nn_distance(x, sample=3) in (1.0, 2.0, 5.0)


@pytest.mark.skipif(not os.path.exists(TOYS), reason="Amazon Toys file not available")
def test_demo_recall_on_real_data_is_meaningful(capsys):
    """The query noise scales with the data: on Amazon Toys' collaborative vectors the noisy item
    is found (it was 0.2-0.6 with a fixed noise larger than the vectors' typical distance)."""
    assert main(["demo", "--data", TOYS, "--queries", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    recall = float(re.search(r"recall@5 ([\d.]+)", out).group(1))
    assert recall >= 0.8, out[-2000:]
    assert all(q >= 1 for q, *_ in _demo_results(out))  # 1-based Amazon ids


def test_disk_full_while_writing_is_one_line_and_keeps_the_old_file(work, capsys, monkeypatch):
    """An OSError while the output is written (ENOSPC here, injected into the write itself):
    one line, exit status 2, the old table unchanged, no temporary file left."""
    import errno

    import pysid.cli as cli
    import pysid.sid as sid_module

    fit_table()
    old = Path("sids.npz").read_bytes()
    real = sid_module.atomic_write

    def full_disk(path, write_fn):
        def partial(f):
            f.write(b"PK\x03\x04 half a table")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        return real(path, partial)

    monkeypatch.setattr(sid_module, "atomic_write", full_disk)  # the table is written by SemanticIds.save
    monkeypatch.setattr(cli, "atomic_write", full_disk)  # the codes of `pysid encode` by the CLI
    capsys.readouterr()
    assert main(["fit", "emb.npy", "-o", "sids.npz", "--force", "--levels", "2", "--codebook-size", "8",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pysid: error: ") and "No space left on device" in err[0]
    assert Path("sids.npz").read_bytes() == old and sorted(os.listdir(".")) == ["emb.npy", "new.npy", "sids.npz"]
    assert main(["encode", "sids.npz", "new.npy", "-o", "c.npy"]) == 2
    assert "No space left on device" in capsys.readouterr().err and not os.path.exists("c.npy")


def test_fit_sample(work, capsys):
    """--sample trains on a sample and still gives every item a unique ID (the API's fit(sample=))."""
    assert main(["fit", "emb.npy", "-o", "s.npz", "--levels", "2", "--codebook-size", "16", "--quiet",
                 "--sample", "0.5", "--sample-seed", "3"]) == 0
    s = pysid.SemanticIds.load("s.npz")
    assert len(s) == 600 and s.settings["sample"] == 300 and s.codes.unique(dim=0).shape[0] == 600
    x = torch.from_numpy(np.load("emb.npy"))
    ref = pysid.fit(x, levels=2, codebook_size=16, sample=0.5, sample_seed=3, progress=False)
    assert torch.equal(ref.codes, s.codes)


def test_cli_choices_are_the_tables_names():
    """The CLI spells the dedup rules and methods itself (its --help must not import torch): same names."""
    from pysid.sid import DEDUP, METHODS

    f = _subparsers(build_parser())["fit"]
    choices = {a.dest: a.choices for a in f._actions if a.choices}
    assert list(choices["dedup"]) == list(DEDUP) and list(choices["method"]) == list(METHODS)
