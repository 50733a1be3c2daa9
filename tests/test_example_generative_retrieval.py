"""Smoke test of examples/generative_retrieval.py: the whole pipeline (leave-one-out, collaborative
embeddings, pysid.fit, TIGER-style training, pysid.beam_search decoding, both baselines) on a few
hundred users of Amazon Toys for a few steps. The full runs are benchmarks, not tests."""

import importlib.util
import json
import math
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOYS = os.path.join(ROOT, "..", "shared", "data", "amazon", "toys.txt")
if not os.path.exists(TOYS):  # a worktree beside main: shared/ is a sibling of the checkouts
    TOYS = "/work/shared/data/amazon/toys.txt"


def _load():
    spec = importlib.util.spec_from_file_location("generative_retrieval",
                                                  os.path.join(ROOT, "examples", "generative_retrieval.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not os.path.exists(TOYS), reason="Amazon Toys file not available")
def test_pipeline_smoke(tmp_path):
    gr = _load()
    out = tmp_path / "res" / "toys.json"
    args = gr.parse_args(["--data", TOYS, "--max-users", "300", "--epochs", "1", "--max-steps", "3",
                          "--val-users", "64", "--codebook-size", "16", "--beam", "20", "--seed", "0",
                          "--out", str(out), "--quiet", "--threads", "2"])
    res = gr.run(args)

    assert out.exists()
    on_disk = json.loads(out.read_text())
    assert set(on_disk["methods"]) == {"MostPop", "TIGER (pysid)", "SASRec (ours)"}
    assert res["users"] == 300
    sids = res["sids"]
    assert sids["items"] == res["items"] and len(sids["vocab_sizes"]) == 4   # 3 levels + suffix
    tiger = res["methods"]["TIGER (pysid)"]
    assert tiger["test_top_shape"] == [300, 10]
    assert tiger["steps"] == 3 and tiger["evaluations"] == 1
    for name, m in res["methods"].items():
        for k in ("R@5", "R@10", "N@5", "N@10", "invalid_rate"):
            assert 0.0 <= m[k] <= 1.0, (name, k, m[k])
        assert m["R@5"] <= m["R@10"] and m["N@5"] <= m["N@10"] <= m["R@10"]
        assert m["invalid_rate"] == 0.0, name
    assert math.isfinite(tiger["history"][0]["loss"])


def test_metrics_and_constrained_decoding():
    """Metric definitions, and that the TIGER step function + pysid.beam_search only return catalogue
    items (with and without history exclusion) on a tiny synthetic catalogue."""
    gr = _load()
    top = torch.tensor([[3, 1, 2, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    cat = torch.ones(12, dtype=torch.bool)
    m = gr.ranking_metrics(top, torch.tensor([1, 11]), cat)
    assert m["R@5"] == 0.5 and m["R@10"] == 0.5
    assert abs(m["N@5"] - 0.5 / math.log2(3)) < 1e-6 and m["invalid_rate"] == 0.0

    import pysid
    torch.manual_seed(0)
    ids = torch.arange(100, 160)
    codes = torch.stack([torch.arange(60) % 4, (torch.arange(60) // 4) % 5, torch.arange(60) // 20,
                         torch.zeros(60, dtype=torch.int64)], 1)
    trie = pysid.Trie(codes, item_ids=ids, vocab_sizes=[4, 5, 3, 1])
    model = gr.Tiger([4, 5, 3, 1], hist_len=5, d_model=32, heads=2, enc_layers=1, dec_layers=1, ff=64)
    hist = model.codes_to_tokens(codes[torch.randint(0, 60, (7, 5))]).reshape(7, -1)
    hist[0] = 0                     # an empty history still decodes
    items = gr.tiger_recommend(model, hist, trie, beam=8, topk=5, batch=4)
    assert items.shape == (7, 5) and bool(((items >= 100) & (items < 160)).all())
    excl = [[100, 101, 102]] * 7
    items = gr.tiger_recommend(model, hist, trie, beam=8, topk=5, batch=4, exclude=excl)
    assert not bool(torch.isin(items, torch.tensor([100, 101, 102])).any())


@pytest.mark.skipif(not os.path.exists(TOYS), reason="Amazon Toys file not available")
def test_sid_input_flags(tmp_path):
    gr = _load()
    with pytest.raises(ValueError, match="needs --items"):
        gr.run(gr.parse_args(["--data", TOYS, "--max-users", "100", "--sid-input", "text", "--quiet"]))
    res = gr.run(gr.parse_args(["--data", TOYS, "--max-users", "100", "--epochs", "1", "--max-steps", "1",
                                "--val-users", "16", "--codebook-size", "8", "--beam", "10", "--no-sasrec",
                                "--quiet", "--threads", "1"]))
    assert set(res["methods"]) == {"MostPop", "TIGER (pysid)"}
    assert res["sids"]["sid_input"] == "collab"
    assert res["methods"]["TIGER (pysid)"]["invalid_rate"] == 0.0


@pytest.mark.skipif(not os.path.exists(TOYS), reason="Amazon Toys file not available")
def test_random_sids_reassign_and_cpu_budget(tmp_path):
    """--sid-input random (the ablation's floor), --dedup reassign and --max-cpu-minutes: the
    budget stops training on process CPU time and says so; every returned item is valid."""
    gr = _load()
    base = ["--data", TOYS, "--max-users", "200", "--epochs", "1", "--val-users", "16", "--codebook-size", "64",
            "--beam", "10", "--no-sasrec", "--quiet", "--threads", "1"]
    res = gr.run(gr.parse_args(base + ["--sid-input", "random", "--dedup", "reassign", "--max-steps", "50",
                                       "--max-cpu-minutes", "1e-6", "--out", str(tmp_path / "r.json")]))
    s = res["sids"]
    assert s["sid_input"] == "random" and s["dedup"] == "reassign"
    # 64 x 64 x 64 tuples for ~1k items: reassign resolves every collision, no suffix level
    assert s["suffix_level"] is False and len(s["vocab_sizes"]) == 3 and s["max_suffix"] == 0
    t = res["methods"]["TIGER (pysid)"]
    assert t["stopped_by"] == "cpu budget" and t["steps"] == 1 and t["evaluations"] == 1
    assert t["train_cpu_minutes"] > 0 and t["test_decode_cpu_seconds"] > 0
    assert t["invalid_rate"] == 0.0 and t["test_top_shape"] == [200, 10]
    assert res["cpu_minutes"] > 0
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["methods"]["TIGER (pysid)"]["stopped_by"] == "cpu budget"

    stop = tmp_path / "stop"
    stop.write_text("")
    res = gr.run(gr.parse_args(base + ["--max-steps", "50", "--stop-file", str(stop)]))
    t = res["methods"]["TIGER (pysid)"]
    assert t["stopped_by"] == "stop file" and t["steps"] == 1 and t["invalid_rate"] == 0.0

    res = gr.run(gr.parse_args(base + ["--dedup", "suffix", "--max-steps", "2", "--test-users", "50"]))
    s, t = res["sids"], res["methods"]["TIGER (pysid)"]
    assert s["dedup"] == "suffix" and s["suffix_level"] is True and len(s["vocab_sizes"]) == 4
    assert t["stopped_by"] == "epochs" and t["steps"] == 2
    # --test-users: every method is tested on the same fixed subsample
    assert res["users"] == 200 and res["test_users"] == 50 and t["test_top_shape"] == [50, 10]



def test_causal_model_decodes_only_catalogue_items():
    """--arch causal's model: the loss is finite and trains, the SID head's step function with
    pysid.beam_search returns only catalogue items (and respects exclusion), for every item input."""
    gr = _load()
    import pysid
    torch.manual_seed(0)
    ids = torch.arange(0, 60)
    codes = torch.stack([torch.arange(60) % 4, (torch.arange(60) // 4) % 5, torch.arange(60) // 20], 1)
    trie = pysid.Trie(codes, item_ids=ids, vocab_sizes=[4, 5, 3])
    item_codes = torch.cat([codes, torch.zeros(1, 3, dtype=torch.int64)])     # row 60: padding item
    for item_input, tie, tree, nodes in (("sid", False, False, False), ("id", True, False, False),
                                         ("both", False, False, False), ("both", True, True, False),
                                         ("both", False, True, True), ("sid", True, True, True)):
        model = gr.CausalSID([4, 5, 3], n_items=60, max_len=6, d_model=32, heads=2, layers=1, ff=64,
                             dropout=0.0, item_input=item_input, tie=tie, tree_codes=codes if tree else None,
                             node_vectors=nodes)
        seq = torch.randint(0, 60, (8, 7))
        seq[0, :4] = 60                                                      # left padding
        inp, out = seq[:, :-1], seq[:, 1:]
        valid = out != 60
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(30):   # memorise 8 sequences: the loss must fall
            loss = model.loss(inp, item_codes[inp], item_codes[out], valid)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        assert math.isfinite(losses[0]) and losses[-1] < 0.5 * losses[0], (item_input, tie, tree, losses[0], losses[-1])
        hist = seq[:, :-1]
        items = gr.causal_recommend(model, hist, item_codes[hist], trie, beam=8, topk=5, batch=3)
        assert items.shape == (8, 5) and bool(((items >= 0) & (items < 60)).all())
        excl = [[0, 1, 2]] * 8
        items = gr.causal_recommend(model, hist, item_codes[hist], trie, beam=8, topk=5, batch=3, exclude=excl)
        assert not bool(torch.isin(items, torch.tensor([0, 1, 2])).any())
    with pytest.raises(ValueError, match="item_input"):
        gr.CausalSID([4, 5, 3], n_items=60, max_len=6, item_input="text")
    with pytest.raises(ValueError, match="node_vectors needs tree_codes"):
        gr.CausalSID([4, 5, 3], n_items=60, max_len=6, node_vectors=True)
    with pytest.raises(ValueError, match="outside"):
        gr.CausalSID([4, 5, 3], n_items=60, max_len=6, tree_codes=codes + 1)
    with pytest.raises(ValueError, match="code table"):
        gr.CausalSID([4, 5, 3], n_items=60, max_len=6, tree_codes=codes[:, :2])
    # --item-loss: the SID loss plus w x a full-softmax next-item loss against the item-id input embeddings
    model = gr.CausalSID([4, 5, 3], n_items=60, max_len=6, d_model=32, heads=2, layers=1, ff=64, dropout=0.0)
    base = model.loss(inp, item_codes[inp], item_codes[out], valid)
    st = model.states(inp, item_codes[inp])[valid]
    aux = torch.nn.functional.cross_entropy(st @ model.item.weight[:60].T, out[valid])
    both = model.loss(inp, item_codes[inp], item_codes[out], valid, out, 0.5)
    assert torch.allclose(both, base + 0.5 * aux)
    sid_only = gr.CausalSID([4, 5, 3], n_items=60, max_len=6, d_model=32, heads=2, ff=64, item_input="sid")
    with pytest.raises(ValueError, match="item-id input"):
        sid_only.loss(inp, item_codes[inp], item_codes[out], valid, out, 1.0)


def test_causal_tree_softmax_is_the_tries_children():
    """tree_codes: each level's logits are finite exactly on the trie's children of the prefix;
    node vectors start at zero (the same logits as without them) and give per-node capacity."""
    gr = _load()
    import pysid
    g = torch.Generator().manual_seed(1)
    codes = torch.unique(torch.randint(0, 6, (80, 3), generator=g), dim=0)      # a sparse, random tree
    codes = codes[torch.randperm(codes.shape[0], generator=g)]
    trie = pysid.Trie(codes, vocab_sizes=[6, 6, 6])
    torch.manual_seed(0)
    plain = gr.CausalSID([6, 6, 6], n_items=codes.shape[0], max_len=4, d_model=16, heads=2, layers=1, ff=32,
                         dropout=0.0, tree_codes=codes)
    torch.manual_seed(0)
    nodes = gr.CausalSID([6, 6, 6], n_items=codes.shape[0], max_len=4, d_model=16, heads=2, layers=1, ff=32,
                         dropout=0.0, tree_codes=codes, node_vectors=True)
    assert [p.shape[0] for p in nodes.node_out] == list(trie.num_nodes[1:])
    # every item's full code walks to its own leaf; the leaves are distinct
    leaves = plain.prefix_nodes(codes)
    assert torch.equal(torch.sort(leaves).values, torch.arange(codes.shape[0]))
    y = torch.randn(codes.shape[0], 16, generator=g)
    for t in range(3):
        prefix = codes[:, :t]
        lg = plain.level_logits(y, t, prefix)
        child, cnt = trie.children(prefix)
        want = torch.zeros(codes.shape[0], 6, dtype=torch.int64)
        want = want.scatter_add_(1, child.clamp_min(0), (child >= 0).long()) > 0
        assert torch.equal(torch.isfinite(lg), want), t
        assert torch.equal(torch.isfinite(lg).sum(1), cnt)
        assert torch.equal(nodes.level_logits(y, t, prefix), lg)        # zero node vectors: the same logits
        with torch.no_grad():
            nodes.node_out[t].normal_()
        moved = nodes.level_logits(y, t, prefix)
        assert torch.equal(torch.isfinite(moved), want) and not torch.equal(moved, lg)
        kids = getattr(nodes, f"child_{t}")[nodes.prefix_nodes(prefix)]   # dense: y . v over every node
        dense = lg + (y @ nodes.node_out[t].T).gather(1, kids.clamp_min(0))
        torch.testing.assert_close(moved[want], dense[want])
    # codes that leave the tree (an empty beam slot's) still give finite rows on some node's children
    assert bool(torch.isfinite(plain.level_logits(y[:2], 2, torch.tensor([[5, 5], [0, 0]]))).any(1).all())


@pytest.mark.skipif(not os.path.exists(TOYS), reason="Amazon Toys file not available")
def test_causal_arch_pipeline(tmp_path):
    gr = _load()
    base = ["--data", TOYS, "--max-users", "200", "--val-users", "16", "--codebook-size", "16", "--beam", "10",
            "--arch", "causal", "--d-model", "32", "--ff", "64", "--heads", "2", "--batch-size", "64", "--quiet",
            "--threads", "1"]
    res = gr.run(gr.parse_args(base + ["--epochs", "1", "--max-steps", "2", "--out", str(tmp_path / "c.json"),
                                       "--checkpoint-dir", str(tmp_path / "ck")]))
    assert set(res["methods"]) == {"MostPop", "Causal SID (pysid)", "SASRec (ours)"}
    c = res["methods"]["Causal SID (pysid)"]
    assert c["steps"] == 2 and c["test_top_shape"] == [200, 10] and c["invalid_rate"] == 0.0
    assert math.isfinite(c["history"][0]["loss"])
    assert json.loads((tmp_path / "c.json").read_text())["args"]["arch"] == "causal"
    # --epochs 0 --load-checkpoint: the saved best state decodes to the same test figures
    again = gr.run(gr.parse_args(base + ["--epochs", "0", "--no-sasrec", "--load-checkpoint",
                                         str(tmp_path / "ck" / "causal_best.pt")]))
    a = again["methods"]["Causal SID (pysid)"]
    assert a["steps"] == 0 and a["test_top_shape"] == [200, 10]
    assert all(a[k] == c[k] for k in ("R@5", "R@10", "N@5", "N@10", "invalid_rate"))

@pytest.mark.skipif(not os.path.exists(TOYS), reason="Amazon Toys file not available")
def test_sasrec_first_collab_and_warm_start(tmp_path):
    """--collab sasrec: the SIDs come from the SASRec-style model trained first (it is the table's SASRec row,
    trained once); --warm-start sasrec: CausalSID starts from its weights (exact copies), shapes checked."""
    gr = _load()
    base = ["--data", TOYS, "--max-users", "200", "--val-users", "16", "--codebook-size", "16", "--beam", "10",
            "--arch", "causal", "--d-model", "32", "--ff", "128", "--heads", "2", "--batch-size", "64", "--quiet",
            "--threads", "1", "--epochs", "1", "--max-steps", "2", "--sas-d-model", "32"]
    res = gr.run(gr.parse_args(base + ["--collab", "sasrec", "--warm-start", "sasrec"]))
    assert set(res["methods"]) == {"MostPop", "Causal SID (pysid)", "SASRec (ours)"}
    assert res["sids"]["collab"] == "sasrec" and res["sids"]["sasrec_first_cpu_minutes"] > 0
    c, s = res["methods"]["Causal SID (pysid)"], res["methods"]["SASRec (ours)"]
    assert s["steps"] == 2 and c["steps"] == 2 and c["invalid_rate"] == 0.0
    assert c["train_cpu_minutes_with_sasrec"] == pytest.approx(c["train_cpu_minutes"] + s["train_cpu_minutes"])

    frozen = gr.run(gr.parse_args(base + ["--warm-start", "sasrec", "--freeze-backbone", "--item-input", "id",
                                          "--no-sasrec"]))
    assert frozen["methods"]["Causal SID (pysid)"]["steps"] == 2 and frozen["sids"]["collab"] == "pysid.collab"
    with pytest.raises(ValueError, match="freeze-backbone needs"):
        gr.run(gr.parse_args(base + ["--freeze-backbone", "--no-sasrec"]))

    sas = gr.SASRec(50, 6, d_model=32, layers=2, heads=2)
    model = gr.CausalSID([4, 5, 3], n_items=50, max_len=6, d_model=32, heads=2, layers=2, ff=128)
    gr._warm_start(model, sas)
    assert torch.equal(model.item.weight, sas.item.weight)
    for a, b in zip(model.backbone.parameters(), sas.enc.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="shapes"):
        gr._warm_start(gr.CausalSID([4, 5, 3], n_items=50, max_len=6, d_model=32, heads=2, ff=64), sas)
    with pytest.raises(ValueError, match="heads"):
        gr._warm_start(gr.CausalSID([4, 5, 3], n_items=50, max_len=6, d_model=32, heads=4, ff=128), sas)
    with pytest.raises(ValueError, match="item-id input"):
        gr._warm_start(gr.CausalSID([4, 5, 3], n_items=50, max_len=6, d_model=32, ff=128, item_input="sid"), sas)
    with pytest.raises(ValueError, match="does not use them"):
        gr.run(gr.parse_args(["--data", TOYS, "--max-users", "50", "--collab", "sasrec", "--sid-input", "random",
                              "--quiet"]))
    with pytest.raises(ValueError, match="arch causal"):
        gr.run(gr.parse_args(["--data", TOYS, "--max-users", "50", "--warm-start", "sasrec", "--quiet"]))


def test_input_weights_need_two(tmp_path):
    gr = _load()
    with pytest.raises(SystemExit):   # argparse: exactly two weights
        gr.parse_args(["--data", TOYS, "--input-weights", "1"])
    args = gr.parse_args(["--data", TOYS, "--input-weights", "2", "1", "--sid-input", "hybrid"])
    assert args.input_weights == [2.0, 1.0]


def test_retrieval_table(tmp_path):
    """examples/retrieval_table.py: one Markdown row per TIGER run, baselines once per data set."""
    spec = importlib.util.spec_from_file_location("retrieval_table", os.path.join(ROOT, "examples", "retrieval_table.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = {"R@5": 0.01, "R@10": 0.02, "N@5": 0.005, "N@10": 0.008, "invalid_rate": 0.0}
    paths = []
    for name, dedup in (("text", "suffix"), ("hybrid", "reassign")):
        res = {"args": {"data": "/x/toys.txt", "max_cpu_minutes": 5.0, "max_minutes": 60.0},
               "sids": {"sid_input": name, "dedup": dedup, "collision_rate_before_dedup": 0.117,
                        "vocab_sizes": [256, 256, 256] if dedup == "reassign" else [256, 256, 256, 14]},
               "methods": {"MostPop": {**m, "train_minutes": 0.0},
                           "TIGER (pysid)": {**m, "steps": 7, "train_cpu_minutes": 5.01, "train_minutes": 9.5,
                                             "stopped_by": "cpu budget"}}}
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(res))
    lines = mod.rows([str(p) for p in paths])
    assert len(lines) == 2 + 1 + 2          # header, one MostPop row, two TIGER rows
    assert "| toys | TIGER (pysid) | hybrid / reassign | 11.7 % | 3 | 0.0100 | 0.0200 |" in lines[-1]
    assert "| 7 | 5.0 | 9.5 | cpu budget | hybrid.json |" in lines[-1]
    assert "text / suffix | 11.7 % | 4 |" in lines[-2]


@pytest.mark.skipif(not os.path.exists(TOYS), reason="Amazon Toys file not available")
def test_sid_head_probe(tmp_path):
    """examples/sid_head_probe.py: the exact-marginal ceiling with a beam that keeps every prefix is the
    item softmax's own top 10; every SID-head variant trains on the frozen states and decodes valid items;
    a saved SASRec state loads back to the same row."""
    spec = importlib.util.spec_from_file_location("sid_head_probe", os.path.join(ROOT, "examples", "sid_head_probe.py"))
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    base = ["--data", TOYS, "--max-users", "200", "--val-users", "16", "--codebook-size", "16", "--beam", "10",
            "--d-model", "32", "--sas-d-model", "32", "--ff", "64", "--heads", "2", "--quiet", "--threads", "1",
            "--probe-epochs", "2", "--probe-batch", "256", "--ceiling-beams", "10,1000000"]
    sas = str(tmp_path / "sas.pt")
    res = probe.main(base + ["--sas-cpu-minutes", "0.02", "--save-sasrec", sas, "--out", str(tmp_path / "p.json")])
    rows = res["rows"]
    assert set(rows) == {"SASRec item softmax", "ceiling: item softmax through the SID tree, beam 10",
                         "ceiling: item softmax through the SID tree, beam 1000000",
                         "SID head: codebook", "SID head: children", "SID head: nodes"}
    full = rows["ceiling: item softmax through the SID tree, beam 1000000"]
    assert all(full[k] == pytest.approx(rows["SASRec item softmax"][k]) for k in ("R@5", "R@10", "N@5", "N@10"))
    assert all(r["invalid_rate"] == 0.0 for r in rows.values())
    assert all(1 <= rows[f"SID head: {v}"]["epochs"] <= 2 for v in ("codebook", "children", "nodes"))
    assert json.loads((tmp_path / "p.json").read_text())["rows"].keys() == rows.keys()
    again = probe.main(base + ["--sasrec-state", sas, "--variants", "children"])
    assert again["rows"]["SASRec item softmax"]["R@10"] == rows["SASRec item softmax"]["R@10"]
    assert again["rows"]["SID head: children"]["R@10"] == rows["SID head: children"]["R@10"]   # deterministic
    with pytest.raises(SystemExit):
        probe.main(base + ["--variants", "softmax"])
    with pytest.raises(SystemExit):
        probe.main(base + ["--sas-d-model", "64"])
