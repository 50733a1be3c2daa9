"""PyTorch ops (``torch.ops.pysid.*``): validation, backend dispatch and autograd."""

from .beam_search import beam_step, constrained_beam_step
from .residual_quantize import ResidualQuantizeOutput, residual_quantize, rq_vae_loss

__all__ = ["ResidualQuantizeOutput", "beam_step", "constrained_beam_step", "residual_quantize", "rq_vae_loss"]
