"""``ResidualQuantizer``: a trainable residual vector quantizer (the RQ of an RQ-VAE).

    rq = pysid.nn.ResidualQuantizer(dim=32, levels=3, codebook_size=256)
    out = rq(z)                          # z [B, 32] -> QuantizerOutput
    out.quantized, out.codes, out.loss   # [B, 32] straight-through, [B, 3] int64, scalar

Codeword search runs on :func:`pysid.residual_quantize` (the native kernels); the rest is
plain PyTorch. What happens in a **training** forward (``module.train()``), in this order:

1. Initialisation (once). ``init="kmeans"``: the first training batch (or the data given to
   :meth:`ResidualQuantizer.init_from`) is clustered with :func:`pysid.residual_kmeans`
   (``iters=kmeans_iters``, ``seed=seed``). ``init="random"``: the codebooks are drawn at
   construction, ``N(0, 1/dim)`` per entry from a generator seeded with ``seed``.
2. Assignment. Greedy residual search (nearest codeword of the residual, level by level,
   ties to the lowest index). On the levels in ``balanced_levels`` the codes come from a
   balanced transport plan instead (Sinkhorn-Knopp, as LETTER / MiniOneRec / LC-Rec do): with
   ``d`` the [B, K] squared distances of the level's residuals to its codewords, rescaled to
   [-1, 1] by ``(d - mid) / (max - mid)`` (``mid = (max + min) / 2`` over the matrix), the plan
   ``Q = exp(-d / sinkhorn_epsilon)`` is alternately normalised, ``sinkhorn_iters`` times, so
   that every code's column sums to 1/K and then every row to 1/B (in log space); each row
   takes the argmax of its plan row. The plan is computed over this rank's batch. With
   LETTER's defaults (epsilon 0.003, 50 iterations) the iterations stop short of convergence,
   so the sizes are evened out but not exactly B/K; more ``sinkhorn_iters`` get closer.
3. Output. ``quantized = x + sg(sum_l e_l - x)`` (straight-through: the gradient reaches ``x``
   unchanged; the codebooks learn from the loss only, as in TIGER / VQ-VAE). The loss is
   TIGER's (:func:`pysid.rq_vae_loss`), with ``r_0 = x``, ``r_{l+1} = r_l - sg(e_l)``::

       codebook_loss   = sum_l mean ||sg(r_l) - e_l||^2        (means over B x dim elements)
       commitment_loss = sum_l mean ||r_l - sg(e_l)||^2
       loss = codebook_loss + commitment * commitment_loss     (update="gradient")
       loss = commitment * commitment_loss                     (update="ema")

4. Progressive masking (PLUM), ``progressive=True``: every row i draws a depth
   ``d_i ~ Uniform{1, ..., L}`` (independently per row, from a CPU generator seeded with
   ``seed + 1 + 7919 * rank``) and its
   ``quantized`` is the sum of its first ``d_i`` codewords only (still straight-through to x),
   so a decoder trained on it learns to reconstruct from every prefix. Codes, the codebook
   and commitment losses, EMA statistics and usage cover all L levels for every row.
   ``output.depth`` holds the d_i (L everywhere in eval mode or without progressive).
5. Statistics (no gradient). Per level: how many rows each code got, summed over all ranks
   (one all-reduce) and, in EMA mode, the sums of the residuals ``r_l`` assigned to each code.
6. EMA update (``update="ema"``; the codebooks are buffers). With ``n_k``/``s_k`` the global
   count and residual sum of code k at this level, ``decay = ema_decay``, ``eps = ema_epsilon``::

       N_k <- decay * N_k + (1 - decay) * n_k
       S_k <- decay * S_k + (1 - decay) * s_k
       e_k <- S_k / ((N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j)    (Laplace smoothing)

   ``N`` starts at 1 and ``S`` at the codeword, whenever a codeword is set (init, reset).
7. Dead-code reset (``dead_code_window > 0``). A code is *used* at a step if it got at least
   ``dead_code_threshold`` rows over all ranks. A code not used for ``dead_code_window``
   consecutive training steps (counted since it was last used, initialised or re-seeded) is
   re-seeded with a residual row of the same level from the most recent training inputs
   (the last ``max(2 K_l, 512)`` rows seen by rank 0), drawn uniformly without replacement
   (with replacement if fewer rows are held) by a generator seeded with ``seed + 2``; rank 0's
   rows are broadcast, so every rank sets the same codewords. A re-seeded code's EMA
   statistics restart (N = 1, S = codeword). ``output.dead_codes`` counts them per level.

Steps 5-7 modify the codebooks in place after the output was computed from a snapshot: the
output and the loss of a step always use the codebooks as they were at its start.

State: the codebooks, EMA statistics, dead-code clocks (``last_used_<l>``), ``steps`` and
``initialized`` are in the ``state_dict``; the generators and the pool of recent residuals
are not (a reloaded module continues with fresh ones).

Eval mode (``module.eval()``): greedy encoding with the current codebooks; no
initialisation, balancing, masking, statistics or updates (the loss is still computed).

Multi-process (``torch.distributed`` initialised, world > 1): every rank must call the
training forward (and :meth:`ResidualQuantizer.init_from`) the same number of times, with its
own batch. k-means initialisation runs on the union of the ranks' batches (residual_kmeans is
distributed-aware), the EMA statistics and the usage counts are all-reduced, and re-seeded
codewords come from rank 0, so every rank keeps identical codebooks and buffers (DDP's
``broadcast_buffers`` is then unnecessary: ``broadcast_buffers=False`` saves a copy per step).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Union

import torch
from torch import Tensor, nn

from .._checks import check_precision
from ..kmeans import residual_kmeans
from ..ops import residual_quantize

__all__ = ["QuantizerOutput", "ResidualQuantizer"]

Codebooks = Union[Tensor, Sequence[Tensor]]


class QuantizerOutput(NamedTuple):
    """Result of a :class:`ResidualQuantizer` forward (B rows, L levels).

    quantized:       [B, dim] x.dtype - sum of the chosen codewords (of the first ``depth`` levels),
                     straight-through: d quantized / d x = I.
    codes:           [B, L] int64 - chosen codeword of each level.
    loss:            scalar - codebook_loss + commitment * commitment_loss (gradient mode) or
                     commitment * commitment_loss (EMA mode).
    codebook_loss:   scalar - sum_l mean ||sg(r_l) - e_l||^2 (no gradient in EMA mode).
    commitment_loss: scalar - sum_l mean ||r_l - sg(e_l)||^2, unweighted.
    distances:       [B, L] float32 - squared norm of the residual left after each level.
    usage:           [L] float32 - fraction of each level's codes used in this batch (this rank).
    perplexity:      [L] float32 - exp(entropy) of each level's code histogram in this batch (this rank).
    depth:           [B] int64 - levels summed into ``quantized`` (progressive masking), else L.
    dead_codes:      [L] int64, on the CPU - codes re-seeded at this step (0 in eval mode).

    Tensors are on x's device unless noted.
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    distances: Tensor
    usage: Tensor
    perplexity: Tensor
    depth: Tensor
    dead_codes: Tensor


