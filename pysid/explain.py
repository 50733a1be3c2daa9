"""Semantic IDs a person can read: words for every prefix, a per-level report, an HTML tree.

    from pysid.explain import describe
    d = describe(sids, item_text)              # item_text: {item_id: text or [terms]} or a list
    d.path(item_id)                            # 'LEGO, Building Sets / star wars / clone, trooper'
    d.label((12, 5))                           # the words of prefix (12, 5)
    print(d.level_report(facets={"brand": brand}))   # what each level separates
    d.to_html("tree.html")                     # self-contained page: collapsible code tree

Labels (deterministic; no model, no randomness):

* Terms of an item: a string is split into lower-case words (letters, digits, ``'&-``
  inside a word), English stop words and one-character words removed; a list/tuple of
  strings gives its terms as they are (e.g. ``["LEGO", "Building Sets", "star", "wars"]``,
  to keep brand and category phrases whole). Each term counts once per item.
* Prefix p at depth d (its items: those whose first d codes are p; its parent: the first
  d - 1 codes, the root for d = 1). TF-IDF of term t, contrasted with p's siblings:
  ``tf = (items of p with t) / (items of p)`` and
  ``idf = ln((1 + items of parent) / (1 + items of parent with t)) + 1``, i.e. the corpus
  is the parent's items (p's and its siblings'): a word every sibling shares (the brand,
  once level 1 has separated brands) scores low, a word that sets p apart scores high.
* The label is the ``top_terms`` best terms (ties: alphabetical), skipping terms whose
  words are all in the labels of p's ancestors or in terms already picked for p (so each
  level adds words instead of repeating them). A prefix without a sibling separates
  nothing at its level: it is labelled too (its most common new terms), and marked
  ``only_child``.
* ``path(item)`` joins the labels of the item's prefixes with " / " (semantic levels only;
  the suffix level that numbers colliding items carries no meaning and is left out).

Level report (``level_report``): per depth, prefixes, items per prefix, children per parent,
coherence (share of items that contain their prefix's first label term), the most common
first label terms, and, for each facet given (a per-item category: brand, category, ...),
the uncertainty coefficient U(facet | prefix) = 1 - H(facet | prefix) / H(facet): the share
of the facet's entropy that the prefix of that depth explains (0: nothing, 1: the prefix
determines the facet), the gain over the previous depth, and the same figure for the facet's
values shuffled over the items (seeded): small prefixes explain much by chance alone, so
compare with that.
"""

from __future__ import annotations

import html
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .sid import _level_name as _level  # the token names' level letters: a, b, ..., z, aa, ...

__all__ = ["Description", "PrefixNode", "LevelReport", "describe", "terms_of", "STOP_WORDS"]

