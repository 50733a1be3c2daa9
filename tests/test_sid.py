"""pysid.fit / SemanticIds: uniqueness after dedup, reassignment, cold start, lookups, tokens,
save/load, errors; and the pysid command line end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import pysid
from pysid.cli import main as cli_main
from pysid.sid import _reassign, _reassign_ref, _tuple_keys, collision_stats


from conftest import embedding_catalogue as catalogue, unique_rows


@pytest.fixture(scope="module")
def x():
    return catalogue()


@pytest.mark.parametrize("dedup", ["suffix", "reassign"])
def test_fit_gives_unique_ids(x, dedup):
    s = pysid.fit(x, levels=2, codebook_size=16, dedup=dedup, progress=False)
    assert unique_rows(s.codes) and s.codes.dtype == torch.int64
    assert s.collisions["before"]["collision_rate"] > 0.5  # 3000 items in <= 256 tuples
    assert s.collisions["after"]["collision_rate"] == 0.0
    assert s.codes.shape == (3000, 3)  # both need a suffix here (more items than tuples)
    # the semantic levels are the greedy residual codes (suffix) / greedy but the last level (reassign)
    greedy = pysid.residual_quantize(x, s.codebooks).codes.long()
    assert torch.equal(s.codes[:, 0], greedy[:, 0])
    if dedup == "suffix":
        assert torch.equal(s.codes[:, :2], greedy)


def test_suffix_numbers_items_within_a_tuple_in_order(x):
    s = pysid.fit(x, levels=2, codebook_size=8, progress=False)
    key = _tuple_keys(s.codes[:, :2], [8, 8])
    for k in key.unique()[:20]:
        rows = (key == k).nonzero()[:, 0]
        assert s.codes[rows, 2].tolist() == list(range(rows.numel()))


def test_reassign_reduces_suffix_use_and_never_collides():
    x = catalogue(m=800, topics=200, noise=0.05, seed=3)
    sx = pysid.fit(x, levels=2, codebook_size=64, dedup="suffix", progress=False)
    rx = pysid.fit(x, levels=2, codebook_size=64, dedup="reassign", progress=False)
    assert unique_rows(rx.codes)
    moved = (rx.codes[:, :2] != sx.codes[:, :2]).any(1)
    assert int(moved.sum()) > 0 and torch.equal(rx.codes[:, 0], sx.codes[:, 0])  # only the last level moves
    n_suffix = lambda s: int((s.codes[:, -1] > 0).sum()) if s.has_suffix else 0  # noqa: E731
    assert n_suffix(rx) < n_suffix(sx)


@pytest.mark.parametrize("_reassign", [_reassign, _reassign_ref], ids=["scale", "reference"])
def test_reassign_rounds_by_hand(_reassign):
    # 3 rows share tuple (0, 1); candidates (nearest first) and scores given
    codes = torch.tensor([[0, 1], [0, 1], [0, 1], [1, 2]])
    cands = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 3, 2], [2, 0, 1]])
    scores = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 3.0], [0.0, 0.5, 0.9], [0.0, 1.0, 2.0]])
    out = _reassign(codes, scores, cands, [2, 4])
    # row 0 keeps (0,1); rows 1 and 2 propose 2 and 3 first... row 1 -> 2, row 2 -> 3
    assert out.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2]]
    # two rows want the same free code: the nearer wins, the other moves on
    codes = torch.tensor([[0, 0], [0, 0], [0, 0]])
    cands = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    scores = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.7, 0.8], [0.0, 0.6, 0.9]])
    assert _reassign(codes, scores, cands, [1, 3]).tolist() == [[0, 0], [0, 2], [0, 1]]
    # capacity exhausted: the row keeps its tuple (the caller adds a suffix)
    codes = torch.zeros(3, 2, dtype=torch.int64)
    cands = torch.tensor([[0, 1], [0, 1], [0, 1]])
    assert _reassign(codes, torch.zeros(3, 2), cands, [1, 2]).tolist() == [[0, 0], [0, 1], [0, 0]]


def test_dedup_none_keeps_collisions(x):
    s = pysid.fit(x, levels=2, codebook_size=8, dedup="none", progress=False)
    assert s.codes.shape[1] == 2 and not unique_rows(s.codes)
    with pytest.raises(ValueError, match="duplicate"):
        s.trie()


def test_lookups_tokens_trie(x):
    ids = torch.arange(3000) * 7 + 100
    s = pysid.fit(x, levels=2, codebook_size=16, item_ids=ids, progress=False)
    assert torch.equal(s.sid([107, 100]), s.codes[[1, 0]])
    assert s.item(s.codes[[5, 9]]).tolist() == [ids[5].item(), ids[9].item()]
    with pytest.raises(KeyError):
        s.sid([5])
    toks = s.to_tokens()
    a, b, c = s.codes[0].tolist()
    assert toks[0] == f"<a_{a}><b_{b}><c_{c}>" and len(set(toks)) == 3000
    vocab = s.token_vocabulary()
    assert len(vocab) == 16 + 16 + s.vocab_sizes[2] and "<a_0>" in vocab and "<b_15>" in vocab
    assert s.to_tokens(template="[{level}{code}]")[0] == f"[a{a}][b{b}][c{c}]"
    t = s.trie()
    assert t.num_items == 3000 and t.lookup(s.codes[:3]).tolist() == ids[:3].tolist()


def test_encode_cold_start(x):
    s = pysid.fit(x[:2500], levels=2, codebook_size=16, progress=False)
    new = s.encode(x[2500:])
    greedy = pysid.residual_quantize(x[2500:], s.codebooks).codes.long()
    assert torch.equal(new[:, :2], greedy)
    allc = torch.cat([s.codes, new])
    assert unique_rows(allc)  # suffixes continue after the existing items
    s.encode(x[2500:], item_ids=torch.arange(10_000, 10_500), add=True)
    assert len(s) == 3000 and unique_rows(s.codes)
    assert s.item(s.codes[-1:]).tolist() == [10_499]
    before = s.codes.clone()
    with pytest.raises(ValueError, match="new, unique"):
        s.encode(x[:2], item_ids=[0, 1], add=True)
    assert torch.equal(s.codes, before) and len(s) == 3000  # nothing half-written


def test_beam_width_codes_and_cold_start(x, tmp_path):
    """beam_width: the table's codes are residual_quantize's beam codes for the same codebooks,
    never reconstruct worse than greedy, and encode() / a reloaded table use the same width."""
    greedy = pysid.fit(x[:2500], levels=3, codebook_size=8, seed=1, progress=False)
    s = pysid.fit(x[:2500], levels=3, codebook_size=8, seed=1, beam_width=4, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(s.codebooks, greedy.codebooks))
    beam = pysid.residual_quantize(x[:2500], s.codebooks, beam_width=4)
    assert torch.equal(s.codes[:, :3], beam.codes.long())
    assert not torch.equal(s.codes[:, :3], greedy.codes[:, :3])  # the beam changed some codes
    err_b, err_g = s.report(x[:2500]).reconstruction_error, greedy.report(x[:2500]).reconstruction_error
    assert err_b < err_g
    new = s.encode(x[2500:])
    assert torch.equal(new[:, :3], pysid.residual_quantize(x[2500:], s.codebooks, beam_width=4).codes.long())
    s.save(tmp_path / "b.npz")
    t = pysid.SemanticIds.load(tmp_path / "b.npz")
    assert t.settings["beam_width"] == 4 and torch.equal(t.encode(x[2500:]), new)


@pytest.mark.parametrize("case", ["catalogue", "odd", "duplicates"])
def test_fit_codes_are_the_greedy_codes(x, case):
    """fit takes the rq-kmeans codes from its last Lloyd assignments: they must be exactly what
    residual_quantize gives for the trained codebooks."""
    if case == "catalogue":
        data = x
    elif case == "odd":
        data = torch.randn(1500, 37, generator=torch.Generator().manual_seed(3)) * 3
    else:  # repeated rows: exact zero residuals and exact ties
        data = catalogue(m=400, d=9, topics=20, seed=4).repeat(3, 1)
    for dedup in ("suffix", "none"):
        s = pysid.fit(data, levels=3, codebook_size=[16, 8, 8], dedup=dedup, seed=5, progress=False)
        want = pysid.residual_quantize(data, s.codebooks).codes.long()
        assert torch.equal(s.codes[:, :3], want)


def test_encode_cold_start_reassign():
    x = catalogue(m=900, topics=300, noise=0.05, seed=5)
    s = pysid.fit(x[:600], levels=2, codebook_size=64, dedup="reassign", progress=False)
    new = s.encode(x[600:], add=True)
    assert unique_rows(s.codes) and new.shape[0] == 300


def test_save_load_roundtrip(x, tmp_path):
    s = pysid.fit(x, levels=3, codebook_size=[16, 8, 8], dedup="reassign", seed=2, progress=False)
    p = tmp_path / "sids"  # no extension: saved as given
    s.save(p)
    t = pysid.SemanticIds.load(p)
    assert torch.equal(s.codes, t.codes) and torch.equal(s.item_ids, t.item_ids)
    assert all(torch.equal(a, b) for a, b in zip(s.codebooks, t.codebooks))
    assert t.codebook_sizes == [16, 8, 8] and t.dedup == "reassign" and t.settings["seed"] == 2
    assert t.collisions == s.collisions
    assert torch.equal(t.encode(x[:5]), s.encode(x[:5]))
    np.save(tmp_path / "junk.npy", np.zeros(3))
    with pytest.raises(ValueError):
        pysid.SemanticIds.load(tmp_path / "junk.npy")


def test_same_seed_same_table(x):
    a = pysid.fit(x, levels=2, codebook_size=16, seed=4, progress=False)
    b = pysid.fit(x, levels=2, codebook_size=16, seed=4, progress=False)
    assert torch.equal(a.codes, b.codes)


def test_collision_stats_by_hand():
    c = torch.tensor([[0, 1], [0, 1], [1, 1], [2, 0], [0, 1]])
    st = collision_stats(c, [3, 2])
    assert st == {"items": 5, "distinct": 3, "collision_rate": 3 / 5, "max_per_tuple": 3}


@pytest.mark.parametrize("kw,err", [
    (dict(method="pq"), ValueError), (dict(dedup="drop"), ValueError), (dict(levels=0), ValueError),
    (dict(codebook_size=[4]), ValueError), (dict(codebook_size=5000), ValueError),
    (dict(item_ids=[1, 1, 2]), ValueError), (dict(beam_width=0), ValueError), (dict(beam_width=2.0), ValueError),
])
def test_fit_errors(x, kw, err):
    with pytest.raises(err):
        pysid.fit(x[:100], progress=False, **{"levels": 2, "codebook_size": 4, **kw})


def test_fit_rejects_bad_embeddings():
    with pytest.raises(ValueError, match="rows \\[3\\]"):
        y = torch.randn(10, 4)
        y[3, 1] = float("nan")
        pysid.fit(y, levels=1, codebook_size=2)
    with pytest.raises(ValueError):
        pysid.fit(torch.randn(10), levels=1, codebook_size=2)
    with pytest.raises(TypeError):
        pysid.fit(torch.ones(10, 3, dtype=torch.int64), levels=1, codebook_size=2)


# --------------------------------------------------------------------------- CLI
def test_cli_fit_encode_stats(x, tmp_path, capsys):
    np.save(tmp_path / "emb.npy", x.numpy())
    torch.save({"e": x[:20] + 0.01}, tmp_path / "new.pt")
    out = tmp_path / "sids.npz"
    assert cli_main(["fit", str(tmp_path / "emb.npy"), "-o", str(out), "--levels", "2", "--codebook-size", "16",
                     "--beam-width", "3", "--quiet"]) == 0
    assert "collision rate" in capsys.readouterr().out
    s = pysid.SemanticIds.load(out)
    assert len(s) == 3000 and unique_rows(s.codes) and s.settings["beam_width"] == 3
    assert cli_main(["encode", str(out), str(tmp_path / "new.pt"), "-o", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape == (20, 3)
    assert cli_main(["stats", str(out), "--embeddings", str(tmp_path / "emb.npy")]) == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "reconstruction" in printed


def test_cli_errors(tmp_path, capsys):
    y = np.random.default_rng(0).normal(size=(30, 4)).astype("float32")
    y[[4, 17], 2] = np.nan
    np.save(tmp_path / "nan.npy", y)
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype="float32"))
    cases = [(["fit", str(tmp_path / "nope.npy"), "-o", "x.npz"], "no such file"),
             (["fit", str(tmp_path / "nan.npy"), "-o", "x.npz"], "rows [4, 17]"),
             (["fit", str(tmp_path / "flat.npy"), "-o", "x.npz"], "[N, D]"),
             (["stats", str(tmp_path / "flat.npy")], "not a pysid SemanticIds file")]
    for argv, msg in cases:
        assert cli_main(argv) == 2
        assert msg in capsys.readouterr().err


def test_cli_demo_runs():
    """The README's main job, end to end on a small catalogue, in a subprocess."""
    res = subprocess.run([sys.executable, "-m", "pysid.cli", "demo", "--items", "3000", "--quiet"],
                         capture_output=True, text=True, timeout=300, cwd=os.path.dirname(__file__))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "invalid items 0" in res.stdout and "Semantic ID report" in res.stdout


