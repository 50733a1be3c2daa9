"""The few torch.distributed collectives pysid needs (k-means, the residual quantizer):
no-ops for one process.

gloo reduces CPU tensors and nccl CUDA tensors: a tensor goes to the process group's
device for the collective and comes back to its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Comm"]


class Comm:
    """all_reduce (sum), all_gather (``gather_rows``: of unequal shards), broadcast and an
    error-agreement point (``agree``) under torch.distributed (world > 1);
    one process: identities (``gather`` adds the leading world dimension)."""

    def __init__(self, device: torch.device, local: bool = False):
        """local: a one-process Comm even under torch.distributed (for work every rank repeats
        on identical inputs)."""
        import torch.distributed as dist

        self.on = not local and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.world = dist.get_world_size() if self.on else 1
        self.rank = dist.get_rank() if self.on else 0
        self.dev = device if (not self.on or dist.get_backend() == "nccl") else torch.device("cpu")

    def _in_place(self, t: Tensor, collective) -> Tensor:
        """collective(u) on a copy u of t on the group's device; the result on t's device."""
        if not self.on:
            return t
        u = t.to(self.dev).contiguous().clone()
        collective(u)
        return u.to(t.device)

    def sum(self, t: Tensor) -> Tensor:
        """The sum of t over the ranks (same shape and dtype on every rank)."""
        import torch.distributed as dist

        return self._in_place(t, dist.all_reduce)

    def gather(self, t: Tensor) -> Tensor:
        """[world, *t.shape]: every rank's t (same shape on every rank)."""
        if not self.on:
            return t[None]
        import torch.distributed as dist

        parts = [torch.empty_like(t, device=self.dev) for _ in range(self.world)]
        dist.all_gather(parts, t.to(self.dev).contiguous())
        return torch.stack(parts).to(t.device)

    def broadcast(self, t: Tensor) -> Tensor:
        """Rank 0's t (same shape and dtype on every rank)."""
        import torch.distributed as dist

        return self._in_place(t, lambda u: dist.broadcast(u, src=0))

    def gather_rows(self, t: Tensor) -> Tensor:
        """The concatenation of every rank's t [n_r, ...] in rank order (n_r may differ; the
        other dimensions and the dtype must agree), on every rank."""
        if not self.on:
            return t
        import torch.distributed as dist

        n = self.gather(torch.tensor([t.shape[0]], dtype=torch.int64))[:, 0].tolist()
        big = max(n)
        pad = torch.zeros((big, *t.shape[1:]), dtype=t.dtype, device=self.dev)
        pad[: t.shape[0]] = t.to(self.dev)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        dist.all_gather(parts, pad)
        return torch.cat([p[:k] for p, k in zip(parts, n)]).to(t.device)

    def agree(self, error: BaseException | None, **facts) -> list[dict]:
        """Every rank's ``facts`` (small picklable values), in rank order. If any rank passes an
        ``error``, every rank raises: the failing rank its own error, the others a ValueError
        (TypeError for a TypeError) naming the first failing rank and its message - so a bad
        shard or setting on one rank stops all ranks at this point instead of leaving them
        waiting in a collective."""
        mine = dict(facts, error=None if error is None else (type(error).__name__, str(error)))
        if not self.on:
            if error is not None:
                raise error
            return [mine]
        import torch.distributed as dist

        every: list = [None] * self.world
        dist.all_gather_object(every, mine)
        bad = [(r, f["error"]) for r, f in enumerate(every) if f["error"] is not None]
        if bad:
            if error is not None:
                raise error
            r, (kind, msg) = bad[0]
            raise (TypeError if kind == "TypeError" else ValueError)(f"rank {r}: {msg}")
        return every
