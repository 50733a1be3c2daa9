"""pysid.metrics.sid_report: every number on hand-computed tables, brute force on random
ones, both prefix paths (packed int64 key and re-ranking), printing and errors."""

import json
import math
from collections import Counter

import pytest
import torch

from pysid.metrics import SIDReport, sid_report

CODES = torch.tensor([[0, 1], [0, 1], [0, 2], [1, 0]])
X = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
X_HAT = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 2.0]])


def test_hand_case():
    r = sid_report(CODES, codebook_sizes=4, embeddings=X, reconstruction=X_HAT)
    assert isinstance(r, SIDReport)
    assert r.num_items == 4 and r.levels == 2
    assert r.codebook_sizes == [4, 4] and r.codebook_sizes_given
    # level 1: codes {0: 3, 1: 1}; level 2: codes {1: 2, 2: 1, 0: 1}
    assert r.codes_used == [2, 3]
    assert r.usage == [0.5, 0.75]
    assert r.perplexity[0] == pytest.approx(0.75 ** -0.75 * 0.25 ** -0.25, rel=1e-12)   # 1.7548
    assert r.perplexity[1] == pytest.approx(2 * math.sqrt(2), rel=1e-12)               # 2^0.5 * 4^0.5
    # prefixes: depth 1 {0: 3, 1: 1}; depth 2 {(0,1): 2, (0,2): 1, (1,0): 1}
    assert r.prefix_distinct == [2, 3]
    assert r.prefix_mean_items == [2.0, pytest.approx(4 / 3)]
    assert r.prefix_max_items == [3, 2]
    assert r.distinct_tuples == 3 and r.max_items_per_tuple == 2
    assert r.colliding_items == 2 and r.collision_rate == 0.5
    # (16 + 1 + 0 + 0) / (25 + 1 + 0 + 4)
    assert r.reconstruction_error == pytest.approx(17 / 30, rel=1e-12)


def test_sizes_per_level_and_inferred():
    r = sid_report(CODES, codebook_sizes=[2, 8])
    assert r.codebook_sizes == [2, 8] and r.usage == [1.0, 3 / 8]
    assert r.reconstruction_error is None
    r = sid_report(CODES)
    assert r.codebook_sizes == [2, 3] and not r.codebook_sizes_given and r.usage == [1.0, 1.0]
    r = sid_report(CODES, codebook_sizes=torch.tensor([3, 3]))
    assert r.codebook_sizes == [3, 3]


def test_uniform_and_single_code():
    # every code of a 4-word codebook used equally: perplexity 4; all items identical: 1
    codes = torch.tensor([[0, 0], [1, 0], [2, 0], [3, 0]], dtype=torch.int32)
    r = sid_report(codes, codebook_sizes=4)
    assert r.perplexity == [pytest.approx(4.0), pytest.approx(1.0)]
    assert r.codes_used == [4, 1] and r.usage == [1.0, 0.25]
    assert r.prefix_distinct == [4, 4] and r.prefix_max_items == [1, 1] and r.prefix_mean_items == [1.0, 1.0]
    assert r.collision_rate == 0.0 and r.colliding_items == 0 and r.max_items_per_tuple == 1
    one = sid_report(torch.zeros(5, 3, dtype=torch.uint8), codebook_sizes=2)
    assert one.perplexity == [1.0, 1.0, 1.0] and one.collision_rate == 1.0
    assert one.distinct_tuples == 1 and one.max_items_per_tuple == 5 and one.prefix_distinct == [1, 1, 1]
    single = sid_report(torch.tensor([[3]]), codebook_sizes=5)
    assert single.num_items == 1 and single.collision_rate == 0.0 and single.usage == [0.2]


def test_reconstruction_edge_cases():
    z = torch.zeros(4, 2)
    assert sid_report(CODES, embeddings=X, reconstruction=X).reconstruction_error == 0.0
    assert sid_report(CODES, embeddings=X, reconstruction=z).reconstruction_error == pytest.approx(1.0)
    assert math.isnan(sid_report(CODES, embeddings=z, reconstruction=z).reconstruction_error)
    assert math.isinf(sid_report(CODES, embeddings=z, reconstruction=X).reconstruction_error)
    # mixed precisions: float64 reconstruction of float32/bfloat16 embeddings
    r64 = sid_report(CODES, embeddings=X.double(), reconstruction=X_HAT.double()).reconstruction_error
    rbf = sid_report(CODES, embeddings=X.bfloat16(), reconstruction=X_HAT.double()).reconstruction_error
    assert r64 == pytest.approx(17 / 30, rel=1e-15) and rbf == pytest.approx(17 / 30, rel=1e-12)


