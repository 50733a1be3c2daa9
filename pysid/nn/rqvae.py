"""``RQVAE``: TIGER's residual-quantized variational autoencoder, and a training loop.

    model = pysid.nn.RQVAE(768)                    # 768 -> 512 -> 256 -> 128 -> 32, 3 x 256 codes
    losses = pysid.nn.train_rqvae(model, emb, epochs=100)
    codes = model.encode(emb)                      # [N, 3] int64 Semantic IDs

TIGER (Rajput et al., 2023): an MLP encoder (ReLU between layers) maps the item embedding to
a 32-d latent, a 3-level residual quantizer with 256 codewords per level (k-means initialised,
commitment 0.25) quantizes it, and a mirrored MLP decoder reconstructs the embedding;
loss = reconstruction MSE + RQ loss.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hybrid import alignment_loss
from .quantizer import QuantizerOutput, ResidualQuantizer

__all__ = ["RQVAE", "RQVAEOutput", "train_rqvae"]


class RQVAEOutput(NamedTuple):
    """Result of an :class:`RQVAE` forward (B rows, L levels).

    reconstruction:      [B, in_dim] float32 - decoder output from the quantized latent.
    codes:               [B, L] int64 - Semantic IDs of the rows.
    loss:                scalar - reconstruction_loss + rq_loss.
    reconstruction_loss: scalar - mean squared error over B x in_dim elements.
    rq_loss:             scalar - the quantizer's loss (``quantizer.loss``).
    latent:              [B, latent] float32 - encoder output (before quantization).
    quantizer:           :class:`~pysid.nn.QuantizerOutput` - quantized latent, loss parts,
                         usage, perplexity, depth, dead codes.
    """

    reconstruction: Tensor
    codes: Tensor
    loss: Tensor
    reconstruction_loss: Tensor
    rq_loss: Tensor
    latent: Tensor
    quantizer: QuantizerOutput


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """MLP encoder -> :class:`~pysid.nn.ResidualQuantizer` -> MLP decoder (TIGER's defaults).

    Args:
        in_dim: size of the input embeddings.
        hidden: encoder hidden sizes (the decoder uses them reversed).
        latent: size of the quantized latent.
        levels: quantizer levels L.
        codebook_size: codewords per level (int or one per level).
        seed: seeds the MLP weights (drawn in a forked RNG: the global RNG is untouched) and is
            passed to the quantizer.
        **quantizer_options: passed to :class:`~pysid.nn.ResidualQuantizer` (commitment,
            update, ema_decay, init, kmeans_iters, dead_code_*, balanced_levels, progressive, ...).

    Forward: ``x`` [B, in_dim] -> :class:`RQVAEOutput`.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (512, 256, 128),
        latent: int = 32,
        levels: int = 3,
        codebook_size: int | Sequence[int] = 256,
        *,
        seed: int = 0,
        **quantizer_options,
    ):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("latent", latent)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        hidden = tuple(hidden)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be ints >= 1, got {hidden!r}")
        self.in_dim, self.hidden, self.latent = in_dim, hidden, latent
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.encoder = _mlp((in_dim, *hidden, latent))
            self.decoder = _mlp((latent, *hidden[::-1], in_dim))
        self.quantizer = ResidualQuantizer(latent, levels, codebook_size, seed=seed, **quantizer_options)

    @property
    def levels(self) -> int:
        return self.quantizer.levels

    def forward(self, x: Tensor) -> RQVAEOutput:
        """x: [B, in_dim] float -> :class:`RQVAEOutput` (training forward: see ResidualQuantizer)."""
        self._check_x(x)
        z = self.encoder(x.float())
        q = self.quantizer(z)
        rec = self.decoder(q.quantized)
        rec_loss = F.mse_loss(rec, x.float()) if x.shape[0] else rec.new_zeros(())
        return RQVAEOutput(reconstruction=rec, codes=q.codes, loss=rec_loss + q.loss, reconstruction_loss=rec_loss,
                           rq_loss=q.loss, latent=z, quantizer=q)

    @torch.no_grad()
    def encode(self, x: Tensor, batch_size: int = 8192) -> Tensor:
        """Semantic IDs [N, L] int64 (on x's device) of x [N, in_dim]: eval mode (greedy, no
        updates), no gradient, in batches of ``batch_size`` rows. The module's mode is restored."""
        self._check_x(x)
        was = self.training
        self.eval()
        try:
            dev = self._device()
            out = [self.quantizer.encode(self.encoder(x[i : i + batch_size].to(dev).float()))
                   for i in range(0, x.shape[0], batch_size)]
        finally:
            self.train(was)
        if not out:
            return torch.empty((0, self.levels), dtype=torch.int64, device=x.device)
        return torch.cat(out).to(x.device)

    def decode(self, codes: Tensor) -> Tensor:
        """Reconstruction [N, in_dim] from codes [N, l] (l <= L: a prefix uses its levels only)."""
        return self.decoder(self.quantizer.decode(codes.to(self._device())))

    def _device(self) -> torch.device:
        return self.quantizer.codebooks[0].device

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be floating point, got {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must be [B, in_dim] = [B, {self.in_dim}], got shape {tuple(x.shape)}")


def train_rqvae(
    model: RQVAE,
    x: Tensor,
    *,
    epochs: int = 100,
    batch_size: int = 1024,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    align_with: Tensor | None = None,
    align_weight: float = 0.1,
    align_temperature: float = 0.07,
    deterministic: bool | None = None,
) -> list[float]:
    """Train ``model`` on the rows of x with Adam; returns the mean training loss of each epoch.

    Every epoch visits the rows in a fresh random order (a CPU generator seeded with ``seed``)
    in batches of ``batch_size``. Before the first step, if the quantizer is not initialised
    yet, it is k-means initialised (:meth:`ResidualQuantizer.init_from`) from the encoder's
    output on the first batch (extended to max(codebook_size) rows when the batch is smaller).
    Reproducible: the same model seed, ``seed``, device and thread count give the same
    weights. With ``deterministic`` (default: True on CPU, False on CUDA) the loop runs under
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` (restored afterwards): without
    it, the CPU backward of the codebook gather accumulates with multi-threaded atomic adds and
    two runs with more than one thread differ in the last bits, then in the codes. On CUDA,
    deterministic=True also needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` set before CUDA starts;
    ops without a deterministic CUDA kernel then warn. The flag is process-wide while the loop
    runs. Single process: under torch.distributed write the loop around
    ``DistributedDataParallel(model)``.

    Args:
        model: an :class:`RQVAE` (its device is used; x is moved there batch by batch).
        x: [N, in_dim] float tensor, finite.
        epochs, batch_size, lr, weight_decay: the optimisation settings.
        seed: seeds the shuffling.
        progress: progress over the epochs: False, True, "tqdm", "log" or "auto" (as in
            :func:`pysid.kmeans`).
        align_with: optional [N, Dc] collaborative embeddings (row i belongs to x[i]). Each
            batch's loss then adds ``align_weight * alignment_loss(model.align_head(q), c)``
            (symmetric in-batch InfoNCE at ``align_temperature``, see
            :func:`~pysid.nn.alignment_loss`), with q the batch's quantized latent
            (straight-through, so the encoder receives the gradient) and c the matching rows
            of align_with; the returned losses include this term. ``model.align_head`` is an
            ``nn.Linear(model.latent, Dc)`` created here (seeded by ``seed``) unless the model
            already has one of that shape (a later call continues with it). It is a submodule,
            so it is saved in ``model.state_dict()`` (keys ``align_head.weight``/``.bias``): to
            load such a state dict into a fresh RQVAE, first set
            ``model.align_head = torch.nn.Linear(latent, Dc)`` (or load with strict=False).
            The head is not used by forward, encode or decode.
        align_weight: weight of the alignment term (>= 0).
        align_temperature: InfoNCE temperature (> 0).
        deterministic: run under deterministic algorithms (None: on CPU only).

    With align_with None (the default) the training is exactly the plain RQ-VAE loop.
    The model is left in the mode it had before the call.
    """
    if not isinstance(model, RQVAE):
        raise TypeError(f"model must be a pysid.nn.RQVAE, got {type(model).__name__}")
    model._check_x(x)
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if x.shape[0] == 0:
        raise ValueError("x is empty (N = 0)")
    bad = ~torch.isfinite(x).all(1)
    if bool(bad.any()):
        rows = bad.nonzero()[:, 0]
        raise ValueError(f"x has NaN/Inf in {rows.numel()} row(s), e.g. rows {rows[:8].tolist()}")
    dev = model._device()
    if deterministic is None:
        deterministic = dev.type == "cpu"
    if not isinstance(deterministic, bool):
        raise ValueError(f"deterministic must be True, False or None, got {deterministic!r}")
    with _deterministic(deterministic):
        return _train(model, x, epochs, batch_size, lr, weight_decay, seed, progress, align_with, align_weight,
                      align_temperature, dev)


@contextlib.contextmanager
def _deterministic(on: bool):
    """torch.use_deterministic_algorithms(True, warn_only=True) inside, the previous mode after."""
    if not on or torch.are_deterministic_algorithms_enabled():  # already on: leave the caller's mode
        yield
        return
    was, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)