# English stop words (the usual short list: articles, pronouns, prepositions, auxiliaries)
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not of off on once only or other our ours ourselves out over own same she should so
some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves s t don now also may might must shall us via per etc inc
""".split())

_WORD = re.compile(r"[a-z0-9][a-z0-9'&\-]*[a-z0-9]|[a-z0-9]")


def terms_of(text, stop_words=STOP_WORDS) -> list[str]:
    """The distinct terms of one item's text, in order of first occurrence (module docstring).

    text: a string (split into lower-case words, stop words and 1-character words removed),
    a list/tuple of strings (terms kept as given, stripped, empty ones dropped) or None."""
    if text is None:
        return []
    if isinstance(text, str):
        words = [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in stop_words]
    elif isinstance(text, (list, tuple)):
        if not all(isinstance(t, str) for t in text):
            raise TypeError("a list of terms must hold strings only")
        words = [t.strip() for t in text if t.strip()]
    else:
        raise TypeError(f"item text must be a string, a list of strings or None, got {type(text).__name__}")
    return list(dict.fromkeys(words))


def _words(term: str) -> set[str]:
    """Lower-case words of a term, a plural "s" dropped ("Games" and "game" cover each other)."""
    ws = _WORD.findall(term.lower()) or [term.lower()]
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in ws}


@dataclass
class PrefixNode:
    """One prefix of the code tree. ``prefix``: its codes (``()`` for the root)."""

    prefix: tuple
    size: int
    label: str = ""
    terms: list = field(default_factory=list)   # [(term, score)], best first (label terms first)
    children: list = field(default_factory=list)  # PrefixNodes, most items first (ties: codes)
    only_child: bool = False
    items: list = field(default_factory=list)   # item ids, at the deepest level only

    @property
    def depth(self) -> int:
        return len(self.prefix)


class LevelReport:
    """What each level of a code tree separates (see the module docstring). ``rows``: one dict
    per depth; ``str()`` prints an aligned table."""

    def __init__(self, rows: list[dict], facets: list[str]):
        self.rows, self.facets = rows, facets

    def to_dict(self) -> list[dict]:
        return [dict(r) for r in self.rows]

    def __str__(self) -> str:
        out = []
        for r in self.rows:
            line = (f"level {r['depth']}: {r['prefixes']} prefixes, {r['items_per_prefix']:.1f} items each "
                    f"(max {r['max_items']}), {r['children_per_parent']:.1f} per parent, "
                    f"{100 * r['only_child_share']:.0f}% only children, coherence {r['coherence']:.2f}")
            out.append(line)
            for f in self.facets:
                u, g = r["facets"][f]["explained"], r["facets"][f]["gain"]
                ch = r["facets"][f]["chance"]
                out.append(f"    {f}: {100 * u:.1f}% of its entropy explained ({100 * g:+.1f} points; "
                           f"{100 * ch:.1f}% for a random grouping of the same sizes)")
            top = ", ".join(f"{t} ({n})" for t, n in r["top_terms"])
            out.append(f"    most common labels: {top}")
        return "\n".join(out)


class Description:
    """Labels of every prefix of a Semantic ID table (build it with :func:`describe`)."""

    def __init__(self, root: PrefixNode, levels: int, item_prefix: dict, item_terms: dict,
                 item_text: dict, top_terms: int, tokens: dict):
        self.root = root
        self.levels = levels
        self._item_prefix = item_prefix   # item id -> full semantic tuple
        self._item_terms = item_terms     # item id -> list of terms
        self._item_text = item_text       # item id -> short display text
        self._tokens = tokens             # item id -> SID token string
        self.top_terms = top_terms
        self.nodes: dict[tuple, PrefixNode] = {}
        stack = [root]
        while stack:
            n = stack.pop()
            self.nodes[n.prefix] = n
            stack.extend(n.children)

    def __len__(self) -> int:
        return len(self._item_prefix)

    def label(self, prefix) -> str:
        """The label of a prefix (a tuple/list of codes, 1..L of them)."""
        p = tuple(int(c) for c in prefix)
        if p not in self.nodes:
            raise KeyError(f"no item has the prefix {p}")
        return self.nodes[p].label

    def labels(self, item_id) -> list[str]:
        """The labels of an item's prefixes, depth 1..L."""
        full = self._prefix_of(item_id)
        return [self.nodes[full[:d]].label for d in range(1, self.levels + 1)]

    def path(self, item_id, sep: str = " / ") -> str:
        """The item's labels joined: e.g. 'LEGO, Building Sets / star wars / clone, trooper'."""
        return sep.join(self.labels(item_id))

    def _prefix_of(self, item_id) -> tuple:
        key = int(item_id)
        if key not in self._item_prefix:
            raise KeyError(f"item {item_id!r} is not in the table")
        return self._item_prefix[key]

    # ------------------------------------------------------------------ level report
    def level_report(self, facets: Mapping[str, Any] | None = None, top: int = 6) -> LevelReport:
        """Per-depth statistics (module docstring). facets: {name: per-item values}, each a
        dict {item_id: value} or a sequence aligned with the table's rows (item order of
        :func:`describe`); None/"" values are left out of that facet's entropies. ``chance``:
        the figure for the values shuffled over the items (seed 0), the level a grouping of
        the same sizes reaches by chance."""
        facets = dict(facets or {})
        ids = list(self._item_prefix)
        fvals: dict[str, dict] = {}
        for name, vals in facets.items():
            if isinstance(vals, Mapping):
                fvals[name] = {i: vals.get(i) for i in ids}
            else:
                vals = list(vals)
                if len(vals) != len(ids):
                    raise ValueError(f"facet {name!r} has {len(vals)} values for {len(ids)} items")
                fvals[name] = dict(zip(ids, vals))
        rows = []
        prev = {f: 0.0 for f in fvals}
        for d in range(1, self.levels + 1):
            nodes = [n for p, n in self.nodes.items() if len(p) == d]
            parents = [n for p, n in self.nodes.items() if len(p) == d - 1]
            sizes = [n.size for n in nodes]
            coh = 0
            counts: dict[str, int] = {}
            for n in nodes:
                if n.terms:
                    first = n.terms[0][0]
                    counts[first] = counts.get(first, 0) + n.size
            for i in ids:
                n = self.nodes[self._item_prefix[i][:d]]
                if n.terms and n.terms[0][0] in self._item_terms[i]:
                    coh += 1
            row = {"depth": d, "prefixes": len(nodes), "items_per_prefix": len(ids) / max(len(nodes), 1),
                   "max_items": max(sizes) if sizes else 0,
                   "children_per_parent": len(nodes) / max(len(parents), 1),
                   "only_child_share": sum(n.only_child for n in nodes) / max(len(nodes), 1),
                   "coherence": coh / max(len(ids), 1),
                   "top_terms": sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top],
                   "facets": {}}
            groups = {i: self._item_prefix[i][:d] for i in ids}
            for f, vals in fvals.items():
                u = _uncertainty(vals, groups)
                perm = list(vals.values())
                random.Random(0).shuffle(perm)
                chance = _uncertainty(dict(zip(ids, perm)), groups)
                row["facets"][f] = {"explained": u, "gain": u - prev[f], "chance": chance}
                prev[f] = u
            rows.append(row)
        return LevelReport(rows, list(fvals))

    # ------------------------------------------------------------------ HTML
    def to_html(self, path=None, *, title: str = "Semantic ID tree", examples: int = 3,
                max_children: int | None = None, report: LevelReport | None = None) -> str:
        """A self-contained HTML page (no external assets or scripts) of the code tree: one
        collapsible ``<details>`` per prefix with its codes, label and item count (and a bar
        proportional to it); the deepest prefixes list up to ``examples`` items (id, SID
        tokens, text). ``max_children``: show at most that many children per prefix (the
        largest; a line says how many are left out). ``report``: a LevelReport to include.
        Writes the page to ``path`` when given; returns it."""
        if examples < 0 or (max_children is not None and max_children < 1):
            raise ValueError("examples must be >= 0 and max_children >= 1 (or None)")
        esc = html.escape
        out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
               f"<title>{esc(title)}</title><style>",
               "body{font:14px/1.45 system-ui,sans-serif;margin:16px 24px;color:#1b1b1b;background:#fff}",
               "h1{font-size:20px;margin:0 0 4px} p.meta{color:#555;margin:0 0 12px}",
               "details{margin-left:18px;border-left:1px solid #ddd;padding-left:6px}",
               "summary{cursor:pointer;white-space:nowrap} summary:hover{background:#f3f6fb}",
               ".code{font-family:ui-monospace,monospace;color:#6a3d9a;margin-right:6px}",
               ".label{font-weight:600;color:#0b4f8a} .n{color:#777;margin-left:6px}",
               ".bar{display:inline-block;height:9px;background:#e6883c;margin-left:8px;vertical-align:middle}",
               ".only{color:#999;font-style:italic;margin-left:6px}",
               "ul.items{margin:2px 0 4px 28px;padding:0;color:#333} ul.items li{list-style:square}",
               ".sid{font-family:ui-monospace,monospace;color:#6a3d9a;font-size:12px}",
               "table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ccc;padding:2px 8px;"
               "text-align:right} th{background:#f0f0f0} td:first-child{text-align:left}",
               "</style></head><body>",
               f"<h1>{esc(title)}</h1><p class='meta'>{self.root.size} items, {self.levels} levels, "
               f"{sum(1 for p in self.nodes if len(p) == 1)} first-level prefixes. Labels: the words that "
               "set each prefix's items apart from its siblings' (TF-IDF).</p>"]
        if report is not None:
            out.append("<table><tr><th>level</th><th>prefixes</th><th>items/prefix</th><th>coherence</th>"
                       + "".join(f"<th>{esc(f)} explained (chance)</th>" for f in report.facets)
                       + "<th>most common labels</th></tr>")
            for r in report.rows:
                out.append(f"<tr><td>{r['depth']}</td><td>{r['prefixes']}</td><td>{r['items_per_prefix']:.1f}"
                           f"</td><td>{r['coherence']:.2f}</td>"
                           + "".join(f"<td>{100 * r['facets'][f]['explained']:.1f}% "
                                     f"({100 * r['facets'][f]['chance']:.1f}%)</td>" for f in report.facets)
                           + f"<td style='text-align:left'>{esc(', '.join(t for t, _ in r['top_terms']))}</td></tr>")
            out.append("</table>")

        def emit(n: PrefixNode, biggest: int) -> None:
            code = "-".join(f"{_level(j)}{c}" for j, c in enumerate(n.prefix))
            bar = max(1, round(200 * n.size / biggest))
            only = "<span class='only'>(only child)</span>" if n.only_child else ""
            out.append(f"<details><summary><span class='code'>{esc(code)}</span><span class='label'>"
                       f"{esc(n.label) or '&mdash;'}</span><span class='n'>{n.size}</span>"
                       f"<span class='bar' style='width:{bar}px'></span>{only}</summary>")
            kids = n.children if max_children is None else n.children[:max_children]
            for ch in kids:
                emit(ch, kids[0].size)
            if len(kids) < len(n.children):
                rest = n.children[len(kids):]
                out.append(f"<p class='n'>+ {len(rest)} more prefixes ({sum(c.size for c in rest)} items)</p>")
            if n.items and examples:
                out.append("<ul class='items'>")
                for i in n.items[:examples]:
                    out.append(f"<li>{i} <span class='sid'>{esc(self._tokens.get(i, ''))}</span> "
                               f"{esc(self._item_text.get(i, ''))}</li>")
                if len(n.items) > examples:
                    out.append(f"<li class='n'>+ {len(n.items) - examples} more</li>")
                out.append("</ul>")
            out.append("</details>")

        for ch in self.root.children:
            emit(ch, self.root.children[0].size)
        out.append("</body></html>")
        page = "\n".join(out)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(page)
        return page

    def to_dict(self) -> dict:
        """{"levels": L, "prefixes": [{"prefix": [...], "size", "label", "terms", "only_child"}]}"""
        return {"levels": self.levels,
                "prefixes": [{"prefix": list(p), "size": n.size, "label": n.label, "only_child": n.only_child,
                              "terms": [[t, round(s, 6)] for t, s in n.terms]}
                             for p, n in sorted(self.nodes.items()) if p]}




