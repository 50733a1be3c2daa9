"""Semantic ID tables: from item embeddings to unique code tuples, LLM tokens and a trie.

    sids = pysid.fit(embeddings, levels=3, codebook_size=256)    # [M, D] -> SemanticIds
    sids.codes            # [M, 4] int64: 3 semantic levels + the dedup suffix level
    sids.to_tokens()[0]   # '<a_12><b_5><c_201><d_0>'
    sids.trie()           # pysid.Trie for constrained beam search
    sids.encode(new)      # cold-start items with the trained codebooks, same dedup rule
    sids.save("sids.npz"); pysid.SemanticIds.load("sids.npz")

Dedup rules (items whose full code tuple collides with an earlier item's):

* ``"suffix"`` (TIGER): one extra level numbers the items of each tuple 0, 1, 2, ... in
  item order (0 for items without a collision).
* ``"reassign"``: the first item (in item order) of each tuple keeps it; every other item
  moves to a free last-level code among its ``reassign_candidates`` nearest (default 32),
  in rounds: each proposes its next-nearest code and a free tuple goes to the nearest
  proposer (ties: the earlier item). Items that find no free code keep their tuple and get
  a suffix (the suffix level is added only if some remain). Never creates a collision.
* ``"none"``: keep the tuples as they are (``trie()`` then refuses duplicates).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .kmeans import _residual_kmeans, nonfinite_rows
from .ops import kmeans as _kops
from .ops import residual_quantize
from .trie import Trie

__all__ = ["SemanticIds", "fit"]

_FORMAT = "pysid.SemanticIds"
_VERSION = 1
_DEDUP = ("suffix", "reassign", "none")


# --------------------------------------------------------------------------- dedup helpers
def _tuple_keys(codes: Tensor, sizes: Sequence[int]) -> Tensor:
    """Mixed-radix int64 key of each row (unique per tuple)."""
    key = torch.zeros(codes.shape[0], dtype=torch.int64, device=codes.device)
    for lvl, s in enumerate(sizes):
        key = key * int(s) + codes[:, lvl].long()
    return key


def _rank_within_key(key: Tensor) -> Tensor:
    """For each row, how many earlier rows share its key (0 for the first)."""
    s, order = torch.sort(key, stable=True)
    first = torch.ones_like(s, dtype=torch.bool)
    first[1:] = s[1:] != s[:-1]
    pos = torch.arange(s.numel(), device=key.device)
    rank = torch.empty_like(pos)
    rank[order] = pos - torch.cummax(torch.where(first, pos, 0), 0).values
    return rank


def collision_stats(codes: Tensor, sizes: Sequence[int]) -> dict[str, Any]:
    """Items, distinct tuples, share of items in a shared tuple, largest group."""
    m = codes.shape[0]
    if m == 0:
        return {"items": 0, "distinct": 0, "collision_rate": 0.0, "max_per_tuple": 0}
    key = _tuple_keys(codes, sizes)
    _, counts = torch.unique(key, return_counts=True)
    shared = int(counts[counts > 1].sum())
    return {"items": m, "distinct": int(counts.numel()), "collision_rate": shared / m, "max_per_tuple": int(counts.max())}


def _reassign(codes: Tensor, last_scores: Tensor, last_cands: Tensor, sizes: Sequence[int],
              taken_keys: Tensor | None = None) -> Tensor:
    """Move colliding rows to a free last-level code, in rounds (vectorised).

    codes [M, L]; last_cands / last_scores [M, m]: each row's m nearest last-level codes,
    nearest first. taken_keys: sorted tuple keys held by other items (cold start). The first
    holder of a tuple (in row order) keeps it; every other row proposes its candidates in
    order, and a free tuple goes to the nearest proposer (ties: the earlier row). Rows that
    run out of candidates keep their tuple (the caller adds a suffix). Returns a new tensor."""
    codes = codes.clone()
    dev = codes.device
    L = codes.shape[1]
    prefix = _tuple_keys(codes[:, : L - 1], sizes[: L - 1]) * int(sizes[L - 1])
    key = prefix + codes[:, L - 1]
    keep = _rank_within_key(key) == 0
    occupied = torch.empty(0, dtype=torch.int64, device=dev) if taken_keys is None else taken_keys
    keep &= ~_isin_sorted(key, occupied)
    occupied = torch.sort(torch.cat([occupied, key[keep]])).values
    movers = (~keep).nonzero()[:, 0]
    ptr = torch.zeros(movers.numel(), dtype=torch.int64, device=dev)
    m = last_cands.shape[1]
    while movers.numel():
        cand_code = last_cands[movers, ptr]
        cand_key = prefix[movers] + cand_code
        free = ~_isin_sorted(cand_key, occupied)
        score = torch.where(free, last_scores[movers, ptr], float("inf"))
        order = torch.argsort(score, stable=True)
        order = order[torch.argsort(cand_key[order], stable=True)]  # by tuple, then score, then row
        ck = cand_key[order]
        first = torch.ones_like(ck, dtype=torch.bool)
        first[1:] = ck[1:] != ck[:-1]
        win = torch.zeros_like(free)
        win[order] = first & free[order]
        codes[movers[win], L - 1] = cand_code[win]
        occupied = torch.sort(torch.cat([occupied, cand_key[win]])).values
        ptr = ptr + 1  # losers try their next candidate
        go = ~win & (ptr < m)
        movers, ptr = movers[go], ptr[go]
    return codes


def _isin_sorted(values: Tensor, sorted_ref: Tensor) -> Tensor:
    if sorted_ref.numel() == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    i = torch.searchsorted(sorted_ref, values).clamp(max=sorted_ref.numel() - 1)
    return sorted_ref[i] == values


# --------------------------------------------------------------------------- the table
@dataclass
class SemanticIds:
    """A table of unique Semantic IDs, one per item.

    codes:          [M, L (+1)] int64: L semantic levels, plus the suffix level if dedup added one.
    item_ids:       [M] int64 item ids (default 0..M-1).
    codebooks:      list of L [K_l, D] float32 tensors (rq-kmeans: usable with
                    ``pysid.residual_quantize`` on the input embeddings; rq-vae: on the
                    encoder's latents).
    codebook_sizes: K_l per semantic level.
    method, dedup:  how the table was made; settings: the fit options.
    collisions:     {"before": stats, "after": stats} (items, distinct, collision_rate, max_per_tuple).
    """

    codes: Tensor
    item_ids: Tensor
    codebooks: list
    codebook_sizes: list
    method: str = "rq-kmeans"
    dedup: str = "suffix"
    settings: dict = field(default_factory=dict)
    collisions: dict = field(default_factory=dict)
    model_state: dict | None = None  # rq-vae: the RQVAE state dict (encode needs the encoder)

    # ------------------------------------------------------------------ basics
    @property
    def num_levels(self) -> int:
        """Semantic levels L (without the suffix level)."""
        return len(self.codebook_sizes)

    @property
    def has_suffix(self) -> bool:
        return self.codes.shape[1] > self.num_levels

    @property
    def vocab_sizes(self) -> list[int]:
        """Codes per column of ``codes`` (the suffix level: largest suffix + 1)."""
        v = [int(k) for k in self.codebook_sizes]
        if self.has_suffix:
            v.append(int(self.codes[:, -1].max()) + 1 if len(self) else 1)
        return v

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __repr__(self) -> str:
        c = self.collisions.get("before", {})
        return (f"SemanticIds(items={len(self)}, levels={self.num_levels}x{self.codebook_sizes}"
                f"{' + suffix' if self.has_suffix else ''}, method={self.method!r}, dedup={self.dedup!r}, "
                f"collision rate before dedup={c.get('collision_rate', float('nan')):.4f})")

    # ------------------------------------------------------------------ lookups
    def sid(self, item_ids) -> Tensor:
        """Codes [n, L'] of the given item ids (KeyError for an unknown id)."""
        ids = torch.as_tensor(item_ids, dtype=torch.int64).reshape(-1)
        order = torch.argsort(self.item_ids)
        sorted_ids = self.item_ids[order]
        pos = torch.searchsorted(sorted_ids, ids).clamp(max=max(len(self) - 1, 0))
        bad = (sorted_ids[pos] != ids) if len(self) else torch.ones_like(ids, dtype=torch.bool)
        if bool(bad.any()):
            raise KeyError(f"unknown item id(s): {ids[bad][:8].tolist()}")
        return self.codes[order[pos]]

    def item(self, codes) -> Tensor:
        """Item ids [n] of the given code tuples [n, L'] (-1 where no item has that SID)."""
        c = torch.as_tensor(codes, dtype=torch.int64)
        if c.dim() == 1:
            c = c[None]
        if c.shape[1] != self.codes.shape[1]:
            raise ValueError(f"codes must have {self.codes.shape[1]} columns, got {c.shape[1]}")
        return self.trie().lookup(c)

    def trie(self, device: Union[str, torch.device] = "cpu") -> Trie:
        """The trie of all SIDs (for ``pysid.beam_search``); cached per device."""
        cache = self.__dict__.setdefault("_tries", {})
        key = str(device)
        if key not in cache:
            cache[key] = Trie(self.codes.to(device), item_ids=self.item_ids.to(device), vocab_sizes=self.vocab_sizes)
        return cache[key]

    # ------------------------------------------------------------------ LLM tokens
    def to_tokens(self, template: str = "<{level}_{code}>", codes: Tensor | None = None) -> list[str]:
        """One string per item: e.g. '<a_12><b_5><c_201><d_0>'. ``template`` gets ``level`` (a, b, c,
        ...) and ``code``; ``codes`` (default: the table's) may be any [n, L'] rows."""
        c = self.codes if codes is None else torch.as_tensor(codes)
        names = [_level_name(i) for i in range(c.shape[1])]
        parts = [[template.format(level=names[j], code=v) for v in range(n)] for j, n in enumerate(self.vocab_sizes)]
        return ["".join(parts[j][v] for j, v in enumerate(row)) for row in c.tolist()]

    def token_vocabulary(self, template: str = "<{level}_{code}>") -> list[str]:
        """Every token the table can use, level by level (to extend an LLM tokenizer)."""
        return [template.format(level=_level_name(j), code=v) for j, n in enumerate(self.vocab_sizes) for v in range(n)]

    # ------------------------------------------------------------------ cold start
    def encode(self, embeddings: Tensor, item_ids=None, *, add: bool = False) -> Tensor:
        """SIDs [n, L'] for new items with the trained codebooks and the table's dedup rule
        applied against the existing items (and among the new ones, in order).

        add=True appends them to the table (item_ids default: max id + 1, ...)."""
        if isinstance(embeddings, (list, tuple)) != (self.settings.get("inputs", 1) > 1):
            raise ValueError(f"this table was fitted on {self.settings.get('inputs', 1)} input(s): pass the same")
        x = _fused(embeddings, self.settings.get("input_weights"))
        if self.method == "rq-vae":
            x = self._latents(x)
        if x.shape[1] != self.codebooks[0].shape[1]:
            raise ValueError(f"embeddings have D={x.shape[1]}, the codebooks D={self.codebooks[0].shape[1]}")
        n_new = x.shape[0]
        ids = None
        if add:  # validate the ids before anything changes (nothing half-written)
            if item_ids is None:
                start = int(self.item_ids.max()) + 1 if len(self) else 0
                item_ids = torch.arange(start, start + n_new)
            ids = torch.as_tensor(item_ids, dtype=torch.int64).reshape(-1)
            if ids.numel() != n_new:
                raise ValueError(f"item_ids has {ids.numel()} entries for {n_new} embeddings")
            if bool(torch.isin(ids, self.item_ids).any()) or ids.unique().numel() != ids.numel() or bool((ids < 0).any()):
                raise ValueError("item_ids must be new, unique and non-negative")
        sem = self.codes[:, : self.num_levels]
        new = _encode(x, self.codebooks, self.codebook_sizes, self.dedup, self.settings.get("reassign_candidates", 32),
                      taken=sem if self.dedup == "reassign" else None, beam_width=self.settings.get("beam_width", 1))
        if self.has_suffix or (self.dedup != "none" and _has_dups(torch.cat([sem, new]), self.codebook_sizes)):
            allc = torch.cat([sem, new])
            suffix = _rank_within_key(_tuple_keys(allc, self.codebook_sizes))
            new = torch.cat([new, suffix[len(self):, None]], 1)
            if not self.has_suffix and add:  # the table gets a suffix column too (all zeros: it had none)
                self.codes = torch.cat([self.codes, torch.zeros(len(self), 1, dtype=torch.int64)], 1)
        if add:
            self.codes = torch.cat([self.codes, new])
            self.item_ids = torch.cat([self.item_ids, ids])
            self.__dict__.pop("_tries", None)
        return new

    def _latents(self, x: Tensor) -> Tensor:
        from .nn import RQVAE

        model = RQVAE(**self.settings["rqvae_config"])
        # the alignment head (training only) is not part of the encoder
        model.load_state_dict({k: v for k, v in self.model_state.items() if not k.startswith("align_head.")})
        model.eval()
        with torch.no_grad():
            return model.encoder(x.to(torch.float32))

    # ------------------------------------------------------------------ metrics
    def report(self, embeddings: Tensor | None = None):
        """``pysid.metrics.sid_report`` of the semantic levels (with the relative reconstruction
        error when the embeddings are given; rq-kmeans only)."""
        from .metrics import sid_report

        kw: dict[str, Any] = {"codebook_sizes": list(self.codebook_sizes)}
        if embeddings is not None and self.method == "rq-kmeans":
            x = _fused(embeddings, self.settings.get("input_weights"))
            cbs = self.codebooks
            recon = sum(cbs[j][self.codes[:, j]] for j in range(self.num_levels))
            kw.update(embeddings=x, reconstruction=recon)
        return sid_report(self.codes[:, : self.num_levels], **kw)

    # ------------------------------------------------------------------ save / load
    def save(self, path: Union[str, os.PathLike]) -> None:
        """One .npz file: codes, item ids, codebooks (and the rq-vae model) + JSON metadata."""
        arrays = {"codes": self.codes.numpy(), "item_ids": self.item_ids.numpy()}
        for j, c in enumerate(self.codebooks):
            arrays[f"codebook_{j}"] = c.detach().cpu().numpy()
        for k, v in (self.model_state or {}).items():
            arrays[f"model/{k}"] = v.detach().cpu().numpy()
        meta = {"format": _FORMAT, "version": _VERSION, "method": self.method, "dedup": self.dedup,
                "codebook_sizes": list(map(int, self.codebook_sizes)), "settings": self.settings,
                "collisions": self.collisions, "pysid": _version()}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with open(path, "wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "SemanticIds":
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a pysid SemanticIds file: {e}") from None
        if not hasattr(z, "files"):  # a plain .npy array
            raise ValueError(f"{path} is not a pysid SemanticIds file (not an .npz archive)")
        try:
            with z:
                if "meta" not in z.files:
                    raise ValueError(f"{path} is not a pysid SemanticIds file (no metadata)")
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("format") != _FORMAT:
                    raise ValueError(f"{path} is not a pysid SemanticIds file")
                if meta.get("version") != _VERSION:
                    raise ValueError(f"{path}: unsupported SemanticIds version {meta.get('version')}")
                L = len(meta["codebook_sizes"])
                codes = torch.from_numpy(z["codes"]).long()
                item_ids = torch.from_numpy(z["item_ids"]).long()
                cbs = [torch.from_numpy(z[f"codebook_{j}"]) for j in range(L)]
                model = {k[6:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("model/")} or None
        except KeyError as e:
            raise ValueError(f"{path}: missing array {e}") from None
        if codes.dim() != 2 or codes.shape[1] not in (L, L + 1) or item_ids.shape != (codes.shape[0],):
            raise ValueError(f"{path}: codes {tuple(codes.shape)} / item_ids {tuple(item_ids.shape)} do not match {L} levels")
        return cls(codes=codes, item_ids=item_ids, codebooks=cbs, codebook_sizes=meta["codebook_sizes"],
                   method=meta["method"], dedup=meta["dedup"], settings=meta["settings"],
                   collisions=meta["collisions"], model_state=model)


def _level_name(j: int) -> str:
    s = ""
    j += 1
    while j:
        j, r = divmod(j - 1, 26)
        s = chr(ord("a") + r) + s
    return s


def _version() -> str:
    from . import __version__

    return __version__


def _has_dups(codes: Tensor, sizes: Sequence[int]) -> bool:
    key = _tuple_keys(codes, sizes)
    return key.unique().numel() != key.numel()


def _as_embeddings(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor or a numpy array, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] matrix, got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    rows = nonfinite_rows(x)
    if rows is not None:
        raise ValueError(f"{name} has NaN/Inf in {rows.numel()} row(s), e.g. rows {rows[:8].tolist()}")
    return x if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x.to(torch.float32)


def _quantize(x: Tensor, codebooks: list, beam_width: int = 1) -> tuple[Tensor, Tensor]:
    """Codes [N, L] int64 (greedy, or beam search over the levels) and the residual before
    the last level [N, D] float32."""
    cbs = [c.to(x.device) for c in codebooks]
    out = residual_quantize(x, cbs, beam_width=beam_width)
    codes = out.codes.long()
    last = cbs[-1].to(torch.float32)[codes[:, -1]]
    return codes, x.to(torch.float32) - (out.quantized.to(torch.float32) - last)


def _reassigned(codes: Tensor, r: Tensor, codebooks: list, sizes: Sequence[int], cands: int,
                taken: Tensor | None = None) -> Tensor:
    """dedup='reassign' of greedy codes; r: the residual before the last level."""
    c = codebooks[-1].to(device=r.device, dtype=torch.float32)
    m = max(1, min(int(cands), int(sizes[-1])))
    n = r.shape[0]
    scores = torch.empty((n, m), dtype=torch.float32, device=r.device)
    idx = torch.empty((n, m), dtype=torch.int64, device=r.device)
    cn = (c * c).sum(1)
    for i in range(0, n, 8192):  # row chunks: never N x K at once
        v, j = torch.topk(cn[None] - 2.0 * r[i : i + 8192] @ c.t(), m, dim=1, largest=False, sorted=True)
        scores[i : i + 8192], idx[i : i + 8192] = v, j
    taken_keys = None if taken is None else torch.sort(_tuple_keys(taken.to(r.device), sizes)).values
    return _reassign(codes.to(r.device), scores, idx, sizes, taken_keys).cpu()


def _fused(embeddings, weights=None) -> Tensor:
    """One [M, D] matrix: the embeddings, or the concatenation fusion of a list of them."""
    if isinstance(embeddings, (list, tuple)):
        from .nn import fuse

        parts = [_as_embeddings(e, f"embeddings[{i}]").to(torch.float32) for i, e in enumerate(embeddings)]
        return fuse(parts, weights)
    return _as_embeddings(embeddings, "embeddings")


def _encode(x: Tensor, codebooks: list, sizes: Sequence[int], dedup: str, cands: int,
            taken: Tensor | None = None, beam_width: int = 1) -> Tensor:
    """Codes [N, L] int64 (CPU): greedy (or beam search), then reassigned if dedup == 'reassign'
    (against ``taken`` too)."""
    codes, r = _quantize(x, codebooks, beam_width)
    if dedup != "reassign":
        return codes.cpu()
    return _reassigned(codes, r, codebooks, sizes, cands, taken)


# --------------------------------------------------------------------------- fit
def fit(
    embeddings,
    *,
    method: str = "rq-kmeans",
    levels: int = 3,
    codebook_size: Union[int, Sequence[int]] = 256,
    dedup: str = "suffix",
    seed: int = 0,
    item_ids=None,
    iters: int = 20,
    balanced: bool = False,
    reassign_candidates: int = 32,
    beam_width: int = 1,
    rqvae_options: dict | None = None,
    device: Union[str, torch.device, None] = None,
    progress: bool = True,
    input_weights: Sequence[float] | None = None,
) -> SemanticIds:
    """Semantic IDs for item embeddings.

    Args:
        embeddings: [M, D] float tensor or numpy array (one row per item), or a list of them
            (hybrid IDs: text, image, collaborative, ... vectors of the same M items), fused
            by ``pysid.nn.fuse`` (each input L2-normalised, weighted by ``input_weights``).
            ``encode`` then takes the same list.
        input_weights: weights of the inputs of a list (default equal).
        method: "rq-kmeans" (residual k-means codebooks, OneRec's RQ-KMeans) or "rq-vae"
            (TIGER's RQ-VAE: encoder + residual quantizer + decoder, trained here).
        levels: semantic levels L; codebook_size: K (int) or one per level.
        dedup: "suffix" | "reassign" | "none" (module docstring).
        seed: seeds k-means / training; same seed -> same table on the same backend.
        item_ids: [M] unique ids (default 0..M-1).
        iters: Lloyd iterations per level (rq-kmeans).
        balanced: balanced k-means at every level (rq-kmeans; codes are still assigned greedily).
        reassign_candidates: nearest last-level codes tried by dedup="reassign".
        beam_width: items' codes by beam search over the levels (``residual_quantize``'s
            beam_width; 1: greedy). A wider beam lowers the reconstruction error (text
            10k x 384: 0.4788 -> 0.4767 with 5) for a few times the encoding time; the
            codebooks are the same, and :meth:`SemanticIds.encode` uses the same width.
        rqvae_options: RQVAE / train_rqvae options (rq-vae), e.g. {"epochs": 50, "latent": 32};
            {"align_with": collab [M, Dc]} adds the in-batch InfoNCE alignment of the quantized
            latents with collaborative vectors (DAS / LETTER), see ``pysid.nn.train_rqvae``.
        device: where to compute (default: the embeddings' device).
        progress: progress bars.

    Returns:
        :class:`SemanticIds` (codes on the CPU).
    """
    x = _fused(embeddings, input_weights)
    if device is not None:
        x = x.to(device)
    if method not in ("rq-kmeans", "rq-vae"):
        raise ValueError(f"method must be 'rq-kmeans' or 'rq-vae', got {method!r}")
    if dedup not in _DEDUP:
        raise ValueError(f"dedup must be one of {_DEDUP}, got {dedup!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an int >= 1, got {levels!r}")
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be an int >= 1, got {beam_width!r}")
    sizes = [int(codebook_size)] * levels if isinstance(codebook_size, int) else [int(k) for k in codebook_size]
    if len(sizes) != levels or min(sizes) < 1:
        raise ValueError(f"codebook_size must be an int >= 1 or {levels} of them, got {codebook_size!r}")
    m = x.shape[0]
    ids = torch.arange(m) if item_ids is None else torch.as_tensor(item_ids, dtype=torch.int64).reshape(-1)
    if ids.numel() != m or ids.unique().numel() != m or bool((ids < 0).any()):
        raise ValueError(f"item_ids must be {m} unique non-negative integers")
    settings: dict[str, Any] = {"inputs": len(embeddings) if isinstance(embeddings, (list, tuple)) else 1,
                                "input_weights": None if input_weights is None else [float(w) for w in input_weights],
                                "levels": levels, "codebook_size": sizes, "seed": seed, "iters": iters,
                                "balanced": balanced, "reassign_candidates": reassign_candidates,
                                "beam_width": beam_width}
    model_state = None
    if method == "rq-kmeans":
        if max(sizes) > m:
            raise ValueError(f"codebook_size {max(sizes)} is larger than the number of items {m}")
        books, train_codes = _residual_kmeans(x, levels, sizes, iters=iters, seed=seed, balanced=balanced,
                                              progress=progress)
        cbs = [b.to(torch.float32) for b in books]
        latents = x
    else:
        from .nn import RQVAE, train_rqvae

        opts = dict(rqvae_options or {})
        train_kw = {k: opts.pop(k) for k in ("epochs", "batch_size", "lr", "weight_decay", "align_with", "align_weight",
                                             "align_temperature") if k in opts}
        config = {"in_dim": x.shape[1], "levels": levels, "codebook_size": sizes, "seed": seed, **opts}
        model = RQVAE(**config).to(x.device)
        train_rqvae(model, x.to(torch.float32), seed=seed, progress=progress, **train_kw)
        model.eval()
        with torch.no_grad():
            latents = model.encoder(x.to(torch.float32))
        books = model.quantizer.get_codebooks()
        cbs = [c.detach().to(torch.float32) for c in (books.unbind(0) if isinstance(books, Tensor) else books)]
        model_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        settings["rqvae_config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}
        settings["rqvae_train"] = {k: v for k, v in train_kw.items() if k != "align_with"}
        settings["rqvae_aligned"] = "align_with" in train_kw
    if (method == "rq-kmeans" and not balanced and beam_width == 1 and dedup != "reassign"
            and x.dtype == torch.float32 and _kops.engine(x).lloyd_codes_are_greedy_codes):
        # the last Lloyd assignments are the greedy codes already: on the C++ kernels each level's
        # residual and scores are computed exactly as residual_quantize computes them
        raw, r = torch.stack(train_codes, 1), None
    else:
        raw, r = _quantize(latents, cbs, beam_width)
    before = collision_stats(raw, sizes)
    codes = raw.cpu() if dedup != "reassign" else _reassigned(raw, r, cbs, sizes, reassign_candidates)
    if dedup != "none" and _has_dups(codes, sizes):
        codes = torch.cat([codes, _rank_within_key(_tuple_keys(codes, sizes))[:, None]], 1)
    elif dedup == "suffix":  # TIGER always appends the level
        codes = torch.cat([codes, torch.zeros(m, 1, dtype=torch.int64)], 1)
    after = collision_stats(codes, sizes + ([int(codes[:, -1].max()) + 1] if codes.shape[1] > levels else []))
    return SemanticIds(codes=codes, item_ids=ids, codebooks=[c.cpu() for c in cbs], codebook_sizes=sizes,
                       method=method, dedup=dedup, settings=settings,
                       collisions={"before": before, "after": after}, model_state=model_state)
