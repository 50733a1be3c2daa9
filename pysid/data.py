"""Interaction sequences: reading the Amazon review files and the leave-one-out split.

    seqs = pysid.data.read_sequences("../shared/data/amazon/toys.txt")   # list[list[int]]
    split = pysid.data.leave_one_out(seqs, max_history=20)
    split.train            # per user: the sequence without its last two items
    split.test_history, split.test_target

File format (the preprocessed files of salesforce/ICLRec used by TIGER): one line per
user, ``user_id item_id item_id ...``, whitespace separated, items in time order.
Blank lines are skipped. Item ids are returned exactly as written (1-based in the
Amazon files, so id 0 never occurs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

__all__ = ["LeaveOneOut", "leave_one_out", "read_sequences", "read_item_text", "item_terms", "item_sentence"]


def read_sequences(path: str | os.PathLike) -> list[list[int]]:
    """Item id sequences of a ``user item item ...`` file, one per non-blank line, in
    file order (the user id is read, checked to be an integer, and dropped).

    Returns: list of M lists of int (M = number of non-blank lines), each in time order.

    Raises FileNotFoundError for a missing file (IsADirectoryError for a directory) and
    ValueError naming the line number (1-based) for a line that is not integers, has a
    negative id, or has a user id but no item.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"interaction file not found: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"interaction file is a directory: {path!r}")
    sequences: list[list[int]] = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                ids = [int(tok) for tok in fields]
            except ValueError:
                bad = next(tok for tok in fields if not _is_int(tok))
                raise ValueError(
                    f"{path}:{lineno}: expected 'user_id item_id ...' as integers, found {bad!r}"
                ) from None
            if len(ids) < 2:
                raise ValueError(f"{path}:{lineno}: user {fields[0]} has no item (expected 'user_id item_id ...')")
            if min(ids) < 0:
                raise ValueError(f"{path}:{lineno}: negative id {min(ids)}")
            sequences.append(ids[1:])
    return sequences


def _is_int(tok: str) -> bool:
    try:
        int(tok)
    except ValueError:
        return False
    return True


@dataclass
class LeaveOneOut:
    """Leave-one-out split of M user sequences (TIGER / SASRec protocol).

    For user u with sequence s (length n >= 3):

    train[u]:         s[:-2], the whole sequence without the two held-out items (not
                      capped: training examples are built from it, see ``train_examples``).
    valid_history[u]: s[:-2][-max_history:], valid_target[u] = s[-2].
    test_history[u]:  s[:-1][-max_history:] (includes the validation item), test_target[u] = s[-1].

    All lists have length M and follow the input order.
    """

    train: list[list[int]]
    valid_history: list[list[int]]
    valid_target: list[int]
    test_history: list[list[int]]
    test_target: list[int]
    max_history: int | None

    def train_examples(self) -> tuple[list[list[int]], list[int]]:
        """Next-item training examples from ``train``: for every user and every position
        i >= 1 of train[u], history train[u][:i][-max_history:] and target train[u][i].

        Returns (histories, targets), two lists of equal length (sum over users of
        len(train[u]) - 1), users in order, positions ascending.
        """
        cap = self.max_history
        histories: list[list[int]] = []
        targets: list[int] = []
        for s in self.train:
            for i in range(1, len(s)):
                histories.append(s[max(0, i - cap):i] if cap is not None else s[:i])
                targets.append(s[i])
        return histories, targets

    def __repr__(self) -> str:
        return (f"LeaveOneOut(users={len(self.train)}, train_items={sum(map(len, self.train))}, "
                f"max_history={self.max_history})")