def _entropy(counts) -> float:
    tot = sum(counts)
    return -sum(c / tot * math.log(c / tot) for c in counts if c) if tot else 0.0


def _uncertainty(values: dict, groups: dict) -> float:
    """1 - H(value | group) / H(value) over the items with a value (0 when H(value) = 0)."""
    keep = [i for i, v in values.items() if v is not None and v != ""]
    if not keep:
        return 0.0
    tot: dict = {}
    by: dict = {}
    for i in keep:
        v, g = values[i], groups[i]
        tot[v] = tot.get(v, 0) + 1
        by.setdefault(g, {})
        by[g][v] = by[g].get(v, 0) + 1
    h = _entropy(tot.values())
    if h <= 0:
        return 0.0
    hc = sum(sum(c.values()) / len(keep) * _entropy(c.values()) for c in by.values())
    return max(0.0, 1.0 - hc / h)


def _display(text) -> str:
    if text is None:
        return ""
    s = text if isinstance(text, str) else " | ".join(text)
    return s if len(s) <= 120 else s[:117] + "..."


def describe(sids, item_text, *, top_terms: int = 2, stop_words=STOP_WORDS, max_items_listed: int = 50) -> Description:
    """Labels for every prefix of a Semantic ID table (see the module docstring).

    Args:
        sids: a :class:`pysid.SemanticIds` (its semantic levels are labelled; the suffix level
            is not), or an integer tensor of codes [M, L] (items 0..M-1).
        item_text: the items' text: a dict {item_id: text} (missing items have no text) or a
            sequence of M texts in the table's row order. A text is a string, a list of terms
            (kept whole, e.g. brand and category names) or None.
        top_terms: terms per label (>= 1).
        stop_words: words left out of strings (default: ``STOP_WORDS``).
        max_items_listed: item ids kept per deepest prefix (for ``to_html``).

    Returns a :class:`Description`. Deterministic: the same inputs give the same labels.
    """
    from .sid import SemanticIds  # noqa: PLC0415 (avoid an import cycle at module load)

    if isinstance(sids, SemanticIds):
        codes = sids.codes[:, : sids.num_levels]
        ids = sids.item_ids.tolist()
        toks = dict(zip(ids, sids.to_tokens()))
    elif isinstance(sids, Tensor):
        if sids.dim() != 2 or sids.dtype.is_floating_point or sids.dtype == torch.bool:
            raise TypeError(f"codes must be an integer tensor [M, L], got {sids.dtype} of shape {tuple(sids.shape)}")
        codes = sids
        ids = list(range(codes.shape[0]))
        toks = {}
    else:
        raise TypeError(f"sids must be a pysid.SemanticIds or a codes tensor, got {type(sids).__name__}")
    if isinstance(top_terms, bool) or not isinstance(top_terms, int) or top_terms < 1:
        raise ValueError(f"top_terms must be an int >= 1, got {top_terms!r}")
    m, levels = codes.shape
    if m == 0 or levels == 0:
        raise ValueError(f"the table is empty (codes of shape {tuple(codes.shape)})")
    if isinstance(item_text, Mapping):
        texts = [item_text.get(i) for i in ids]
    elif isinstance(item_text, (str, bytes)) or not isinstance(item_text, Sequence):
        raise TypeError("item_text must be a dict {item_id: text} or a sequence of texts, one per row")
    else:
        if len(item_text) != m:
            raise ValueError(f"item_text has {len(item_text)} texts for {m} items")
        texts = list(item_text)
    item_terms = {i: terms_of(t, stop_words) for i, t in zip(ids, texts)}

    # term ids and the item-term incidence (each term once per item)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, i in enumerate(ids):
        for t in item_terms[i]:
            cols.append(vocab.setdefault(t, len(vocab)))
            rows.append(r)
    names = sorted(vocab, key=vocab.get)
    V = max(len(vocab), 1)
    inc_row = torch.tensor(rows, dtype=torch.int64)
    inc_col = torch.tensor(cols, dtype=torch.int64)
    word_sets = [_words(t) for t in names]

    c = codes.to(torch.int64).cpu()
    prefixes = [tuple(r) for r in c.tolist()]
    # node index of each item at each depth 0..L (depth 0: the root)
    node_of = [torch.zeros(m, dtype=torch.int64)]
    node_keys: list[list[tuple]] = [[()]]
    for d in range(1, levels + 1):
        uniq, inv = torch.unique(c[:, :d], dim=0, return_inverse=True)
        node_of.append(inv)
        node_keys.append([tuple(u) for u in uniq.tolist()])

    def df(d: int) -> tuple[Tensor, Tensor]:
        """Depth d: items per node [nodes], and the (node, term) pairs that occur as sorted keys
        node * V + term with their item counts."""
        nn_ = len(node_keys[d])
        size = torch.bincount(node_of[d], minlength=nn_)
        if inc_row.numel():
            key = node_of[d][inc_row] * V + inc_col
            k, cnt = torch.unique(key, return_counts=True)
        else:
            k = cnt = torch.empty(0, dtype=torch.int64)
        return size, k, cnt

    nodes: dict[tuple, PrefixNode] = {(): PrefixNode(prefix=(), size=m)}
    prev = df(0)
    for d in range(1, levels + 1):
        size, k, cnt = df(d)
        psize, pk, pcnt = prev
        # parent node index of every node at depth d
        first_item = torch.full((len(node_keys[d]),), m, dtype=torch.int64)
        first_item.scatter_reduce_(0, node_of[d], torch.arange(m), reduce="amin")
        parent = node_of[d - 1][first_item]
        node = k // V
        term = k % V
        pkey = parent[node] * V + term
        pos = torch.searchsorted(pk, pkey)
        pdf = pcnt[pos].double()          # every (node, term) pair is in its parent
        n_par = psize[parent[node]].double()
        score = (cnt.double() / size[node].double()) * (torch.log((1 + n_par) / (1 + pdf)) + 1)
        siblings = torch.bincount(parent, minlength=len(node_keys[d - 1]))
        # per node: candidates sorted by (-score, term name)
        nd_l, sc_l, tm_l = node.tolist(), score.tolist(), term.tolist()
        order = sorted(range(len(nd_l)), key=lambda j: (nd_l[j], -sc_l[j], names[tm_l[j]]))
        cand: dict[int, list] = {}
        for j in order:
            cand.setdefault(nd_l[j], []).append((tm_l[j], sc_l[j]))
        sizes = size.tolist()
        par_l = parent.tolist()
        sib_l = siblings.tolist()
        for ni, key in enumerate(node_keys[d]):
            par = nodes[key[:-1]]
            used: set[str] = set()
            anc = par
            while anc.prefix:
                for t, _ in anc.terms:
                    used |= _words(t)
                anc = nodes[anc.prefix[:-1]]
            picked = []
            for t, s in cand.get(ni, []):
                w = word_sets[t]
                if w <= used:
                    continue
                picked.append((names[t], s))
                used |= w
                if len(picked) == top_terms:
                    break
            n = PrefixNode(prefix=key, size=sizes[ni], label=", ".join(t for t, _ in picked), terms=picked,
                           only_child=sib_l[par_l[ni]] == 1)
            nodes[key] = n
            par.children.append(n)
        prev = (size, k, cnt)
    for n in nodes.values():
        n.children.sort(key=lambda ch: (-ch.size, ch.prefix))
    leaf_items: dict[tuple, list] = {}
    for i, p in zip(ids, prefixes):
        leaf_items.setdefault(p, []).append(i)
    for p, its in leaf_items.items():
        nodes[p].items = its[:max_items_listed]
    return Description(nodes[()], levels, dict(zip(ids, prefixes)), item_terms,
                       {i: _display(t) for i, t in zip(ids, texts)}, top_terms, toks)