# --------------------------------------------------------------------------- collectives
from .._dist import Comm as _Dist  # noqa: E402  (all_reduce / broadcast; no-ops for one process)


# --------------------------------------------------------------------------- helpers
def _int(name: str, v, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return v


def sinkhorn_codes(d: Tensor, epsilon: float = 0.003, iters: int = 50) -> Tensor:
    """Balanced assignment of B rows to K codes from a [B, K] distance matrix (LETTER's rule).

    The distances are rescaled to [-1, 1] (``(d - mid) / (max - mid)``, ``mid = (max+min)/2``),
    ``log Q = -d / epsilon``, then ``iters`` rounds of: normalise every column to sum 1/K, then
    every row to sum 1/B (log space, float64). Returns the argmax of each row of Q, [B] int64.
    """
    dd = d.to(torch.float64)
    hi, lo = dd.max(), dd.min()
    mid = (hi + lo) / 2
    dd = (dd - mid) / (hi - mid + 1e-5)
    b, k = dd.shape
    logq = -dd / epsilon
    for _ in range(iters):
        logq = logq - torch.logsumexp(logq, dim=0, keepdim=True) - math.log(k)
        logq = logq - torch.logsumexp(logq, dim=1, keepdim=True) - math.log(b)
    return torch.argmax(logq, dim=1)


def _sq_dist(r: Tensor, c: Tensor) -> Tensor:
    """[B, K] squared distances (float32, clamped at 0)."""
    return ((r * r).sum(1, keepdim=True) - 2.0 * r @ c.t() + (c * c).sum(1)[None, :]).clamp_min_(0)


# --------------------------------------------------------------------------- the module
class ResidualQuantizer(nn.Module):
    """Trainable residual quantizer with k-means init, gradient or EMA codebooks, dead-code
    reset, balanced (Sinkhorn) levels and progressive level masking. See the module docstring
    (``pysid.nn.quantizer``) for the exact rules of each step.

    Args:
        dim: vector size D of the inputs.
        levels: number of levels L >= 1.
        codebook_size: codewords per level, an int or a sequence of L ints (each >= 1).
        commitment: weight beta of the commitment term (TIGER: 0.25).
        update: "gradient" (codebooks are ``nn.Parameter`` trained by the codebook loss) or
            "ema" (codebooks are buffers updated by an exponential moving average).
        ema_decay: decay of the EMA statistics, in (0, 1).
        ema_epsilon: Laplace smoothing of the EMA cluster sizes.
        init: "kmeans" (residual k-means on the first training batch or on ``init_from``'s
            data) or "random" (N(0, 1/dim) entries drawn at construction).
        kmeans_iters: Lloyd iterations per level of the k-means initialisation.
        dead_code_threshold: rows (over all ranks) a code needs in a step to count as used.
        dead_code_window: re-seed codes unused for this many consecutive training steps;
            0 or None disables the reset.
        balanced_levels: levels (0-based) assigned by Sinkhorn-Knopp during training.
        sinkhorn_epsilon, sinkhorn_iters: entropy weight (on distances rescaled to [-1, 1])
            and iterations of the balanced assignment (LETTER's 0.003 and 50).
        progressive: PLUM's progressive masking during training (a random depth per row).
        seed: seeds the random init, k-means, re-seeding and depth draws.
        precision: "exact" (default) or "fast": the codes' precision in the k-means
            initialisation, the forward search and :meth:`encode`, as for
            :func:`pysid.residual_quantize` ("fast": CUDA tensor-core codes without the float32
            proof, may differ on near-ties; CPU: the same codes).

    Forward: ``x`` [B, dim] floating point -> :class:`QuantizerOutput`.

    Attributes:
        codebooks: list of L live tensors [K_l, dim] (parameters or buffers), usable with
            :func:`pysid.residual_quantize`.
        initialized: bool buffer, False until the k-means initialisation ran.
    """

    def __init__(
        self,
        dim: int,
        levels: int,
        codebook_size: int | Sequence[int],
        *,
        commitment: float = 0.25,
        update: str = "gradient",
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        init: str = "kmeans",
        kmeans_iters: int = 20,
        dead_code_threshold: float = 1.0,
        dead_code_window: int | None = 100,
        balanced_levels: Sequence[int] = (),
        sinkhorn_epsilon: float = 0.003,
        sinkhorn_iters: int = 50,
        progressive: bool = False,
        seed: int = 0,
        precision: str = "exact",
    ):
        super().__init__()
        self.precision = check_precision(precision)
        self.dim = _int("dim", dim, 1)
        self.levels = _int("levels", levels, 1)
        if isinstance(codebook_size, bool):
            raise ValueError(f"codebook_size must be an int >= 1 or one per level, got {codebook_size!r}")
        if isinstance(codebook_size, int):
            sizes = [codebook_size] * levels
        elif isinstance(codebook_size, Sequence) and not isinstance(codebook_size, str):
            sizes = list(codebook_size)
            if len(sizes) != levels:
                raise ValueError(f"codebook_size has {len(sizes)} sizes for {levels} levels")
        else:
            raise ValueError(f"codebook_size must be an int >= 1 or one per level, got {codebook_size!r}")
        self.codebook_sizes = [_int(f"codebook_size[{i}]", k, 1) for i, k in enumerate(sizes)]
        if update not in ("gradient", "ema"):
            raise ValueError(f"update must be 'gradient' or 'ema', got {update!r}")
        if init not in ("kmeans", "random"):
            raise ValueError(f"init must be 'kmeans' or 'random', got {init!r}")
        if not (0.0 < float(ema_decay) < 1.0):
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay!r}")
        if not float(ema_epsilon) > 0:
            raise ValueError(f"ema_epsilon must be > 0, got {ema_epsilon!r}")
        if not float(commitment) >= 0:
            raise ValueError(f"commitment must be >= 0, got {commitment!r}")
        if dead_code_window is None:
            dead_code_window = 0
        _int("dead_code_window", dead_code_window, 0)
        if not float(dead_code_threshold) > 0:
            raise ValueError(f"dead_code_threshold must be > 0, got {dead_code_threshold!r}")
        bl = sorted(set(int(v) for v in balanced_levels))
        if any(v < 0 or v >= levels for v in bl):
            raise ValueError(f"balanced_levels must be in [0, {levels}), got {list(balanced_levels)!r}")
        if not float(sinkhorn_epsilon) > 0:
            raise ValueError(f"sinkhorn_epsilon must be > 0, got {sinkhorn_epsilon!r}")
        _int("sinkhorn_iters", sinkhorn_iters, 1)
        _int("kmeans_iters", kmeans_iters, 0)

        self.commitment = float(commitment)
        self.update = update
        self.ema_decay = float(ema_decay)
        self.ema_epsilon = float(ema_epsilon)
        self.init = init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = float(dead_code_threshold)
        self.dead_code_window = int(dead_code_window)
        self.balanced_levels = tuple(bl)
        self.sinkhorn_epsilon = float(sinkhorn_epsilon)
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.progressive = bool(progressive)
        self.seed = int(seed)

        g = torch.Generator().manual_seed(self.seed)
        for lvl, k in enumerate(self.codebook_sizes):
            c = torch.randn(k, dim, generator=g) / math.sqrt(dim)
            if update == "gradient":
                self.register_parameter(f"codebook_{lvl}", nn.Parameter(c))
            else:
                self.register_buffer(f"codebook_{lvl}", c)
                self.register_buffer(f"ema_count_{lvl}", torch.ones(k))
                self.register_buffer(f"ema_sum_{lvl}", c.clone())
            self.register_buffer(f"last_used_{lvl}", torch.zeros(k, dtype=torch.int64))
        self.register_buffer("initialized", torch.tensor(init == "random"))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self._recent: list[Tensor | None] = [None] * levels  # rank-local recent residuals per level
        self._gen_reseed: torch.Generator | None = None
        self._gen_depth: torch.Generator | None = None

    # ----------------------------------------------------------------- codebook access
    @property
    def codebooks(self) -> list[Tensor]:
        """The L live codebooks [K_l, dim] (parameters in gradient mode, buffers in EMA mode)."""
        return [getattr(self, f"codebook_{lvl}") for lvl in range(self.levels)]

    def get_codebooks(self) -> Tensor | list[Tensor]:
        """Detached copies: [L, K, dim] if every level has the same size, else a list of
        [K_l, dim] tensors (the form :func:`pysid.residual_kmeans` returns)."""
        cbs = [c.detach().clone() for c in self.codebooks]
        return torch.stack(cbs) if len(set(self.codebook_sizes)) == 1 else cbs

    @torch.no_grad()
    def set_codebooks(self, codebooks: Codebooks) -> None:
        """Set every codeword ([L, K, dim] tensor or list of [K_l, dim]); restarts the EMA
        statistics (N = 1, S = codeword) and the dead-code clocks; marks the module initialised."""
        cbs = list(codebooks.unbind(0)) if isinstance(codebooks, Tensor) and codebooks.dim() == 3 else list(codebooks)
        if len(cbs) != self.levels:
            raise ValueError(f"expected {self.levels} codebooks, got {len(cbs)}")
        for lvl, (c, k) in enumerate(zip(cbs, self.codebook_sizes)):
            if not isinstance(c, Tensor) or c.shape != (k, self.dim):
                shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise ValueError(f"codebooks[{lvl}] must be [{k}, {self.dim}], got {shape}")
            if not bool(torch.isfinite(c).all()):
                raise ValueError(f"codebooks[{lvl}] has NaN/Inf")
        for lvl, c in enumerate(cbs):
            mine = getattr(self, f"codebook_{lvl}")
            mine.copy_(c.to(mine.device, mine.dtype))
            if self.update == "ema":
                getattr(self, f"ema_count_{lvl}").fill_(1.0)
                getattr(self, f"ema_sum_{lvl}").copy_(mine)
            getattr(self, f"last_used_{lvl}").fill_(int(self.steps))
            self._recent[lvl] = None
        self.initialized.fill_(True)

    @torch.no_grad()
    def init_from(self, data: Tensor) -> None:
        """k-means initialisation: codebooks = ``pysid.residual_kmeans(data, L, K,
        iters=kmeans_iters, seed=seed)``. data: [N, dim] (under torch.distributed: this rank's
        shard; call on every rank). Needs N (over all ranks) >= max K."""
        self._check_x(data)
        comm = _Dist(data.device)
        n_total = int(comm.sum(torch.tensor([data.shape[0]], dtype=torch.int64, device=data.device))[0])
        if n_total < max(self.codebook_sizes):
            raise ValueError(
                f"k-means initialisation needs at least max(codebook_size) = {max(self.codebook_sizes)} rows, "
                f"got {n_total}: use a larger (first) batch or call init_from() with more data")
        cbs = residual_kmeans(data.detach().float(), self.levels, self.codebook_sizes,
                              iters=self.kmeans_iters, seed=self.seed, precision=self.precision)
        self.set_codebooks(cbs)

    # ----------------------------------------------------------------- encode / decode
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Greedy codes [N, L] int64 of x [N, dim] with the current codebooks (no updates)."""
        self._check_x(x)
        self._check_ready()
        return residual_quantize(x, [c.detach() for c in self.codebooks], precision=self.precision).codes.long()

    def decode(self, codes: Tensor) -> Tensor:
        """Sum of the codewords of codes [N, l] (integer, l <= L: a prefix) -> [N, dim] float32."""
        if not isinstance(codes, Tensor) or codes.is_floating_point() or codes.dim() != 2:
            raise ValueError(f"codes must be an integer [N, l] tensor, got "
                             f"{tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__}")
        if codes.shape[1] > self.levels:
            raise ValueError(f"codes has {codes.shape[1]} levels, the quantizer {self.levels}")
        cbs = self.codebooks
        out = torch.zeros((codes.shape[0], self.dim), dtype=cbs[0].dtype, device=cbs[0].device)
        for lvl in range(codes.shape[1]):
            idx = codes[:, lvl].long().to(out.device)
            k = self.codebook_sizes[lvl]
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= k):
                raise ValueError(f"codes[:, {lvl}] must be in [0, {k})")
            out = out + cbs[lvl][idx]
        return out

    # ----------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> QuantizerOutput:
        """x: [B, dim] float -> :class:`QuantizerOutput` (training: see the module docstring)."""
        self._check_x(x)
        train = self.training
        if train and not bool(self.initialized):
            if x.shape[0] == 0:
                raise ValueError("the first training batch is empty: k-means initialisation needs data")
            self.init_from(x)
        self._check_ready()
        live = self.codebooks
        # the search and the loss use a snapshot: the in-place updates below must not touch it
        snap = [c.detach().clone() if train else c.detach() for c in live]
        xf = x if x.dtype == torch.float32 else x.float()
        b, L = x.shape[0], self.levels

        balanced = train and bool(self.balanced_levels)
        if balanced:
            codes, dist = self._assign_balanced(xf.detach(), snap)
            q_st = None
        else:
            out = residual_quantize(xf, snap, precision=self.precision)  # straight-through to x (snapshot: no codebook grad)
            codes, dist, q_st = out.codes.long(), out.distances, out.quantized

        # loss terms (TIGER), residuals per level
        grad_cb = self.update == "gradient"
        r = xf
        cb_loss = xf.new_zeros(())
        commit = xf.new_zeros(())
        es: list[Tensor] = []
        rs: list[Tensor] = []
        for lvl in range(L):
            idx = codes[:, lvl]
            e_sg = snap[lvl][idx]
            e = live[lvl][idx] if grad_cb else e_sg
            rd = r.detach()
            rs.append(rd)
            es.append(e_sg)
            if b:
                cb_loss = cb_loss + torch.mean((rd - e) ** 2)
                commit = commit + torch.mean((r - e_sg) ** 2)
            r = r - e_sg
        loss = (cb_loss + self.commitment * commit) if grad_cb else self.commitment * commit
        if not grad_cb:
            cb_loss = cb_loss.detach()
        if q_st is None:
            total = torch.stack(es).sum(0) if b else torch.zeros_like(xf)
            q_st = xf + (total - xf).detach()

        depth = torch.full((b,), L, dtype=torch.int64, device=x.device)
        if train and self.progressive and L > 1 and b:
            if self._gen_depth is None:
                self._gen_depth = torch.Generator().manual_seed(self.seed + 1 + 7919 * _Dist(x.device).rank)
            depth = torch.randint(1, L + 1, (b,), generator=self._gen_depth).to(x.device)
            drop = torch.arange(L, device=x.device)[None, :] >= depth[:, None]  # [B, L] levels left out
            tail = (torch.stack(es, 1) * drop[:, :, None]).sum(1)
            q_st = q_st - tail.detach()

        with torch.no_grad():
            counts = [torch.bincount(codes[:, lvl], minlength=k).float() for lvl, k in enumerate(self.codebook_sizes)]
            usage = torch.stack([(c > 0).float().mean() for c in counts])
            ent = []
            for c in counts:
                p = c / max(b, 1)
                ent.append(-(p * torch.log(p.clamp_min(1e-30))).sum())
            perplexity = torch.exp(torch.stack(ent))
            dead = torch.zeros(L, dtype=torch.int64)
            if train:
                dead = self._update(x.device, codes, counts, rs)

        return QuantizerOutput(
            quantized=q_st.to(x.dtype), codes=codes, loss=loss, codebook_loss=cb_loss, commitment_loss=commit,
            distances=dist.float(), usage=usage, perplexity=perplexity, depth=depth, dead_codes=dead)

    # ----------------------------------------------------------------- training internals
    def _assign_balanced(self, x: Tensor, cbs: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Level by level: Sinkhorn codes on the balanced levels, greedy elsewhere."""
        b = x.shape[0]
        r = x
        codes = torch.empty((b, self.levels), dtype=torch.int64, device=x.device)
        dist = torch.empty((b, self.levels), dtype=torch.float32, device=x.device)
        for lvl, c in enumerate(cbs):
            if lvl in self.balanced_levels and b:
                code = sinkhorn_codes(_sq_dist(r, c), self.sinkhorn_epsilon, self.sinkhorn_iters)
            else:
                code = residual_quantize(r, [c], precision=self.precision).codes[:, 0].long()
            r = r - c[code]
            codes[:, lvl] = code
            dist[:, lvl] = (r * r).sum(1)
        return codes, dist

    def _update(self, device: torch.device, codes: Tensor, counts: list[Tensor], rs: list[Tensor]) -> Tensor:
        """All-reduced statistics, EMA update, dead-code reset. Returns re-seeded codes per level."""
        comm = _Dist(device)
        ks = self.codebook_sizes
        ema = self.update == "ema"
        parts = [c.double() for c in counts]
        if ema:
            for lvl, k in enumerate(ks):
                s = torch.zeros((k, self.dim), dtype=torch.float64, device=device)
                s.index_add_(0, codes[:, lvl], rs[lvl].double())
                parts.append(s.flatten())
        flat = comm.sum(torch.cat([p.flatten() for p in parts]))  # one collective per step
        n_glob, s_glob, off = [], [], 0
        for k in ks:
            n_glob.append(flat[off : off + k])
            off += k
        if ema:
            for k in ks:
                s_glob.append(flat[off : off + k * self.dim].view(k, self.dim))
                off += k * self.dim
        self.steps.add_(1)
        step = int(self.steps)

        if ema:
            d, eps = self.ema_decay, self.ema_epsilon
            for lvl, k in enumerate(ks):
                cnt, sm, cb = (getattr(self, f"{n}_{lvl}") for n in ("ema_count", "ema_sum", "codebook"))
                cnt.mul_(d).add_(n_glob[lvl].to(cnt.dtype), alpha=1 - d)
                sm.mul_(d).add_(s_glob[lvl].to(sm.dtype), alpha=1 - d)
                tot = cnt.sum()
                smoothed = (cnt + eps) / (tot + k * eps) * tot
                cb.copy_(sm / smoothed[:, None])

        dead_n = torch.zeros(self.levels, dtype=torch.int64)
        if self.dead_code_window <= 0:
            return dead_n
        cap_rows = [max(2 * k, 512) for k in ks]
        for lvl, k in enumerate(ks):  # rank-local recent residuals, newest first
            old = self._recent[lvl]
            new = rs[lvl].float()
            self._recent[lvl] = (new if old is None else torch.cat([new, old.to(new.device)]))[: cap_rows[lvl]]
        if self._gen_reseed is None:
            self._gen_reseed = torch.Generator().manual_seed(self.seed + 2)
        for lvl, k in enumerate(ks):
            last = getattr(self, f"last_used_{lvl}")
            last[(n_glob[lvl] >= self.dead_code_threshold).to(last.device)] = step
            dead = (step - last) >= self.dead_code_window
            m = int(dead.sum())
            if m == 0:
                continue
            # the same draws on every rank (fixed size); rank 0's rows are used
            keys = torch.rand(cap_rows[lvl], generator=self._gen_reseed)
            pool = self._recent[lvl]
            avail = pool.shape[0]
            if avail:
                order = torch.argsort(keys[:avail])
                pick = order[torch.arange(m) % avail]
                rows = pool[pick.to(pool.device)]
            else:
                rows = torch.zeros((m, self.dim), dtype=torch.float32, device=device)
            rows = comm.broadcast(rows)
            ids = dead.nonzero()[:, 0]
            cb = getattr(self, f"codebook_{lvl}")
            cb.data[ids] = rows.to(cb.device, cb.dtype)
            if ema:
                getattr(self, f"ema_count_{lvl}")[ids] = 1.0
                getattr(self, f"ema_sum_{lvl}")[ids] = cb.data[ids]
            last[ids] = step
            dead_n[lvl] = m
        return dead_n

    # ----------------------------------------------------------------- checks
    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be floating point, got {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be [B, dim] = [B, {self.dim}], got shape {tuple(x.shape)}")

    def _check_ready(self) -> None:
        if not bool(self.initialized):
            raise RuntimeError("ResidualQuantizer is not initialised: run a training forward "
                               "(k-means on the first batch), init_from(data) or set_codebooks()")

    def extra_repr(self) -> str:
        s = (f"dim={self.dim}, levels={self.levels}, codebook_size={self.codebook_sizes}, "
             f"update={self.update!r}, commitment={self.commitment}, init={self.init!r}")
        if self.update == "ema":
            s += f", ema_decay={self.ema_decay}"
        if self.dead_code_window:
            s += f", dead_code_window={self.dead_code_window}, dead_code_threshold={self.dead_code_threshold}"
        if self.balanced_levels:
            s += f", balanced_levels={self.balanced_levels}"
        if self.progressive:
            s += ", progressive=True"
        if self.precision != "exact":
            s += f", precision={self.precision!r}"
        return s
