"""Semantic IDs as tokens of a language model (PLUM-style): one causal LM reads words and SIDs.

    python examples/llm_sids.py --data ../shared/data/amazon/toys.txt \
        --items ../shared/data/amazon/toys_items.tsv --max-minutes 10 --threads 1 --out runs/llm_toys.json

Pipeline (one process, one split):

1. Leave-one-out split (``pysid.data``), item Semantic IDs from the collaborative vectors of
   the training part (``--sid-input collab``; ``text`` / ``hybrid`` use the cached MiniLM
   embeddings of examples/text_sids.py), ``pysid.fit`` 3 x ``--codebook-size`` + suffix.
2. Tokenizer: a word-level ``tokenizers`` tokenizer trained on the item text (title phrase,
   brand/category names, keywords; lower case; ``--word-vocab`` words), wrapped in
   ``transformers.PreTrainedTokenizerFast``; then ``tokenizer.add_tokens(sids.token_vocabulary())``
   adds one token per (level, code): ``<a_0> ... <a_255> <b_0> ... <d_n>``, contiguous per
   level, so code c of level t is token ``offset[t] + c``.
3. Model: GPT-2 architecture from a config (no download; ``--d-model``, ``--layers``), built
   for the word vocabulary, then ``model.resize_token_embeddings(len(tokenizer))`` as one does
   with a pretrained LM.
4. Training data, mixed in one shuffled stream (length-bucketed batches, AdamW with a linear
   warm-up, a wall budget, best validation state kept):
   * user sequences: ``[BOS] recommend : <sid 1> <sid 2> ... <sid n>`` (the last
     ``--history`` + 1 items of the training part), next-token loss on every SID token
     (every item is the target of the items before it, as SASRec trains);
   * item text -> SID: ``[BOS] recommend : <text> = <sid> [EOS]`` (loss on the SID), with the
     full text and with ``--text-samples`` seeded subsets of its words (so short requests work);
   * SID -> item text: ``[BOS] <sid> is : <text> [EOS]`` (loss on the text).
5. (a) Recommendation: prompt ``[BOS] recommend : <sids of the test history>``, then
   ``model.generate(num_beams=--beam, num_return_sequences=10, max_new_tokens=L+1)`` with
   ``pysid.integrations.transformers.TrieLogitsProcessor``: Recall/NDCG@5/10 against the test
   target (full ranking over the catalogue, every returned SID checked against the table:
   the invalid rate must be 0), and the same users decoded without the processor: its decode
   time and invalid rate (SIDs no item has).
   (b) Text requests (``--requests``): ``[BOS] recommend : lego star wars =`` + constrained
   beam search -> items, printed with their text.

Writes ``--out`` JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

import pysid
from pysid.collab import item_embeddings
from pysid.data import read_item_text
from pysid.integrations.transformers import TrieLogitsProcessor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generative_retrieval import load_split  # noqa: E402

PROMPT_WORDS = ("recommend", ":", "=", "is")
REQUESTS = ("lego star wars", "jigsaw puzzle 1000 pieces", "barbie doll house", "wooden train set")


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def item_words(fields: dict) -> str:
    """Item text for the LM: title phrase, brand and categories, keywords (lower case)."""
    attrs = fields.get("attributes", "").replace(" | ", " , ")
    kw = fields.get("grlm_terms", "")
    return " ".join(p for p in (fields.get("idgenrec_textual_id", ""), attrs, kw) if p).lower()


# ----------------------------------------------------------------------------- SIDs
def build_sids(split, all_items, args):
    x = item_embeddings(split.train, dim=64, num_items=max(all_items) + 1, seed=args.seed)[torch.as_tensor(all_items)]
    zero = x.norm(dim=1) == 0
    if bool(zero.any()):  # items without co-occurrence: a small seeded vector (as generative_retrieval.py)
        g = torch.Generator().manual_seed(args.seed + 1)
        scale = 0.01 * float(x[~zero].norm(dim=1).median())
        x[zero] = torch.randn(int(zero.sum()), x.shape[1], generator=g) * scale / math.sqrt(x.shape[1])
    inputs = x
    if args.sid_input in ("text", "hybrid"):
        from text_sids import text_vectors  # noqa: PLC0415
        from pysid.data import item_sentence  # noqa: PLC0415

        text = read_item_text(args.items)
        t, _ = text_vectors([item_sentence(text.get(i, {})) or "unknown item" for i in all_items], args.cache,
                            progress=not args.quiet)
        inputs = t if args.sid_input == "text" else [t, x]
    k = min(args.codebook_size, len(all_items))
    return pysid.fit(inputs, levels=args.levels, codebook_size=k, seed=args.seed,
                     item_ids=torch.as_tensor(all_items), progress=False)


# ----------------------------------------------------------------------------- tokenizer
def build_tokenizer(texts: list[str], word_vocab: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    tk = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    # the prompt words are listed with the special tokens, so the vocabulary cap never drops them
    trainer = trainers.WordLevelTrainer(vocab_size=word_vocab, min_frequency=1,
                                        special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + list(PROMPT_WORDS))
    tk.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]")


def add_sid_tokens(tok, sids) -> list[int]:
    """Adds the SID tokens; returns the token id of code 0 of each column (level)."""
    vocab = sids.token_vocabulary()
    tok.add_tokens(vocab)
    ids = tok.convert_tokens_to_ids(vocab)
    if ids != list(range(ids[0], ids[0] + len(vocab))):
        raise RuntimeError("SID tokens did not get contiguous ids")
    offs, start = [], ids[0]
    for n in sids.vocab_sizes:
        offs.append(start)
        start += n
    return offs


# ----------------------------------------------------------------------------- data
def make_examples(split, sids, offs, tok, texts: dict, args):
    """Lists of (input ids, labels) with -100 where no loss is taken."""
    L1 = sids.codes.shape[1]
    code = {int(i): c for i, c in zip(sids.item_ids.tolist(), sids.codes.tolist())}
    off = offs

    def sid_tok(i):
        return [off[t] + c for t, c in enumerate(code[i])]

    bos, eos = tok.bos_token_id, tok.eos_token_id
    rec = tok("recommend :", add_special_tokens=False)["input_ids"]
    eq = tok("=", add_special_tokens=False)["input_ids"]
    is_ = tok("is :", add_special_tokens=False)["input_ids"]
    ex = []
    H = args.history
    for s in split.train:
        for end in range(len(s), 0, -(H + 1)):   # the last window, then earlier ones
            win = s[max(0, end - H - 1):end]
            ids = [bos] + rec + [t for i in win for t in sid_tok(i)]
            lab = [-100] * (1 + len(rec)) + ids[1 + len(rec):]
            ex.append((ids, lab))
            if end - H - 1 <= 0:
                break
    n_rec = len(ex)
    rng = random.Random(args.seed)
    items = sorted(texts)
    variants, owners = [], []
    for i in items:
        words = texts[i].split()
        variants.append(texts[i]); owners.append(i)
        for _ in range(args.text_samples):
            k = min(len(words), rng.randint(2, 4))
            pick = sorted(rng.sample(range(len(words)), k))
            variants.append(" ".join(words[j] for j in pick)); owners.append(i)
    enc = tok(variants, add_special_tokens=False)["input_ids"]
    for i, w in zip(owners, enc):
        w = w[: args.max_text_tokens]
        ids = [bos] + rec + w + eq + sid_tok(i) + [eos]
        ex.append((ids, [-100] * (len(ids) - L1 - 1) + ids[-L1 - 1:]))
    full = tok([texts[i] for i in items], add_special_tokens=False)["input_ids"]
    for i, w in zip(items, full):
        w = w[: args.max_text_tokens]
        ids = [bos] + sid_tok(i) + is_ + w + [eos]
        ex.append((ids, [-100] * (1 + L1 + len(is_)) + w + [eos]))
    return ex, n_rec


def batches(ex, batch: int, rng: random.Random, pad: int):
    order = list(range(len(ex)))
    rng.shuffle(order)
    chunks = [sorted(order[i:i + batch * 50], key=lambda j: len(ex[j][0])) for i in range(0, len(order), batch * 50)]
    bs = [c[i:i + batch] for c in chunks for i in range(0, len(c), batch)]
    rng.shuffle(bs)
    for b in bs:
        n = max(len(ex[j][0]) for j in b)
        ids = torch.full((len(b), n), pad, dtype=torch.long)
        lab = torch.full((len(b), n), -100, dtype=torch.long)
        for r, j in enumerate(b):
            a, l = ex[j]
            ids[r, : len(a)] = torch.tensor(a)
            lab[r, : len(l)] = torch.tensor(l)
        yield ids, (ids != pad).long(), lab


# ----------------------------------------------------------------------------- decoding
def prompts(histories, sids, offs, tok, H):
    code = {int(i): c for i, c in zip(sids.item_ids.tolist(), sids.codes.tolist())}
    rec = tok("recommend :", add_special_tokens=False)["input_ids"]
    return [[tok.bos_token_id] + rec + [offs[t] + c for i in h[-H:] for t, c in enumerate(code[i])] for h in histories]


def left_pad(seqs, pad: int):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, n - len(s):] = torch.tensor(s)
        mask[r, n - len(s):] = 1
    return ids, mask


def to_items(gen, sids, offs, vocab_sizes):
    """Generated SID tokens [N, L1] -> item ids [N] (-1: not a valid SID)."""
    o = torch.tensor(offs)
    codes = gen - o
    ok = ((codes >= 0) & (codes < torch.tensor(vocab_sizes))).all(1)
    items = torch.full((gen.shape[0],), -1, dtype=torch.long)
    if bool(ok.any()):
        items[ok] = sids.item(codes[ok])
    return items


@torch.no_grad()
def recommend(model, seqs, sids, offs, tok, beam: int, topk: int, batch: int, constrained: bool):
    """Top-k item ids [N, topk] (-1 for invalid SIDs) and seconds spent in generate."""
    model.eval()
    L1 = sids.codes.shape[1]
    trie = sids.trie()
    order = sorted(range(len(seqs)), key=lambda j: len(seqs[j]))   # similar lengths per batch
    out = torch.full((len(seqs), topk), -1, dtype=torch.long)
    secs = 0.0
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        ids, mask = left_pad([seqs[j] for j in idx], tok.pad_token_id)
        kw = {}
        if constrained:
            kw["logits_processor"] = [TrieLogitsProcessor(trie, offs, prompt_length=ids.shape[1])]
        t0 = time.perf_counter()
        gen = model.generate(ids, attention_mask=mask, num_beams=beam, num_return_sequences=topk,
                             max_new_tokens=L1, min_new_tokens=L1, do_sample=False, early_stopping=False,
                             length_penalty=0.0, pad_token_id=tok.pad_token_id, eos_token_id=None, **kw)
        secs += time.perf_counter() - t0
        items = to_items(gen[:, ids.shape[1]:], sids, offs, sids.vocab_sizes)
        out[torch.tensor(idx)] = items.reshape(len(idx), topk)
    return out, secs


def ranking_metrics(top: torch.Tensor, target: torch.Tensor) -> dict:
    hit = top == target[:, None]
    ranks = torch.arange(1, top.shape[1] + 1, dtype=torch.float64)
    res = {}
    for k in (5, 10):
        h = hit[:, :k]
        res[f"R@{k}"] = float(h.any(1).double().mean())
        res[f"N@{k}"] = float((h.double() / torch.log2(ranks[:k] + 1)).sum(1).mean())
    res["invalid_rate"] = float((top < 0).double().mean())
    return res


# ----------------------------------------------------------------------------- main
def run(args) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel  # noqa: PLC0415

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_all(args.seed)
    t_start = time.perf_counter()
    seqs, split, all_items, _ = load_split(args)  # generative_retrieval.py's: the same users and split
    fields = read_item_text(args.items)
    texts = {i: item_words(fields.get(i, {})) or "unknown item" for i in all_items}
    sids = build_sids(split, all_items, args)
    log(f"{len(seqs)} users, {len(all_items)} items; {sids!r}")

    tok = build_tokenizer([texts[i] for i in all_items], args.word_vocab)
    n_words = len(tok)
    offs = add_sid_tokens(tok, sids)
    cfg = GPT2Config(vocab_size=n_words, n_positions=args.max_len, n_embd=args.d_model, n_layer=args.layers,
                     n_head=args.heads, n_inner=4 * args.d_model, resid_pdrop=args.dropout, embd_pdrop=args.dropout,
                     attn_pdrop=args.dropout, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(cfg)
    model.resize_token_embeddings(len(tok))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = None
    log(f"tokenizer: {n_words} words + {len(tok) - n_words} SID tokens (offsets {offs}); GPT-2 "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

    ex, n_rec = make_examples(split, sids, offs, tok, texts, args)
    too_long = max(len(e[0]) for e in ex)
    if too_long > args.max_len:
        raise ValueError(f"an example has {too_long} tokens, above --max-len {args.max_len}")
    log(f"training examples: {n_rec} user windows + {len(ex) - n_rec} text<->SID pairs, "
        f"{sum(len(e[0]) for e in ex)} tokens")

    rng = random.Random(args.seed)
    val_idx = sorted(rng.sample(range(len(seqs)), min(args.val_users, len(seqs))))
    val_prompts = prompts([split.valid_history[i] for i in val_idx], sids, offs, tok, args.history)
    val_target = torch.tensor([split.valid_target[i] for i in val_idx])

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / max(args.warmup, 1)))
    best, best_state, history, step = -1.0, None, [], 0
    budget = args.max_minutes * 60
    t_train = time.perf_counter()
    stop = False
    for epoch in range(args.epochs):
        model.train()
        tot, n = 0.0, 0
        for ids, mask, lab in batches(ex, args.batch_size, rng, tok.pad_token_id):
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1),
                                   ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot, n, step = tot + loss.item(), n + 1, step + 1
            if (args.max_steps and n >= args.max_steps) or time.perf_counter() - t_train > budget:
                stop = time.perf_counter() - t_train > budget
                break
        top, _ = recommend(model, val_prompts, sids, offs, tok, args.val_beam, 10, args.eval_batch, True)
        r10 = ranking_metrics(top, val_target)["R@10"]
        history.append({"epoch": epoch + 1, "steps": step, "loss": tot / max(n, 1), "val_R@10": r10,
                        "minutes": (time.perf_counter() - t_train) / 60})
        log(f"epoch {epoch + 1}: loss {tot / max(n, 1):.4f}, val R@10 {r10:.4f} ({len(val_idx)} users, beam "
            f"{args.val_beam}), {(time.perf_counter() - t_train) / 60:.1f} min")
        if r10 > best:
            best, best_state = r10, copy.deepcopy(model.state_dict())
        if stop:
            break
    train_minutes = (time.perf_counter() - t_train) / 60
    if best_state is not None:
        model.load_state_dict(best_state)

    # (a) recommendation, constrained vs unconstrained
    users = list(range(len(seqs)))
    if args.eval_users and args.eval_users < len(users):
        users = sorted(random.Random(args.seed + 3).sample(users, args.eval_users))
    test_prompts = prompts([split.test_history[i] for i in users], sids, offs, tok, args.history)
    target = torch.tensor([split.test_target[i] for i in users])
    top, secs = recommend(model, test_prompts, sids, offs, tok, args.beam, 10, args.eval_batch, True)
    res_c = {**ranking_metrics(top, target), "decode_seconds": secs, "ms_per_user": 1000 * secs / len(users)}
    n_un = min(len(users), args.unconstrained_users)
    top_u, secs_u = recommend(model, test_prompts[:n_un], sids, offs, tok, args.beam, 10, args.eval_batch, False)
    top_c_same = top[:n_un]
    _, secs_c_same = recommend(model, test_prompts[:n_un], sids, offs, tok, args.beam, 10, args.eval_batch, True)
    res_u = {**ranking_metrics(top_u, target[:n_un]), "decode_seconds": secs_u, "users": n_un,
             "ms_per_user": 1000 * secs_u / n_un, "constrained_ms_per_user_same_users": 1000 * secs_c_same / n_un}
    del top_c_same
    log(f"test ({len(users)} users, beam {args.beam}): constrained R@10 {res_c['R@10']:.4f} N@10 {res_c['N@10']:.4f} "
        f"invalid {res_c['invalid_rate']:.4f}, {res_c['ms_per_user']:.1f} ms/user; unconstrained ({n_un} users): "
        f"R@10 {res_u['R@10']:.4f}, invalid {res_u['invalid_rate']:.4f}, {res_u['ms_per_user']:.1f} ms/user "
        f"(constrained on the same users: {res_u['constrained_ms_per_user_same_users']:.1f} ms/user)")

    # (b) text requests
    eq = tok("=", add_special_tokens=False)["input_ids"]
    rec = tok("recommend :", add_special_tokens=False)["input_ids"]
    answers = []
    req_prompts = [[tok.bos_token_id] + rec + tok(r, add_special_tokens=False)["input_ids"] + eq for r in args.requests]
    top_r, _ = recommend(model, req_prompts, sids, offs, tok, args.beam, 5, args.eval_batch, True)
    for r, row in zip(args.requests, top_r.tolist()):
        answers.append({"request": f"recommend: {r}", "items": row,
                        "texts": [fields.get(i, {}).get("idgenrec_textual_id", "?") + " [" +
                                  fields.get(i, {}).get("attributes", "") + "]" if i >= 0 else "INVALID" for i in row]})
        log(f"recommend: {r}")
        for i, t in zip(row, answers[-1]["texts"]):
            log(f"    {i}: {t}")
    results = {"args": vars(args), "users": len(seqs), "items": len(all_items), "sids": repr(sids),
               "vocab": {"words": n_words, "sid_tokens": len(tok) - n_words, "offsets": offs},
               "parameters": sum(p.numel() for p in model.parameters()), "examples": len(ex), "rec_windows": n_rec,
               "train_minutes": train_minutes, "steps": step, "history": history, "eval_users": len(users),
               "constrained": res_c, "unconstrained": res_u, "text_requests": answers,
               "request_invalid": int(sum(i < 0 for a in answers for i in a["items"])),
               "wall_minutes": (time.perf_counter() - t_start) / 60}
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
    p.add_argument("--sid-input", choices=["collab", "text", "hybrid"], default="collab")
    p.add_argument("--cache", default="~/.cache/pysid", help="text embedding cache (text/hybrid SIDs)")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--word-vocab", type=int, default=2000, help="words (the rest of the item text: [UNK])")
    p.add_argument("--history", type=int, default=20)
    p.add_argument("--text-samples", type=int, default=2, help="word-subset requests per item")
    p.add_argument("--max-text-tokens", type=int, default=24)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-minutes", type=float, default=10.0, help="training wall budget")
    p.add_argument("--max-steps", type=int, default=0, help="cap steps per epoch (0: none; smoke runs)")
    p.add_argument("--max-users", type=int, default=0, help="random subsample of users (0: all)")
    p.add_argument("--val-users", type=int, default=500)
    p.add_argument("--val-beam", type=int, default=10)
    p.add_argument("--eval-users", type=int, default=0, help="random test users (0: all)")
    p.add_argument("--unconstrained-users", type=int, default=512, help="users decoded without the trie")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--requests", nargs="*", default=list(REQUESTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
