"""``pysid::constrained_beam_step``: one exact trie-constrained beam step, as a PyTorch op.

The op takes one level of the trie as arrays (``offsets``, ``child_codes`` and the
level's widest node ``max_children``); :func:`beam_step` validates and runs it,
:func:`constrained_beam_step` is the convenience that takes a :class:`pysid.Trie` and a
level. Implementations (reference, C++ ``cpu``, ``triton``) register with
``pysid.ops.registry``; ``pysid.backends()`` lists what runs here.

The Triton beam step has fixed launch shapes (its widest-node parameter is the trie's
``max_children[level]``, computed once at build time). It reports NaN log-probs / beam
scores and out-of-range node ids in a status tensor, which the op checks (one small host
sync per step) and raises on like the other backends - except while a CUDA graph is
being captured, where the check is skipped: a NaN-scored child is then never chosen and
such a beam counts as dead.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .. import _native, _status
from .._checks import check_tensor
from ..reference.beam_search import constrained_beam_step_ref
from .registry import Inputs, direct_call_ok, register, select

__all__ = ["beam_step", "constrained_beam_step"]


def _code_bytes(t: Tensor) -> int:
    return 2 if t.dtype == torch.int16 else 4




@register("constrained_beam_step", "reference", devices=None, dtypes=None)
def _run_reference(logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, offsets: Tensor, child_codes: Tensor,
                   banned: Optional[Tensor], max_children: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    s, p, t, n = constrained_beam_step_ref(logprobs, beam_scores, nodes, offsets, child_codes, banned)
    return s.float(), p, t, n


@register("constrained_beam_step", "triton", devices=("cuda",), dtypes=None)
def _run_triton(logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, offsets: Tensor, child_codes: Tensor,
                banned: Optional[Tensor], max_children: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from ..kernels.beam_step import beam_step_triton

    if max_children < 0:  # direct op call without the trie's metadata: derive it (a host sync)
        max_children = int(offsets.diff().max()) if offsets.numel() > 1 else 0
    s, p, t, n, status = beam_step_triton(
        logprobs.float().contiguous() if logprobs.stride(-1) != 1 or logprobs.dtype != torch.float32 else logprobs,
        beam_scores.float().contiguous(), nodes.long().contiguous(), offsets.to(torch.int32).contiguous(),
        child_codes.contiguous(), None if banned is None else banned.long().contiguous(), max_children,
    )
    # NaN logits / bad nodes are errors, as on the CPU path. One host sync per step on CUDA,
    # skipped while a CUDA graph is captured (the kernel then never picks a NaN child).
    capturing = logprobs.is_cuda and torch.cuda.is_current_stream_capturing()
    if status.numel() and not capturing:
        err = int(status.max())
        if err:
            raise ValueError(f"pysid triton constrained beam step failed: {_status.message(err)}")
    return s, p, t, n


@register("constrained_beam_step", "cpu", devices=("cpu",), dtypes=None)
def _run_cpu(logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, offsets: Tensor, child_codes: Tensor,
             banned: Optional[Tensor], max_children: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # the C++ kernel reads raw memory: normalise dtypes and layout (also for direct op calls)
    logprobs, beam_scores, nodes = logprobs.float(), beam_scores.float().contiguous(), nodes.long().contiguous()
    offsets = offsets.to(torch.int32).contiguous()
    if child_codes.dtype not in (torch.int16, torch.int32):
        child_codes = child_codes.to(torch.int32)
    child_codes = child_codes.contiguous()
    banned = None if banned is None else banned.long().contiguous()
    B, K = beam_scores.shape
    V = logprobs.shape[1]
    out_s = torch.empty(B, K, dtype=torch.float32)
    out_p = torch.empty(B, K, dtype=torch.int64)
    out_t = torch.empty(B, K, dtype=torch.int64)
    out_n = torch.empty(B, K, dtype=torch.int64)
    E = 0 if banned is None else banned.shape[1]
    if logprobs.stride(-1) != 1 or (B * K > 1 and logprobs.stride(0) < V):
        logprobs = logprobs.contiguous()
    _native.cpu().beam_step(
        logprobs.data_ptr(), logprobs.stride(0) if B * K > 1 else V, V, beam_scores.data_ptr(), nodes.data_ptr(), B, K,
        offsets.data_ptr(), offsets.shape[0] - 1, child_codes.data_ptr(), _code_bytes(child_codes),
        0 if banned is None or E == 0 else banned.data_ptr(), E,
        out_s.data_ptr(), out_p.data_ptr(), out_t.data_ptr(), out_n.data_ptr(),
    )
    return out_s, out_p, out_t, out_n


def _beam_step(logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, offsets: Tensor, child_codes: Tensor,
               banned: Optional[Tensor], max_children: int = -1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The op's body: the selected implementation."""
    impl = select("constrained_beam_step", Inputs(logprobs.device, None))
    return impl.fn(logprobs, beam_scores, nodes, offsets, child_codes, banned, max_children)


