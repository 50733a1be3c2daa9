"""Benchmark: trie-constrained beam search (pysid) against its peers, one run, one model.

Every method decodes the same catalogue with the same model object (a tiny random GPT-2:
prompt = one user token, L = 4 code levels of 256 + a disambiguation code). Reported per
method: wall time per batch, search time (wall minus the time spent inside the model's
forward, measured with forward hooks), invalid items returned, and for the trie its build
time and bytes per item.

Methods:
  unconstrained   the same beam loop without any constraint (log_softmax + topk over [B, K*V])
  torch-csr-ref   pysid.beam_search with the pure-PyTorch reference step (vectorised CSR)
  pysid           pysid.beam_search with the native fused step
  hf-prefix-fn    transformers generate + prefix_allowed_tokens_fn (a Python callback per beam)
  hf-pysid        transformers generate + pysid's TrieLogitsProcessor

    python bench/bench_beam_search.py                 # 100k and 1M items, 64 queries x beam 20
    python bench/bench_beam_search.py --quick         # seconds: CI smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch

import pysid
from pysid.search import beam_search
from pysid.trie import Trie

try:
    import transformers
except ImportError:  # optional peer
    transformers = None


def catalogue(M: int, base: int, levels: int, seed: int = 0) -> torch.Tensor:
    """M items: ``levels`` random codes of ``base`` + a disambiguation code (rank among collisions)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, base, (M, levels), generator=g)
    key = torch.zeros(M, dtype=torch.long)
    for i in range(levels):
        key = key * base + c[:, i]
    s, order = torch.sort(key, stable=True)
    first = torch.ones(M, dtype=torch.bool)
    first[1:] = s[1:] != s[:-1]
    idx = torch.arange(M)
    start = torch.cummax(torch.where(first, idx, 0), 0).values
    dis = torch.empty(M, dtype=torch.long)
    dis[order] = idx - start
    return torch.cat([c, dis[:, None]], 1)


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class Timed:
    """Accumulates the time spent inside a module's forward (hooks; synchronises on CUDA)."""

    def __init__(self, model, device="cpu"):
        self.total = 0.0
        self.device = device
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, *a):
        _sync(self.device)
        self._t0 = time.perf_counter()

    def _post(self, *a):
        _sync(self.device)
        self.total += time.perf_counter() - self._t0


