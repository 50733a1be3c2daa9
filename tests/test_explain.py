"""pysid.explain: prefix labels (TF-IDF against siblings), level report, HTML tree (rendered
in headless Chromium where it is installed)."""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
import torch

import pysid
from pysid.data import item_sentence, item_terms, read_item_text
from pysid.explain import describe, terms_of

# two levels: 0 = lego (0,0 star wars; 0,1 city), 1 = barbie (1,0 dreamhouse; 1,1 horse)
CODES = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 1], [0, 1], [1, 0], [1, 0], [1, 1], [1, 1], [1, 1]])
TEXT = [
    ["LEGO", "Building Sets", "star", "wars", "clone"],
    ["LEGO", "Building Sets", "star", "wars", "x-wing"],
    ["LEGO", "Building Sets", "star", "wars", "tie"],
    ["LEGO", "Building Sets", "city", "police"],
    ["LEGO", "Building Sets", "city", "fire"],
    ["Barbie", "Dolls", "dreamhouse", "pink"],
    ["Barbie", "Dolls", "dreamhouse", "pool"],
    ["Barbie", "Dolls", "horse", "stable"],
    ["Barbie", "Dolls", "horse", "riding"],
    ["Barbie", "Dolls", "horse", "pink"],
]


def test_terms_of():
    assert terms_of("The LEGO Star Wars set, a star-wars X-Wing!") == ["lego", "star", "wars", "set", "star-wars", "x-wing"]
    assert terms_of(["Building Sets", " LEGO ", "", "LEGO"]) == ["Building Sets", "LEGO"]
    assert terms_of(None) == []
    with pytest.raises(TypeError, match="string"):
        terms_of(3)
    with pytest.raises(TypeError, match="strings only"):
        terms_of(["a", 1])


def test_labels_distinguish_siblings():
    d = describe(CODES, TEXT, top_terms=2)
    assert d.label((0,)).split(", ")[0] in ("LEGO", "Building Sets")
    assert set(d.label((0,)).split(", ")) == {"LEGO", "Building Sets"}
    assert set(d.label((1,)).split(", ")) == {"Barbie", "Dolls"}
    # level 2: the brand is shared by the siblings -> not repeated; the distinguishing words are used
    assert set(d.label((0, 0)).split(", ")) == {"star", "wars"}
    assert d.label((0, 1)).split(", ")[0] == "city"
    assert d.label((1, 0)).split(", ")[0] == "dreamhouse"
    assert d.label((1, 1)).split(", ")[0] == "horse"
    assert d.path(1) == f"{d.label((0,))} / {d.label((0, 0))}"
    assert d.labels(7) == [d.label((1,)), d.label((1, 1))]
    assert d.nodes[(1, 1)].size == 3 and d.root.size == 10
    assert [c.prefix for c in d.root.children] == [(0,), (1,)]  # most items first, then codes
    with pytest.raises(KeyError):
        d.label((2,))
    with pytest.raises(KeyError):
        d.path(99)


def test_plural_and_phrase_words_not_repeated():
    codes = torch.tensor([[0], [0], [1], [1]])
    text = [["Board Games", "game", "dice"], ["Board Games", "game", "dice"], ["Puzzles", "puzzle"], ["Puzzles", "jigsaw"]]
    d = describe(codes, text, top_terms=2)
    assert d.label((0,)) == "Board Games, dice"   # "game" is covered by "Board Games"
    assert d.label((1,)) == "Puzzles, jigsaw"     # "puzzle" by "Puzzles"


def test_tfidf_score_by_hand():
    d = describe(CODES, TEXT, top_terms=2)
    # prefix (1, 1): 3 items, parent (1,) 5 items; "horse" in 3/3 here, 3/5 in the parent
    (t1, s1), (t2, s2) = d.nodes[(1, 1)].terms
    assert t1 == "horse" and s1 == pytest.approx(1.0 * (math.log(6 / 4) + 1))
    # "riding" and "stable" (1 of 3 items here, 1 of 5 in the parent) tie: alphabetical first
    assert t2 == "riding" and s2 == pytest.approx(1 / 3 * (math.log(6 / 2) + 1))
    # level 1 against the root (10 items): "LEGO" in 5/5 of prefix 0 and 5/10 overall
    assert dict(d.nodes[(0,)].terms)["LEGO"] == pytest.approx(math.log(11 / 6) + 1)
    # a word of an ancestor's label is not repeated: with 3 terms, (1,) takes "horse" (3/5 items)
    d3 = describe(CODES, TEXT, top_terms=3)
    assert "horse" in d3.label((1,)) and "horse" not in d3.label((1, 1))


