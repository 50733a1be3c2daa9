"""HuggingFace transformers integration: trie-constrained ``model.generate``.

``TrieLogitsProcessor`` is a vectorized drop-in for ``prefix_allowed_tokens_fn``:
one trie walk and one scatter per step for all beams, instead of a Python
callback per beam::

    from pysid.integrations.transformers import TrieLogitsProcessor
    proc = TrieLogitsProcessor(trie, token_offset=[10, 266, 522, 778], prompt_length=input_ids.shape[1])
    out = model.generate(input_ids, num_beams=20, num_return_sequences=20,
                         max_new_tokens=trie.num_levels, logits_processor=[proc])

transformers is an optional dependency (``pip install transformers``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..trie import Trie

try:  # transformers is optional: without it the processor is a plain callable
    from transformers import LogitsProcessor as _Base
except ImportError:  # pragma: no cover - depends on the environment
    _Base = object

__all__ = ["TrieLogitsProcessor"]


class TrieLogitsProcessor(_Base):  # type: ignore[misc, valid-type]
    """Mask every token that does not extend a beam's Semantic ID to a valid trie prefix.

    Args:
        trie: the catalogue's :class:`pysid.Trie`.
        token_offset: token id of code 0 of each level: an int (the same for every level) or
            one int per level. Code c of level t is token ``token_offset[t] + c``.
        prompt_length: number of tokens before the Semantic ID in ``input_ids`` (the prompt,
            or 1 for an encoder-decoder's decoder start token). None: inferred - a call that is
            not one token longer than the previous call, or has another number of rows, starts a
            new ``generate``. The inference cannot tell a new prompt that happens to be exactly
            one token longer than the last sequence of the same batch size: pass
            ``prompt_length`` or call :meth:`reset` between ``generate`` calls when reusing it.
        eos_token_id: once the L codes are out, only this token is allowed (None: leave the
            scores unchanged after the last level).

    Called as ``processor(input_ids [N, cur_len], scores [N, vocab]) -> scores`` with the
    disallowed tokens set to -inf, exactly like ``prefix_allowed_tokens_fn``.
    """

    def __init__(
        self,
        trie: Trie,
        token_offset: Union[int, Sequence[int]] = 0,
        *,
        prompt_length: Optional[int] = None,
        eos_token_id: Optional[int] = None,
    ) -> None:
        if not isinstance(trie, Trie):
            raise TypeError(f"trie must be a pysid.Trie, got {type(trie).__name__}")
        L = trie.num_levels
        offs = [int(token_offset)] * L if isinstance(token_offset, int) else [int(o) for o in token_offset]
        if len(offs) != L:
            raise ValueError(f"token_offset has {len(offs)} entries for a trie of {L} levels")
        if any(o < 0 for o in offs):
            raise ValueError("token_offset must be >= 0")
        if prompt_length is not None and prompt_length < 0:
            raise ValueError("prompt_length must be >= 0")
        self.trie = trie
        self.token_offset = offs
        self.prompt_length = prompt_length
        self.eos_token_id = eos_token_id
        self._start: Optional[int] = None
        self._last = -1
        self._rows = -1
        self._offs = torch.tensor(offs, dtype=torch.long)

    def reset(self) -> None:
        """Forget the inferred prompt length (when ``prompt_length`` is None)."""
        self._start, self._last, self._rows = None, -1, -1

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        cur = input_ids.shape[1]
        if self.prompt_length is not None:
            start = self.prompt_length
        else:
            # a new generate(): not the next length of the last call, or another batch
            if self._start is None or cur != self._last + 1 or input_ids.shape[0] != self._rows:
                self._start = cur
            self._last, self._rows = cur, input_ids.shape[0]
            start = self._start
        t = cur - start
        if t < 0:
            raise ValueError(f"input_ids has {cur} tokens, fewer than prompt_length={start}")
        V = scores.shape[-1]
        L = self.trie.num_levels
        if t >= L:
            if self.eos_token_id is None:
                return scores
            out = torch.full_like(scores, float("-inf"))
            out[:, self.eos_token_id] = scores[:, self.eos_token_id]
            return out
        dev = self.trie.device
        prefix = input_ids[:, start:].to(dev) - self._offs[:t].to(dev)
        child, _ = self.trie.children(prefix)  # [N, W] codes, -1 padded
        tok = torch.where(child >= 0, child + self.token_offset[t], V).clamp(max=V)  # padding -> column V
        mask = torch.full((scores.shape[0], V + 1), float("-inf"), dtype=scores.dtype, device=dev)
        mask.scatter_(1, tok, 0.0)
        return scores + mask[:, :V].to(scores.device)
