"""Reference trie-constrained beam search: the specification and the test oracle.

Pure PyTorch, nothing imported from the rest of pysid. Three layers:

* :func:`build_trie_ref` / :func:`walk_trie_ref` (in :mod:`pysid.reference.trie`) - the
  compact per-level CSR (vectorised sorting), the layout the native kernels must
  reproduce exactly.
* :func:`constrained_beam_step_ref` - one exact beam step on that CSR,
  vectorised (pads each beam's children to the widest node of the level).
* :func:`beam_search_ref` and :func:`score_catalogue_ref` - trie-free brute
  force: the beam search re-derives each beam's valid next codes by scanning
  the whole catalogue; the scorer scores every item under the model.

The trie layout is described once, in :mod:`pysid.reference.trie`.

Beam step rule (shared by every backend): the candidates of query b are the
children of its live beams (node >= 0, score > -inf), scored
``beam_scores[b, k] + logprobs[b*K + k, code]``; candidates scoring -inf and
banned ones are never chosen; the K best are returned by score descending,
ties ordered by (parent beam, code) ascending; missing slots have score -inf and
parent / token / node -1.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .trie import build_trie_ref, walk_trie_ref  # noqa: F401  (re-exported: the trie layout lives in .trie)

__all__ = [
    "build_trie_ref",
    "walk_trie_ref",
    "constrained_beam_step_ref",
    "beam_search_ref",
    "score_catalogue_ref",
]


def constrained_beam_step_ref(
    logprobs: Tensor,
    beam_scores: Tensor,
    nodes: Tensor,
    offsets: Tensor,
    child_codes: Tensor,
    banned: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One exact constrained beam step (vectorised torch CSR).

    logprobs [B*K, V] float, beam_scores [B, K] float, nodes [B, K] int64 (depth-l
    node or -1), offsets / child_codes: level l of the trie, banned [B, E] int64
    ascending per row (depth-(l+1) node ids never to choose) or None.
    Returns scores [B, K] (logprobs' dtype), parent, token, node [B, K] int64.
    """
    B, K = beam_scores.shape
    V = logprobs.shape[1]
    dev = logprobs.device
    nodes = nodes.long()
    live = nodes >= 0
    if torch.isnan(beam_scores[live]).any():
        raise ValueError("NaN beam score on a live beam")
    live &= beam_scores > float("-inf")
    n = nodes.clamp(0, offsets.numel() - 1)  # a level with no nodes has offsets [0]
    lo = offsets[n].long()
    cnt = torch.where(live, offsets[(n + 1).clamp(max=offsets.numel() - 1)].long() - lo, 0)
    W = int(cnt.max()) if cnt.numel() else 0
    neg = torch.full((B, K), float("-inf"), dtype=logprobs.dtype, device=dev)
    minus = torch.full((B, K), -1, dtype=torch.long, device=dev)
    if W == 0:
        return neg, minus, minus.clone(), minus.clone()
    ar = torch.arange(W, device=dev)
    valid = ar < cnt[..., None]  # [B, K, W]
    j = torch.where(valid, lo[..., None] + ar, 0)
    code = torch.where(valid, child_codes[j].long(), 0)
    lp = logprobs.reshape(B, K, V).gather(2, code)
    score = beam_scores.to(logprobs.dtype)[..., None] + lp
    if (torch.isnan(score) & valid).any():
        raise ValueError("NaN log-prob on a valid child of a live beam")
    valid &= score > float("-inf")
    if banned is not None and banned.shape[1] > 0:
        flat_j = j.reshape(B, K * W)
        pos = torch.searchsorted(banned.long().contiguous(), flat_j.contiguous()).clamp(max=banned.shape[1] - 1)
        valid &= (banned.long().gather(1, pos) != flat_j).reshape(B, K, W)
    score = torch.where(valid, score, float("-inf")).reshape(B, K * W)
    # Exact top-K with ties in (beam, code) = flat index order, without a full sort:
    # everything above the K-th value, then the first equal ones by index.
    take = min(K, K * W)
    thr = score.topk(take, dim=1).values[:, -1:]
    eq = score == thr
    need = take - (score > thr).sum(1, keepdim=True)
    sel = (score > thr) | (eq & (eq.cumsum(1) <= need))
    idx = torch.arange(K * W, device=dev).expand(B, -1)
    pos = torch.where(sel, idx, K * W).topk(take, dim=1, largest=False).values  # selected, index order
    rank = torch.sort(score.gather(1, pos), dim=1, descending=True, stable=True).indices
    order = pos.gather(1, rank)
    out_score = score.gather(1, order)
    ok = out_score > float("-inf")
    out_parent = torch.where(ok, order // W, -1)
    out_token = torch.where(ok, code.reshape(B, K * W).gather(1, order), -1)
    out_node = torch.where(ok, j.reshape(B, K * W).gather(1, order), -1)
    if take < K:
        pad = K - take
        out_score = torch.cat([out_score, neg[:, :pad]], 1)
        out_parent, out_token, out_node = (torch.cat([x, minus[:, :pad]], 1) for x in (out_parent, out_token, out_node))
    return out_score, out_parent, out_token, out_node


def _allowed(codes: Tensor, item_ids: Tensor, batch_size: int, exclude) -> Tensor:
    allowed = torch.ones(batch_size, codes.shape[0], dtype=torch.bool)
    if exclude is not None:
        for b in range(batch_size):
            ex = torch.as_tensor(list(exclude[b]) if not isinstance(exclude[b], Tensor) else exclude[b]).long().reshape(-1)
            allowed[b] = ~torch.isin(item_ids.long().cpu(), ex.cpu())
    return allowed


def beam_search_ref(
    step_fn: Callable[[Tensor, Optional[Tensor]], Tensor],
    codes: Tensor,
    item_ids: Optional[Tensor],
    batch_size: int,
    beam_width: int,
    topk: Optional[int] = None,
    exclude=None,
    normalize: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Trie-free beam search: each beam's valid next codes come from a scan of the catalogue.

    Same contract as ``pysid.beam_search`` (step_fn(tokens [B*K, t], parent [B*K] or None)
    -> logits [B*K, >= V_t]; dead slots are fed token 0 and parent row b*K), scores
    accumulated in float32 in level order. Returns items [B, topk], codes [B, topk, L],
    scores [B, topk] (missing: -1, -1, -inf).
    """
    codes = codes.long().cpu()
    N, L = codes.shape
    B, K = batch_size, beam_width
    topk = K if topk is None else topk
    item_ids = torch.arange(N) if item_ids is None else item_ids.long().cpu()
    allowed = _allowed(codes, item_ids, B, exclude)
    seqs = torch.zeros(B, K, 0, dtype=torch.long)
    scores = torch.full((B, K), float("-inf"))
    scores[:, 0] = 0.0
    live = torch.zeros(B, K, dtype=torch.bool)
    live[:, 0] = True
    parent_flat = None
    for t in range(L):
        logits = step_fn(seqs.reshape(B * K, t), parent_flat)
        lp = torch.log_softmax(logits.float(), -1) if normalize else logits.float()
        lp = lp.cpu()
        new_seqs = torch.zeros(B, K, t + 1, dtype=torch.long)
        new_scores = torch.full((B, K), float("-inf"))
        new_live = torch.zeros(B, K, dtype=torch.bool)
        parents = torch.zeros(B, K, dtype=torch.long)
        for b in range(B):
            cands = []  # (score, beam, code)
            for k in range(K):
                if not live[b, k]:
                    continue
                match = allowed[b] & (codes[:, :t] == seqs[b, k]).all(1)
                toks = torch.unique(codes[match, t])
                s = scores[b, k] + lp[b * K + k, toks]  # float32 add
                if torch.isnan(s).any():
                    raise ValueError("NaN log-prob")
                cands += [(float(v), k, int(c)) for v, c in zip(s, toks) if v > float("-inf")]
            cands.sort(key=lambda x: (-x[0], x[1], x[2]))
            for i, (v, k, c) in enumerate(cands[:K]):
                new_scores[b, i] = v
                new_live[b, i] = True
                parents[b, i] = k
                new_seqs[b, i, :t] = seqs[b, k]
                new_seqs[b, i, t] = c
        seqs, scores, live = new_seqs, new_scores, new_live
        parent_flat = (torch.arange(B)[:, None] * K + parents).reshape(-1)
    items = torch.full((B, K), -1, dtype=torch.long)
    for b in range(B):
        for k in range(K):
            if live[b, k]:
                row = (codes == seqs[b, k]).all(1).nonzero()[0, 0]
                items[b, k] = item_ids[row]
    out_codes = torch.where(live[..., None], seqs, -1)
    return items[:, :topk], out_codes[:, :topk], scores[:, :topk]


def score_catalogue_ref(
    logprob_fn: Callable[[Tensor, Tensor], Tensor], codes: Tensor, batch_size: int
) -> Tensor:
    """Score every item for every query: [B, N] float32 sums of per-level log-probs.

    logprob_fn(query [R] int64, prefixes [R, t] int64) -> log-probs [R, >= V_t];
    scores are accumulated in float32 in level order (0 + lp_0 + lp_1 + ...).
    """
    codes = codes.long()
    N, L = codes.shape
    q = torch.arange(batch_size).repeat_interleave(N)
    allc = codes.repeat(batch_size, 1)
    total = torch.zeros(batch_size * N)
    for t in range(L):
        lp = logprob_fn(q, allc[:, :t]).float().cpu()
        total = total + lp.gather(1, allc[:, t : t + 1]).squeeze(1)
    return total.reshape(batch_size, N)
