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
    """all_reduce (sum), all_gather and broadcast under torch.distributed (world > 1);
    one process: identities (``gather`` adds the leading world dimension)."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
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
