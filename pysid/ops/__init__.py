"""PyTorch ops (``torch.ops.pysid.*``): validation, backend dispatch and autograd."""

from .residual_quantize import ResidualQuantizeOutput, residual_quantize, rq_vae_loss

__all__ = ["ResidualQuantizeOutput", "residual_quantize", "rq_vae_loss"]
