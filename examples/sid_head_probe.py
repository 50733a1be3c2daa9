"""How much of a sequence model's ranking survives decoding through Semantic IDs?

    python examples/sid_head_probe.py --data ../shared/data/amazon/toys.txt \
        --items ../shared/data/amazon/toys_items.tsv --out runs/probe_toys.json

A probe on frozen states, with the pieces of examples/generative_retrieval.py:

1. The SASRec-style model (full softmax over item ids) trains for ``--sas-cpu-minutes``
   (or loads ``--sasrec-state``; ``--save-sasrec`` keeps it). Its test Recall@10 is the target.
2. The SIDs are built as generative_retrieval.py builds them (``--sid-input``, ``--dedup``, ...).
3. Ceiling: the model's own item softmax decoded through the SID tree, level by level, with the
   exact probability mass of each prefix and a beam of ``--beam``: what the tree costs when the
   head that walks it is perfect.
4. For each ``--variants`` entry, CausalSID's SID head alone trains on the frozen states (the
   SASRec model in eval mode, no dropout) and decodes with ``pysid.beam_search`` over the trie:
   ``codebook`` (each level's softmax over the whole codebook, TIGER's), ``children`` (over the
   prefix's children in the trie), ``nodes`` (children + a learned output vector per tree node).
   Early stopping on validation Recall@10, best state kept.

The gap between the ceiling and a variant is the head's; between the SASRec row and the ceiling,
the tree's. Writes ``--out`` JSON (test metrics of every row).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generative_retrieval as gr  # noqa: E402

VARIANTS = {"codebook": (False, False), "children": (True, False), "nodes": (True, True)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Every other option is generative_retrieval.py's (--sid-input, --dedup, "
                                       "--sas-d-model, --sas-lr, --history, --val-users, --seed, ...).")
    p.add_argument("--variants", default="codebook,children,nodes", help="comma list of codebook, children, nodes")
    p.add_argument("--sas-cpu-minutes", type=float, default=12.0, help="CPU budget of the SASRec-style model")
    p.add_argument("--sasrec-state", default=None, help="load the SASRec-style model's state_dict instead")
    p.add_argument("--save-sasrec", default=None, help="save the trained SASRec-style model's state_dict here")
    p.add_argument("--probe-epochs", type=int, default=12)
    p.add_argument("--probe-lr", type=float, default=1e-3)
    p.add_argument("--probe-batch", type=int, default=2048, help="targets per step")
    p.add_argument("--probe-patience", type=int, default=4)
    p.add_argument("--ceiling-beams", default="20", help="comma list of beams for the exact-marginal ceiling")
    own, rest = p.parse_known_args(argv)
    g = gr.parse_args(rest + ["--arch", "causal"])
    if g.d_model != g.sas_d_model:
        raise SystemExit(f"--d-model ({g.d_model}) must equal --sas-d-model ({g.sas_d_model}): the head reads its states")
    bad = [v for v in own.variants.split(",") if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--variants: unknown {bad}; choose from {sorted(VARIANTS)}")
    return own, g


def _states(sas, seq: torch.Tensor, last: bool, batch: int = 1024) -> torch.Tensor:
    with torch.inference_mode():
        out = [sas(seq[s:s + batch]) for s in range(0, seq.shape[0], batch)]
    h = torch.cat(out) if out else torch.empty(0, seq.shape[1], sas.item.embedding_dim)
    return h[:, -1] if last else h


def ceiling(sas, states: torch.Tensor, sids, tree: gr.CausalSID, catalogue, beam: int, batch: int = 512):
    """Top 10 of the SASRec model's item softmax decoded through the SID tree with exact prefix masses."""
    codes, L = sids.codes, sids.codes.shape[1]
    node = [tree.prefix_nodes(codes[:, :t + 1]) for t in range(L)]          # each item's node at each depth
    n_nodes = [int(n.max()) + 1 for n in node]
    parent = [None] + [torch.zeros(n_nodes[t], dtype=torch.int64).index_copy_(0, node[t], node[t - 1])
                       for t in range(1, L)]
    leaf_item = torch.empty(n_nodes[-1], dtype=torch.int64).index_copy_(0, node[-1], sids.item_ids)
    tops = []
    with torch.inference_mode():
        for s in range(0, states.shape[0], batch):
            lg = sas.logits(states[s:s + batch])
            lg[:, ~catalogue] = float("-inf")
            p = torch.softmax(lg, 1)[:, sids.item_ids]                       # table order
            keep = None
            for t in range(L):
                mass = torch.zeros(p.shape[0], n_nodes[t]).index_add_(1, node[t], p)
                if t:
                    kept = torch.zeros_like(mass[:, :n_nodes[t - 1]], dtype=torch.bool).scatter_(1, keep, True)
                    mass = mass.masked_fill(~kept[:, parent[t]], -1.0)
                keep = mass.topk(min(beam if t < L - 1 else 10, n_nodes[t]), 1).indices
            tops.append(leaf_item[keep])
    return torch.cat(tops)


