"""pysid.data (Amazon sequence files, leave-one-out) and pysid.collab (PPMI-SVD item vectors)."""

import math
import os

import pytest
import torch

from pysid.collab import cooccurrence, item_embeddings
from pysid.data import LeaveOneOut, leave_one_out, read_sequences

AMAZON = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "amazon")
TOYS = os.path.join(AMAZON, "toys.txt")
needs_toys = pytest.mark.skipif(not os.path.exists(TOYS), reason="../shared/data/amazon/toys.txt not present")


# --------------------------------------------------------------------------- read_sequences
def test_read_sequences_format(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 1 2 3\n\n2 4 5 \n  3   7\t8 9 10\n10 3\n")
    assert read_sequences(p) == [[1, 2, 3], [4, 5], [7, 8, 9, 10], [3]]
    assert read_sequences(str(p)) == read_sequences(p)


def test_read_sequences_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_sequences(tmp_path / "nope.txt")
    with pytest.raises(IsADirectoryError):
        read_sequences(tmp_path)
    p = tmp_path / "bad.txt"
    p.write_text("1 2 3\n2 4 x5 6\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: .*'x5'"):
        read_sequences(p)
    p.write_text("1 2 3\n\n3 4 5\n4\n")
    with pytest.raises(ValueError, match=r":4: user 4 has no item"):
        read_sequences(p)
    p.write_text("1 2 -3\n")
    with pytest.raises(ValueError, match=r":1: negative id -3"):
        read_sequences(p)
    p.write_text("1 2 3.5\n")
    with pytest.raises(ValueError, match=r":1: .*'3.5'"):
        read_sequences(p)


@needs_toys
def test_read_toys():
    seqs = read_sequences(TOYS)
    assert len(seqs) == 19412
    assert sum(map(len, seqs)) == 167597
    assert seqs[0] == [1, 2, 3, 4, 5]
    assert seqs[2] == [9, 10, 11, 12, 4, 5, 13, 14, 15]
    assert min(map(min, seqs)) == 1 and max(map(max, seqs)) == 11924
    assert min(map(len, seqs)) >= 5


# --------------------------------------------------------------------------- leave_one_out
def test_leave_one_out_hand():
    seqs = [[1, 2, 3, 4, 5, 6], [7, 8, 9], torch.tensor([10, 11, 12, 13])]
    sp = leave_one_out(seqs, max_history=3)
    assert isinstance(sp, LeaveOneOut)
    assert sp.train == [[1, 2, 3, 4], [7], [10, 11]]
    assert sp.valid_history == [[2, 3, 4], [7], [10, 11]]
    assert sp.valid_target == [5, 8, 12]
    assert sp.test_history == [[3, 4, 5], [7, 8], [10, 11, 12]]
    assert sp.test_target == [6, 9, 13]
    assert sp.max_history == 3
    h, t = sp.train_examples()
    assert h == [[1], [1, 2], [1, 2, 3], [10]]
    assert t == [2, 3, 4, 11]
    sp2 = leave_one_out([[1, 2, 3, 4, 5, 6]], max_history=2)
    assert sp2.train_examples() == ([[1], [1, 2], [2, 3]], [2, 3, 4])


def test_leave_one_out_no_cap_and_default():
    s = list(range(1, 31))
    sp = leave_one_out([s], max_history=None)
    assert sp.test_history == [s[:-1]] and sp.valid_history == [s[:-2]]
    sp = leave_one_out([s])  # default cap 20
    assert sp.test_history == [s[9:29]] and len(sp.test_history[0]) == 20
    assert sp.valid_history == [s[8:28]] and sp.train == [s[:28]]
    assert sp.test_target == [30] and sp.valid_target == [29]
    h, _ = sp.train_examples()
    assert max(map(len, h)) == 20


def test_leave_one_out_errors():
    with pytest.raises(ValueError, match="sequence 1 has 2 item"):
        leave_one_out([[1, 2, 3], [1, 2]])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_history"):
            leave_one_out([[1, 2, 3]], max_history=bad)


@needs_toys
def test_leave_one_out_toys():
    seqs = read_sequences(TOYS)
    sp = leave_one_out(seqs)
    assert sum(map(len, sp.train)) == 167597 - 2 * 19412
    assert sp.test_target[0] == 5 and sp.valid_target[0] == 4 and sp.test_history[0] == [1, 2, 3, 4]
    assert all(len(h) <= 20 for h in sp.test_history)


# --------------------------------------------------------------------------- co-occurrence
def test_cooccurrence_hand():
    c = cooccurrence([[1, 2, 3, 1], [3, 4], [4, 4, 4]], window=1).to_dense()
    assert c.shape == (5, 5) and c.dtype == torch.float64
    want = torch.zeros(5, 5, dtype=torch.float64)
    for a, b in [(1, 2), (2, 3), (3, 1), (3, 4)]:     # repeated 4s never count with themselves
        want[a, b] += 1
        want[b, a] += 1
    assert torch.equal(c, want)
    c2 = cooccurrence([[1, 2, 3, 1]], window=2, num_items=6).to_dense()
    want2 = torch.zeros(6, 6, dtype=torch.float64)
    for a, b in [(1, 2), (2, 3), (3, 1), (1, 3), (2, 1)]:
        want2[a, b] += 1
        want2[b, a] += 1
    assert torch.equal(c2, want2)
    assert torch.equal(c2, c2.T)


def _ppmi_dense(c: torch.Tensor, shift: float) -> torch.Tensor:
    c = c.to(torch.float64)
    m = c.sum(1)
    with torch.no_grad():
        pmi = torch.log(c * c.sum() / (m[:, None] * m[None, :])) - math.log(shift)
    pmi[c == 0] = 0
    return pmi.clamp_min(0).nan_to_num(0.0)


@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_embeddings_match_exact_svd(shift):
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 12, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(60)]
    n = 14  # two extra ids that never occur
    e = item_embeddings(seqs, dim=n, window=2, shift=shift, num_items=n)
    a = _ppmi_dense(cooccurrence(seqs, window=2, num_items=n).to_dense(), shift)
    s = torch.linalg.svdvals(a)
    # E = U sqrt(S) with orthonormal U: column squared norms are the singular values
    assert torch.allclose((e.double() ** 2).sum(0), s, rtol=1e-4, atol=1e-5)
    # E E^T = U S U^T, the symmetric matrix with A's eigenvectors and |eigenvalues|
    lam, v = torch.linalg.eigh(a)
    assert torch.allclose(e.double() @ e.double().T, (v * lam.abs()) @ v.T, atol=1e-4)
    assert torch.equal(e[12:], torch.zeros(2, n))


