"""Semantic ID tables: from item embeddings to unique code tuples, LLM tokens and a trie.

    sids = pysid.fit(embeddings, levels=3, codebook_size=256)    # [M, D] -> SemanticIds
    sids.codes            # [M, 4] int64: 3 semantic levels + the dedup suffix level
    sids.to_tokens()[0]   # '<a_12><b_5><c_201><d_0>'
    sids.trie()           # pysid.Trie for constrained beam search
    sids.encode(new)      # known items: their table ID; new items: the trained codebooks + dedup
    sids.collision_summary()  # collision rates before / after dedup, suffix level size
    sids.save("sids.npz"); pysid.SemanticIds.load("sids.npz")

Methods (``METHODS``, name -> object; ``fit(method=...)``):

* ``"rq-kmeans"``: residual k-means codebooks on the embeddings (OneRec's RQ-KMeans).
* ``"rq-vae"``: TIGER's RQ-VAE (encoder + residual quantizer + decoder), trained here; the
  codebooks live in the encoder's latent space.

Dedup rules (``DEDUP``, name -> object; items whose full code tuple collides with an earlier
item's):

* ``"suffix"`` (TIGER): one extra level numbers the items of each tuple 0, 1, 2, ... in
  item order (0 for items without a collision). The level is always there.
* ``"reassign"``: the first item (in item order) of each tuple keeps it; every other item
  moves to a free last-level code among its ``reassign_candidates`` nearest (default 32),
  in rounds: each proposes its next-nearest code and a free tuple goes to the nearest
  proposer (ties: the earlier item). Items that find no free code keep their tuple and get
  a suffix (the suffix level is added only if some remain). Never creates a collision.
* ``"none"``: keep the tuples as they are (``trie()`` then refuses duplicates).

The suffix of a row is always its rank among the rows with the same semantic tuple, in row
order (table items first, then new items in order): one rule for fit, encode and add.

Known items (:meth:`SemanticIds.encode`): a row is *known* when its item id is in the table
(``item_ids`` given), or, without ids, when its embedding is bit for bit the embedding of a
table item (a 64-bit fingerprint of the float32 row bytes, stored in the table at fit;
tables saved before fingerprints existed load, but then match by id only). Known rows get
their table ID back unchanged; new rows get fresh IDs that collide with no table item.
:meth:`SemanticIds.encode_result` says which rows were known.

Tuple keys are overflow-safe: a mixed-radix int64 key when the product of the codebook sizes
fits (<= 2**63), otherwise a rank of each tuple among the distinct tuples (lexicographic).

Embedding scale: fit and encode compute squared distances in float32. Inputs whose largest
absolute value is above ``sqrt(1e37 / (4 D))`` (about 5.7e16 for D = 768) would overflow
them and inputs with a largest absolute value below 1e-15 (but not all zero) would underflow
them (every item then falls into one tuple): both are refused with a ValueError naming the
scale, rather than rescaled silently (rescaling would change the codebooks' units). A list of
inputs (hybrid IDs) is fused from L2-normalised rows, so each input may have any finite scale.

Reproducibility: the same seed gives the same table on the same backend, device and thread
count (``rq-vae`` trains under ``torch.use_deterministic_algorithms`` on CPU; on CUDA pass
``rqvae_options={"deterministic": True}`` and set ``CUBLAS_WORKSPACE_CONFIG=:4096:8``).
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import numbers
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._checks import check_precision
from ._dist import Comm as _Comm
from ._io import atomic_write, check_writable
from .kmeans import _residual_kmeans, nonfinite_rows
from .ops import kmeans as _kops
from .ops import residual_quantize
from .trie import Trie

__all__ = ["SemanticIds", "EncodeResult", "fit", "DEDUP", "METHODS"]

_FORMAT = "pysid.SemanticIds"
_VERSION = 1

# float32 squared distances: |x - c|^2 <= 4 D max|x|^2 must stay well below FLT_MAX (3.4e38)
_MAX_SQ = 1e37
_MIN_ABS = 1e-15


# --------------------------------------------------------------------------- tuple keys
def _tuple_keys(codes: Tensor, sizes: Sequence[int]) -> Tensor:
    """int64 key of each row of codes [N, L] (codes[:, l] < sizes[l]): equal keys <=> equal
    rows, and keys ordered as the rows are (lexicographic). A mixed-radix key when the product
    of the sizes fits in int64 (<= 2**63), else each row's rank among the distinct rows (built
    level by level). Keys of separate calls are comparable only in the first case: to compare
    rows of two tensors, key their concatenation."""
    n = codes.shape[0]
    if math.prod(int(s) for s in sizes) <= 2**63:
        key = torch.zeros(n, dtype=torch.int64, device=codes.device)
        for lvl, s in enumerate(sizes):
            key = key * int(s) + codes[:, lvl].long()
        return key
    rank = torch.zeros(n, dtype=torch.int64, device=codes.device)
    for lvl, s in enumerate(sizes):
        if max(n, 1) * int(s) > 2**63:
            raise ValueError(f"{n} rows x codebook size {s} is too large for int64 tuple keys")
        rank = torch.unique(rank * int(s) + codes[:, lvl].long(), return_inverse=True)[1]
    return rank


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


def _has_dups(codes: Tensor, sizes: Sequence[int]) -> bool:
    key = _tuple_keys(codes, sizes)
    return key.unique().numel() != key.numel()


def _suffix(codes: Tensor, sizes: Sequence[int]) -> Tensor:
    """The suffix level of rows codes [N, L]: each row's rank among the rows with its tuple."""
    return _rank_within_key(_tuple_keys(codes, sizes))


