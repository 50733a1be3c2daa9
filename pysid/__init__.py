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

# Lazy package (PEP 562): ``import pysid`` and ``pysid.__version__`` do not import torch; each
# public name is imported from its module on first access (``pysid.X`` or ``from pysid import X``).
import importlib as _importlib
import types as _types
import sys as _sys

__version__ = "0.1.0"

_LAZY = {
    "backend": "._backend",
    "backends": ".ops.registry",
    "get_backend": "._backend",
    "KMeansResult": ".kmeans",
    "kmeans": ".kmeans",
    "residual_kmeans": ".kmeans",
    "ResidualQuantizeOutput": ".ops",
    "constrained_beam_step": ".ops",
    "residual_quantize": ".ops",
    "rq_vae_loss": ".ops",
    "BeamSearchOutput": ".search",
    "beam_search": ".search",
    "SIDReport": ".metrics",
    "sid_report": ".metrics",
    "SemanticIds": ".sid",
    "fit": ".sid",
    "Trie": ".trie",
}
_SUBMODULES = ("cli", "collab", "data", "dedup", "integrations", "kmeans", "metrics", "nn", "ops", "reference", "search",
               "sid", "stream", "trie")

__all__ = [
    "BeamSearchOutput",
    "KMeansResult",
    "ResidualQuantizeOutput",
    "SIDReport",
    "SemanticIds",
    "Trie",
    "__version__",
    "backend",
    "backends",
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


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is not None:
        value = getattr(_importlib.import_module(mod, __name__), name)
        if name != "kmeans":  # pysid.kmeans is a property of the module class (below)
            globals()[name] = value
        return value
    if name in _SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


class _Package(_types.ModuleType):
    """``pysid.kmeans`` names the function (as ``from .kmeans import kmeans`` made it), even after
    the submodule ``pysid.kmeans`` is imported, which would otherwise rebind the attribute."""

    @property
    def kmeans(self):
        override = self.__dict__.get("_kmeans_override")
        return override if override is not None else _importlib.import_module(".kmeans", __name__).kmeans

    @kmeans.setter
    def kmeans(self, value) -> None:
        if not isinstance(value, _types.ModuleType):  # the import system binds the submodule: ignored
            self.__dict__["_kmeans_override"] = value  # e.g. a test's monkeypatch


_sys.modules[__name__].__class__ = _Package
