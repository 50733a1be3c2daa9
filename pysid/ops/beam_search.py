"""``pysid::constrained_beam_step`` and the trie build / walk: validation and backend dispatch.

Backends (chosen here and nowhere else, see ``pysid._backend``):

========== ==================================== =====================================
backend    CPU tensors                          CUDA tensors
========== ==================================== =====================================
auto       C++ kernel (``pysid._C``)            Triton kernel, else PyTorch reference
reference  ``pysid.reference`` (PyTorch)        ``pysid.reference`` (PyTorch)
native     C++ kernel                           error (no CUDA C++ beam step)
cpu        C++ kernel                           error
triton     Triton (``TRITON_INTERPRET=1`` only) Triton kernel (``pysid.kernels.beam_step``)
cuda       error                                error
========== ==================================== =====================================

The table is for the beam step; the trie build / walk run the C++ kernels on CPU
tensors (any backend but ``reference``) and the reference on CUDA tensors (``auto``).

The Triton beam step has fixed launch shapes (its widest-node parameter is the trie's
``max_children[level]``, computed once at build time). It reports NaN log-probs / beam
scores and out-of-range node ids in a status tensor, which the op checks (one small host
sync per step) and raises on like the other backends - except while a CUDA graph is
being captured, where the check is skipped: a NaN-scored child is then never chosen and
such a beam counts as dead.

The trie build sorts in native code: the C++ radix sort on CPU, ``torch.sort``
(the reference build) for CUDA tensors.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Sequence

import torch
from torch import Tensor

from .. import _backend, _native, _status
from ..reference.beam_search import build_trie_ref, constrained_beam_step_ref, walk_trie_ref

if TYPE_CHECKING:  # pragma: no cover
    from ..trie import Trie

__all__ = ["constrained_beam_step", "trie_build", "trie_walk"]

_DUPLICATE = _status.DUPLICATE_CODES


def _use_cpu_kernel(device: torch.device, what: str) -> bool:
    """True: run the C++ kernel; False: the reference. Raises for a backend that cannot run."""
    b = _backend.get_backend()
    if b == "reference":
        return False
    if device.type == "cpu":
        if b in ("auto", "native", "cpu"):
            _native.cpu()  # loud error if the extension is missing
            return True
        raise RuntimeError(f"pysid backend {b!r} has no {what} kernel for CPU tensors")
    if b == "auto":
        return False  # no GPU kernel yet: the reference is the GPU path
    raise RuntimeError(f"pysid backend {b!r} has no {what} kernel for {device.type} tensors")


def _code_bytes(t: Tensor) -> int:
    return 2 if t.dtype == torch.int16 else 4


# --------------------------------------------------------------------------- build / walk


def trie_build(codes: Tensor, vocab_sizes: Sequence[int], code_dtype: torch.dtype) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Build the per-level CSR of validated, contiguous int64 ``codes`` [M, L].

    Returns (offsets: L int32 tensors, child_codes: L tensors of ``code_dtype``, perm [M] int64).
    Raises ValueError naming the first two colliding rows on duplicates.
    """
    M, L = codes.shape
    if not _use_cpu_kernel(codes.device, "trie build"):
        try:
            off, cc, perm = build_trie_ref(codes)
        except ValueError as e:
            raise ValueError(f"Trie: {e}") from None
        return [o.to(torch.int32) for o in off], [c.to(code_dtype) for c in cc], perm
    C = _native.cpu()
    vocab = torch.tensor(list(vocab_sizes), dtype=torch.int64)
    perm = torch.empty(M, dtype=torch.int64)
    lcp = torch.empty(M, dtype=torch.int8)
    status, a, b = C.trie_sort(codes.data_ptr(), M, L, vocab.data_ptr(), perm.data_ptr(), lcp.data_ptr())
    if status == _DUPLICATE:
        raise ValueError(f"Trie: duplicate code tuples: rows {a} and {b}")
    counts = torch.bincount(lcp.long(), minlength=L)[:L].cumsum(0)  # n_{d+1} = #{lcp <= d}
    n = [1] + [int(c) for c in counts]
    offsets = [torch.empty(n[d] + 1, dtype=torch.int32) for d in range(L)]
    child = [torch.empty(n[d + 1], dtype=code_dtype) for d in range(L)]
    C.trie_fill(codes.data_ptr(), M, L, perm.data_ptr(), lcp.data_ptr(), [o.data_ptr() for o in offsets],
                [c.data_ptr() for c in child], _code_bytes(child[0]) if L else 4)
    return offsets, child, perm


