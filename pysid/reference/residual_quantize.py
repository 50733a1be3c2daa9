"""Reference residual quantization (greedy and beam search) and the RQ-VAE loss."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def _scores(r: Tensor, c: Tensor) -> Tensor:
    """||c||^2 - 2 r.c for every (row of r, row of c): [..., K]. The ||r||^2 term is left out."""
    flat = torch.addmm((c * c).sum(-1), r.reshape(-1, r.shape[-1]), c.T, alpha=-2.0)
    return flat.reshape(*r.shape[:-1], c.shape[0])


def residual_quantize_ref(
    x: Tensor, codebooks: Sequence[Tensor], beam_width: int = 1, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Residual quantization, level by level.

    Args:
        x: [N, D] floating.
        codebooks: L tensors [K_l, D].
        beam_width: 1 = greedy (nearest codeword of the residual at each level,
            exact ties to the lowest index); B > 1 = beam search: at each level
            every (beam b, code k) pair is scored by ||r_b||^2 + ||c_k||^2 - 2 r_b.c_k,
            the best min(B, #pairs) are kept in (score, beam rank, code) order, and
            the best beam is returned at the end - unless the greedy encoding ends
            strictly lower (beam search alone can lose to greedy, e.g. when a later
            level has one codeword), so the result is never worse than greedy.
        dtype: computation dtype (default: float64 for float64 input, else float32).

    Returns:
        quantized [N, D] (``dtype``): sum of the chosen codewords,
        distances [N, L] (``dtype``): ||x - sum_{j<=l} c_j||^2 after each level,
        codes [N, L] int32.
    """
    if dtype is None:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cbs = [c.to(dtype) for c in codebooks]
    x = x.to(dtype)
    n, d = x.shape
    levels = len(cbs)
    if beam_width == 1:
        r = x.clone()
        codes, dists = [], []
        for c in cbs:
            idx = torch.argmin(_scores(r, c), dim=1)  # first minimum on ties
            r = r - c[idx]
            codes.append(idx)
            dists.append((r * r).sum(1))
        codes_t = torch.stack(codes, 1) if n else x.new_zeros((0, levels), dtype=torch.long)
        dists_t = torch.stack(dists, 1) if n else x.new_zeros((0, levels))
        return x - r, dists_t, codes_t.to(torch.int32)

    return better_of(_beam(x, cbs, beam_width), residual_quantize_ref(x, cbs, 1, dtype))


def better_of(beam: tuple[Tensor, Tensor, Tensor], greedy: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the greedy encoding where its final distance is strictly lower, else the beam's."""
    take = greedy[1][:, -1] < beam[1][:, -1]
    return tuple(torch.where(take[:, None], g, b) for b, g in zip(beam, greedy))  # type: ignore[return-value]


def _beam(x: Tensor, cbs: list[Tensor], beam_width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pure beam search (may end above greedy)."""
    n, d = x.shape
    # Beam search. State per row: B beams with residual [N, B, D], codes [N, B, l], distances [N, B, l].
    r = x[:, None, :]
    path_codes = x.new_zeros((n, 1, 0), dtype=torch.long)
    path_dists = x.new_zeros((n, 1, 0))
    for c in cbs:
        nb, k = r.shape[1], c.shape[0]
        total = (r * r).sum(-1, keepdim=True) + _scores(r, c)  # [N, B, K]
        keep = min(beam_width, nb * k)
        order = torch.sort(total.reshape(n, nb * k), dim=1, stable=True).indices[:, :keep]
        beam, code = order // k, order % k  # flat index b*K + k: ties by beam rank, then code
        r = torch.gather(r, 1, beam[..., None].expand(n, keep, d)) - c[code]
        path_codes = torch.cat([torch.gather(path_codes, 1, beam[..., None].expand(n, keep, path_codes.shape[2])), code[..., None]], 2)
        path_dists = torch.cat([torch.gather(path_dists, 1, beam[..., None].expand(n, keep, path_dists.shape[2])), (r * r).sum(-1)[..., None]], 2)
    return x - r[:, 0], path_dists[:, 0], path_codes[:, 0].to(torch.int32)


def rq_vae_loss_ref(x: Tensor, codebooks: Sequence[Tensor], codes: Tensor, beta: float = 0.25) -> Tensor:
    """TIGER's RQ-VAE quantization loss for given codes (no search):

    sum over levels of mean(||sg(r_l) - e_l||^2) + beta * mean(||r_l - sg(e_l)||^2),
    with r_0 = x, r_{l+1} = r_l - sg(e_l), e_l the chosen codeword, means over all N*D elements.
    """
    r = x
    loss = x.new_zeros(())
    for level, c in enumerate(codebooks):
        e = c[codes[:, level].long()]
        loss = loss + torch.mean((r.detach() - e) ** 2) + beta * torch.mean((r - e.detach()) ** 2)
        r = r - e.detach()
    return loss