@torch.library.custom_op("pysid::constrained_beam_step", mutates_args=())
def _beam_step_op(
    logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, offsets: Tensor, child_codes: Tensor, banned: Optional[Tensor],
    max_children: int = -1,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """max_children: the level's widest node (``Trie.max_children[level]``), the Triton kernel's
    launch parameter; -1: derive it from ``offsets`` (a host sync)."""
    return _beam_step(logprobs, beam_scores, nodes, offsets, child_codes, banned, max_children)


@_beam_step_op.register_fake
def _(logprobs, beam_scores, nodes, offsets, child_codes, banned, max_children=-1):
    B, K = beam_scores.shape
    new = beam_scores.new_empty
    return (new((B, K), dtype=torch.float32), new((B, K), dtype=torch.int64),
            new((B, K), dtype=torch.int64), new((B, K), dtype=torch.int64))


def beam_step(
    logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, offsets: Tensor, child_codes: Tensor, *,
    max_children: int = -1, vocab_size: int = 0, banned: Optional[Tensor] = None, _level: str = "the level",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One exact trie-constrained beam step over one level of a trie given as arrays.

    Args:
        logprobs:    [B*K, V] float - full-vocabulary log-probs of each beam's next code
                     (row b*K + k is beam k of query b); V >= vocab_size.
        beam_scores: [B, K] float32 - score of each beam (-inf: dead).
        nodes:       [B, K] int64 - trie node of each beam at this level's depth (-1: dead).
        offsets:     [n + 1] int32 - the level's CSR offsets (``Trie.offsets[level]``).
        child_codes: the level's child codes (``Trie.codes[level]``), on offsets' device.
        max_children: the level's widest node (``Trie.max_children[level]``); -1: derived.
        vocab_size:  codes of the level (``Trie.vocab_sizes[level]``): logprobs needs as many columns.
        banned:      as for :func:`constrained_beam_step`.

    Returns what :func:`constrained_beam_step` returns.
    """
    device = offsets.device
    for name, x in (("logprobs", logprobs), ("beam_scores", beam_scores), ("nodes", nodes)):
        check_tensor(x, name)
        if x.device != device:
            raise ValueError(f"{name} is on {x.device} but the trie is on {device}")
    if beam_scores.dim() != 2:
        raise ValueError(f"beam_scores must be [B, K], got shape {tuple(beam_scores.shape)}")
    B, K = beam_scores.shape
    if K < 1:
        raise ValueError("beam width K must be >= 1")
    if nodes.shape != beam_scores.shape:
        raise ValueError(f"nodes must have beam_scores' shape {(B, K)}, got {tuple(nodes.shape)}")
    if nodes.dtype.is_floating_point or nodes.dtype == torch.bool or nodes.dtype.is_complex:
        raise TypeError(f"nodes must be an integer tensor, got {nodes.dtype}")
    if not logprobs.dtype.is_floating_point or not beam_scores.dtype.is_floating_point:
        raise TypeError(f"logprobs and beam_scores must be floating point, got {logprobs.dtype}, {beam_scores.dtype}")
    if logprobs.dim() != 2 or logprobs.shape[0] != B * K:
        raise ValueError(f"logprobs must be [B*K, V] = [{B * K}, V], got shape {tuple(logprobs.shape)}")
    if logprobs.shape[1] < vocab_size:
        raise ValueError(f"logprobs has {logprobs.shape[1]} columns but {_level} has {vocab_size} codes")
    logprobs = logprobs.float()
    if logprobs.stride(-1) != 1 or (B * K > 1 and logprobs.stride(0) < logprobs.shape[1]):
        logprobs = logprobs.contiguous()
    if banned is not None:
        if not isinstance(banned, Tensor) or banned.dim() != 2 or banned.shape[0] != B:
            raise ValueError(f"banned must be a [B={B}, E] int64 tensor")
        if banned.device != device:
            raise ValueError(f"banned is on {banned.device} but the trie is on {device}")
        banned = torch.sort(banned.long(), dim=1).values.contiguous()  # the kernels need ascending rows
    args = (logprobs, beam_scores.float().contiguous(), nodes.long().contiguous(), offsets, child_codes, banned,
            max_children)
    # the custom op serves torch.compile and opcheck; a plain call runs the same body directly
    # (the op's first call imports torch._dynamo, ~2 s)
    if direct_call_ok([logprobs, beam_scores, nodes]):
        return _beam_step(*args)
    return torch.ops.pysid.constrained_beam_step(*args)


def constrained_beam_step(
    logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, trie: Any, level: int, *, banned: Optional[Tensor] = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One exact trie-constrained beam step.

    Args:
        logprobs:    [B*K, V] float - full-vocabulary log-probs of each beam's next code
                     (row b*K + k is beam k of query b); V >= trie.vocab_sizes[level].
        beam_scores: [B, K] float32 - score of each beam (-inf: dead).
        nodes:       [B, K] int64 - trie node of each beam at depth ``level`` (-1: dead);
                     level 0: node 0 (the root).
        trie:        the :class:`pysid.Trie`.
        level:       0 <= level < trie.num_levels.
        banned:      optional [B, E] integer, per query node ids at depth level+1 never to
                     choose, in any order (values that are not such ids, e.g. -1 padding, are
                     ignored). Built by :func:`pysid.beam_search` from ``exclude``.

    Returns (scores [B, K] float32, parent [B, K] int64, token [B, K] int64, node [B, K] int64):
    the exact top-K over all valid children of all live beams, scores = beam score +
    log-prob, descending; equal scores ordered by (parent beam, token) ascending; never an
    invalid child nor one scoring -inf; slots beyond the number of valid children have
    score -inf and parent / token / node -1. Nothing of size [B*K, V] or [B, K*V] is built
    by the kernel.
    """
    if not isinstance(level, int) or isinstance(level, bool):
        raise TypeError(f"level must be an int, got {type(level).__name__}")
    if not 0 <= level < trie.num_levels:
        raise ValueError(f"level must be in [0, {trie.num_levels}), got {level}")
    return beam_step(logprobs, beam_scores, nodes, trie.offsets[level], trie.codes[level],
                     max_children=trie.max_children[level], vocab_size=trie.vocab_sizes[level], banned=banned,
                     _level=f"level {level} of the trie")
