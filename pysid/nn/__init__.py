"""Trainable modules for Semantic IDs.

    ResidualQuantizer   residual vector quantizer: k-means init, gradient or EMA codebooks,
                        dead-code reset, balanced (Sinkhorn) levels, progressive masking, DDP-safe
    RQVAE               TIGER's RQ-VAE (MLP encoder -> ResidualQuantizer -> MLP decoder)
    train_rqvae         Adam training loop for an RQVAE on a tensor of item embeddings (optionally
                        aligned with collaborative embeddings: align_with=)
    fuse                concatenation fusion of several embeddings (per-input L2 norm and weight)
    FusedEncoder        learned fusion of several inputs (per-input projection, or concat + Linear)
    alignment_loss      symmetric in-batch InfoNCE between paired rows (DAS / LETTER alignment)
"""

from .hybrid import FusedEncoder, alignment_loss, fuse
from .quantizer import QuantizerOutput, ResidualQuantizer, sinkhorn_codes
from .rqvae import RQVAE, RQVAEOutput, train_rqvae

__all__ = [
    "FusedEncoder",
    "QuantizerOutput",
    "RQVAE",
    "RQVAEOutput",
    "ResidualQuantizer",
    "alignment_loss",
    "fuse",
    "sinkhorn_codes",
    "train_rqvae",
]
