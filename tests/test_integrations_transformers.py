"""TrieLogitsProcessor against transformers' own prefix_allowed_tokens_fn beam search, and
pysid.beam_search against both, on a tiny random GPT-2."""

from __future__ import annotations

import pytest
import torch

import transformers  # noqa: E402  (installed by the [test] extra: a missing package fails, never skips)

from pysid.integrations.transformers import TrieLogitsProcessor  # noqa: E402
from pysid.search import beam_search  # noqa: E402
from pysid.trie import Trie  # noqa: E402

L, V, B, K, P = 3, 6, 3, 4, 2
OFFS = [1 + V * t for t in range(L)]  # token 0: pad/bos; level t codes: OFFS[t] .. OFFS[t]+V-1


def tiny_model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=1 + L * V, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=None, pad_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # sharpen the random model so scores are well separated
        model.lm_head.weight.mul_(20)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def catalogue():
    g = torch.Generator().manual_seed(1)
    codes = torch.unique(torch.randint(0, V, (120, L), generator=g), dim=0)
    return codes[torch.randperm(codes.shape[0], generator=g)]


def generate(model, prompt, **kw):
    out = model.generate(prompt, num_beams=K, num_return_sequences=K, max_new_tokens=L, do_sample=False,
                         length_penalty=0.0, early_stopping=False, return_dict_in_generate=True,
                         output_scores=True, **kw)
    return out.sequences[:, P:].reshape(B, K, L), out.sequences_scores.reshape(B, K)


def test_processor_matches_prefix_allowed_tokens_fn_and_beam_search():
    model = tiny_model()
    codes = catalogue()
    trie = Trie(codes)
    valid = {tuple(r) for r in codes.tolist()}
    prompt = torch.randint(1, 1 + L * V, (B, P), generator=torch.Generator().manual_seed(2))

    def allowed(batch_id, sent):
        prefix = [int(x) - OFFS[i] for i, x in enumerate(sent[P:].tolist())]
        t = len(prefix)
        return sorted({OFFS[t] + r[t] for r in valid if list(r[:t]) == prefix})

    with torch.no_grad():
        seq_a, sc_a = generate(model, prompt, prefix_allowed_tokens_fn=allowed)
        seq_b, sc_b = generate(model, prompt, logits_processor=[TrieLogitsProcessor(trie, OFFS, prompt_length=P)])
        seq_c, sc_c = generate(model, prompt, logits_processor=[TrieLogitsProcessor(trie, OFFS)])  # inferred start
    assert torch.equal(seq_a, seq_b) and torch.equal(seq_a, seq_c)
    assert torch.allclose(sc_a, sc_b) and torch.allclose(sc_a, sc_c)
    codes_a = seq_a - torch.tensor(OFFS)
    items_a = trie.lookup(codes_a.reshape(-1, L)).reshape(B, K)
    assert (items_a >= 0).all()  # zero invalid items

    # pysid.beam_search with the same model (no KV cache: the full sequence each step)
    def step_fn(tokens, parent):
        t = tokens.shape[1]
        ids = torch.cat([prompt.repeat_interleave(K, 0), tokens + torch.tensor(OFFS[:t], dtype=torch.long)], 1)
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[:, -1].float(), -1)
        return lp[:, OFFS[t] : OFFS[t] + V]  # log-probs over the full vocabulary, this level's codes

    res = beam_search(step_fn, trie, B, K, normalize=False)
    for b in range(B):  # same items; transformers orders its returned beams by score too
        assert res.items[b].tolist() == items_a[b].tolist()
    assert torch.allclose(res.scores, sc_a, atol=1e-4)


def test_processor_bad_input():
    trie = Trie(catalogue())
    with pytest.raises(ValueError, match="entries"):
        TrieLogitsProcessor(trie, [0, 1])
    with pytest.raises(TypeError):
        TrieLogitsProcessor(codes := catalogue())  # noqa: F841
    proc = TrieLogitsProcessor(trie, OFFS, prompt_length=P, eos_token_id=0)
    scores = torch.zeros(2, 1 + L * V)
    done = proc(torch.ones(2, P + L, dtype=torch.long), scores)
    assert torch.isfinite(done).sum() == 2 and (done[:, 0] == 0).all()
    with pytest.raises(ValueError, match="prompt_length"):
        proc(torch.ones(2, 1, dtype=torch.long), scores)


def test_processor_restarts_on_a_new_generate():
    """Without prompt_length, a call that does not extend the last one starts a new generate."""
    trie = Trie(torch.tensor([[0, 1, 2], [3, 4, 5]]))
    proc = TrieLogitsProcessor(trie, 10)
    vocab = 20

    def allowed(ids):
        out = proc(ids, torch.zeros(ids.shape[0], vocab))
        return set(torch.isfinite(out[0]).nonzero().flatten().tolist())

    assert allowed(torch.zeros(2, 4, dtype=torch.long)) == {10, 13}  # prompt of 4: level 0
    assert allowed(torch.tensor([[0, 0, 0, 0, 10]] * 2)) == {11}
    assert allowed(torch.tensor([[0, 0, 0, 0, 10, 11]] * 2)) == {12}
    assert allowed(torch.zeros(2, 8, dtype=torch.long)) == {10, 13}  # longer prompt: restarts
    assert allowed(torch.zeros(3, 9, dtype=torch.long)) == {10, 13}  # other batch: restarts
