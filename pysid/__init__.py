"""pysid: native kernels for Semantic IDs in generative recommenders.

Ops:
    residual_quantize  fused residual codeword search (greedy or beam), autograd-aware
    rq_vae_loss        TIGER's RQ-VAE quantization loss from the codes of a pass

Backend control: ``pysid.backend("reference" | "native" | "cpu" | "triton" | "cuda" | "auto")``
context manager or the ``PYSID_BACKEND`` environment variable.
"""

from ._backend import backend, get_backend
from .ops import ResidualQuantizeOutput, residual_quantize, rq_vae_loss

__version__ = "0.1.0"

__all__ = ["ResidualQuantizeOutput", "backend", "get_backend", "residual_quantize", "rq_vae_loss", "__version__"]
