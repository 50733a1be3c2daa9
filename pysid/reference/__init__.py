"""Pure-PyTorch reference implementations: the specification and the test oracle.

Nothing here imports from the rest of pysid. Every function is short, readable
and runs in float64 when given float64 inputs.
"""

from .residual_quantize import residual_quantize_ref, rq_vae_loss_ref

__all__ = ["residual_quantize_ref", "rq_vae_loss_ref"]