def make_model(vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=16, n_embd=32, n_layer=1, n_head=2,
                                  bos_token_id=0, eos_token_id=None, pad_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


class TinyLM(torch.nn.Module):
    """Fallback model without transformers: embeddings of the tokens so far -> logits."""

    def __init__(self, vocab: int, dim: int = 32, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab)

    def forward(self, input_ids):
        class O:  # noqa: N801 - mimics a transformers output
            pass

        o = O()
        o.logits = self.out(torch.tanh(self.emb(input_ids).cumsum(1)))
        return o


def run(fn, reps: int, timer: Timed):
    fn()  # warm-up
    walls, searches, out = [], [], None
    for _ in range(reps):
        timer.total = 0.0
        _sync(timer.device)
        t0 = time.perf_counter()
        out = fn()
        _sync(timer.device)
        w = time.perf_counter() - t0
        walls.append(w * 1e3)
        searches.append((w - timer.total) * 1e3)
    return statistics.median(walls), statistics.median(searches), out


def bench_one(M: int, args, rows: list) -> None:
    L = args.levels + 1
    dev = args.device
    codes = catalogue(M, args.base, args.levels)
    Trie(codes.to(dev))  # warm-up (CUDA context, kernels)
    _sync(dev)
    t0 = time.perf_counter()
    trie = Trie(codes.to(dev))
    _sync(dev)
    build_s = time.perf_counter() - t0
    with pysid.backend("reference"):
        t0 = time.perf_counter()
        Trie(codes.to(dev))
        _sync(dev)
        build_ref_s = time.perf_counter() - t0
    Vl = list(trie.vocab_sizes)
    offs = [1 + sum(Vl[:t]) for t in range(L)]
    vocab = 1 + sum(Vl)
    model = (make_model(vocab) if transformers is not None else TinyLM(vocab)).to(dev)
    timer = Timed(model, dev)
    B, K = args.batch, args.beam
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(1, vocab, (B, 1), generator=g).to(dev)
    offs_t = torch.tensor(offs, device=dev)
    rep_prompt = prompt.repeat_interleave(K, 0)

    @torch.no_grad()
    def step_fn(tokens, parent):  # no KV cache: the full (short) sequence each step
        t = tokens.shape[1]
        ids = torch.cat([rep_prompt, tokens + offs_t[:t]], 1)
        logits = model(ids).logits[:, -1]
        return logits[:, offs[t] : offs[t] + Vl[t]]

    def unconstrained():
        scores = torch.full((B, K), float("-inf"), device=dev)
        scores[:, 0] = 0
        seqs = torch.zeros(B, K, 0, dtype=torch.long, device=dev)
        parent = None
        base = torch.arange(B, device=dev)[:, None] * K
        for t in range(L):
            lp = torch.log_softmax(step_fn(seqs.reshape(B * K, t), parent).float(), -1)
            v = lp.shape[1]
            cand = (scores[..., None] + lp.view(B, K, v)).view(B, K * v)
            scores, idx = cand.topk(K, dim=1)
            p, tok = idx // v, idx % v
            seqs = torch.cat([seqs.gather(1, p[..., None].expand(B, K, t)), tok[..., None]], 2)
            parent = (base + p).reshape(-1)
        return trie.lookup(seqs.reshape(-1, L)).reshape(B, K)

    def pysid_search():
        return beam_search(step_fn, trie, B, K).items

    def ref_search():
        with pysid.backend("reference"):
            return beam_search(step_fn, trie, B, K).items

    common = dict(trie_bytes_per_item=trie.nbytes / M, build_s=build_s, build_ref_s=build_ref_s)
    methods = [("unconstrained", unconstrained, args.reps), ("torch-csr-ref", ref_search, args.reps),
               ("pysid", pysid_search, args.reps)]
    if transformers is not None and not args.no_hf:
        from pysid.integrations.transformers import TrieLogitsProcessor

        # the usual callback: a dict from each valid prefix (as model tokens) to its allowed
        # next tokens, built once outside the timed region
        allowed_map: dict[tuple, list] = {}
        for row in (codes + offs_t.cpu()).tolist():
            for t in range(L):
                allowed_map.setdefault(tuple(row[:t]), []).append(row[t])
        for key, toks in allowed_map.items():
            allowed_map[key] = sorted(set(toks))

        def allowed(batch_id, sent):
            return allowed_map.get(tuple(sent[1:].tolist()), [])

        def hf(**kw):
            with torch.no_grad():
                out = model.generate(prompt, num_beams=K, num_return_sequences=K, max_new_tokens=L, do_sample=False,
                                     length_penalty=0.0, early_stopping=False, **kw)
            return trie.lookup((out[:, 1:] - offs_t).reshape(-1, L)).reshape(B, K)

        methods += [("hf-prefix-fn", lambda: hf(prefix_allowed_tokens_fn=allowed), max(1, args.reps // 5)),
                    ("hf-pysid", lambda: hf(logits_processor=[TrieLogitsProcessor(trie, offs, prompt_length=1)]),
                     max(1, args.reps // 5))]
    base_search = None
    for name, fn, reps in methods:
        wall, search, items = run(fn, reps, timer)
        if name == "unconstrained":
            base_search = search
        invalid = int((items < 0).sum())
        row = dict(items=M, method=name, device=dev, batch=B, beam=K, wall_ms=wall, search_ms=search,
                   search_vs_unconstrained=search / base_search, invalid_items=invalid, **common)
        rows.append(row)
        print(f"{M:>9} {name:<15} {wall:9.2f} {search:10.2f} {search / base_search:8.2f}x {invalid:8d} "
              f"{trie.nbytes / M:7.2f} {build_s * 1e3:9.1f} {build_ref_s * 1e3:9.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--base", type=int, default=256, help="codes per level (before the disambiguation code)")
    ap.add_argument("--levels", type=int, default=3, help="levels before the disambiguation code")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers generate rows")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds (CI smoke)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (model, trie and search on that device)")
    ap.add_argument("--out", default="bench/results/beam_search.json")
    args = ap.parse_args()
    if args.quick:
        args.items, args.batch, args.beam, args.base, args.reps = [3000], 4, 5, 32, 2
    torch.set_num_threads(args.threads)
    print(f"pysid {pysid.__version__}  torch {torch.__version__}  threads {torch.get_num_threads()}  "
          f"B={args.batch} beam={args.beam} L={args.levels}x{args.base}+disambiguation")
    print(f"{'items':>9} {'method':<15} {'wall ms':>9} {'search ms':>10} {'vs unc':>9} {'invalid':>8} "
          f"{'B/item':>7} {'build ms':>9} {'ref build':>9}")
    rows: list = []
    for M in args.items:
        bench_one(M, args, rows)
    env = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
        transformers=getattr(transformers, "__version__", None), machine=platform.machine(),
        gpu=torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        processor=platform.processor(), cpu_count=os.cpu_count(),
        loadavg=os.getloadavg() if hasattr(os, "getloadavg") else None,
        cpu_isa=pysid._native.cpu().cpu_isa() if pysid._native.has_cpu() else None,
        args=vars(args),
    )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
