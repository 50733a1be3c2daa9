"""Pure-PyTorch reference implementations: the specification and the test oracle.

Nothing here imports from the rest of pysid. Every function is short, readable
and runs in float64 when given float64 inputs.
"""

from .beam_search import beam_search_ref, constrained_beam_step_ref, score_catalogue_ref
from .trie import DuplicateCodesError, build_trie_ref, walk_trie_ref
from .kmeans import (canonical_scores_ref, kmeans_assign_candidates_ref, kmeans_assign_canonical_ref, kmeans_topm_ref,
                     kmeans_update_ref, kmeanspp_candidates_ref)
from .residual_quantize import residual_quantize_ref, rq_vae_loss_ref

__all__ = [
    "DuplicateCodesError",
    "beam_search_ref",
    "build_trie_ref",
    "canonical_scores_ref",
    "constrained_beam_step_ref",
    "kmeans_assign_candidates_ref",
    "kmeans_assign_canonical_ref",
    "kmeans_topm_ref",
    "kmeans_update_ref",
    "kmeanspp_candidates_ref",
    "residual_quantize_ref",
    "rq_vae_loss_ref",
    "score_catalogue_ref",
    "walk_trie_ref",
]