def train_head(name, model, X, Y, val_st, val_tg, test_st, test_tg, trie, catalogue, own, g, log):
    params = [p for n, p in model.named_parameters() if not n.startswith(("backbone.", "norm.", "item.", "pos."))]
    opt = torch.optim.AdamW(params, lr=own.probe_lr, weight_decay=g.weight_decay)
    gen = torch.Generator().manual_seed(g.seed)

    def top10(st):
        model.eval()
        with torch.inference_mode():
            out = [gr.sid_head_decode(model, st[s:s + g.eval_batch], trie, g.beam, 10)
                   for s in range(0, st.shape[0], g.eval_batch)]
        model.train()
        return torch.cat(out)

    best, best_state, bad, hist, c0 = -1.0, None, 0, [], time.process_time()
    for ep in range(own.probe_epochs):
        perm, tot, n = torch.randperm(X.shape[0], generator=gen), 0.0, 0
        for s in range(0, X.shape[0], own.probe_batch):
            b = perm[s:s + own.probe_batch]
            loss = model.head_loss(X[b], Y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot, n = tot + float(loss.detach()), n + 1
        v = gr.ranking_metrics(top10(val_st), val_tg, catalogue)["R@10"]
        hist.append({"epoch": ep + 1, "loss": tot / n, "val_R@10": v, "cpu_minutes": (time.process_time() - c0) / 60})
        log(f"  {name} epoch {ep + 1}: loss {tot / n:.4f}  val R@10 {v:.4f}")
        if v > best:
            best, best_state, bad = v, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= own.probe_patience:
                break
    model.load_state_dict(best_state)
    res = gr.ranking_metrics(top10(test_st), test_tg, catalogue)
    return {**res, "best_val_R@10": best, "epochs": len(hist), "train_cpu_minutes": hist[-1]["cpu_minutes"],
            "history": hist}


def main(argv=None) -> dict:
    own, g = parse_args(argv)
    log = (lambda *a: None) if g.quiet else (lambda *a: print(*a, flush=True))
    if g.threads:
        torch.set_num_threads(g.threads)
    gr.seed_all(g.seed)
    seqs, split, all_items, catalogue = gr.load_split(g)
    max_id = catalogue.numel() - 1
    test_target = torch.tensor(split.test_target)
    val_target = torch.tensor(split.valid_target)
    val_idx = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(g.seed + 2))[:min(g.val_users, len(seqs))]
    res = {"args": {**vars(own), **vars(g)}, "users": len(seqs), "items": len(all_items), "rows": {}}

    if own.sasrec_state:
        sas = gr.SASRec(max_id + 1, g.history, d_model=g.sas_d_model, layers=2, heads=2, dropout=g.sas_dropout)
        sas.load_state_dict(torch.load(own.sasrec_state))
        sas_info = {"loaded": own.sasrec_state}
    else:
        sas, sas_info = gr._train_sasrec(g, log, split, max_id, catalogue, val_idx, val_target, split.test_history,
                                         test_target, None, None, cpu_minutes=own.sas_cpu_minutes)
        sas_info.pop("history", None)
        if own.save_sasrec:
            torch.save(sas.state_dict(), own.save_sasrec)
    sas.eval()
    pad = max_id + 1
    test_st = _states(sas, gr.left_pad(split.test_history, g.history, pad), last=True)
    val_st = _states(sas, gr.left_pad([split.valid_history[i] for i in val_idx.tolist()], g.history, pad), last=True)
    with torch.inference_mode():
        direct = sas.logits(test_st).masked_fill(~catalogue, float("-inf")).topk(10, 1).indices
    res["rows"]["SASRec item softmax"] = {**gr.ranking_metrics(direct, test_target, catalogue), **sas_info}

    sids, info = gr.build_sids(split, all_items, g)
    res["sids"] = info
    trie = sids.trie()
    item_codes = torch.zeros(max_id + 2, sids.codes.shape[1], dtype=torch.int64)
    item_codes[sids.item_ids] = sids.codes
    tree = gr.CausalSID(sids.vocab_sizes, pad, g.history, d_model=8, heads=1, layers=1, ff=8,
                        tree_codes=sids.codes)
    for beam in (int(b) for b in own.ceiling_beams.split(",")):
        top = ceiling(sas, test_st, sids, tree, catalogue, beam)
        res["rows"][f"ceiling: item softmax through the SID tree, beam {beam}"] = gr.ranking_metrics(top, test_target,
                                                                                                   catalogue)
    win = [s[-(g.history + 1):] for s in split.train if len(s) >= 2]
    tr_in = gr.left_pad([w[:-1] for w in win], g.history, pad)
    tr_out = gr.left_pad([w[1:] for w in win], g.history, pad)
    valid = tr_out != pad
    X = _states(sas, tr_in, last=False)[valid].clone()
    Y = item_codes[tr_out[valid]]
    log(f"probe: {X.shape[0]} frozen training states of d {X.shape[1]}; SIDs {sids!r}")
    for name in own.variants.split(","):
        use_tree, nodes = VARIANTS[name]
        gr.seed_all(g.seed)
        model = gr.CausalSID(sids.vocab_sizes, pad, g.history, d_model=g.d_model, heads=g.heads, layers=1, ff=g.ff,
                             dropout=0.1, head_layers=g.head_layers, item_input="id", tie=g.tie_head,
                             tree_codes=sids.codes if use_tree else None, node_vectors=nodes)
        res["rows"][f"SID head: {name}"] = train_head(name, model, X, Y, val_st, val_target[val_idx], test_st,
                                                      test_target, trie, catalogue, own, g, log)
    log(f"{'row':<58} {'R@5':>7} {'R@10':>7} {'N@10':>7}")
    for k, r in res["rows"].items():
        log(f"{k:<58} {r['R@5']:>7.4f} {r['R@10']:>7.4f} {r['N@10']:>7.4f}")
    if g.out:
        os.makedirs(os.path.dirname(os.path.abspath(g.out)), exist_ok=True)
        with open(g.out, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
