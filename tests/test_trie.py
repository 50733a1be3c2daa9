"""pysid.Trie: the native build against the reference CSR, lookups, children, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pysid
from conftest import cpu_backends, random_catalogue
from pysid.reference.beam_search import build_trie_ref, walk_trie_ref
from pysid.trie import Trie


catalogues = st.builds(
    lambda seed, L, vocab, M, skew: random_catalogue(seed, L, vocab[:L], M, skew),
    st.integers(0, 2**31 - 1),
    st.integers(1, 5),
    st.lists(st.integers(1, 9), min_size=5, max_size=5),
    st.integers(1, 120),
    st.floats(1.0, 4.0),
)


@settings(max_examples=60)
@given(codes=catalogues)
def test_build_matches_reference(codes):
    t = Trie(codes)
    off, cc, perm = build_trie_ref(codes)
    assert t.num_items == codes.shape[0] and t.num_levels == codes.shape[1]
    for d in range(t.num_levels):
        assert t.offsets[d].dtype == torch.int32 and t.codes[d].dtype == torch.int16
        assert torch.equal(t.offsets[d].long(), off[d]), d
        assert torch.equal(t.codes[d].long(), cc[d]), d
    assert torch.equal(t.item_ids.long(), perm)
    assert t.num_nodes[0] == 1 and t.num_nodes[-1] == codes.shape[0]
    # the reference backend builds the same arrays
    with pysid.backend("reference"):
        tr = Trie(codes)
    for a, b in zip(t.offsets + t.codes + [t.item_ids], tr.offsets + tr.codes + [tr.item_ids]):
        assert a.dtype == b.dtype and torch.equal(a, b)


@settings(max_examples=60)
@given(codes=catalogues, seed=st.integers(0, 2**31 - 1))
def test_lookup_and_children(codes, seed):
    g = torch.Generator().manual_seed(seed)
    M, L = codes.shape
    ids = torch.randperm(10 * M, generator=g)[:M] + 5
    t = Trie(codes, item_ids=ids)
    assert torch.equal(t.lookup(codes), ids)
    # random tuples: an item id exactly when the tuple is in the catalogue
    vocab = torch.tensor(t.vocab_sizes)
    probe = (torch.rand(50, L, generator=g) * (vocab + 1)).long()  # includes out-of-range codes
    known = {tuple(r): int(i) for r, i in zip(codes.tolist(), ids.tolist())}
    want = torch.tensor([known.get(tuple(r), -1) for r in probe.tolist()])
    assert torch.equal(t.lookup(probe), want)
    with pysid.backend("reference"):
        assert torch.equal(t.lookup(probe), want)
    # children of every prefix of every length
    for tl in range(L):
        prefixes = torch.cat([codes[:, :tl], probe[:, :tl]])
        ch, cnt = t.children(prefixes)
        assert ch.shape == (prefixes.shape[0], t.max_children[tl])
        for p, row, c in zip(prefixes.tolist(), ch.tolist(), cnt.tolist()):
            expect = sorted({r[tl] for r in codes.tolist() if r[:tl] == p})
            assert row[:c] == expect and all(x == -1 for x in row[c:])
        nodes = t.nodes(prefixes)
        assert torch.equal(nodes, walk_trie_ref(t.offsets, t.codes, prefixes))


def test_save_load_roundtrip(tmp_path):
    codes = random_catalogue(3, 4, [7, 5, 9, 3], 300, 2.0)
    ids = torch.arange(codes.shape[0]) * 2**33  # ids beyond int32: stored as int64
    t = Trie(codes, item_ids=ids)
    assert t.item_ids.dtype == torch.int64
    path = tmp_path / "trie.pt"
    t.save(path)
    u = Trie.load(path)
    assert u.vocab_sizes == t.vocab_sizes and u.num_items == t.num_items and u.nbytes == t.nbytes
    for a, b in zip(t.offsets + t.codes + [t.item_ids], u.offsets + u.codes + [u.item_ids]):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(u.lookup(codes), ids)
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a saved pysid.Trie"):
        Trie.load(tmp_path / "other.pt")


def test_compact_size_and_dtypes():
    g = torch.Generator().manual_seed(0)
    M = 100_000  # the goal's shape: 3 x 256 codes + a disambiguation code, <= 16 bytes per item
    codes = torch.cat([torch.randint(0, 256, (M, 3), generator=g), torch.zeros(M, 1, dtype=torch.long)], 1)
    codes = torch.unique(codes, dim=0)
    t = Trie(codes)
    assert t.item_ids.dtype == torch.int32 and t.codes[0].dtype == torch.int16
    assert t.nbytes / t.num_items <= 16
    big = Trie(torch.tensor([[0, 40000], [1, 5]]))  # a level with > 32768 codes: int32 codes
    assert big.codes[1].dtype == torch.int32
    assert big.lookup(torch.tensor([[0, 40000], [1, 40000]])).tolist() == [0, -1]


def test_vocab_sizes_and_numpy_and_lists():
    t = Trie(np.array([[0, 1], [1, 0]]), vocab_sizes=[4, 8])
    assert t.vocab_sizes == (4, 8)
    t2 = Trie([[0, 1], [1, 0]], item_ids=[10, 20])
    assert t2.lookup([[1, 0], [0, 1], [1, 1]]).tolist() == [20, 10, -1]


def test_empty_catalogue():
    t = Trie(torch.zeros(0, 3, dtype=torch.long), vocab_sizes=[2, 2, 2])
    assert t.num_items == 0 and t.num_nodes == (1, 0, 0, 0)
    assert t.lookup(torch.zeros(2, 3, dtype=torch.long)).tolist() == [-1, -1]


def test_duplicates_name_the_items():
    codes = torch.tensor([[0, 1, 2], [1, 1, 1], [3, 0, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"items 1 and 3 .*\(1, 1, 1\)"):
        Trie(codes)
    with pytest.raises(ValueError, match=r"items 101 and 103"):
        Trie(codes, item_ids=[100, 101, 102, 103])
    with pytest.raises(ValueError, match=r"duplicate"), pysid.backend("reference"):
        Trie(codes)


@pytest.mark.parametrize("backend", cpu_backends("trie_build"))
def test_duplicates_are_a_typed_error_from_every_build(backend):
    """Both builds raise DuplicateCodesError (a ValueError) carrying the two rows; the Trie
    adds the item ids. No message is parsed on the way."""
    from pysid.reference.trie import DuplicateCodesError as RefError
    from pysid.trie import DuplicateCodesError, trie_build

    assert DuplicateCodesError is RefError and issubclass(DuplicateCodesError, ValueError)
    codes = torch.tensor([[0, 1, 2], [1, 1, 1], [3, 0, 0], [1, 1, 1], [3, 0, 0]])
    with pysid.backend(backend):
        with pytest.raises(DuplicateCodesError) as raw:
            trie_build(codes, [4, 2, 3], torch.int16)
        with pytest.raises(DuplicateCodesError) as e:
            Trie(codes, item_ids=[10, 11, 12, 13, 14])
    a, b = raw.value.rows
    assert a != b and torch.equal(codes[a], codes[b])
    assert set(raw.value.rows) in ({1, 3}, {2, 4})
    assert e.value.rows == raw.value.rows and e.value.items == (10 + a, 10 + b)
    assert f"items {10 + a} and {10 + b}" in str(e.value)
    with pytest.raises(DuplicateCodesError) as ref:
        build_trie_ref(codes)
    assert set(ref.value.rows) in ({1, 3}, {2, 4})


@pytest.mark.parametrize(
    "codes, kwargs, exc, match",
    [
        (torch.tensor([[0, -1]]), {}, ValueError, "must be >= 0"),
        (torch.tensor([[0, 5]]), {"vocab_sizes": [2, 5]}, ValueError, "out of range"),
        (torch.tensor([[0, 1]]), {"vocab_sizes": [2]}, ValueError, "vocab_sizes has 1 entries"),
        (torch.tensor([0, 1]), {}, ValueError, "2 dimensions"),
        (torch.zeros(2, 2, 2, dtype=torch.long), {}, ValueError, "2 dimensions"),
        (torch.zeros(2, 0, dtype=torch.long), {}, ValueError, "at least one level"),
        ([[0, 1], [1]], {}, ValueError, "ragged"),
        (torch.tensor([[0.0, 1.0]]), {}, TypeError, "integer"),
        (torch.tensor([[0, 1], [1, 0]]), {"item_ids": [1]}, ValueError, "1 entries for 2"),
        (torch.tensor([[0, 1], [1, 0]]), {"item_ids": [4, 4]}, ValueError, "unique"),
        (torch.tensor([[0, 1], [1, 0]]), {"item_ids": [-1, 4]}, ValueError, ">= 0"),
    ],
)
def test_bad_input(codes, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Trie(codes, **kwargs)


def test_bad_queries():
    t = Trie(torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        t.lookup(torch.tensor([[0]]))
    with pytest.raises(ValueError, match="complete items"):
        t.children(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="levels"):
        t.nodes(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(TypeError):
        t.lookup(torch.tensor([[0.5, 1.0]]))


def test_native_backend_is_used():
    # the C++ build must be present and agree with the reference on a larger catalogue
    codes = random_catalogue(11, 4, [64, 64, 64, 4], 50000)
    with pysid.backend("cpu"):
        t = Trie(codes)
    off, cc, perm = build_trie_ref(codes)
    assert all(torch.equal(a.long(), b) for a, b in zip(t.offsets, off))
    assert torch.equal(t.item_ids.long(), perm)


def test_empty_catalogue_children_and_search():
    t = Trie(torch.zeros(0, 3, dtype=torch.long))
    codes, counts = t.children([[0]])
    assert codes.shape == (1, 0) and counts.tolist() == [0]
    f = lambda tokens, parent: torch.zeros(tokens.shape[0], 4)  # noqa: E731
    for name in ["auto"] + cpu_backends("trie_walk"):
        with pysid.backend(name):
            out = pysid.beam_search(f, t, 2, 3, exclude=[[1], [2]])
        assert (out.items == -1).all()


def test_load_rejects_corrupt_files(tmp_path):
    t = Trie(torch.tensor([[0, 1], [0, 2], [3, 1]]))
    good = tmp_path / "t.pt"
    t.save(good)
    sd = torch.load(good, weights_only=True)
    sd["offsets"][1][1] = 10**9  # would make the native walk read out of bounds
    torch.save(sd, tmp_path / "bad1.pt")
    sd = torch.load(good, weights_only=True)
    sd["offsets"] = [o.long() for o in sd["offsets"]]  # wrong dtype: would be misread
    torch.save(sd, tmp_path / "bad2.pt")
    sd = torch.load(good, weights_only=True)
    sd["item_ids"] = sd["item_ids"][:2]
    torch.save(sd, tmp_path / "bad3.pt")
    for name in ("bad1.pt", "bad2.pt", "bad3.pt"):
        with pytest.raises(ValueError, match="not a valid pysid.Trie"):
            Trie.load(tmp_path / name)
    assert torch.equal(Trie.load(good).lookup(torch.tensor([[3, 1]])), torch.tensor([2]))