def _brute(codes, sizes):
    rows = [tuple(r) for r in codes.tolist()]
    m, nl = len(rows), len(rows[0])
    out = {"used": [], "perp": [], "pd": [], "pmax": []}
    for l in range(nl):
        cnt = Counter(r[l] for r in rows)
        out["used"].append(len(cnt))
        out["perp"].append(math.exp(-sum(c / m * math.log(c / m) for c in cnt.values())))
        pre = Counter(r[:l + 1] for r in rows)
        out["pd"].append(len(pre))
        out["pmax"].append(max(pre.values()))
    full = Counter(rows)
    out["colliding"] = sum(c for c in full.values() if c > 1)
    return out


@pytest.mark.parametrize("sizes", [[3, 4, 2], [5, 1, 7, 2], [2 ** 20] * 4, [2 ** 40, 3]])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(sizes, seed):
    # [2**20]*4 and [2**40, 3] have > 2^62 tuples: the re-ranking path
    g = torch.Generator().manual_seed(seed)
    m = 300
    hi = [min(s, 6) for s in sizes]  # few distinct values so that prefixes collide
    codes = torch.stack([torch.randint(0, h, (m,), generator=g) * (s // h) for h, s in zip(hi, sizes)], 1)
    r = sid_report(codes, codebook_sizes=sizes)
    b = _brute(codes, sizes)
    assert r.codes_used == b["used"]
    assert r.usage == [u / s for u, s in zip(b["used"], sizes)]
    assert r.perplexity == pytest.approx(b["perp"], rel=1e-12)
    assert r.prefix_distinct == b["pd"] and r.prefix_max_items == b["pmax"]
    assert r.prefix_mean_items == pytest.approx([m / d for d in b["pd"]])
    assert r.distinct_tuples == b["pd"][-1] and r.max_items_per_tuple == b["pmax"][-1]
    assert r.colliding_items == b["colliding"] and r.collision_rate == b["colliding"] / m


def test_to_dict_and_str():
    r = sid_report(CODES, codebook_sizes=4, embeddings=X, reconstruction=X_HAT)
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["prefix_distinct"] == [2, 3] and d["reconstruction_error"] == pytest.approx(17 / 30)
    assert set(d) == {f for f in SIDReport.__dataclass_fields__}
    text = str(r)
    lines = text.splitlines()
    assert lines[0] == "Semantic ID report: 4 items, 2 levels"
    table = lines[1:5]
    assert table[0].split()[:5] == ["level", "codebook", "used", "usage", "perplexity"]
    assert set(table[1]) <= {"-", " "}
    assert len({len(t) for t in table}) == 1          # right-aligned columns: equal widths
    assert table[2].split() == ["1", "4", "2", "50.00%", "1.75", "2", "2.000", "3"]
    assert table[3].split() == ["2", "4", "3", "75.00%", "2.83", "3", "1.333", "2"]
    assert "50.0000%" in text and "2 items share" in text and "0.566667" in text
    inferred = str(sid_report(CODES))
    assert "2*" in inferred and "inferred" in inferred and "reconstruction" not in inferred


def test_errors():
    with pytest.raises(ValueError, match=r"\[M, L\]"):
        sid_report(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer"):
        sid_report(CODES.float())
    with pytest.raises(TypeError, match="Tensor"):
        sid_report([[0, 1]])
    with pytest.raises(ValueError, match="empty"):
        sid_report(torch.zeros(0, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="item 2 has code -1 at level 1"):
        sid_report(torch.tensor([[0, 0], [1, 1], [1, -1]]))
    with pytest.raises(ValueError, match="item 2 has code 2 at level 1, outside the codebook of size 2"):
        sid_report(CODES, codebook_sizes=[2, 2])
    with pytest.raises(ValueError, match="3 entries for 2 levels"):
        sid_report(CODES, codebook_sizes=[4, 4, 4])
    with pytest.raises(ValueError, match=r"codebook_sizes\[1\]"):
        sid_report(CODES, codebook_sizes=[4, 0])
    with pytest.raises(ValueError, match="together"):
        sid_report(CODES, embeddings=X)
    with pytest.raises(ValueError, match="together"):
        sid_report(CODES, reconstruction=X)
    with pytest.raises(ValueError, match="same shape"):
        sid_report(CODES, embeddings=X, reconstruction=X[:, :1])
    with pytest.raises(ValueError, match="3 rows for 4 items"):
        sid_report(CODES, embeddings=X[:3], reconstruction=X_HAT[:3])
    with pytest.raises(ValueError, match=r"\[M, D\]"):
        sid_report(CODES, embeddings=X.flatten(), reconstruction=X_HAT.flatten())
    with pytest.raises(TypeError, match="float"):
        sid_report(CODES, embeddings=X.long(), reconstruction=X_HAT.long())


def test_large_table():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 256, (1_000_000, 4), generator=g, dtype=torch.int32)
    r = sid_report(codes, codebook_sizes=256)
    assert r.codes_used == [256] * 4 and r.prefix_distinct[0] == 256 and r.prefix_distinct[1] == 65536
    assert 0 < r.collision_rate < 1e-3