# --------------------------------------------------------------------------- reassignment
def _reassign_keys(codes: Tensor, sizes: Sequence[int], taken: Tensor | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Tuple keys of ``codes`` [M, L] and ``taken`` [T, L] for ``pysid.dedup.reassign_moves``: the
    prefix of a key (``key // sizes[-1]``) identifies the first L-1 codes, the rest is the last
    code. Mixed-radix keys, or prefix ranks when the sizes' product exceeds 2**63."""
    L = codes.shape[1]
    t = 0 if taken is None else taken.shape[0]
    allc = codes.cpu() if taken is None else torch.cat([taken.cpu(), codes.cpu()])
    k_last = int(sizes[L - 1])
    pk = _tuple_keys(allc[:, : L - 1], sizes[: L - 1])
    if math.prod(int(s) for s in sizes[: L - 1]) * k_last > 2**63:  # prefix ranks: < rows
        pk = torch.unique(pk, return_inverse=True)[1]
        if allc.shape[0] * k_last > 2**63:
            raise ValueError(f"{allc.shape[0]} rows x codebook size {k_last} is too large for int64 tuple keys")
    key = (pk * k_last + allc[:, L - 1]).numpy()
    return key[t:], (key[:t] if taken is not None else None)


def _apply_moves(codes: Tensor, rows: np.ndarray, new: np.ndarray) -> Tensor:
    out = codes.cpu().clone()
    out[torch.from_numpy(rows), out.shape[1] - 1] = torch.from_numpy(new).to(out.dtype)
    return out.to(codes.device)


def _reassign(codes: Tensor, last_scores: Tensor, last_cands: Tensor, sizes: Sequence[int],
              taken: Tensor | None = None) -> Tensor:
    """Move colliding rows to a free last-level code: the rule of :func:`_reassign_ref`, solved by
    ``pysid.dedup.reassign_moves`` (one sort, then each prefix on its own in C++; 1M rows in
    0.4 s against 14.6 s for the vectorised rounds). Same arguments; returns a new tensor (on the
    device of ``codes``)."""
    from .dedup import reassign_moves

    keys, tk = _reassign_keys(codes, sizes, taken)
    rows, new = reassign_moves(keys, int(sizes[-1]), (last_cands.cpu(), last_scores.cpu()), taken_keys=tk)
    return _apply_moves(codes, rows, new)


def _reassign_ref(codes: Tensor, last_scores: Tensor, last_cands: Tensor, sizes: Sequence[int],
                  taken: Tensor | None = None) -> Tensor:
    """Move colliding rows to a free last-level code, in rounds (vectorised torch; the
    specification of the rule, kept for tests).

    codes [M, L]; last_cands / last_scores [M, m]: each row's m nearest last-level codes,
    nearest first. taken: [T, L] code tuples held by other items (cold start). The first
    holder of a tuple (in row order) keeps it; every other row proposes its candidates in
    order, and a free tuple goes to the nearest proposer (ties: the earlier row). Rows that
    run out of candidates keep their tuple (the caller adds a suffix). Returns a new tensor."""
    codes = codes.clone()
    dev = codes.device
    L = codes.shape[1]
    t = 0 if taken is None else taken.shape[0]
    allc = codes if taken is None else torch.cat([taken.to(dev), codes])
    k_last = int(sizes[L - 1])
    pk = _tuple_keys(allc[:, : L - 1], sizes[: L - 1])  # prefix keys, comparable over taken + codes
    if math.prod(int(s) for s in sizes[: L - 1]) * k_last > 2**63:  # prefix ranks: < rows
        pk = torch.unique(pk, return_inverse=True)[1]
        if allc.shape[0] * k_last > 2**63:
            raise ValueError(f"{allc.shape[0]} rows x codebook size {k_last} is too large for int64 tuple keys")
    prefix_all = pk * k_last
    prefix = prefix_all[t:]
    key = prefix + codes[:, L - 1]
    keep = _rank_within_key(key) == 0
    occupied = torch.sort(prefix_all[:t] + allc[:t, L - 1]).values
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


_CAND_ROWS = 2048  # rows per distance block of the movers' candidates (every block this shape)


def _movers(keys: np.ndarray, taken_keys: np.ndarray | None) -> np.ndarray:
    """The rows [M] int64 (ascending) that the "reassign" rule moves or tries to: every row after
    the first of its tuple key, and the first when another item holds its tuple."""
    from .dedup import _isin_sorted_np, _sorted_unique, suffix_of_keys

    mv = suffix_of_keys(keys) > 0
    if taken_keys is not None and taken_keys.size:
        mv |= _isin_sorted_np(keys, _sorted_unique(taken_keys))
    return np.flatnonzero(mv).astype(np.int64)


class _LastCandidates:
    """The movers' m nearest last-level codewords (ascending squared distance), computed from their
    residuals before the last level in blocks of ``_CAND_ROWS`` movers in row order, each block
    padded to that shape (a CPU matmul's rows depend on the matrix's shape, not on the other
    rows: so a row's scores are the same bits whatever rows share its block, e.g. chunk by chunk
    from disk, or one rank's movers only), and served to ``pysid.dedup.reassign_moves`` by row
    number. ``add(r)`` takes the next movers' residuals; codes stored in the smallest integer
    type."""

    def __init__(self, movers: np.ndarray, codebook: Tensor, k_last: int, cands: int):
        self.movers = movers
        self.c = codebook.to(torch.float32)
        self.cn = (self.c * self.c).sum(1)
        self.m = max(1, min(int(cands), int(k_last)))
        M = movers.size
        self.codes = np.empty((M, self.m), np.uint8 if k_last <= 256 else np.int16 if k_last <= 32768 else np.int32)
        self.scores = np.empty((M, self.m), np.float32)
        self.filled = 0
        self.pending: list[Tensor] = []
        self.n_pending = 0

    def add(self, r: Tensor) -> None:
        self.pending.append(r.to(torch.float32))
        self.n_pending += r.shape[0]
        while self.n_pending >= _CAND_ROWS or (self.n_pending and self.filled + self.n_pending == self.movers.size):
            allr = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
            blk, rest = allr[:_CAND_ROWS], allr[_CAND_ROWS:]
            b = blk.shape[0]
            if b < _CAND_ROWS:
                blk = torch.cat([blk, blk.new_zeros(_CAND_ROWS - b, blk.shape[1])])
            c = self.c.to(blk.device)
            v, j = torch.topk(self.cn.to(blk.device)[None] - 2.0 * blk @ c.t(), self.m, dim=1, largest=False, sorted=True)
            a = self.filled
            self.codes[a : a + b] = j[:b].cpu().numpy()
            self.scores[a : a + b] = v[:b].cpu().numpy()
            self.filled += b
            self.pending = [rest] if rest.shape[0] else []
            self.n_pending = rest.shape[0]

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.filled != self.movers.size:
            raise RuntimeError(f"reassign: candidates of {self.filled} of {self.movers.size} movers computed")
        pos = np.searchsorted(self.movers, rows)
        return self.codes[pos], self.scores[pos]


def _reassign_with(keys: np.ndarray, taken_keys: np.ndarray | None, codebook: Tensor, k_last: int, cands: int,
                   residuals, comm: _Comm | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The "reassign" moves of rows with tuple keys ``keys`` (``_reassign_keys``), the one driver of
    fit, encode, streamed encode and their torch.distributed forms. ``residuals(rows)`` yields
    the residuals before the last level of the given movers (ascending row numbers), in order;
    their m nearest last-level codewords come from ``_LastCandidates`` (the same bits whatever
    the caller). ``comm`` on: ``pysid.dedup.sharded_reassign`` over the ranks (this rank's rows),
    else ``reassign_moves``. Returns (rows moved, their new last codes, movers)."""
    from .dedup import reassign_moves, sharded_reassign

    def candidates(rows: np.ndarray) -> _LastCandidates:
        cand = _LastCandidates(rows, codebook, k_last, cands)
        for r in residuals(rows):
            cand.add(r)
        return cand

    if comm is not None and comm.on:
        asked = [0]

        def batch(rows: np.ndarray):  # this rank's movers, ascending, a batch at a time
            asked[0] += rows.size
            return candidates(rows)(rows)

        rows, new = sharded_reassign(keys, k_last, batch, taken_keys=taken_keys, device=comm.dev)
        return rows, new, asked[0]
    mv = _movers(keys, taken_keys)
    rows, new = reassign_moves(keys, k_last, candidates(mv), taken_keys=taken_keys)
    return rows, new, int(mv.size)


def _reassigned(codes: Tensor, r: Tensor, codebooks: list, sizes: Sequence[int], cands: int,
                taken: Tensor | None = None, comm: _Comm | None = None) -> Tensor:
    """dedup='reassign' of greedy codes; r: the residual before the last level (this rank's rows
    under ``comm``). The m nearest last-level codewords are computed for the movers only."""
    keys, tk = _reassign_keys(codes, sizes, taken)
    rows, new, _ = _reassign_with(keys, tk, codebooks[-1].to(r.device), int(sizes[-1]), cands,
                                  lambda mv: [r[torch.from_numpy(mv).to(r.device)]] if mv.size else [], comm)
    return _apply_moves(codes.cpu(), rows, new)


# --------------------------------------------------------------------------- dedup rules
class Dedup:
    """A dedup rule (see the module docstring). ``DEDUP`` maps each name to its rule.

    name:   the string used by ``fit(dedup=...)``, saved tables and the CLI.
    suffix: "always" (the suffix level is always there), "if-needed" (added when some tuples
            still collide after :meth:`move`) or "never".
    """

    name = ""
    suffix = "never"
    help = ""

    def move(self, codes: Tensor, residual: Tensor | None, codebooks: list, sizes: Sequence[int],
             settings: dict, taken: Tensor | None = None) -> Tensor:
        """The semantic codes [N, L] after the rule's moves (CPU); ``taken``: tuples [T, L] that
        other items hold already. Default: unchanged."""
        return codes.cpu()

    needs_residual = False  # move() needs the residual before the last level
    moves = False  # move() may change codes: the table's semantic codes are then not the quantizer's

    def sharded_move(self, codes: Tensor, residual: Tensor | None, codebooks: list, sizes: Sequence[int],
                     settings: dict, comm: _Comm) -> Tensor:
        """:meth:`move` under torch.distributed: this rank's rows [n, L] of the union (rank order),
        the same codes as ``move`` of the union at these rows. Default: unchanged."""
        return codes.cpu()

    def wants_suffix(self, semantic: Tensor, sizes: Sequence[int], has_suffix: bool = False) -> bool:
        """Whether rows with these semantic codes (all rows of a table) get the suffix level."""
        if self.suffix == "never":
            return False
        return has_suffix or self.suffix == "always" or _has_dups(semantic, sizes)

    def __repr__(self) -> str:
        return f"<dedup {self.name!r}>"


class _SuffixDedup(Dedup):
    name, suffix = "suffix", "always"
    help = "TIGER: one extra level numbers the items of each tuple 0, 1, 2, ... (always present)"


class _ReassignDedup(Dedup):
    name, suffix, needs_residual, moves = "reassign", "if-needed", True, True
    help = "colliding items move to a free nearby last-level code; a suffix only for those left over"

    def move(self, codes, residual, codebooks, sizes, settings, taken=None):
        return _reassigned(codes, residual, codebooks, sizes, settings.get("reassign_candidates", 32), taken)

    def sharded_move(self, codes, residual, codebooks, sizes, settings, comm):
        return _reassigned(codes, residual, codebooks, sizes, settings.get("reassign_candidates", 32), comm=comm)


class _NoDedup(Dedup):
    name, suffix = "none", "never"
    help = "keep colliding tuples as they are (the trie then refuses the table)"


DEDUP: dict[str, Dedup] = {d.name: d for d in (_SuffixDedup(), _ReassignDedup(), _NoDedup())}


def _dedup(name) -> Dedup:
    if not isinstance(name, str) or name not in DEDUP:
        raise ValueError(f"dedup must be one of {list(DEDUP)}, got {name!r}")
    return DEDUP[name]


def _apply_dedup(rule: Dedup, raw: Tensor, residual: Tensor | None, codebooks: list, sizes: Sequence[int],
                 settings: dict, table: Tensor | None = None, table_has_suffix: bool = False) -> Tensor:
    """The IDs [N, L (+1)] of new rows with quantizer codes ``raw`` [N, L]: the rule's moves
    (against the table's semantic codes ``table`` [T, L] too), then the suffix level - each
    row's rank among the table's rows and the earlier new rows with its tuple - if the rule
    wants one for the table plus these rows. Written once for fit (table None) and encode."""
    sem = rule.move(raw, residual, codebooks, sizes, settings, taken=table)
    t = 0 if table is None else table.shape[0]
    allc = sem if table is None else torch.cat([table, sem])
    if rule.wants_suffix(allc, sizes, table_has_suffix):
        sem = torch.cat([sem, _suffix(allc, sizes)[t:, None]], 1)
    return sem


# --------------------------------------------------------------------------- methods
class _Trained(NamedTuple):
    codebooks: list          # L [K_l, D'] float32 tensors (on the compute device)
    latents: Tensor          # [M, D'] the vectors the codebooks quantize
    codes: Tensor | None     # [M, L] greedy codes when training produced them exactly, else None
    model_state: dict | None
    settings: dict           # method-specific settings to save


class Method:
    """A way to learn codebooks (see the module docstring). ``METHODS`` maps names to them."""

    name = ""
    help = ""

    def check(self, m: int, sizes: list[int], iters: int) -> None:
        """Refuse settings the method cannot use (ValueError), before any work."""

    def train(self, x: Tensor, *, levels: int, sizes: list[int], seed: int, iters: int, balanced: bool,
              beam_width: int, dedup: Dedup, progress: bool, options: dict | None,
              precision: str = "exact") -> _Trained:
        raise NotImplementedError

    def latents(self, table: "SemanticIds", x: Tensor) -> Tensor:
        """Input embeddings [N, D] -> the vectors the codebooks quantize."""
        return x

    def input_dim(self, table: "SemanticIds") -> int:
        """D of the embeddings the table encodes."""
        return int(table.codebooks[0].shape[1])

    def saved_problem(self, settings: dict, model_state: dict | None) -> str | None:
        """Why a loaded table of this method cannot be used (None: it can)."""
        return None

    def reconstruction(self, table: "SemanticIds", x: Tensor) -> Tensor | None:
        """The reconstruction of the semantic levels in the input space (None: not available)."""
        return None

    def __repr__(self) -> str:
        return f"<method {self.name!r}>"


FIT_CANDIDATES = 8  # rq-kmeans: Lloyd with candidate lists of 8 centroids (pysid.kmeans' candidates)


class _RQKMeans(Method):
    name = "rq-kmeans"
    help = "residual k-means codebooks on the embeddings (OneRec's RQ-KMeans)"

    def check(self, m, sizes, iters):
        if max(sizes) > m:
            raise ValueError(f"codebook_size {max(sizes)} is larger than the number of items {m}")

    def train(self, x, *, levels, sizes, seed, iters, balanced, beam_width, dedup, progress, options,
              precision="exact"):
        # tol=0: the relative-inertia rule of kmeans (rtol) stops each level, not the shift rule
        books, train_codes = _residual_kmeans(x, levels, sizes, iters=iters, seed=seed, balanced=balanced,
                                              progress=progress, tol=0, precision=precision,
                                              candidates=FIT_CANDIDATES)
        cbs = [b.to(torch.float32) for b in books]
        codes = None
        if (not balanced and beam_width == 1 and not dedup.needs_residual
                and x.dtype == torch.float32 and _kops.engine(x).lloyd_codes_are_greedy_codes):
            # the last Lloyd assignments are the greedy codes already: each level's residual is computed
            # as residual_quantize computes it, and the scores are the canonical ones (the C++ kernels
            # compute them as residual_quantize does; the reference engine computes them itself)
            codes = torch.stack(train_codes, 1)
        return _Trained(cbs, x, codes, None, {})

    def reconstruction(self, table, x):
        return sum(table.codebooks[j][table.codes[:, j]] for j in range(table.num_levels))


_TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "align_with", "align_weight", "align_temperature",
               "deterministic")


class _RQVAE(Method):
    name = "rq-vae"
    help = "TIGER's RQ-VAE (encoder + residual quantizer + decoder) trained on the embeddings"

    def train(self, x, *, levels, sizes, seed, iters, balanced, beam_width, dedup, progress, options,
              precision="exact"):  # the model trains with exact codes
        from .nn import RQVAE, train_rqvae

        opts = dict(options or {})
        train_kw = {k: opts.pop(k) for k in _TRAIN_KEYS if k in opts}
        config = {"in_dim": x.shape[1], "levels": levels, "codebook_size": sizes, "seed": seed, **opts}
        model = RQVAE(**config).to(x.device)
        train_rqvae(model, x.to(torch.float32), seed=seed, progress=progress, **train_kw)
        model.eval()
        with torch.no_grad():
            latents = model.encoder(x.to(torch.float32))
        books = model.quantizer.get_codebooks()
        cbs = [c.detach().to(torch.float32) for c in (books.unbind(0) if isinstance(books, Tensor) else books)]
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        settings = {"rqvae_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()},
                    "rqvae_train": {k: v for k, v in train_kw.items() if k != "align_with"},
                    "rqvae_aligned": "align_with" in train_kw}
        return _Trained(cbs, latents, None, state, settings)

    def input_dim(self, table):
        return int(table.settings["rqvae_config"]["in_dim"])

    def saved_problem(self, settings, model_state):
        cfg = settings.get("rqvae_config")
        if not model_state or not isinstance(cfg, dict) or not isinstance(cfg.get("in_dim"), int):
            return "an rq-vae table without its model"
        return None

    def latents(self, table, x):
        from .nn import RQVAE

        model = RQVAE(**table.settings["rqvae_config"])
        # the alignment head (training only) is not part of the encoder
        model.load_state_dict({k: v for k, v in table.model_state.items() if not k.startswith("align_head.")})
        model.eval()
        with torch.no_grad():
            return model.encoder(x.to(torch.float32))


METHODS: dict[str, Method] = {m.name: m for m in (_RQKMeans(), _RQVAE())}


def _method(name) -> Method:
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {name!r}")
    return METHODS[name]


# --------------------------------------------------------------------------- fingerprints
def _fingerprints(parts: Sequence[Tensor]) -> Tensor:
    """[N] int64: a 64-bit hash of each row's float32 bytes (the inputs side by side).

    Equal rows (bit for bit, as float32) have equal fingerprints; different rows collide with
    probability about 2**-64 per pair. Fixed multipliers: the same on every machine."""
    rows = [np.ascontiguousarray(p.detach().to("cpu", torch.float32).numpy()) for p in parts]
    x = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=1)
    n, d = x.shape
    words = x.view(np.uint32)
    if d % 2:
        words = np.concatenate([words, np.zeros((n, 1), np.uint32)], axis=1)
    w64 = np.ascontiguousarray(words).view(np.uint64)  # [N, ceil(D/2)]
    rng = np.random.Generator(np.random.PCG64(0x51D7AB1E))
    m1 = rng.integers(0, 2**63, size=w64.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    m2 = rng.integers(0, 2**63, size=w64.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out = np.empty(n, np.uint64)
    with np.errstate(over="ignore"):
        for i in range(0, n, 2048):  # row chunks whose temporaries stay in cache (3x faster than 16384)
            h = w64[i : i + 2048] * m1  # wraps mod 2**64
            h ^= h >> np.uint64(31)
            h *= m2
            s = h.sum(axis=1, dtype=np.uint64) + np.uint64(d)
            s ^= s >> np.uint64(33)  # murmur3 finaliser
            s *= np.uint64(0xFF51AFD7ED558CCD)
            s ^= s >> np.uint64(33)
            out[i : i + 2048] = s
    return torch.from_numpy(out.view(np.int64).copy())


class EncodeResult(NamedTuple):
    """What :meth:`SemanticIds.encode_result` returns for n embeddings.

    codes:    [n, L'] int64 IDs (L' = the table's columns, after ``add`` if it grew them).
    known:    [n] bool - the row is a table item (by item id, or by its exact embedding):
              its codes are the table's ID of that item.
    item_ids: [n] int64 - the table item of a known row; for a new row its given (or, with
              ``add``, assigned) id, else -1.
    """

    codes: Tensor
    known: Tensor
    item_ids: Tensor


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
    method, dedup:  names in ``METHODS`` / ``DEDUP``; settings: the fit options.
    collisions:     {"before": stats, "after": stats} (items, distinct, collision_rate,
                    max_per_tuple) at fit (and after ``encode(add=True)``); see
                    :meth:`collision_summary`.
    fingerprints:   [M] int64 hashes of the items' float32 embedding rows (known-item lookup
                    by exact embedding in :meth:`encode`), or None (tables saved before).
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
    fingerprints: Tensor | None = None

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
        c = self.collision_summary()
        return (f"SemanticIds(items={len(self)}, levels={self.num_levels}x{self.codebook_sizes}"
                f"{' + suffix' if self.has_suffix else ''}, method={self.method!r}, dedup={self.dedup!r}, "
                f"collision rate before dedup={c['collision_rate_before']:.4f}, "
                f"after={c['collision_rate_after']:.4f}, suffix level size={c['suffix_size']})")

    def collision_summary(self) -> dict[str, Any]:
        """Collisions before and after dedup, and the suffix level, as a plain dict::

            items                    M (now)
            items_before             the items the "before" figures cover (M, see below)
            dedup                    the rule's name
            collision_rate_before    share of items whose semantic tuple (as the quantizer gave
                                     it, before any dedup move) is shared with another item
            distinct_before          distinct semantic tuples before dedup
            max_per_tuple_before     largest group before dedup
            collision_rate_after     the same for the full IDs (0.0 for a unique table)
            distinct_after, max_per_tuple_after
            suffix_level             True if the table has the suffix column
            suffix_size              codes used by the suffix level (max suffix + 1; 0 without)
            suffixed_items           items with a suffix > 0

        "before" is computed from the table for "suffix" and "none" (their semantic codes are
        the quantizer's); for "reassign" (a rule that ``moves`` codes) it is the figure recorded
        at fit, over the items of the fit (``items_before``; the quantizer's tuples of moved
        items are not stored)."""
        sizes = [int(k) for k in self.codebook_sizes]
        if _dedup(self.dedup).moves and self.collisions.get("before"):
            before = dict(self.collisions["before"])
        else:
            before = collision_stats(self.codes[:, : self.num_levels], sizes)
        after = collision_stats(self.codes, self.vocab_sizes)
        suffix_size = self.vocab_sizes[-1] if self.has_suffix else 0
        return {"items": len(self), "dedup": self.dedup, "items_before": int(before["items"]),
                "collision_rate_before": float(before["collision_rate"]), "distinct_before": int(before["distinct"]),
                "max_per_tuple_before": int(before["max_per_tuple"]),
                "collision_rate_after": float(after["collision_rate"]), "distinct_after": int(after["distinct"]),
                "max_per_tuple_after": int(after["max_per_tuple"]),
                "suffix_level": self.has_suffix, "suffix_size": int(suffix_size),
                "suffixed_items": int((self.codes[:, -1] > 0).sum()) if self.has_suffix else 0}

    # ------------------------------------------------------------------ lookups
    def sid(self, item_ids) -> Tensor:
        """Codes [n, L'] of the given item ids (KeyError for an unknown id)."""
        ids = _as_ids(item_ids, "item_ids")
        pos, found = self._find_ids(ids)
        if not bool(found.all()):
            raise KeyError(f"unknown item id(s): {ids[~found][:8].tolist()}")
        return self.codes[pos]

    def _find_ids(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Row of each id in the table, and whether it is there."""
        if len(self) == 0:
            return torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool)
        sorted_ids, order = self._sorted("item_ids")
        pos = torch.searchsorted(sorted_ids, ids).clamp(max=len(self) - 1)
        return order[pos], sorted_ids[pos] == ids

    def _find_rows(self, fps: Tensor) -> tuple[Tensor, Tensor]:
        """First table row (in item order) with each fingerprint, and whether there is one."""
        if self.fingerprints is None or len(self) == 0:
            return torch.zeros_like(fps), torch.zeros_like(fps, dtype=torch.bool)
        s, order = self._sorted("fingerprints")
        pos = torch.searchsorted(s, fps).clamp(max=len(self) - 1)
        return order[pos], s[pos] == fps

    def _sorted(self, name: str) -> tuple[Tensor, Tensor]:
        """(sorted values, order) of ``item_ids`` or ``fingerprints`` (stable), cached until the
        table changes through encode(add=True)."""
        cache = self.__dict__.setdefault("_sorted_cache", {})
        t = getattr(self, name)
        hit = cache.get(name)
        if hit is None or hit[0] is not t:
            cache[name] = (t, *torch.sort(t, stable=True))
        return cache[name][1], cache[name][2]

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

    # ------------------------------------------------------------------ encode
    def encode(self, embeddings, item_ids=None, *, add: bool = False) -> Tensor:
        """IDs [n, L'] of items: :meth:`encode_result` ``.codes``."""
        return self.encode_result(embeddings, item_ids, add=add).codes

    def encode_result(self, embeddings, item_ids=None, *, add: bool = False) -> EncodeResult:
        """IDs of items given by their embeddings: known items get their table ID back, new
        items fresh IDs from the trained codebooks and the table's dedup rule, applied against
        the table's items (and among the new ones, in order), so that no new ID collides with
        a table ID (unless the rule is "none").

        A row is known when ``item_ids`` is given and its id is in the table (by id: the table
        is the reference for an item's ID, even if its embedding changed), or, when
        ``item_ids`` is None, when its embedding equals a table item's bit for bit (as
        float32, the inputs side by side for a hybrid table; the first such item in table
        order). Tables without fingerprints (saved by older versions) match by id only.

        add=True appends the rows to the table as new items: ``item_ids`` (default: max id + 1,
        ...) must then be new, unique and non-negative; every row is new. If the new rows need
        the suffix level and the table had none, the table gets one (0 for its items).

        Returns :class:`EncodeResult` (codes [n, L'], known [n], item_ids [n]). Nothing is
        changed on an error."""
        inputs = self.settings.get("inputs", 1)
        if isinstance(embeddings, (list, tuple)) != (inputs > 1) or (inputs > 1 and len(embeddings) != inputs):
            raise ValueError(f"this table was fitted on {inputs} input(s): pass the same")
        x = _fused(embeddings, self.settings.get("input_weights"))
        rule, method = _dedup(self.dedup), _method(self.method)
        want = method.input_dim(self)
        if x.shape[1] != want:
            raise ValueError(f"embeddings have D={x.shape[1]}, this table's {method.name} expects D={want}")
        n = x.shape[0]
        given = None if item_ids is None else _as_ids(item_ids, "item_ids")
        if given is not None and given.numel() != n:
            raise ValueError(f"item_ids has {given.numel()} entries for {n} embeddings")
        ids = torch.full((n,), -1, dtype=torch.int64)
        if add:  # validate the ids before anything changes (nothing half-written)
            if given is None:
                start = int(self.item_ids.max()) + 1 if len(self) else 0
                given = torch.arange(start, start + n)
            dup = given.unique().numel() != given.numel()
            old = torch.isin(given, self.item_ids)
            if bool(old.any()) or dup or bool((given < 0).any()):
                raise ValueError("item_ids must be new, unique and non-negative"
                                 + (f" (already in the table: {given[old][:8].tolist()})" if bool(old.any()) else ""))
            known = torch.zeros(n, dtype=torch.bool)
            rows = torch.zeros(n, dtype=torch.int64)
            ids = given.clone()
        elif given is not None:
            rows, known = self._find_ids(given)
            ids = given.clone()
        else:
            parts = list(embeddings) if isinstance(embeddings, (list, tuple)) else [embeddings]
            rows, known = self._find_rows(_fingerprints([_as_tensor(p) for p in parts]))
        ids[known] = self.item_ids[rows[known]]

        sem = self.codes[:, : self.num_levels]
        newx = x[~known]
        if newx.shape[0]:
            raw, r = _quantize(method.latents(self, newx), self.codebooks, self.settings.get("beam_width", 1))
            new = _apply_dedup(rule, raw, r, self.codebooks, self.codebook_sizes, self.settings, table=sem,
                               table_has_suffix=self.has_suffix)
        else:
            new = torch.empty((0, self.codes.shape[1]), dtype=torch.int64)
        width = max(self.codes.shape[1], new.shape[1])
        out = torch.zeros((n, width), dtype=torch.int64)
        out[known, : self.codes.shape[1]] = self.codes[rows[known]]
        out[~known, : new.shape[1]] = new
        if add:
            self._append(out, ids, embeddings)
        return EncodeResult(codes=out, known=known, item_ids=ids)

    def _append(self, codes: Tensor, ids: Tensor, embeddings) -> None:
        """encode(add=True): the table grows by these rows (all validated already)."""
        fps = None
        if self.fingerprints is not None:
            parts = list(embeddings) if isinstance(embeddings, (list, tuple)) else [embeddings]
            fps = _fingerprints([_as_tensor(p) for p in parts])
        table = self.codes
        if codes.shape[1] > table.shape[1]:  # the table gets a suffix column too (all zeros: it had none)
            table = torch.cat([table, torch.zeros(len(self), 1, dtype=torch.int64)], 1)
        self.codes = torch.cat([table, codes])
        self.item_ids = torch.cat([self.item_ids, ids])
        if fps is not None:
            self.fingerprints = torch.cat([self.fingerprints, fps])
        before = self.collisions.get("before")
        if not _dedup(self.dedup).moves or not before:
            before = collision_stats(self.codes[:, : self.num_levels], [int(k) for k in self.codebook_sizes])
        self.collisions = {"before": before, "after": collision_stats(self.codes, self.vocab_sizes)}
        self.__dict__.pop("_tries", None)

    # ------------------------------------------------------------------ metrics
    def report(self, embeddings=None):
        """``pysid.metrics.sid_report`` of the semantic levels (with the relative reconstruction
        error when the embeddings are given; rq-kmeans only)."""
        from .metrics import sid_report

        kw: dict[str, Any] = {"codebook_sizes": list(self.codebook_sizes)}
        if embeddings is not None:
            x = _fused(embeddings, self.settings.get("input_weights"))
            recon = _method(self.method).reconstruction(self, x)
            if recon is not None:
                kw.update(embeddings=x, reconstruction=recon)
        return sid_report(self.codes[:, : self.num_levels], **kw)

    # ------------------------------------------------------------------ save / load
    def save(self, path: Union[str, os.PathLike]) -> None:
        """One .npz file: codes, item ids, codebooks, fingerprints (and the rq-vae model) + JSON
        metadata. Written atomically (``pysid._io.atomic_write``): a crash or kill at any moment
        leaves the old file or the new one, never a part. The name is used as given (no .npz
        appended); an existing file is replaced. ValueError if the folder does not exist or is
        not writable, or the path is a folder."""
        check_writable(path, force=True)  # a missing folder or a folder as the target: one-line ValueError
        arrays = {"codes": self.codes.numpy(), "item_ids": self.item_ids.numpy()}
        for j, c in enumerate(self.codebooks):
            arrays[f"codebook_{j}"] = c.detach().cpu().numpy()
        if self.fingerprints is not None:
            arrays["fingerprints"] = self.fingerprints.numpy()
        for k, v in (self.model_state or {}).items():
            arrays[f"model/{k}"] = v.detach().cpu().numpy()
        meta = {"format": _FORMAT, "version": _VERSION, "method": _method(self.method).name,
                "dedup": _dedup(self.dedup).name, "codebook_sizes": list(map(int, self.codebook_sizes)),
                "settings": self.settings, "collisions": self.collisions, "pysid": _version()}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        atomic_write(path, lambda f: np.savez(f, **arrays))  # np.savez would append .npz to a bare name

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "SemanticIds":
        """A table written by :meth:`save`. Any file that is not one (missing, empty, truncated,
        corrupt, a text file, a plain .npy array, an unknown version, inconsistent arrays)
        raises ValueError with one line naming the file and the cause."""
        try:
            return cls._load(path)
        except _NotSids as e:
            raise ValueError(f"{os.fspath(path)} is not a pysid SemanticIds file: {e}") from None
        except FileNotFoundError:
            raise ValueError(f"{os.fspath(path)}: no such file") from None
        except IsADirectoryError:
            raise ValueError(f"{os.fspath(path)} is a folder, not a pysid SemanticIds file") from None
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error,
                UnicodeDecodeError, NotImplementedError, RuntimeError) as e:
            why = (str(e).splitlines() or [type(e).__name__])[0]
            if "pickle" in why:
                why = "not an .npz archive"
            raise ValueError(f"{os.fspath(path)} is not a readable pysid SemanticIds file "
                             f"(corrupt or truncated: {why})") from None

    @classmethod
    def _load(cls, path) -> "SemanticIds":
        if os.path.isdir(path):
            raise IsADirectoryError(path)
        if os.path.getsize(path) == 0:
            raise _NotSids("the file is empty (0 bytes)")
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic[:2] == b"\x93N":
            raise _NotSids("a plain .npy array, not an .npz archive")
        if magic != b"PK\x03\x04":
            raise _NotSids("not an .npz archive")
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if "meta" not in files:
                raise _NotSids("no metadata")
            try:
                meta = json.loads(bytes(z["meta"]).decode())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise _NotSids(f"unreadable metadata ({type(e).__name__})") from None
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise _NotSids("wrong format tag")
            if meta.get("version") != _VERSION:
                raise _NotSids(f"unsupported SemanticIds version {meta.get('version')!r}")
            sizes = meta.get("codebook_sizes")
            if (not isinstance(sizes, list) or not sizes
                    or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes)):
                raise _NotSids(f"bad codebook_sizes {sizes!r}")
            for key, table in (("method", METHODS), ("dedup", DEDUP)):
                if meta.get(key) not in table:
                    raise _NotSids(f"unknown {key} {meta.get(key)!r}")
            if not isinstance(meta.get("settings"), dict) or not isinstance(meta.get("collisions", {}), dict):
                raise _NotSids("bad settings")
            L = len(sizes)
            need = ["codes", "item_ids"] + [f"codebook_{j}" for j in range(L)]
            miss = [k for k in need if k not in files]
            if miss:
                raise _NotSids(f"missing array(s) {miss}")
            arr = {k: z[k] for k in need}
            fps = z["fingerprints"] if "fingerprints" in files else None
            model = {k[6:]: torch.from_numpy(z[k]) for k in sorted(files) if k.startswith("model/")} or None
        for k in ("codes", "item_ids"):
            if arr[k].dtype.kind not in "iu":
                raise _NotSids(f"{k} has dtype {arr[k].dtype}, not integer")
        codes = torch.from_numpy(arr["codes"].astype(np.int64))
        item_ids = torch.from_numpy(arr["item_ids"].astype(np.int64))
        if codes.dim() != 2 or codes.shape[1] not in (L, L + 1) or item_ids.shape != (codes.shape[0],):
            raise _NotSids(f"codes {tuple(codes.shape)} / item_ids {tuple(item_ids.shape)} do not match {L} levels")
        cbs = []
        for j in range(L):
            c = arr[f"codebook_{j}"]
            if c.dtype.kind != "f" or c.ndim != 2 or c.shape[0] != sizes[j] or (j and c.shape[1] != cbs[0].shape[1]):
                raise _NotSids(f"codebook_{j} has shape {c.shape} ({c.dtype}) for codebook size {sizes[j]}")
            cbs.append(torch.from_numpy(c))
        if len(codes) and (bool((codes < 0).any()) or any(int(codes[:, j].max()) >= sizes[j] for j in range(L))):
            raise _NotSids("codes outside their codebooks")
        if fps is not None:
            if fps.dtype != np.int64 or fps.shape != (codes.shape[0],):
                raise _NotSids(f"fingerprints {fps.shape} ({fps.dtype}) do not match {codes.shape[0]} items")
            fps = torch.from_numpy(fps)
        why = METHODS[meta["method"]].saved_problem(meta["settings"], model)
        if why:
            raise _NotSids(why)
        return cls(codes=codes, item_ids=item_ids, codebooks=cbs, codebook_sizes=sizes,
                   method=meta["method"], dedup=meta["dedup"], settings=meta["settings"],
                   collisions=meta.get("collisions", {}), model_state=model, fingerprints=fps)


class _NotSids(Exception):
    """load(): the file is readable but is not a SemanticIds table (the message says why)."""


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


# --------------------------------------------------------------------------- input checks
def _as_tensor(x) -> Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _as_embeddings(x, name: str, check_scale: bool = True) -> Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biufc":
            raise TypeError(f"{name} must be a floating point array, got dtype {x.dtype}")
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
    x = x if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x.to(torch.float32)
    if check_scale:
        _check_scale(x, name)
    return x


def _check_scale(x: Tensor, name: str) -> None:
    """Refuse embeddings whose float32 squared distances would overflow or underflow."""
    d = x.shape[1]
    lo, hi_ = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    big = max(-float(lo), float(hi_))  # max |value| without an [N, D] temporary
    hi = math.sqrt(_MAX_SQ / (4 * d))
    if big > hi:
        raise ValueError(f"{name}: largest |value| is {big:.3g}, above {hi:.3g}: squared distances would "
                         f"overflow float32 - divide the embeddings by a constant (e.g. {10 ** math.ceil(math.log10(big)):.0e})")
    if 0 < big < _MIN_ABS:
        raise ValueError(f"{name}: largest |value| is {big:.3g}, below {_MIN_ABS:.0e}: squared distances would "
                         f"underflow float32 (all items in one tuple) - multiply the embeddings by a constant "
                         f"(e.g. {10 ** -math.floor(math.log10(big)):.0e})")


def _as_ids(v, name: str) -> Tensor:
    """[n] int64 from integer ids (tensor, array, sequence, or whole-number floats); TypeError
    for non-numbers and booleans, ValueError for fractions, NaN/Inf and values out of int64."""
    if isinstance(v, Tensor):
        a = v.detach().cpu()
        if a.dtype == torch.bool or a.dtype.is_complex:
            raise TypeError(f"{name} must be integers, got a {a.dtype} tensor")
        a = a.numpy() if a.dtype != torch.bfloat16 else a.float().numpy()
    else:
        try:
            a = np.asarray(v)
        except (OverflowError, ValueError, TypeError) as e:
            raise ValueError(f"{name} must be integers ({e})") from None
    if a.dtype.kind == "O" and a.size and all(isinstance(t, numbers.Integral) and not isinstance(t, bool)
                                                for t in a.reshape(-1).tolist()):
        raise ValueError(f"{name} has values outside int64")
    if a.dtype.kind not in "iuf":
        what = "booleans" if a.dtype.kind == "b" else f"dtype {a.dtype}"
        raise TypeError(f"{name} must be integers, got {what}")
    a = a.reshape(-1)
    if a.dtype.kind == "f":
        a64 = a.astype(np.float64)
        bad = ~np.isfinite(a64) | (a64 != np.round(a64)) | (np.abs(a64) >= 2.0**53)
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise ValueError(f"{name} must be whole numbers (integers): got {a[i].item()!r} at position {i}")
        return torch.from_numpy(a64.astype(np.int64))
    if a.dtype == np.uint64 and a.size and int(a.max()) >= 2**63:
        raise ValueError(f"{name} has values outside int64")
    return torch.from_numpy(a.astype(np.int64))


def _int_arg(name: str, v, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return int(v)


def _quantize(x: Tensor, codebooks: list, beam_width: int = 1, precision: str = "exact") -> tuple[Tensor, Tensor]:
    """Codes [N, L] int64 (greedy, or beam search over the levels) and the residual before
    the last level [N, D] float32."""
    cbs = [c.to(x.device) for c in codebooks]
    out = residual_quantize(x, cbs, beam_width=beam_width, precision=precision)
    codes = out.codes.long()
    last = cbs[-1].to(torch.float32)[codes[:, -1]]
    return codes, x.to(torch.float32) - (out.quantized.to(torch.float32) - last)


def _fused(embeddings, weights=None) -> Tensor:
    """One [M, D] matrix: the embeddings, or the concatenation fusion of a list of them."""
    if isinstance(embeddings, (list, tuple)):
        from .nn import fuse

        # each input is L2-normalised by fuse (at any finite scale): no scale check needed
        parts = [_as_embeddings(e, f"embeddings[{i}]", check_scale=False).to(torch.float32)
                 for i, e in enumerate(embeddings)]
        return fuse(parts, weights)
    return _as_embeddings(embeddings, "embeddings")


# --------------------------------------------------------------------------- fit
class _TrainedView(NamedTuple):
    """What ``Method.latents`` reads of a table (fit(sample=...) before the table exists)."""

    settings: dict
    model_state: dict | None


def _sample_size(sample, m: int) -> int:
    """Items in fit(sample=...): an int in [1, M] as given (more than M: ValueError), a float in
    (0, 1] as a share of M (rounded, at least 1)."""
    if isinstance(sample, bool) or not isinstance(sample, numbers.Real):
        raise TypeError(f"sample must be an int (items) or a float in (0, 1] (share), got {sample!r}")
    if isinstance(sample, numbers.Integral):
        if not 1 <= int(sample) <= m:
            raise ValueError(f"sample must be between 1 and the number of items {m}, got {sample}")
        return int(sample)
    f = float(sample)
    if not (0.0 < f <= 1.0):
        raise ValueError(f"sample as a share must be in (0, 1], got {sample!r}")
    return max(1, min(m, int(round(f * m))))


def _stratified(labels: Tensor, size: int, m: int, seed: int) -> Tensor:
    """Sorted rows of a stratified sample of ``size`` of ``m`` rows (``fit(sample_by=...)``)."""
    if labels.numel() != m:
        raise ValueError(f"sample_by has {labels.numel()} labels for {m} items")
    lab = labels.numpy()
    uniq, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
    share = counts * (size / m)
    quota = np.floor(share).astype(np.int64)
    left = size - int(quota.sum())
    if left:  # largest remainders first, then the smaller labels (stable)
        order = np.lexsort((np.arange(uniq.size), counts, -(share - quota)))
        quota[order[:left]] += 1
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(m, generator=g, dtype=torch.float64).numpy()
    rows = np.lexsort((r, inv))  # by label, random within a label
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(m, np.int64)
    rank[rows] = np.arange(m) - np.repeat(start, counts)
    return torch.from_numpy(np.flatnonzero(rank < quota[inv]))


def _n_inputs(embeddings) -> int:
    return len(embeddings) if isinstance(embeddings, (list, tuple)) else 1


def _shard_agreement(comm: _Comm, x: Tensor, ids: Tensor, default_ids: bool, sample_by,
                     settings: dict) -> tuple[int, int]:
    """fit under torch.distributed: refuse what runs on one process only, then agree with the
    other ranks (every rank raises if one failed its checks; ranks whose shapes, dtypes or
    settings differ are refused on every rank). Returns (M over all ranks, this rank's first row)."""
    from .dedup import sharded_suffix

    if settings["method"] != "rq-kmeans":
        raise ValueError(f"fit under torch.distributed trains rq-kmeans only (method {settings['method']!r} "
                         "runs on one process: gather the rows on one rank)")
    if settings["balanced"]:
        raise ValueError("balanced=True runs on one process (balanced k-means is not distributed)")
    if math.prod(settings["sizes"]) > 2**63:
        raise ValueError(f"fit under torch.distributed needs the product of the codebook sizes {settings['sizes']} "
                         "to fit in int64 (packed tuple keys)")
    if sample_by is not None and _as_ids(sample_by, "sample_by").numel() != x.shape[0]:
        raise ValueError(f"sample_by has {_as_ids(sample_by, 'sample_by').numel()} labels for this rank's "
                         f"{x.shape[0]} items")
    state = _AGREED.get()
    if state is not None:
        state["agreed"] = True  # from here on every rank raises together
    facts = comm.agree(None, rows=int(x.shape[0]), dim=int(x.shape[1]), dtype=str(x.dtype),
                       settings=repr(settings))
    for r, f in enumerate(facts):
        if f["dim"] != facts[0]["dim"]:
            raise ValueError(f"the ranks' embeddings differ in dimension: rank 0 has D={facts[0]['dim']}, "
                             f"rank {r} D={f['dim']} (every shard must have the same D)")
        if f["dtype"] != facts[0]["dtype"]:
            raise ValueError(f"the ranks' embeddings differ in dtype: rank 0 {facts[0]['dtype']}, rank {r} "
                             f"{f['dtype']} (convert every shard to one dtype)")
        if f["settings"] != facts[0]["settings"]:
            raise ValueError(f"fit was called with other settings on rank {r} than on rank 0: every rank must "
                             f"pass the same arguments (rank 0: {facts[0]['settings']}; rank {r}: {f['settings']})")
    rows = [f["rows"] for f in facts]
    off = sum(rows[: comm.rank])
    if not default_ids:  # unique over all ranks
        dup = sharded_suffix(ids.numpy(), device=comm.dev) > 0
        n_dup = int(comm.sum(torch.tensor([int(dup.sum())], dtype=torch.int64))[0])
        if n_dup:
            raise ValueError(f"item_ids must be unique over all ranks: {n_dup} id(s) repeat an id of an earlier row")
    return sum(rows), off


def _sharded_dedup(rule: "Dedup", raw: Tensor, sizes: Sequence[int], comm: _Comm, residual: Tensor | None = None,
                   codebooks: list | None = None, settings: dict | None = None) -> Tensor:
    """This rank's IDs [n, L (+1)] under torch.distributed, equal to one process's on the union (in
    rank order): the rule's moves (``Dedup.sharded_move``), then the suffix of each row - its
    rank among the rows of the union with its tuple (``pysid.dedup.sharded_suffix``) - always,
    or for an "if-needed" rule only when some tuple still repeats on some rank."""
    from .dedup import sharded_suffix, tuple_keys

    sem = rule.sharded_move(raw, residual, codebooks, sizes, settings or {}, comm)
    if rule.suffix == "never":
        return sem
    suf = sharded_suffix(tuple_keys(sem.numpy(), sizes), device=comm.dev)
    if rule.suffix == "if-needed":
        repeats = int(comm.sum(torch.tensor([int((suf > 0).sum())], dtype=torch.int64))[0])
        if not repeats:
            return sem
    return torch.cat([sem, torch.from_numpy(suf.astype(np.int64))[:, None]], 1)


_AGREED: contextvars.ContextVar = contextvars.ContextVar("pysid_fit_agreed", default=None)


def _sharded(fn):
    """fit under torch.distributed (world > 1): a ValueError / TypeError on one rank before the
    ranks' agreement point (``_Comm.agree`` in fit, after the input checks) is sent to every rank,
    so that all raise instead of the others waiting in a collective."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        comm = _Comm(torch.device("cpu"))
        if not comm.on:
            return fn(*args, **kwargs)
        state = {"agreed": False}
        token = _AGREED.set(state)
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as e:
            if not state["agreed"]:
                comm.agree(e)
            raise
        finally:
            _AGREED.reset(token)

    return run


@_sharded
def fit(
    embeddings,
    *,
    method: str = "rq-kmeans",
    levels: int = 3,
    codebook_size: Union[int, Sequence[int]] = 256,
    dedup: str = "suffix",
    seed: int = 0,
    item_ids=None,
    iters: int = 50,
    balanced: bool = False,
    reassign_candidates: int = 32,
    beam_width: int = 1,
    rqvae_options: dict | None = None,
    device: Union[str, torch.device, None] = None,
    progress: bool = True,
    input_weights: Sequence[float] | None = None,
    sample: Union[int, float, None] = None,
    sample_seed: int = 0,
    sample_by=None,
    precision: str = "exact",
) -> SemanticIds:
    """Semantic IDs for item embeddings.

    Args:
        embeddings: [M, D] float tensor or numpy array (one row per item), or a list of them
            (hybrid IDs: text, image, collaborative, ... vectors of the same M items), fused
            by ``pysid.nn.fuse`` (each input L2-normalised, weighted by ``input_weights``).
            ``encode`` then takes the same list. Finite, with a largest absolute value in
            [1e-15, sqrt(1e37 / (4 D))] (or all zero): see the module docstring.
        input_weights: weights of the inputs of a list (default equal).
        method: a name in ``METHODS``: "rq-kmeans" (residual k-means codebooks, OneRec's
            RQ-KMeans) or "rq-vae" (TIGER's RQ-VAE: encoder + residual quantizer + decoder,
            trained here).
        levels: semantic levels L; codebook_size: K (int) or one per level.
        dedup: a name in ``DEDUP``: "suffix" | "reassign" | "none" (module docstring).
        seed: seeds k-means / training. The same seed gives the same table on the same
            backend, device and number of threads (rq-vae included: its training runs under
            ``torch.use_deterministic_algorithms`` on CPU; on CUDA see the module docstring).
        item_ids: [M] unique non-negative integer ids (default 0..M-1); floats must be whole
            numbers.
        iters: most Lloyd iterations per level (rq-kmeans), an int >= 1. Each level seeds with
            k-means|| (``init="auto"``), runs Lloyd with candidate lists of ``FIT_CANDIDATES`` (8)
            centroids per row (``pysid.kmeans``'s candidates: most iterations search only each
            row's 8 nearest centroids of the last full search; the stop and the final codes come
            from full searches) and stops when an iteration lowers its inertia by less than 0.1 %
            (``pysid.kmeans``'s rtol; 11-14 iterations on MiniLM text 3 x 256, 3-4 of them full).
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
        sample: train the codebooks (and the rq-vae model) on a uniform random sample of the
            items - an int (that many items) or a float in (0, 1] (that share of them, at least
            one item) - then encode every item with them and apply ``dedup`` to all items.
            None (default): train on all items. The table holds every item either way; its
            ``settings["sample"]`` records the sample size. Measured (relative reconstruction
            error of all items against the full fit, 3 x 256 rq-kmeans, mean of seeds 0 and 1,
            ``bench/bench_scale.py``; bench/RESULTS.md): synthetic 100k x 128 (1024 Zipf
            clusters) +10.3 % / +3.2 % / +1.2 % with 10 / 25 / 50 % of the items (39 / 98 / 195
            items per codeword); Amazon Toys collaborative vectors (11,876 x 64) +70 % / +38 % /
            +16 % (5 / 12 / 23 items per codeword). The error grows as the sample leaves fewer
            items per codeword: keep at least ~100 sampled items per codeword (25k for 256).
            Collision rate before dedup: synthetic 0.884 (full) -> 0.820 / 0.856 / 0.892;
            Toys 0.136 -> 0.402 / 0.237 / 0.181.
        sample_seed: seeds the sample (a different stream from ``seed``).
        sample_by: [M] integer labels (e.g. categories) for a stratified sample: each label
            gets its share of the sample (proportional allocation; the rounding remainders go
            to the labels with the largest fractions, then the smaller labels), uniform within
            each label. Needs ``sample``.
        precision: "exact" (default) or "fast": the codes' precision in the rq-kmeans Lloyd
            iterations and in the encoding of the items here, as for ``pysid.residual_quantize``
            ("fast": on CUDA's Triton kernels, tensor-core codes without the float32 proof, which
            may differ on near-ties; on the CPU the same codes). :meth:`SemanticIds.encode` is exact.

    Under torch.distributed (a process group of more than one process is initialised, e.g.
    by ``torchrun``): each rank passes its own shard of the catalogue - ``embeddings`` [n_r, D]
    (any n_r >= 1, unequal shards welcome), ``item_ids`` (default: the global row numbers, rank
    0's rows first) and ``sample_by`` of its rows - and the same settings. The union is the ranks'
    rows in rank order, and every rank returns the table of ``fit`` on that union in one process:
    the same codebooks, codes, suffixes, ids and collision figures, bit for bit in the tests
    (gloo, 2-4 processes; k-means reduces float64 sums across ranks, so a sum that lands on a
    float32 rounding boundary could in principle differ in the last bit). The k-means work is
    split over the ranks; the dedup is sharded (``pysid.dedup.sharded_suffix``, and for "reassign"
    ``sharded_reassign``: each rank computes its own movers' candidates); then
    every rank gathers the whole table (its memory: the table's, on every rank - save it on rank
    0). A bad shard or setting on one rank (NaN rows, an empty shard, another D or dtype, other
    arguments, duplicate ids over all ranks) raises on every rank, naming the rank, instead of
    leaving the others waiting. Distributed fit supports method "rq-kmeans" with every dedup
    rule, not ``balanced`` (ValueError otherwise). NCCL: pass CUDA tensors (or ``device``).

    Returns:
        :class:`SemanticIds` (codes on the CPU), with each item's embedding fingerprint (for
        known-item lookups in ``encode``).

    Raises ValueError / TypeError (one line, before any work) for bad inputs and settings.
    """
    if input_weights is not None and not isinstance(embeddings, (list, tuple)):
        raise ValueError("input_weights weigh the inputs of a list of embeddings: pass a list, or no weights")
    x = _fused(embeddings, input_weights)
    meth, rule = _method(method), _dedup(dedup)
    levels = _int_arg("levels", levels, 1)
    beam_width = _int_arg("beam_width", beam_width, 1)
    iters = _int_arg("iters", iters, 1)
    reassign_candidates = _int_arg("reassign_candidates", reassign_candidates, 1)
    seed = _int_arg("seed", seed, 0)
    check_precision(precision)
    if not isinstance(balanced, (bool, np.bool_)):
        raise ValueError(f"balanced must be True or False, got {balanced!r}")
    if rqvae_options is not None and not isinstance(rqvae_options, dict):
        raise TypeError(f"rqvae_options must be a dict, got {type(rqvae_options).__name__}")
    if isinstance(codebook_size, numbers.Integral) and not isinstance(codebook_size, bool):
        sizes = [int(codebook_size)] * levels
    elif isinstance(codebook_size, (list, tuple)) and all(
            isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in codebook_size):
        sizes = [int(k) for k in codebook_size]
    else:
        sizes = []
    if len(sizes) != levels or min(sizes) < 1:
        raise ValueError(f"codebook_size must be an int >= 1 or {levels} of them, got {codebook_size!r}")
    m = x.shape[0]
    ids = torch.arange(m) if item_ids is None else _as_ids(item_ids, "item_ids")
    if ids.numel() != m or ids.unique().numel() != m or bool((ids < 0).any()):
        raise ValueError(f"item_ids must be {m} unique non-negative integers")
    comm = _Comm(x.device if device is None else torch.device(device))
    n_local, off = m, 0
    if comm.on:  # torch.distributed: this rank's rows of the union (module docstring)
        m, off = _shard_agreement(comm, x, ids, item_ids is None, sample_by, dict(
            method=meth.name, dedup=rule.name, levels=levels, sizes=sizes, seed=seed, iters=iters,
            balanced=bool(balanced), beam_width=beam_width, reassign=reassign_candidates, sample=sample,
            sample_seed=sample_seed, by=sample_by is not None, inputs=_n_inputs(embeddings),
            weights=None if input_weights is None else [float(w) for w in input_weights],
            ids=item_ids is None, precision=precision))
        if item_ids is None:
            ids = ids + off
    m_train, train_rows = m, None
    if sample is not None:
        sample_seed = _int_arg("sample_seed", sample_seed, 0)
        m_train = _sample_size(sample, m)
        if sample_by is not None:
            labels = _as_ids(sample_by, "sample_by")
            train_rows = _stratified(comm.gather_rows(labels) if comm.on else labels, m_train, m, sample_seed)
        elif m_train < m:
            g = torch.Generator().manual_seed(sample_seed)
            train_rows = torch.randperm(m, generator=g)[:m_train].sort().values
        if comm.on and train_rows is not None:  # this rank's rows of the union's sample
            train_rows = train_rows[(train_rows >= off) & (train_rows < off + n_local)] - off
    elif sample_by is not None:
        raise ValueError("sample_by stratifies a sample: pass sample= too")
    meth.check(m_train, sizes, iters)
    parts = list(embeddings) if isinstance(embeddings, (list, tuple)) else [embeddings]
    fps = _fingerprints([_as_tensor(p) for p in parts])
    if device is not None:
        x = x.to(device)
    settings: dict[str, Any] = {"inputs": len(parts) if isinstance(embeddings, (list, tuple)) else 1,
                                "input_weights": None if input_weights is None else [float(w) for w in input_weights],
                                "levels": levels, "codebook_size": sizes, "seed": seed, "iters": iters,
                                "balanced": bool(balanced), "reassign_candidates": reassign_candidates,
                                "beam_width": beam_width}
    if sample is not None:
        settings.update(sample=m_train, sample_seed=sample_seed, sample_stratified=sample_by is not None)
    xt = x if train_rows is None else x[train_rows.to(x.device)]
    opts = rqvae_options
    if train_rows is not None and opts and opts.get("align_with") is not None:
        opts = dict(opts, align_with=_as_tensor(opts["align_with"])[train_rows])
    tr = meth.train(xt, levels=levels, sizes=sizes, seed=seed, iters=iters, balanced=bool(balanced),
                    beam_width=beam_width, dedup=rule, progress=progress if comm.rank == 0 else False, options=opts, precision=precision)
    settings.update(tr.settings)
    cbs = tr.codebooks
    if train_rows is None and tr.codes is not None:
        raw, r = tr.codes, None
    else:
        latents = tr.latents
        if train_rows is not None:  # every item through the trained model / codebooks
            view = _TrainedView(settings=settings, model_state=tr.model_state)
            latents = meth.latents(view, x)
        raw, r = _quantize(latents, cbs, beam_width, precision)
    if comm.on:  # the sharded dedup, then every rank's rows on every rank
        codes = comm.gather_rows(_sharded_dedup(rule, raw.cpu(), sizes, comm, r, cbs, settings))
        ids, fps = comm.gather_rows(ids), comm.gather_rows(fps)
        raw = comm.gather_rows(raw.cpu()) if rule.moves else codes[:, :levels]  # "before": the quantizer's codes
    before = collision_stats(raw, sizes)
    if not comm.on:
        codes = _apply_dedup(rule, raw, r, cbs, sizes, settings)
    vocab = sizes + ([int(codes[:, -1].max()) + 1] if codes.shape[1] > levels else [])
    after = collision_stats(codes, vocab)
    return SemanticIds(codes=codes.cpu(), item_ids=ids, codebooks=[c.cpu() for c in cbs], codebook_sizes=sizes,
                       method=meth.name, dedup=rule.name, settings=settings,
                       collisions={"before": before, "after": after}, model_state=tr.model_state, fingerprints=fps)
