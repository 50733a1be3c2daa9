"""README.md is executed, so the documentation cannot drift from the code.

* Every ```python block runs, in order, in one namespace (a block may use the names of the
  blocks before it), in a temporary folder, with ``100_000`` replaced by ``5_000`` (the
  README's sizes are realistic, a test's must be small). The names a block takes as given
  are defined here (PRELUDE): ``item_embeddings``, ``new_item_embeddings``, ``model_logits``
  (random logits: the search still runs end to end), ``seen_items``. A line ending with
  ``# test: skip`` is left out (none needs it today).
* The two install commands stay exactly as they are (CI and users copy them).
* The command-line synopsis names only commands, options and choices that exist, with the
  defaults the parser (or the function behind it) really has.
* The trie size the README states is the one ``pysid demo`` measures.
"""

from __future__ import annotations

import inspect
import os
import re

import pytest
import torch

import pysid
from pysid.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as _f:
    README = _f.read()

SUBSTITUTIONS = {"100_000": "5_000"}

PRELUDE = '''
import torch
_g = torch.Generator().manual_seed(0)
_topics = torch.randn(40, 32, generator=_g)
item_embeddings = _topics[torch.randint(0, 40, (2000,), generator=_g)] + 0.3 * torch.randn(2000, 32, generator=_g)
new_item_embeddings = _topics[torch.randint(0, 40, (50,), generator=_g)] + 0.3 * torch.randn(50, 32, generator=_g)

def model_logits(tokens, parent):          # a stand-in for a trained model: random next-code logits
    return torch.randn(tokens.shape[0], 256, generator=_g)

seen_items = [[0, 1, 2]] * 64              # per-query item ids never to return
'''


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks("python")
    assert len(code) >= 4
    ns: dict = {}
    exec(compile(PRELUDE, "<prelude>", "exec"), ns)
    for i, block in enumerate(code):
        src = "\n".join(line for line in block.splitlines() if not line.rstrip().endswith("# test: skip"))
        for a, b in SUBSTITUTIONS.items():
            src = src.replace(a, b)
        exec(compile(src, f"README.md python block {i + 1}", "exec"), ns)
    # what the blocks promise, checked on what they computed
    out, sids, trie = ns["out"], ns["sids"], ns["trie"]
    assert out.items.shape == (64, 10) and bool((out.items >= 0).all())
    assert not bool(torch.isin(out.items, torch.tensor([0, 1, 2])).any())  # exclude=seen_items
    assert sids.codes.shape[1] == 4 and os.path.exists(tmp_path / "sids.npz")
    assert ns["TrieLogitsProcessor"].__name__ == "TrieLogitsProcessor" and trie.nbytes > 0


def test_install_commands_are_unchanged():
    bash = blocks("bash")
    assert ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install . && "
            "pysid demo\n") in bash
    assert ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install \".[test]\" "
            "&& pytest\n") in bash


def _synopsis() -> list[tuple[str, str]]:
    """(command, rest of its lines) of the ```text block that documents the command line."""
    text = next(b for b in blocks("text") if b.lstrip().startswith("pysid "))
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.split("#")[0]
        m = re.match(r"pysid (\w+)(.*)", line.strip())
        if m:
            out.append((m.group(1), m.group(2)))
        elif line.strip().startswith("pysid --"):
            out.append(("", line.strip()[len("pysid"):]))
        elif line.strip() and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line)
    return out


# documented defaults of options whose parser default is None (the function behind decides)
_FUNCTION_DEFAULTS = {
    "epochs": lambda: inspect.signature(pysid.nn.train_rqvae).parameters["epochs"].default,
    "batch_size": lambda: inspect.signature(pysid.nn.train_rqvae).parameters["batch_size"].default,
    "latent": lambda: inspect.signature(pysid.nn.RQVAE).parameters["latent"].default,
    "topk": lambda: 5,  # min(5, --beam)
    "chunk_rows": lambda: inspect.signature(pysid.stream.encode_shards).parameters["chunk_rows"].default,
}


def test_cli_synopsis_matches_the_parser():
    p = build_parser()
    subs = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction").choices
    lines = _synopsis()
    assert {c for c, _ in lines if c} == set(subs)  # every command documented, none invented
    for cmd, rest in lines:
        parser = subs[cmd] if cmd else p
        actions = {s: a for a in parser._actions for s in a.option_strings}
        for opt, value in re.findall(r"(--[\w-]+)(?: ([^\]\[]+))?", rest):
            assert opt in actions, f"README: pysid {cmd} {opt} is not an option"
            a = actions[opt]
            if not value or a.nargs == 0:
                continue
            vals = [v.strip() for v in value.split("|")]
            if a.choices:  # e.g. [--method rq-kmeans | rq-vae]: all are choices
                assert set(vals) <= set(a.choices), (cmd, opt, vals)
            elif len(vals) == 1 and re.fullmatch(r"[\d.]+", vals[0]):  # [--levels 3]: the default
                default = a.default if a.default is not None else _FUNCTION_DEFAULTS[a.dest]()
                default = default[0] if isinstance(default, list) else default
                assert float(vals[0]) == float(default), (cmd, opt, vals[0], default)
        for pos in re.findall(r"\[((?:\w+ \| )+\w+)\]", rest):  # [rq | beam | ...]: positional choices
            choices = {c for a in parser._actions if not a.option_strings and a.choices for c in a.choices}
            assert set(pos.replace(" ", "").split("|")) <= choices, (cmd, pos)


def test_trie_size_stated_is_the_demo_measurement(capsys):
    m = re.search(r"([\d.]+) bytes per item for `pysid demo`'s 20k items", README)
    assert m, "README states the trie size of the demo"
    assert main(["demo", "--quiet", "--queries", "2"]) == 0
    out = capsys.readouterr().out
    measured = re.search(r"trie: 20000 items, \d+ bytes = ([\d.]+) bytes/item", out)
    assert measured and measured.group(1) == m.group(1), (measured and measured.group(0), m.group(0))