def _train(model, x, epochs, batch_size, lr, weight_decay, seed, progress, align_with, align_weight,
           align_temperature, dev) -> list[float]:
    n = x.shape[0]
    if align_with is not None:
        head = _align_head(model, x, align_with, align_weight, align_temperature, seed, dev)
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    was = model.training
    model.train()
    from .._progress import bar as _bar

    bar = _bar(progress, epochs, "RQ-VAE epochs")
    losses: list[float] = []
    try:
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=g)
            if epoch == 0 and not bool(model.quantizer.initialized):
                rows = perm[: max(batch_size, max(model.quantizer.codebook_sizes))]
                with torch.no_grad():
                    model.quantizer.init_from(model.encoder(x[rows.to(x.device)].to(dev).float()))
            total = 0.0
            for i in range(0, n, batch_size):
                xb = x[perm[i : i + batch_size].to(x.device)].to(dev)
                out = model(xb)
                loss = out.loss
                if align_with is not None:
                    cb = align_with[perm[i : i + batch_size].to(align_with.device)].to(dev)
                    loss = loss + align_weight * alignment_loss(
                        head(out.quantizer.quantized), cb, temperature=align_temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * xb.shape[0]
            losses.append(total / n)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.5g}")
    finally:
        if bar is not None:
            bar.close()
        model.train(was)
    return losses


