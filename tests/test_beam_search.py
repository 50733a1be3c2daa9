"""Trie-constrained beam search: the fused step against the torch CSR reference, the driver
against trie-free brute force (beam simulation and full catalogue scoring), exclusions, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pysid
from conftest import cpu_backends, random_catalogue
from pysid.ops.beam_search import constrained_beam_step
from pysid.reference.beam_search import beam_search_ref, constrained_beam_step_ref, score_catalogue_ref
from pysid.search import beam_search, exclusion_masks
from pysid.trie import Trie

NEG = float("-inf")


class TableModel:
    """A random 'model' whose logits depend only on (query, prefix): a table lookup, so every
    path that sees the same prefix gets bit-identical logits.

    ``step(tokens [B*K, t], parent)`` is the beam_search callback; ``logprobs(query, prefixes)``
    scores arbitrary rows for the brute-force catalogue scorer.
    """

    H = 101

    def __init__(self, seed, batch_size, beam_width, L, V, ties=False):
        g = torch.Generator().manual_seed(seed)
        self.K = beam_width
        self.table = torch.randn(batch_size, L, self.H, V, generator=g)
        if ties:  # few distinct values: many exact ties
            self.table = self.table.round()

    def _hash(self, prefixes):
        h = torch.zeros(prefixes.shape[0], dtype=torch.long)
        for i in range(prefixes.shape[1]):
            h = (h * 31 + prefixes[:, i] + 7) % self.H
        return h

    def logits(self, query, prefixes):
        return self.table[query, prefixes.shape[1], self._hash(prefixes)]

    def step(self, tokens, parent):
        q = torch.arange(tokens.shape[0]) // self.K
        return self.logits(q, tokens)

    def logprobs(self, query, prefixes):
        return torch.log_softmax(self.logits(query, prefixes), -1)


def check_valid(res, trie, codes, exclude=None):
    """Zero invalid items: every returned item exists, matches its codes, is unique and allowed."""
    items, out_codes, scores = res
    for b in range(items.shape[0]):
        got = [int(i) for i in items[b] if i >= 0]
        assert len(set(got)) == len(got)
        if exclude is not None:
            assert not set(got) & {int(x) for x in exclude[b]}
        n = len(got)
        assert (items[b, :n] >= 0).all() and (items[b, n:] == -1).all()  # filled slots first
        assert torch.isfinite(scores[b, :n]).all() and (scores[b, n:] == NEG).all()
        assert (out_codes[b, n:] == -1).all()
    ok = items >= 0
    if ok.any():
        assert torch.equal(trie.lookup(out_codes[ok]), items[ok])


# --------------------------------------------------------------------------- the fused step


def step_cases(*, L, vocab, M, B, K):
    """Hypothesis strategies of one beam step case, sizes up to the given bounds."""
    return dict(seed=st.integers(0, 2**31 - 1), L=st.integers(1, L), vocab=st.integers(1, vocab), M=st.integers(1, M),
                skew=st.floats(1.0, 4.0), B=st.integers(0, B), K=st.integers(1, K), ties=st.booleans(),
                banned=st.booleans())


def random_step_inputs(seed, trie, level, B, K, ties, dead_frac=0.3, banned=False):
    g = torch.Generator().manual_seed(seed)
    V = trie.vocab_sizes[level] + int(torch.randint(0, 3, (1,), generator=g))
    lp = torch.randn(B * K, V, generator=g)
    if ties:
        lp = (lp * 2).round() / 2
    lp[torch.rand(B * K, V, generator=g) < 0.1] = NEG
    n_level = trie.num_nodes[level]
    nodes = torch.randint(0, n_level, (B, K), generator=g)
    scores = torch.randn(B, K, generator=g)
    if ties:
        scores = scores.round()
    dead = torch.rand(B, K, generator=g) < dead_frac
    nodes[dead] = -1
    scores[dead] = NEG
    scores[(torch.rand(B, K, generator=g) < 0.1) & ~dead] = NEG  # live node, -inf score: dead too
    ban = None
    if banned:
        n_next = trie.num_nodes[level + 1]
        E = int(torch.randint(0, 6, (1,), generator=g))
        ban = torch.sort(torch.randint(-1, n_next, (B, E), generator=g), dim=1).values
    return lp, scores, nodes, ban


@pytest.mark.parametrize("backend", cpu_backends("constrained_beam_step"))
def test_beam_step_takes_a_levels_arrays(backend):
    """ops.beam_step runs on one level's arrays (no Trie object): the same result as the
    Trie convenience, and the same checks."""
    from pysid.ops import beam_step

    codes = random_catalogue(3, 3, [6, 5, 4], 90)
    trie = Trie(codes)
    for level in range(3):
        lp, scores, nodes, ban = random_step_inputs(level, trie, level, 3, 4, level == 1, banned=True)
        with pysid.backend(backend):
            want = constrained_beam_step(lp, scores, nodes, trie, level, banned=ban)
            got = beam_step(lp, scores, nodes, trie.offsets[level], trie.codes[level],
                            max_children=trie.max_children[level], vocab_size=trie.vocab_sizes[level], banned=ban)
            derived = beam_step(lp, scores, nodes, trie.offsets[level], trie.codes[level], banned=ban)
        for w, a, d in zip(want, got, derived):
            assert torch.equal(a, w) and torch.equal(d, w)
    with pytest.raises(ValueError, match="columns but the level has 9 codes"):
        beam_step(lp, scores, nodes, trie.offsets[2], trie.codes[2], vocab_size=9)


@settings(max_examples=80)
@given(**step_cases(L=4, vocab=12, M=200, B=5, K=12))
def test_step_matches_reference(seed, L, vocab, M, skew, B, K, ties, banned):
    codes = random_catalogue(seed, L, [vocab] * L, M, skew)
    trie = Trie(codes)
    level = seed % L
    lp, scores, nodes, ban = random_step_inputs(seed, trie, level, B, K, ties, banned=banned)
    want = constrained_beam_step_ref(lp, scores, nodes, trie.offsets[level], trie.codes[level], ban)
    with pysid.backend("cpu"):
        got = constrained_beam_step(lp, scores, nodes, trie, level, banned=ban)
    with pysid.backend("reference"):
        ref2 = constrained_beam_step(lp, scores, nodes, trie, level, banned=ban)
    for w, a, r in zip(want, got, ref2):  # exact: ties have a specified order
        assert torch.equal(a, w) and torch.equal(r, w)
    s, p, t, n = got
    ok = n >= 0
    assert (s[~ok] == NEG).all() and (p[~ok] == -1).all() and (t[~ok] == -1).all()
    if ok.any():  # each chosen child really is a child of its parent beam, with that code
        par_node = nodes.gather(1, p.clamp_min(0))[ok]
        off = trie.offsets[level].long()
        assert ((n[ok] >= off[par_node]) & (n[ok] < off[par_node + 1])).all()
        assert torch.equal(trie.codes[level].long()[n[ok]], t[ok])
    if ban is not None and ban.numel():
        for b in range(B):
            assert not set(n[b][n[b] >= 0].tolist()) & set(ban[b].tolist())


def test_step_tie_order_is_parent_then_token():
    trie = Trie(torch.tensor([[0, 0], [0, 1], [0, 2], [1, 0], [1, 2]]))
    lp = torch.zeros(2, 3)  # all children score the same
    scores = torch.zeros(1, 2)
    nodes = torch.tensor([[1, 0]])  # beam 0 at prefix (1), beam 1 at prefix (0)
    s, p, t, n = constrained_beam_step(lp, scores, nodes, trie, 1)
    assert p.tolist() == [[0, 0]] and t.tolist() == [[0, 2]]
    s, p, t, n = constrained_beam_step(lp.clone(), scores, nodes, Trie(trie_codes := torch.tensor([[0, 0], [1, 0]])), 1)
    assert p.tolist() == [[0, 1]] and t.tolist() == [[0, 0]]
    del trie_codes


def test_step_opcheck():
    trie = Trie(random_catalogue(0, 3, [5, 5, 5], 60))
    lp, scores, nodes, ban = random_step_inputs(1, trie, 1, 3, 4, False, banned=True)
    args = (lp, scores, nodes, trie.offsets[1], trie.codes[1], ban)
    torch.library.opcheck(torch.ops.pysid.constrained_beam_step, args)
    torch.library.opcheck(torch.ops.pysid.constrained_beam_step, args[:5] + (None,))


def test_step_bad_input():
    trie = Trie(torch.tensor([[0, 1], [1, 0]]))
    lp = torch.zeros(4, 2)
    scores = torch.zeros(2, 2)
    nodes = torch.zeros(2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="level must be in"):
        constrained_beam_step(lp, scores, nodes, trie, 2)
    with pytest.raises(ValueError, match="columns"):
        constrained_beam_step(lp[:, :1], scores, nodes, trie, 0)
    with pytest.raises(ValueError, match=r"\[B\*K, V\]"):
        constrained_beam_step(lp[:3], scores, nodes, trie, 0)
    with pytest.raises(TypeError, match="integer"):
        constrained_beam_step(lp, scores, nodes.float(), trie, 0)
    with pytest.raises(ValueError, match="meta"):
        constrained_beam_step(lp.to("meta"), scores, nodes, trie, 0)
    bad = lp.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        constrained_beam_step(bad, scores, nodes, trie, 0)
    with pytest.raises(ValueError, match="NaN"), pysid.backend("reference"):
        constrained_beam_step(bad, scores, nodes, trie, 0)
    with pytest.raises(ValueError, match="out of range"):
        constrained_beam_step(lp, scores, torch.full((2, 2), 5), trie, 0)


# --------------------------------------------------------------------------- the driver


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**31 - 1),
    L=st.integers(1, 4),
    vocab=st.lists(st.integers(1, 8), min_size=4, max_size=4),
    M=st.integers(1, 80),
    skew=st.floats(1.0, 4.0),
    B=st.integers(1, 3),
    K=st.integers(1, 8),
    topk_frac=st.floats(0.0, 1.0),
    n_ex=st.integers(0, 6),
)
def test_driver_matches_trie_free_beam_search(seed, L, vocab, M, skew, B, K, topk_frac, n_ex):
    codes = random_catalogue(seed, L, vocab[:L], M, skew)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randperm(3 * codes.shape[0], generator=g)[: codes.shape[0]]
    trie = Trie(codes, item_ids=ids)
    model = TableModel(seed, B, K, L, max(vocab) + 1)
    topk = max(1, round(topk_frac * K))
    exclude = [ids[torch.randint(0, len(ids), (n_ex,), generator=g)].tolist() + [10**9] for _ in range(B)]
    want = beam_search_ref(model.step, codes, ids, B, K, topk, exclude=exclude)
    for backend in cpu_backends("constrained_beam_step"):
        with pysid.backend(backend):
            got = beam_search(model.step, trie, B, K, topk=topk, exclude=exclude)
        assert torch.equal(got.items, want[0]), backend
        assert torch.equal(got.codes, want[1]), backend
        assert torch.equal(got.scores, want[2]), backend
        check_valid(got, trie, codes, exclude)


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**31 - 1),
    L=st.integers(1, 4),
    vocab=st.lists(st.integers(1, 6), min_size=4, max_size=4),
    M=st.integers(1, 40),
    skew=st.floats(1.0, 4.0),
    B=st.integers(1, 3),
    n_ex=st.integers(0, 8),
)
def test_exhaustive_beam_equals_brute_force_topk(seed, L, vocab, M, skew, B, n_ex):
    """With beam_width >= items nothing is pruned: the beam top-k is the catalogue top-k."""
    codes = random_catalogue(seed, L, vocab[:L], M, skew)
    N = codes.shape[0]
    K = N + int(seed % 3)
    model = TableModel(seed, B, K, L, max(vocab))
    g = torch.Generator().manual_seed(seed)
    exclude = [torch.randint(0, N, (n_ex,), generator=g).tolist() for _ in range(B)]
    res = beam_search(model.step, Trie(codes), B, K, exclude=exclude)
    full = score_catalogue_ref(model.logprobs, codes, B)
    for b in range(B):
        s = full[b].clone()
        s[exclude[b]] = NEG
        order = torch.sort(s, descending=True, stable=True).indices
        n = int((s > NEG).sum())
        assert torch.allclose(res.scores[b, :n], s[order[:n]], rtol=0, atol=1e-5)
        assert (res.items[b, n:] == -1).all()
        # same items where scores are not (near-)tied
        for i in range(n):
            near = (s - s[order[i]]).abs() <= 1e-5
            assert near[res.items[b, i]]


def test_fewer_items_than_beams_and_full_exclusion():
    codes = torch.tensor([[0, 0], [0, 1], [2, 1]])
    model = TableModel(0, 2, 5, 2, 3)
    res = beam_search(model.step, Trie(codes), 2, 5, exclude=[[], [0, 1, 2]])
    assert sorted(res.items[0, :3].tolist()) == [0, 1, 2] and res.items[0, 3:].tolist() == [-1, -1]
    assert (res.items[1] == -1).all() and (res.scores[1] == NEG).all() and (res.codes[1] == -1).all()


def test_exclusion_prunes_subtrees():
    codes = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0]])
    trie = Trie(codes)
    banned = exclusion_masks(trie, [[0, 1, 2], [4, 4, 99]], 2)
    # query 0: node (0) fully excluded at depth 1; leaves 0,1,2 at depth 2
    assert set(banned[0][0].tolist()) - {-1} == {0}
    assert set(banned[1][0].tolist()) - {-1} == {0, 1, 2}
    assert set(banned[0][1].tolist()) - {-1} == {2}  # (2) has one leaf, excluded
    # a beam of width 1 must still find an item for query 0 (greedy would walk into (0))
    table = torch.zeros(2, 2, 3)
    table[:, 0, 0] = 5.0  # the model loves code 0 at level 0
    res = beam_search(lambda tok, par: table[: tok.shape[0], tok.shape[1]], trie, 2, 1, exclude=[[0, 1, 2], []])
    assert res.items[0, 0] == 3 and res.items[1, 0] in (0, 1)


def test_exclude_tensor_form_matches_lists():
    codes = random_catalogue(5, 3, [4, 4, 4], 50)
    trie = Trie(codes)
    model = TableModel(5, 2, 6, 3, 4)
    ex_list = [[1, 2, 3], [7]]
    ex_t = torch.tensor([[1, 2, 3], [7, -1, -1]])
    a = beam_search(model.step, trie, 2, 6, exclude=ex_list)
    b = beam_search(model.step, trie, 2, 6, exclude=ex_t)
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)


def test_kv_cache_reordering_via_parent():
    """A stateful step_fn that keeps per-row state and reorders it with ``parent`` sees the same
    prefixes as the stateless one."""
    codes = random_catalogue(9, 4, [5, 5, 5, 3], 150)
    B, K = 3, 6
    model = TableModel(9, B, K, 4, 5)

    class Cached:
        def __init__(self):
            self.h = None

        def __call__(self, tokens, parent):
            t = tokens.shape[1]
            if t == 0:
                self.h = torch.zeros(tokens.shape[0], dtype=torch.long)
            else:
                self.h = (self.h[parent] * 31 + tokens[:, -1] + 7) % TableModel.H  # reorder, extend
            q = torch.arange(tokens.shape[0]) // K
            return model.table[q, t, self.h]

    a = beam_search(model.step, Trie(codes), B, K)
    b = beam_search(Cached(), Trie(codes), B, K)
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)


def test_normalize_false_uses_logprobs_as_given():
    codes = torch.tensor([[0], [1], [2]])
    lp = torch.tensor([[0.0, -1.0, -2.0]])
    res = beam_search(lambda tok, par: lp.expand(tok.shape[0], 3), Trie(codes), 1, 2, normalize=False)
    assert res.items.tolist() == [[0, 1]] and res.scores.tolist() == [[0.0, -1.0]]


def test_driver_bad_input():
    trie = Trie(torch.tensor([[0, 1], [1, 0]]))
    ok = lambda tok, par: torch.zeros(tok.shape[0], 2)  # noqa: E731
    with pytest.raises(ValueError, match="beam_width must be >= 1"):
        beam_search(ok, trie, 2, 0)
    with pytest.raises(TypeError, match="beam_width must be an int"):
        beam_search(ok, trie, 2, 2.0)
    with pytest.raises(ValueError, match="topk"):
        beam_search(ok, trie, 2, 2, topk=3)
    with pytest.raises(TypeError, match="callable"):
        beam_search(None, trie, 2, 2)
    with pytest.raises(ValueError, match=r"V >= 2"):
        beam_search(lambda tok, par: torch.zeros(tok.shape[0], 1), trie, 2, 2)
    with pytest.raises(ValueError, match=r"B\*K = 4"):
        beam_search(lambda tok, par: torch.zeros(3, 2), trie, 2, 2)
    with pytest.raises(ValueError, match="meta"):
        beam_search(lambda tok, par: torch.zeros(tok.shape[0], 2, device="meta"), trie, 2, 2)
    with pytest.raises(TypeError, match="floating"):
        beam_search(lambda tok, par: torch.zeros(tok.shape[0], 2, dtype=torch.long), trie, 2, 2)
    with pytest.raises(ValueError, match="NaN"):
        beam_search(lambda tok, par: torch.full((tok.shape[0], 2), float("nan")), trie, 2, 2)
    with pytest.raises(ValueError, match="one list of item ids per query"):
        beam_search(ok, trie, 2, 2, exclude=[[0]])


def test_zero_queries():
    trie = Trie(torch.tensor([[0, 1], [1, 0]]))
    res = beam_search(lambda tok, par: torch.zeros(tok.shape[0], 2), trie, 0, 3)
    assert res.items.shape == (0, 3) and res.codes.shape == (0, 3, 2)


# --------------------------------------------------------------------------- the Triton step

import os  # noqa: E402

from conftest import triton_devices  # noqa: E402

TRITON = triton_devices()
needs_triton = pytest.mark.skipif(not TRITON, reason="triton is not installed")


def _triton_step_case(seed, L, vocab, M, skew, B, K, ties, banned, dead_frac=0.3):
    codes = random_catalogue(seed, L, [vocab] * L, M, skew)
    trie = Trie(codes)
    level = seed % L
    lp, scores, nodes, ban = random_step_inputs(seed, trie, level, B, K, ties, dead_frac=dead_frac, banned=banned)
    if ties and lp.numel():  # whole rows equal: ties across parents and tokens
        lp[::2] = lp[0].clone()
    want = constrained_beam_step_ref(lp, scores, nodes, trie.offsets[level], trie.codes[level], ban)
    return trie.to(TRITON[0]), level, [x.to(TRITON[0]) if x is not None else None for x in (lp, scores, nodes, ban)], want


@needs_triton
@settings(max_examples=25)
@given(**step_cases(L=3, vocab=9, M=120, B=3, K=9))
def test_triton_step_matches_reference(seed, L, vocab, M, skew, B, K, ties, banned):
    trie, level, (lp, scores, nodes, ban), want = _triton_step_case(seed, L, vocab, M, skew, B, K, ties, banned)
    with pysid.backend("triton"):
        got = constrained_beam_step(lp, scores, nodes, trie, level, banned=ban)
    for w, a in zip(want, got):  # exact: ties have a specified order
        assert a.dtype == w.dtype and torch.equal(a.cpu(), w)


@needs_triton
@pytest.mark.parametrize("block", [(1, 1), (2, 4), (4, 2)])
def test_triton_step_multi_tile(block):
    """Tiles smaller than the candidate grid: the running top-K merge, the K-th-best filter."""
    from pysid.kernels.beam_step import beam_step_triton

    for seed in range(4):
        trie, level, (lp, scores, nodes, ban), want = _triton_step_case(
            seed, 2, 6, 60, 1.5, 2, 5 + seed, ties=seed % 2 == 0, banned=True, dead_frac=0.1)
        got = beam_step_triton(lp, scores, nodes, trie.offsets[level], trie.codes[level], ban,
                               trie.max_children[level], block_rows=block[0], block_cols=block[1])
        assert (got[4] == 0).all()
        for w, a in zip(want, got[:4]):
            assert torch.equal(a.cpu(), w)


@needs_triton
def test_triton_step_edge_cases():
    dev = TRITON[0]
    trie = Trie(torch.tensor([[0, 0], [0, 1], [0, 2], [1, 0], [1, 2]]), device=dev)
    with pysid.backend("triton"):
        # all children tie: (parent, token) order
        s, p, t, n = constrained_beam_step(torch.zeros(2, 3, device=dev), torch.zeros(1, 2, device=dev),
                                           torch.tensor([[1, 0]], device=dev), trie, 1)
        assert p.tolist() == [[0, 0]] and t.tolist() == [[0, 2]]
        # -0.0 and +0.0 are equal scores; fewer candidates than beams pad with -inf / -1
        lp = torch.tensor([[-0.0, 0.0, 0.0]] * 4, device=dev)
        lp[:, 1] = NEG
        s, p, t, n = constrained_beam_step(lp, torch.tensor([[0.0, NEG], [0.0, 0.0]], device=dev),
                                           torch.tensor([[1, 0], [-1, 1]], device=dev), trie, 1)
        assert s.tolist() == [[0.0, 0.0], [0.0, 0.0]]
        assert p.tolist() == [[0, 0], [1, 1]] and t.tolist() == [[0, 2], [0, 2]] and n.tolist() == [[3, 4], [3, 4]]
        s, p, t, n = constrained_beam_step(lp, torch.zeros(2, 2, device=dev), torch.tensor([[-1, -1], [1, -1]], device=dev),
                                           trie, 1, banned=torch.tensor([[-1, 3], [-1, 4]], device=dev))
        assert s[0].tolist() == [NEG, NEG] and (p[0] == -1).all() and (t[0] == -1).all() and (n[0] == -1).all()
        assert n[1].tolist() == [3, -1]
        if dev == "cpu":  # the interpreter path checks its status (no host sync on CUDA)
            bad = torch.zeros(4, 3)
            bad[2, 0] = float("nan")
            with pytest.raises(ValueError, match="NaN"):
                constrained_beam_step(bad, torch.zeros(2, 2), torch.tensor([[0, 1], [0, 1]]), trie, 1)
            with pytest.raises(ValueError, match="out of range"):
                constrained_beam_step(torch.zeros(4, 3), torch.zeros(2, 2), torch.full((2, 2), 5), trie, 1)
    # a direct op call without max_children derives it
    args = (torch.zeros(2, 3, device=dev), torch.zeros(1, 2, device=dev), torch.tensor([[1, 0]], device=dev),
            trie.offsets[1], trie.codes[1], None)
    with pysid.backend("triton"):
        assert torch.ops.pysid.constrained_beam_step(*args)[1].tolist() == [[0, 0]]


@needs_triton
def test_triton_backend_dispatch_errors():
    trie = Trie(torch.tensor([[0, 1], [1, 0]]))
    lp, scores, nodes = torch.zeros(2, 2), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long)
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="CUDA tensors"), pysid.backend("triton"):
            constrained_beam_step(lp, scores, nodes, trie, 0)
    for name in ("cuda",):
        with pytest.raises(RuntimeError), pysid.backend(name):
            constrained_beam_step(lp, scores, nodes, trie, 0)


@needs_triton
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triton_beam_search_matches_reference_backend(seed):
    L, B, K = 3, 2, 4
    codes = random_catalogue(seed, L, [4, 5, 3], 40, 1.5)
    dev = TRITON[0]
    trie = Trie(codes, device=dev)
    model = TableModel(seed, B, K, L, 6, ties=seed == 1)

    def step(tokens, parent):
        return model.step(tokens.cpu(), parent).to(dev)

    exclude = [[1, 2, 3], []] if seed == 2 else None
    with pysid.backend("reference"):
        want = beam_search(step, trie, B, K, exclude=exclude)
    with pysid.backend("triton"):
        got = beam_search(step, trie, B, K, exclude=exclude)
    for w, a in zip(want, got):
        assert torch.equal(a.cpu(), w.cpu())
    check_valid(tuple(x.cpu() for x in got), trie.to("cpu"), codes, exclude)


@needs_triton
def test_triton_step_opcheck():
    trie = Trie(random_catalogue(0, 3, [5, 5, 5], 60))
    lp, scores, nodes, ban = random_step_inputs(1, trie, 1, 3, 4, False, banned=True)
    dev = TRITON[0]
    args = tuple(x.to(dev) for x in (lp, scores, nodes, trie.offsets[1], trie.codes[1], ban)) + (trie.max_children[1],)
    with pysid.backend("triton"):
        torch.library.opcheck(torch.ops.pysid.constrained_beam_step, args)
        torch.library.opcheck(torch.ops.pysid.constrained_beam_step, args[:5] + (None,))


# --------------------------------------------------------------------------- GPU (run only where CUDA exists)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class DeviceTableModel(TableModel):
    """TableModel with its table on a device; pure tensor ops (CUDA-graph capturable)."""

    def __init__(self, *args, device="cuda", **kw):
        super().__init__(*args, **kw)
        self.table = self.table.to(device)

    def _hash(self, prefixes):
        h = torch.zeros(prefixes.shape[0], dtype=torch.long, device=prefixes.device)
        for i in range(prefixes.shape[1]):
            h = (h * 31 + prefixes[:, i] + 7) % self.H
        return h

    def step(self, tokens, parent):
        q = torch.arange(tokens.shape[0], device=tokens.device) // self.K
        return self.logits(q, tokens)


@requires_cuda
@pytest.mark.parametrize("seed", range(3))
def test_beam_search_cuda_matches_cpu(seed):
    L, V, B, K = 3, 40, 8, 6
    codes = random_catalogue(seed, L, [V] * L, 3000)
    exclude = [[int(i) for i in torch.randint(0, codes.shape[0], (5,))] for _ in range(B)]
    cpu = DeviceTableModel(seed, B, K, L, V, device="cpu", ties=seed == 1)
    gpu = DeviceTableModel(seed, B, K, L, V, device="cuda", ties=seed == 1)
    want = beam_search(cpu.step, Trie(codes), B, K, exclude=exclude)
    trie = Trie(codes, device="cuda")
    for name in ("auto", "triton"):
        with pysid.backend(name):
            got = beam_search(gpu.step, trie, B, K, exclude=exclude)
        assert torch.equal(got.items.cpu(), want.items)
        torch.testing.assert_close(got.scores.cpu(), want.scores, rtol=1e-5, atol=1e-5)
        check_valid(tuple(t.cpu() for t in got), Trie(codes), codes, exclude)


@requires_cuda
def test_beam_search_cuda_graph_capture():
    """The decode loop has fixed shapes and no host sync: it captures in a CUDA graph and
    replays with new model inputs."""
    L, V, B, K = 3, 64, 16, 8
    codes = random_catalogue(7, L, [V] * L, 5000)
    trie = Trie(codes, device="cuda")
    model = DeviceTableModel(7, B, K, L, V, device="cuda")
    eager = beam_search(model.step, trie, B, K)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (Triton compilation) outside the capture
        beam_search(model.step, trie, B, K)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = beam_search(model.step, trie, B, K)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static.items, eager.items)
    model.table.copy_(torch.randn_like(model.table))  # new inputs, same graph
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static.items, beam_search(model.step, trie, B, K).items)


def test_banned_in_any_order_and_direct_op_dtypes():
    trie = Trie(torch.tensor([[0, 0], [1, 0], [2, 0]]))
    lp = torch.zeros(2, 3)
    lp[0, 1] = 1.0
    bs = torch.tensor([[0.0, NEG]])
    nodes = torch.tensor([[0, -1]])
    for banned in ([[2, 1, -1]], [[-1, 1, 2]], [[1, -1, 2]]):
        s, p, t, n = constrained_beam_step(lp, bs, nodes, trie, 0, banned=torch.tensor(banned))
        assert t.tolist() == [[0, -1]]
    # the registered op normalises dtypes itself (a direct call must not misread memory)
    want = torch.ops.pysid.constrained_beam_step(lp, bs, nodes, trie.offsets[0], trie.codes[0], None, -1)
    got = torch.ops.pysid.constrained_beam_step(lp.double(), bs, nodes.int(), trie.offsets[0].long(), trie.codes[0], None, -1)
    for a, b in zip(want, got):
        assert torch.equal(a, b)
