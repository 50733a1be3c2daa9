"""``pysid.beam_search``: exact trie-constrained beam search over a model's next-code distribution.

The loop has fixed shapes and no host synchronisation: every level runs the
caller's ``step_fn``, a log-softmax and one fused :func:`constrained_beam_step`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .ops.beam_search import constrained_beam_step
from .trie import Trie

__all__ = ["BeamSearchOutput", "beam_search", "exclusion_masks"]

StepFn = Callable[[Tensor, Optional[Tensor]], Tensor]


class BeamSearchOutput(NamedTuple):
    """Result of :func:`beam_search` (best first; missing slots: item -1, codes -1, score -inf).

    items:  [B, topk] int64 item ids.
    codes:  [B, topk, L] int64 Semantic IDs.
    scores: [B, topk] float32 sums of the per-level log-probs.
    """

    items: Tensor
    codes: Tensor
    scores: Tensor


def _exclude_tensor(exclude, batch_size: int, device: torch.device) -> Tensor:
    if isinstance(exclude, Tensor):
        if exclude.dim() != 2 or exclude.shape[0] != batch_size:
            raise ValueError(f"exclude must be [batch_size={batch_size}, E] (pad with -1), got shape {tuple(exclude.shape)}")
        if exclude.dtype.is_floating_point or exclude.dtype == torch.bool or exclude.dtype.is_complex:
            raise TypeError(f"exclude must hold integer item ids, got {exclude.dtype}")
        return exclude.to(device=device, dtype=torch.int64)
    rows = list(exclude)
    if len(rows) != batch_size:
        raise ValueError(f"exclude must have one list of item ids per query ({batch_size}), got {len(rows)}")
    lists = []
    for i, r in enumerate(rows):
        t = torch.as_tensor(r if isinstance(r, Tensor) else list(r))
        if t.numel() and (t.dtype.is_floating_point or t.dtype == torch.bool):
            raise TypeError(f"exclude[{i}] must hold integer item ids, got {t.dtype}")
        lists.append(t.reshape(-1).long().cpu())
    E = max((len(t) for t in lists), default=0)
    out = torch.full((batch_size, E), -1, dtype=torch.int64)
    for i, t in enumerate(lists):
        out[i, : len(t)] = t
    return out.to(device)


def exclusion_masks(trie: Trie, exclude, batch_size: int) -> list[Optional[Tensor]]:
    """Per-level banned nodes for ``exclude`` (per-query item ids; unknown ids are ignored).

    Returns L entries: entry t is a [B, E] int64 tensor of depth-(t+1) node ids (ascending per
    row, -1 padding first) whose every leaf is excluded for that query, or None when nothing is
    excluded. A beam step that never picks these nodes searches exactly the trie pruned of the
    query's excluded items.
    """
    L = trie.num_levels
    ex = _exclude_tensor(exclude, batch_size, trie.device)
    if ex.numel() == 0:
        return [None] * L
    leaves = torch.where(ex >= 0, trie.leaves_of_items(ex), -1)
    leaves = torch.sort(leaves, dim=1).values
    dup = torch.zeros_like(leaves, dtype=torch.bool)
    dup[:, 1:] = leaves[:, 1:] == leaves[:, :-1]
    leaves = torch.sort(torch.where(dup, -1, leaves), dim=1).values  # unique, ascending, -1 first
    B, E = leaves.shape
    banned: list[Optional[Tensor]] = [None] * L
    banned[L - 1] = leaves
    anc = leaves
    for depth in range(L - 1, 0, -1):
        anc = torch.where(anc >= 0, trie.parents(depth + 1, anc.clamp_min(0)), -1)  # rows stay ascending
        n = trie.num_nodes[depth] + 1
        key = (torch.arange(B, device=anc.device)[:, None] * n + anc + 1).reshape(-1)
        _, inv, cnt = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
        excluded = cnt[inv].reshape(B, E)
        lo, hi = trie.subtree_leaves(depth, anc.clamp_min(0))
        dead = (anc >= 0) & (excluded == hi - lo)
        banned[depth - 1] = torch.sort(torch.where(dead, anc, -1), dim=1).values
    return banned


def beam_search(
    step_fn: StepFn,
    trie: Trie,
    batch_size: int,
    beam_width: int,
    *,
    topk: Optional[int] = None,
    exclude: Union[Tensor, Sequence[Sequence[int]], None] = None,
    normalize: bool = True,
) -> BeamSearchOutput:
    """Exact trie-constrained beam search.

    Args:
        step_fn: ``step_fn(tokens, parent) -> logits``. ``tokens`` [B*K, t] int64 holds the
            codes chosen so far (row b*K + k is beam k of query b); ``parent`` [B*K] int64 is
            the row of the previous call each new row extends (None at t = 0), so the caller
            can reorder its KV cache with ``cache[parent]``. Returns [B*K, V_t] floating logits
            on the trie's device, V_t >= trie.vocab_sizes[t]; column c scores code c. Rows of
            empty slots (fewer valid items than beams) carry token 0 and parent row b*K.
        trie: the catalogue's :class:`pysid.Trie`.
        batch_size: B queries. beam_width: K >= 1 beams per query.
        topk: results per query (1 <= topk <= beam_width, default beam_width).
        exclude: per-query item ids never to return (a list of B lists, or a [B, E] int tensor
            padded with -1). Excluded items are pruned from each query's trie, so the top-k is
            filled by the next best valid items.
        normalize: apply log_softmax to the logits (False: step_fn returns log-probs).

    Returns :class:`BeamSearchOutput` (items [B, topk], codes [B, topk, L], scores [B, topk]).
    Beam k of each level is the k-th best by score; equal scores keep (parent beam, code) order.
    """
    if not callable(step_fn):
        raise TypeError("step_fn must be callable: step_fn(tokens [B*K, t], parent [B*K] or None) -> logits")
    if not isinstance(trie, Trie):
        raise TypeError(f"trie must be a pysid.Trie, got {type(trie).__name__}")
    for name, v in (("batch_size", batch_size), ("beam_width", beam_width)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    topk = beam_width if topk is None else topk
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= beam_width:
        raise ValueError(f"topk must be an int in [1, beam_width={beam_width}], got {topk!r}")
    B, K, L = batch_size, beam_width, trie.num_levels
    dev = trie.device
    banned = exclusion_masks(trie, exclude, B) if exclude is not None else [None] * L

    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0
    nodes = torch.full((B, K), -1, dtype=torch.int64, device=dev)
    nodes[:, 0] = 0
    seqs = torch.zeros((B, K, 0), dtype=torch.int64, device=dev)
    base = torch.arange(B, device=dev)[:, None] * K
    parent_flat: Optional[Tensor] = None
    for t in range(L):
        logits = step_fn(seqs.reshape(B * K, t), parent_flat)
        if not isinstance(logits, Tensor):
            raise TypeError(f"step_fn must return a tensor, got {type(logits).__name__} at level {t}")
        if logits.device != dev:
            raise ValueError(f"step_fn returned logits on {logits.device} but the trie is on {dev} (level {t})")
        if not logits.dtype.is_floating_point:
            raise TypeError(f"step_fn must return floating logits, got {logits.dtype} at level {t}")
        if logits.dim() != 2 or logits.shape[0] != B * K or logits.shape[1] < trie.vocab_sizes[t]:
            raise ValueError(
                f"step_fn returned logits of shape {tuple(logits.shape)} at level {t}; expected "
                f"[B*K = {B * K}, V >= {trie.vocab_sizes[t]}]"
            )
        lp = torch.log_softmax(logits.float(), dim=-1) if normalize else logits.float()
        scores, parent, token, nodes = constrained_beam_step(lp, scores, nodes, trie, t, banned=banned[t])
        p = parent.clamp_min(0)
        seqs = torch.cat([seqs.gather(1, p[..., None].expand(B, K, t)), token.clamp_min(0)[..., None]], dim=2)
        parent_flat = (base + p).reshape(-1)
    alive = nodes >= 0
    ids = trie.item_ids
    items = torch.where(alive, ids[nodes.clamp_min(0)].long(), -1) if ids.numel() else torch.full_like(nodes, -1)
    codes = torch.where(alive[..., None], seqs, -1)
    return BeamSearchOutput(items[:, :topk], codes[:, :topk], scores[:, :topk])