def _align_head(model: RQVAE, x: Tensor, c, weight, temperature, seed: int, dev: torch.device) -> nn.Linear:
    """Checks train_rqvae's alignment arguments; returns model.align_head (created if needed)."""
    if not isinstance(c, Tensor):
        raise TypeError(f"align_with must be a torch.Tensor, got {type(c).__name__}")
    if not c.is_floating_point():
        raise TypeError(f"align_with must be floating point, got {c.dtype}")
    if c.dim() != 2 or c.shape[0] != x.shape[0] or c.shape[1] < 1:
        raise ValueError(f"align_with must be [N, Dc] with N = {x.shape[0]} (one row per row of x), "
                         f"got shape {tuple(c.shape)}")
    bad = ~torch.isfinite(c).all(1)
    if bool(bad.any()):
        rows = bad.nonzero()[:, 0]
        raise ValueError(f"align_with has NaN/Inf in {rows.numel()} row(s), e.g. rows {rows[:8].tolist()}")
    for name, v, low in (("align_weight", weight, ">= 0"), ("align_temperature", temperature, "> 0")):
        num = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        if not num or (v < 0 if low == ">= 0" else v <= 0):
            raise ValueError(f"{name} must be a finite number {low}, got {v!r}")
    dc = c.shape[1]
    head = getattr(model, "align_head", None)
    if not (isinstance(head, nn.Linear) and head.in_features == model.latent and head.out_features == dc):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            head = nn.Linear(model.latent, dc)
        model.align_head = head.to(dev)
    return model.align_head