def test_cli_bench_finds_the_scripts():
    from pysid.cli import _BENCHES, bench_dir

    for script in _BENCHES.values():
        assert os.path.exists(os.path.join(bench_dir(), script))


def test_fit_rq_vae_and_cold_start(tmp_path):
    x = catalogue(m=1200, d=16, topics=30, seed=7)
    collab = x[:, :4] + 0.1 * torch.randn(1200, 4, generator=torch.Generator().manual_seed(0))
    s = pysid.fit(x, method="rq-vae", levels=2, codebook_size=8, progress=False,
                  rqvae_options={"epochs": 3, "batch_size": 256, "hidden": (32,), "latent": 8, "align_with": collab})
    assert s.settings["rqvae_aligned"] and "align_head.weight" in s.model_state
    assert s.method == "rq-vae" and unique_rows(s.codes) and s.codebooks[0].shape == (8, 8)
    from pysid.nn import RQVAE

    model = RQVAE(**s.settings["rqvae_config"])
    model.load_state_dict({k: v for k, v in s.model_state.items() if not k.startswith("align_head.")})
    assert torch.equal(s.codes[:, :2], model.encode(x))  # the table's codes are the model's
    s.save(tmp_path / "v.npz")
    t = pysid.SemanticIds.load(tmp_path / "v.npz")
    assert torch.equal(t.encode(x[:50])[:, :2], model.encode(x[:50]))


def test_fit_hybrid_inputs():
    """A list of inputs (e.g. text + collaborative vectors of the same items) is fused."""
    from pysid.nn import fuse

    a, b = catalogue(m=1500, d=12, seed=1), catalogue(m=1500, d=6, seed=2)
    s = pysid.fit([a, b], levels=2, codebook_size=16, input_weights=[2, 1], progress=False)
    one = pysid.fit(fuse([a, b], [2, 1]), levels=2, codebook_size=16, progress=False)
    assert torch.equal(s.codes, one.codes) and s.codebooks[0].shape == (16, 18)
    assert torch.equal(s.encode([a[:5], b[:5]])[:, :2], s.codes[:5, :2])
    with pytest.raises(ValueError, match="input"):
        s.encode(a[:5])
    assert s.report([a, b]).reconstruction_error < 1