def trie_walk(offsets: Sequence[Tensor], child_codes: Sequence[Tensor], prefixes: Tensor) -> Tensor:
    """Node id at depth t of each validated prefix ``prefixes`` [N, t] (int64), -1 if absent."""
    N, t = prefixes.shape
    if not _use_cpu_kernel(prefixes.device, "trie walk"):
        return walk_trie_ref(offsets, child_codes, prefixes)
    prefixes = prefixes.contiguous()
    out = torch.empty(N, dtype=torch.int64)
    _native.cpu().trie_walk(prefixes.data_ptr(), N, t, max(t, 1), [o.data_ptr() for o in offsets],
                            [c.data_ptr() for c in child_codes], _code_bytes(child_codes[0]), out.data_ptr())
    return out


# --------------------------------------------------------------------------- beam step op


def _step_impl(device: torch.device) -> str:
    """The beam step implementation for this device under the backend in force:
    "reference", "cpu" or "triton". Raises for a backend that cannot run."""
    b = _backend.get_backend()
    if b == "reference":
        return "reference"
    if b == "triton":
        if device.type != "cuda" and not (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
            raise RuntimeError(
                "the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors) for the constrained beam step"
            )
        if not _native.has_triton():
            raise RuntimeError("the triton backend needs the `triton` package (pip install triton)")
        return "triton"
    if device.type == "cuda" and b == "auto":
        return "triton" if _native.has_triton() else "reference"
    return "cpu" if _use_cpu_kernel(device, "constrained beam step") else "reference"


_STEP_ERRORS = {
    11: "NaN in the log-probs or beam scores of a live beam",
    12: "a node id is out of range for this level",
}


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
            raise ValueError(f"pysid triton constrained beam step failed: {_STEP_ERRORS.get(err, f'status {err}')}")
    return s, p, t, n


@torch.library.custom_op("pysid::constrained_beam_step", mutates_args=())
def _beam_step_op(
    logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, offsets: Tensor, child_codes: Tensor, banned: Optional[Tensor],
    max_children: int = -1,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """max_children: the level's widest node (``Trie.max_children[level]``), the Triton kernel's
    launch parameter; -1: derive it from ``offsets`` (a host sync)."""
    impl = _step_impl(logprobs.device)
    if impl == "reference":
        s, p, t, n = constrained_beam_step_ref(logprobs, beam_scores, nodes, offsets, child_codes, banned)
        return s.float(), p, t, n
    if impl == "triton":
        return _run_triton(logprobs, beam_scores, nodes, offsets, child_codes, banned, max_children)
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


@_beam_step_op.register_fake
def _(logprobs, beam_scores, nodes, offsets, child_codes, banned, max_children=-1):
    B, K = beam_scores.shape
    new = beam_scores.new_empty
    return (new((B, K), dtype=torch.float32), new((B, K), dtype=torch.int64),
            new((B, K), dtype=torch.int64), new((B, K), dtype=torch.int64))


def constrained_beam_step(
    logprobs: Tensor, beam_scores: Tensor, nodes: Tensor, trie: "Trie", level: int, *, banned: Optional[Tensor] = None
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
    for name, x in (("logprobs", logprobs), ("beam_scores", beam_scores), ("nodes", nodes)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.device != trie.device:
            raise ValueError(f"{name} is on {x.device} but the trie is on {trie.device}")
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
    need = trie.vocab_sizes[level]
    if logprobs.shape[1] < need:
        raise ValueError(f"logprobs has {logprobs.shape[1]} columns but level {level} of the trie has {need} codes")
    logprobs = logprobs.float()
    if logprobs.stride(-1) != 1 or (B * K > 1 and logprobs.stride(0) < logprobs.shape[1]):
        logprobs = logprobs.contiguous()
    if banned is not None:
        if not isinstance(banned, Tensor) or banned.dim() != 2 or banned.shape[0] != B:
            raise ValueError(f"banned must be a [B={B}, E] int64 tensor")
        if banned.device != trie.device:
            raise ValueError(f"banned is on {banned.device} but the trie is on {trie.device}")
        banned = torch.sort(banned.long(), dim=1).values.contiguous()  # the kernels need ascending rows
    return torch.ops.pysid.constrained_beam_step(
        logprobs, beam_scores.float().contiguous(), nodes.long().contiguous(),
        trie.offsets[level], trie.codes[level], banned, trie.max_children[level],
    )