def test_deterministic_and_row_order_free():
    a = describe(CODES, TEXT).to_dict()
    assert describe(CODES, TEXT).to_dict() == a
    perm = torch.randperm(len(TEXT), generator=torch.Generator().manual_seed(3))
    b = describe(CODES[perm], [TEXT[i] for i in perm.tolist()]).to_dict()
    assert [(p["prefix"], p["label"], p["size"]) for p in a["prefixes"]] == \
           [(p["prefix"], p["label"], p["size"]) for p in b["prefixes"]]


def test_semantic_ids_input_dict_text_and_suffix_ignored():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 5
    x = torch.cat([centres[k] + 0.1 * torch.randn(25, 8, generator=g) for k in range(4)])
    words = ["lego", "barbie", "puzzle", "yoyo"]
    ids = torch.arange(100) + 1000
    sids = pysid.fit(x, levels=2, codebook_size=[4, 3], item_ids=ids, progress=False)
    assert sids.has_suffix
    text = {int(i): f"{words[k]} toy number{int(i) % 7}" for k in range(4) for i in ids[25 * k: 25 * k + 25]}
    d = describe(sids, text)
    assert d.levels == 2
    for k in range(4):
        item = int(ids[25 * k])
        assert d.labels(item)[0].split(", ")[0] == words[k]
    html = d.to_html()
    assert "&lt;a_" in html  # SID tokens of the listed items, escaped


def test_level_report_facets():
    d = describe(CODES, TEXT)
    brand = ["lego"] * 5 + ["barbie"] * 5
    noise = ["x", "y"] * 5
    r = d.level_report(facets={"brand": brand, "noise": {i: noise[i] for i in range(10)}})
    rows = r.to_dict()
    assert [row["depth"] for row in rows] == [1, 2]
    assert rows[0]["facets"]["brand"]["explained"] == pytest.approx(1.0)
    assert rows[1]["facets"]["brand"]["gain"] == pytest.approx(0.0)
    assert rows[0]["prefixes"] == 2 and rows[1]["prefixes"] == 4
    assert rows[1]["children_per_parent"] == 2.0
    assert 0.0 <= rows[0]["facets"]["noise"]["explained"] < 0.1
    assert 0.0 <= rows[0]["facets"]["brand"]["chance"] <= 1.0
    assert rows[0]["coherence"] == pytest.approx(1.0)
    assert "brand" in str(r) and "level 2" in str(r)
    with pytest.raises(ValueError, match="3 values for 10 items"):
        d.level_report(facets={"bad": [1, 2, 3]})


def test_bad_inputs():
    with pytest.raises(ValueError, match="9 texts for 10 items"):
        describe(CODES, TEXT[:9])
    with pytest.raises(TypeError, match="SemanticIds or a codes tensor"):
        describe(CODES.numpy(), TEXT)
    with pytest.raises(TypeError, match="integer tensor"):
        describe(CODES.float(), TEXT)
    with pytest.raises(TypeError, match="dict"):
        describe(CODES, "lego")
    with pytest.raises(ValueError, match="top_terms"):
        describe(CODES, TEXT, top_terms=0)
    with pytest.raises(ValueError, match="empty"):
        describe(torch.zeros(0, 2, dtype=torch.int64), [])
    with pytest.raises(ValueError, match="examples"):
        describe(CODES, TEXT).to_html(examples=-1)


def test_html_self_contained_and_escaped(tmp_path):
    text = [t + ["<script>alert(1)</script>"] if i == 0 else t for i, t in enumerate(TEXT)]
    d = describe(CODES, text, top_terms=3)
    path = tmp_path / "tree.html"
    page = d.to_html(path, title="toys <tree>", report=d.level_report())
    assert path.read_text(encoding="utf-8") == page
    low = page.lower()
    for bad in ("<script", "http://", "https://", "<link", "src=", "@import", "url("):
        assert bad not in low, bad
    assert "toys &lt;tree&gt;" in page
    assert page.count("<details>") == len(d.nodes) - 1
    assert page.count("<details>") == page.count("</details>")
    assert "+ 1 more" not in d.to_html(max_children=None)
    assert "+ 1 more prefixes" in d.to_html(max_children=1)