# --------------------------------------------------------------------------- item_embeddings
def _planted(num_clusters=8, per=25, seqs_per=150, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs, cluster = [], torch.arange(num_clusters * per) // per
    for c in range(num_clusters):
        for _ in range(seqs_per):
            items = c * per + torch.randint(0, per, (length,), generator=g)
            seqs.append(items.tolist())
    perm = torch.randperm(len(seqs), generator=g).tolist()
    return [seqs[i] for i in perm], cluster


def test_planted_clusters():
    seqs, cluster = _planted()
    e = item_embeddings(seqs, dim=16, window=3)
    assert e.shape == (200, 16) and e.dtype == torch.float32
    en = torch.nn.functional.normalize(e, dim=1)
    cos = en @ en.T
    same = cluster[:, None] == cluster[None, :]
    off = ~torch.eye(200, dtype=torch.bool)
    within = cos[same & off].mean()
    g = torch.Generator().manual_seed(5)
    i, j = torch.randint(0, 200, (2, 5000), generator=g)
    rand = cos[i, j][i != j].mean()
    assert within > 0.8, within
    assert rand < 0.3, rand
    # every item's nearest other item is in its own cluster
    cos.fill_diagonal_(-2)
    assert torch.equal(cluster[cos.argmax(1)], cluster)


def test_cooccurring_pairs_closer_than_random():
    # mixed sequences: pairs that co-occur in the data are closer than random pairs
    seqs, _ = _planted(num_clusters=10, per=20, seqs_per=60, length=6, seed=3)
    e = torch.nn.functional.normalize(item_embeddings(seqs, dim=24), dim=1)
    pairs = {(s[k], s[k + 1]) for s in seqs for k in range(len(s) - 1) if s[k] != s[k + 1]}
    a, b = torch.tensor(sorted(pairs)).T
    co = (e[a] * e[b]).sum(1).mean()
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(0, 200, (2, 4000), generator=g)
    rand = (e[i] * e[j]).sum(1)[i != j].mean()
    assert co > rand + 0.4, (co, rand)


def test_shapes_zero_rows_and_determinism():
    seqs = [[1, 2, 3, 4], [2, 3, 5], [5, 6, 1], [8]]          # 0, 7 never occur; 8 never co-occurs
    e = item_embeddings(seqs, dim=3, num_items=12, seed=7)
    assert e.shape == (12, 3) and e.dtype == torch.float32 and e.device.type == "cpu"
    for zero in (0, 7, 8, 9, 10, 11):
        assert torch.count_nonzero(e[zero]) == 0
    assert torch.all(e[[1, 2, 3, 4, 5, 6]].abs().sum(1) > 0)
    assert torch.equal(e, item_embeddings(seqs, dim=3, num_items=12, seed=7))
    assert item_embeddings(seqs, dim=3).shape == (9, 3)
    # dim above the rank: trailing zero columns
    big = item_embeddings(seqs, dim=20)
    assert big.shape == (9, 20) and torch.count_nonzero(big[:, 9:]) == 0
    # tensors and tuples as sequences
    assert torch.equal(item_embeddings([torch.tensor(s) for s in seqs], dim=3, num_items=12, seed=7), e)
    assert torch.equal(item_embeddings([tuple(s) for s in seqs], dim=3, num_items=12, seed=7), e)
    # no co-occurrence at all: zeros
    assert torch.count_nonzero(item_embeddings([[1], [2]], dim=4)) == 0
    # no PMI above log(shift): zeros
    assert torch.count_nonzero(item_embeddings(seqs, dim=3, shift=1e6)) == 0


def test_seed_changes_only_within_tolerance():
    seqs, _ = _planted(num_clusters=4, per=10, seqs_per=40, seed=2)
    e0, e1 = item_embeddings(seqs, dim=4, seed=0), item_embeddings(seqs, dim=4, seed=1)
    # the top-4 subspace is well separated here: both seeds find the same Gram matrix
    assert torch.allclose(e0 @ e0.T, e1 @ e1.T, atol=1e-3)


def test_errors():
    seqs = [[1, 2, 3]]
    for dim in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="dim"):
            item_embeddings(seqs, dim)
    with pytest.raises(ValueError, match="empty"):
        item_embeddings([], 4)
    with pytest.raises(ValueError, match="no item"):
        item_embeddings([[], []], 4)
    with pytest.raises(ValueError, match="sequence 1 contains -2"):
        item_embeddings([[1, 2], [3, -2]], 4)
    with pytest.raises(TypeError, match="integers"):
        item_embeddings([[1, 2.5]], 4)
    with pytest.raises(TypeError):
        item_embeddings(torch.tensor([[1, 2, 3]]), 4)
    with pytest.raises(ValueError, match="out of range for num_items = 3"):
        item_embeddings(seqs, 2, num_items=3)
    for kw in ({"window": 0}, {"shift": 0.0}, {"shift": -1.0}, {"shift": float("nan")},
               {"num_items": 0}, {"power_iters": -1}):
        with pytest.raises(ValueError):
            item_embeddings(seqs, 2, **kw)


@needs_toys
def test_toys_training_split():
    sp = leave_one_out(read_sequences(TOYS))
    e = item_embeddings(sp.train, dim=64)  # speed: a benchmark matter, not a test's
    assert e.shape == (11925, 64) and e.dtype == torch.float32
    assert torch.isfinite(e).all()
    assert torch.count_nonzero(e[0]) == 0
    # the validation target is closer to the last history item than a random item is
    en = torch.nn.functional.normalize(e, dim=1)
    last = torch.tensor([h[-1] for h in sp.valid_history])
    tgt = torch.tensor(sp.valid_target)
    g = torch.Generator().manual_seed(0)
    rnd = tgt[torch.randperm(len(tgt), generator=g)]
    assert (en[last] * en[tgt]).sum(1).mean() > (en[last] * en[rnd]).sum(1).mean() + 0.1
