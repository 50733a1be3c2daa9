"""Smoke test of examples/llm_sids.py (SIDs as tokens of a GPT-2 from a config) on a tiny config:
tokenizer + SID tokens, resized model, a few training steps, trie-constrained generate (0
invalid items) beside unconstrained generate, and text requests. The real run is a benchmark."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMAZON = os.path.join(ROOT, "..", "shared", "data", "amazon")
if not os.path.exists(AMAZON):  # a worktree beside main: shared/ is a sibling of the checkouts
    AMAZON = "/work/shared/data/amazon"
TOYS, TOYS_ITEMS = os.path.join(AMAZON, "toys.txt"), os.path.join(AMAZON, "toys_items.tsv")


def _load():
    spec = importlib.util.spec_from_file_location("llm_sids", os.path.join(ROOT, "examples", "llm_sids.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not (os.path.exists(TOYS) and os.path.exists(TOYS_ITEMS)), reason="Amazon Toys files not available")
def test_llm_sids_tiny(tmp_path):
    ex = _load()
    out = tmp_path / "llm.json"
    args = ex.parse_args(["--data", TOYS, "--items", TOYS_ITEMS, "--max-users", "120", "--codebook-size", "8",
                          "--d-model", "32", "--layers", "1", "--heads", "2", "--epochs", "1", "--max-steps", "15",
                          "--text-samples", "1", "--val-users", "16", "--eval-users", "24",
                          "--unconstrained-users", "12", "--beam", "10", "--val-beam", "10", "--threads", "1",
                          "--requests", "lego star wars", "wooden puzzle", "--out", str(out), "--quiet"])
    res = ex.run(args)
    assert json.loads(out.read_text())["eval_users"] == 24
    assert res["users"] == 120 and res["steps"] == 15 and len(res["history"]) == 1
    v = res["vocab"]
    # one token per (level, code): offsets are contiguous blocks after the words
    assert v["offsets"][0] == v["words"]
    assert len(v["offsets"]) == 4 and v["offsets"][3] == v["offsets"][0] + 3 * 8   # 3 levels x 8 codes, then the suffix
    assert all(b - a == 8 for a, b in zip(v["offsets"][:3], v["offsets"][1:4]))
    assert v["sid_tokens"] > 3 * 8   # + the suffix level's tokens
    c, u = res["constrained"], res["unconstrained"]
    assert c["invalid_rate"] == 0.0
    for m in (c, u):
        for k in ("R@5", "R@10", "N@5", "N@10", "invalid_rate"):
            assert 0.0 <= m[k] <= 1.0, (k, m[k])
        assert m["R@5"] <= m["R@10"]
    assert u["users"] == 12 and u["decode_seconds"] > 0 and c["decode_seconds"] > 0
    assert res["request_invalid"] == 0
    assert [a["request"] for a in res["text_requests"]] == ["recommend: lego star wars", "recommend: wooden puzzle"]
    assert all(len(a["items"]) == 5 and min(a["items"]) >= 0 for a in res["text_requests"])


def test_to_items_flags_invalid_sids():
    ex = _load()
    import pysid

    g = torch.Generator().manual_seed(0)
    sids = pysid.fit(torch.randn(40, 4, generator=g), levels=2, codebook_size=4, item_ids=torch.arange(40) + 7,
                     progress=False)
    offs = [100, 104, 108]
    vs = sids.vocab_sizes
    gen = sids.codes[:3] + torch.tensor(offs)
    assert ex.to_items(gen, sids, offs, vs).tolist() == sids.item_ids[:3].tolist()
    bad = gen.clone()
    bad[0, 0] = 5          # a word token, not a level-1 code
    bad[1, 1] = offs[0]    # a level-1 token where a level-2 code belongs
    bad[2, 2] = offs[2] + vs[2] + 3  # a suffix beyond the table
    assert ex.to_items(bad, sids, offs, vs).tolist() == [-1, -1, -1]
    m = ex.ranking_metrics(torch.tensor([[5, 1, -1, 2, 3, 4, 6, 7, 8, 9]]), torch.tensor([1]))
    assert m["R@5"] == 1.0 and m["invalid_rate"] == 0.1
    assert m["N@10"] == pytest.approx(1 / torch.log2(torch.tensor(3.0)).item())


def test_prompt_words_survive_the_vocabulary_cap():
    ex = _load()
    tok = ex.build_tokenizer(["lego star wars set", "barbie doll house"] * 3, word_vocab=len(ex.PROMPT_WORDS) + 6)
    ids = tok("recommend : lego = is :", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in [ids[0], ids[1], ids[3], ids[4]]
    assert tok.convert_ids_to_tokens(ids)[0] == "recommend"