def test_item_text_reader(tmp_path):
    p = tmp_path / "items.tsv"
    p.write_text("item_id\tasin\tidgenrec_textual_id\tattributes\tgrlm_terms\tgram_lexical_id\n"
                 "1\tB1\tstar wars clone troopers\tLEGO | Building Toys | Building Sets\tclone, battle\t|x\n"
                 "2\tB2\tthe puzzle\t\tpiece, jigsaw\n")
    t = read_item_text(p)
    assert t[1]["attributes"] == "LEGO | Building Toys | Building Sets" and t[2]["gram_lexical_id"] == ""
    assert item_terms(t[1])[:3] == ["LEGO", "Building Toys", "Building Sets"]
    assert "the" not in item_terms(t[2]) and "puzzle" in item_terms(t[2])
    assert item_sentence(t[1]) == "star wars clone troopers. LEGO, Building Toys, Building Sets. clone, battle"
    p.write_text("item_id\tasin\n1\tB1\n1\tB2\n")
    with pytest.raises(ValueError, match="repeated"):
        read_item_text(p)
    p.write_text("id\tasin\n")
    with pytest.raises(ValueError, match="header"):
        read_item_text(p)
    with pytest.raises(FileNotFoundError):
        read_item_text(tmp_path / "nope.tsv")


# --------------------------------------------------------------------------- rendering
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chromium-headless-shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _read_png(path) -> np.ndarray:
    """RGB(A) 8-bit non-interlaced PNG -> [H, W, C] uint8 (what Chromium writes)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            ch = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * ch)
    out = np.zeros((h, w * ch), dtype=np.int32)
    prev = np.zeros(w * ch, dtype=np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        cur = np.zeros(w * ch, dtype=np.int32)
        if f in (0, 2):
            cur = (line + (prev if f == 2 else 0)) % 256
        else:  # 1 sub, 3 average, 4 paeth: sequential in x
            for x in range(w * ch):
                a = cur[x - ch] if x >= ch else 0
                b, c = prev[x], (prev[x - ch] if x >= ch else 0)
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) % 256
        out[y], prev = cur, cur
    return out.reshape(h, w, ch).astype(np.uint8)


def _screenshot(browser: str, html_path, png_path, tmp_path) -> None:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,600", "--force-device-scale-factor=1",
           f"--screenshot={png_path}", f"file://{html_path}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert os.path.exists(png_path), f"chromium wrote no screenshot (rc {r.returncode}): {r.stderr[-800:]}"


def test_html_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium / chrome binary on PATH (apt-get install chromium) - HTML rendering not checked")
    d = describe(CODES, TEXT)
    page = tmp_path / "tree.html"
    d.to_html(page, report=d.level_report(facets={"brand": ["lego"] * 5 + ["barbie"] * 5}))
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    _screenshot(browser, page, tmp_path / "tree.png", tmp_path)
    _screenshot(browser, blank, tmp_path / "blank.png", tmp_path)
    img = _read_png(tmp_path / "tree.png")[..., :3].astype(np.float64)
    ref = _read_png(tmp_path / "blank.png")[..., :3].astype(np.float64)
    assert img.shape[:2] == (600, 800)
    assert ref.std() < 1.0  # the blank page is blank: the check below can tell
    assert img.std() > 10.0, f"screenshot is (nearly) blank: pixel std {img.std():.2f}"
    dark = (img.mean(axis=2) < 128).mean()
    assert dark > 0.002, f"no text drawn ({dark:.4%} dark pixels)"
    # the size bars (#e6883c) are drawn
    bar = (np.abs(img - np.array([0xE6, 0x88, 0x3C])).max(axis=2) < 12).sum()
    assert bar > 100, f"size bars not rendered ({bar} bar-coloured pixels)"


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOYS_ITEMS = os.path.join(ROOT, "..", "shared", "data", "amazon", "toys_items.tsv")
if not os.path.exists(TOYS_ITEMS):  # a worktree beside main: shared/ is a sibling of the checkouts
    TOYS_ITEMS = "/work/shared/data/amazon/toys_items.tsv"


@pytest.mark.skipif(not os.path.exists(TOYS_ITEMS), reason="../shared/data/amazon/toys_items.tsv not present")
def test_real_item_text_labels():
    text = read_item_text(TOYS_ITEMS)
    ids = sorted(text)[:600]
    brand = {i: (text[i]["attributes"].split(" | ")[0] or "?") for i in ids}
    names = sorted(set(brand.values()))
    codes = torch.tensor([[names.index(brand[i])] for i in ids])   # one prefix per brand
    d = describe(codes, [item_terms(text[i]) for i in ids], top_terms=1)
    lego = names.index("LEGO")
    assert d.label((lego,)) == "LEGO"
    r = d.level_report(facets={"brand": [brand[i] for i in ids]}).to_dict()
    assert r[0]["facets"]["brand"]["explained"] == pytest.approx(1.0)