def leave_one_out(sequences: Sequence[Sequence[int]], max_history: int | None = 20) -> LeaveOneOut:
    """Split M item sequences by leave-one-out: the last item of each sequence is the test
    target, the one before it the validation target, histories keep at most the last
    ``max_history`` items (None: no cap). See :class:`LeaveOneOut` for the fields.

    sequences: M sequences of int item ids (lists, tuples or 1-D integer tensors), each of
    length >= 3 (the 5-core Amazon files satisfy this); a shorter one is a ValueError
    naming its index.
    """
    if max_history is not None and (isinstance(max_history, bool) or not isinstance(max_history, int)
                                    or max_history < 1):
        raise ValueError(f"max_history must be an int >= 1 or None, got {max_history!r}")
    cap = max_history
    train, vh, vt, th, tt = [], [], [], [], []
    for u, seq in enumerate(sequences):
        s = seq.tolist() if hasattr(seq, "tolist") else list(seq)
        if len(s) < 3:
            raise ValueError(
                f"sequence {u} has {len(s)} item(s); leave-one-out needs at least 3 "
                "(one training item, a validation and a test target)")
        tr = s[:-2]
        train.append(tr)
        vh.append(tr[-cap:] if cap is not None else list(tr))
        vt.append(s[-2])
        th.append(s[-1 - cap:-1] if cap is not None else s[:-1])
        tt.append(s[-1])
    return LeaveOneOut(train, vh, vt, th, tt, max_history)


ITEM_FIELDS = ("asin", "idgenrec_textual_id", "attributes", "grlm_terms", "gram_lexical_id")


def read_item_text(path: str | os.PathLike) -> dict[int, dict[str, str]]:
    """Item text of an ``*_items.tsv`` file (header row ``item_id asin idgenrec_textual_id
    attributes grlm_terms gram_lexical_id``, tab separated): {item_id: {field: text}}.

    Fields (see the data README): ``idgenrec_textual_id`` a short title phrase,
    ``attributes`` brand and categories separated by " | " (may be empty), ``grlm_terms``
    five comma-separated keywords, ``gram_lexical_id`` sub-word tokens, ``asin``. Missing
    trailing fields are empty strings.

    Raises FileNotFoundError for a missing file and ValueError naming the line for a header
    without ``item_id`` or a row whose item id is not a non-negative integer or repeats.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"item text file not found: {path!r}")
    out: dict[int, dict[str, str]] = {}
    with open(path, "r", encoding="utf-8") as f:
        head = f.readline().rstrip("\n").split("\t")
        if not head or head[0] != "item_id":
            raise ValueError(f"{path}:1: expected a header row starting with 'item_id', got {head[:3]!r}")
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            cells = line.split("\t")
            try:
                item = int(cells[0])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: item id {cells[0]!r} is not an integer") from None
            if item < 0 or item in out:
                raise ValueError(f"{path}:{lineno}: item id {item} is negative or repeated")
            cells += [""] * (len(head) - len(cells))
            out[item] = {h: cells[j].strip() for j, h in enumerate(head[1:], start=1)}
    return out


def item_terms(fields: dict[str, str]) -> list[str]:
    """Terms of one item's text for labels (``pysid.explain.describe``): its brand and
    category names whole (``attributes``, e.g. "LEGO", "Building Sets"), then the words of
    the title phrase and the keywords (lower case, stop words and 1-character words removed)."""
    import re  # noqa: PLC0415

    from .explain import STOP_WORDS  # noqa: PLC0415

    attrs = [a.strip() for a in fields.get("attributes", "").split("|") if a.strip()]
    words = re.findall(r"[a-z0-9][a-z0-9'&\-]*[a-z0-9]|[a-z0-9]",
                       (fields.get("idgenrec_textual_id", "") + " " + fields.get("grlm_terms", "").replace(",", " ")).lower())
    words = [w for w in words if len(w) > 1 and w not in STOP_WORDS]
    return list(dict.fromkeys(attrs + words))


def item_sentence(fields: dict[str, str]) -> str:
    """One sentence per item for a text encoder: title phrase, brand and categories,
    keywords (``gram_lexical_id`` is left out: sub-word fragments, not words)."""
    parts = [fields.get("idgenrec_textual_id", ""), fields.get("attributes", "").replace(" | ", ", "),
             fields.get("grlm_terms", "")]
    return ". ".join(p for p in parts if p)
