"""pysid: native kernels for Semantic IDs in generative recommenders.

Ops:
    residual_quantize  fused residual codeword search (greedy or beam), autograd-aware
    rq_vae_loss        TIGER's RQ-VAE quantization loss from the codes of a pass
    Trie               compact per-level CSR index of the valid Semantic IDs
    beam_search        exact trie-constrained beam search over a model's next-code logits
    kmeans             greedy k-means++ seeding + Lloyd (balanced, weighted, multi-process)
    residual_kmeans    codebooks trained level by level on residuals (RQ-KMeans)
    fit / SemanticIds  embeddings -> unique Semantic IDs (dedup, tokens, trie, save/load, cold start)
    sid_report         metrics of a SID table (usage, perplexity, collisions, reconstruction)
    nn                 ResidualQuantizer, RQVAE, train_rqvae (modules)
    collab, data       collaborative item embeddings from sequences; Amazon sequence files
    stream, dedup      catalogue scale: shards on disk -> Parquet IDs (resumable); suffix dedup, sharded

Backend control: ``pysid.backend("reference" | "native" | "cpu" | "triton" | "cuda" | "auto")``
context manager or the ``PYSID_BACKEND`` environment variable.
"""

from ._backend import backend, get_backend
from .kmeans import KMeansResult, kmeans, residual_kmeans
from .ops import ResidualQuantizeOutput, constrained_beam_step, residual_quantize, rq_vae_loss
from .search import BeamSearchOutput, beam_search
from . import collab, data, dedup, metrics, nn, stream
from .metrics import SIDReport, sid_report
from .sid import SemanticIds, fit
from .trie import Trie

__version__ = "0.1.0"

__all__ = [
    "BeamSearchOutput",
    "KMeansResult",
    "ResidualQuantizeOutput",
    "SIDReport",
    "SemanticIds",
    "Trie",
    "__version__",
    "backend",
    "beam_search",
    "constrained_beam_step",
    "fit",
    "get_backend",
    "kmeans",
    "residual_kmeans",
    "residual_quantize",
    "rq_vae_loss",
    "sid_report",
]
