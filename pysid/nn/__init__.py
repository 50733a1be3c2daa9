"""Trainable modules for Semantic IDs.

    ResidualQuantizer   residual vector quantizer: k-means init, gradient or EMA codebooks,
                        dead-code reset, balanced (Sinkhorn) levels, progressive masking, DDP-safe
    RQVAE               TIGER's RQ-VAE (MLP encoder -> ResidualQuantizer -> MLP decoder)
    train_rqvae         Adam training loop for an RQVAE on a tensor of item embeddings
"""

from .quantizer import QuantizerOutput, ResidualQuantizer, sinkhorn_codes
from .rqvae import RQVAE, RQVAEOutput, train_rqvae

__all__ = ["QuantizerOutput", "RQVAE", "RQVAEOutput", "ResidualQuantizer", "sinkhorn_codes", "train_rqvae"]
