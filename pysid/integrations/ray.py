"""Ray Data (and Spark) integration: encode a distributed dataset with a SemanticIds table.

    import ray, pysid
    from pysid.integrations.ray import SidEncoder, assign_suffixes

    ds = ray.data.read_parquet("s3://bucket/embeddings/")           # columns item_id, embedding
    coded = ds.map_batches(SidEncoder, fn_constructor_kwargs={"table": "sids.npz"},
                           batch_format="numpy", concurrency=8)    # the table is loaded once per actor
    coded.write_parquet("out/")                                     # item_id, level_0.., known, table_suffix, key

``SidEncoder`` is a callable class: Ray builds one per actor (``concurrency`` actors), which
loads the table once (a path, or a ``SemanticIds`` object shipped with the class) and encodes
each batch: a row whose ``item_id`` is a table item gets the table's ID (``known``), every other
row the greedy codes of the table's codebooks (``SemanticIds.encode_result`` with those ids,
semantic levels only). Output columns: ``item_id`` (int64), ``level_0`` .. ``level_{L-1}``
(int32), ``known`` (bool), ``table_suffix`` (int32: the table's suffix of a known row, -1 for a
new row) and ``key`` (int64, the packed semantic tuple ``pysid.dedup.tuple_keys``).

The suffix of new rows is a global step (each new row's rank among the table's items and the
earlier new rows with its tuple): batches on separate actors cannot number them.
:func:`assign_suffixes` does it from the rows' keys in the catalogue's order (one int64 per row,
e.g. ``coded.select_columns(["item_id", "key", "known", "table_suffix"]).to_pandas()`` sorted by
``item_id`` on the driver - Ray Data does not keep block order by default - or read back from
the Parquet parts): exactly the suffixes ``SemanticIds.encode_result`` gives new rows
when all rows are encoded at once in that order (as ``pysid.stream`` does). For catalogues that
outgrow the driver, run ``pysid.dedup.sharded_suffix`` over the ranks that hold the keys.

Tables whose dedup rule is "reassign" (colliding new rows move to a free nearby last-level code;
a suffix level only for rows left over) take two passes, as ``pysid.stream.encode_shards`` does:
which rows move is known only from all keys and the table's tuples, and a mover's new code needs
its residual before the last level, which pass 1 does not keep (it would be D floats a row).

1. pass 1: ``SidEncoder`` as above (the level columns are the greedy codes, before any move);
2. the driver: :func:`reassign_movers` ``(table, keys, known)`` gives the rows (catalogue order)
   that must move or try to: from the keys alone (one sort; ~10-15 % of the new rows of a fitted
   table);
3. pass 2: the movers' embeddings, read again in catalogue order (filter the dataset to their
   item ids), go to :func:`assign_moves` ``(table, keys, known, embeddings)``, which computes
   their residuals and m nearest last-level codewords and runs the table's rule
   (``pysid.sid._reassign_with``, the one driver of fit, encode and streamed encode): a
   :class:`Moves` with the moved rows and their new last codes, every row's final key and - only
   when the rule needs it (rows left over, or a table with a suffix level) - every row's suffix.

The result is ``SemanticIds.encode_result`` of all rows at once in catalogue order, bit for bit
(the movers' distances are computed in blocks of one shape, so that a row's scores do not
depend on which rows share its block). ``moves.batch_fn(item_ids)`` applies it to pass 1's
output in ``map_batches`` (only the changed rows travel with it). Worked example, catalogue order
= item id order::

    import numpy as np, ray, pysid
    from pysid.integrations.ray import SidEncoder, reassign_movers, assign_moves

    table = pysid.SemanticIds.load("sids.npz")                                   # dedup="reassign"
    ds = ray.data.read_parquet("s3://bucket/embeddings/")                        # item_id, embedding
    coded = ds.map_batches(SidEncoder, fn_constructor_kwargs={"table": "sids.npz"}, batch_format="numpy",
                           concurrency=8).materialize()                          # pass 1
    cols = (coded.select_columns(["item_id", "key", "known", "table_suffix"]).to_pandas()
            .sort_values("item_id"))                                             # the driver: 21 bytes a row
    ids, keys, known = cols["item_id"].to_numpy(), cols["key"].to_numpy(), cols["known"].to_numpy()
    movers = reassign_movers(table, keys, known)                                 # catalogue rows

    def keep(batch, ids):                                                        # the movers' rows only
        hit = np.isin(batch["item_id"], ids)
        return {k: v[hit] for k, v in batch.items()}
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # batches in sorted order
    mv = ds.map_batches(keep, fn_kwargs={"ids": ids[movers]}, batch_format="numpy").sort("item_id")
    moves = assign_moves(table, keys, known, mv.iter_batches(batch_format="numpy", batch_size=65536),
                         table_suffix=cols["table_suffix"].to_numpy(), item_ids=ids)   # pass 2
    final = coded.map_batches(moves.batch_fn(ids), batch_format="numpy")         # level_{L-1} moved, + suffix
    final.drop_columns(["key", "table_suffix"]).write_parquet("out/")

Order matters twice: the keys must be gathered in catalogue order (Ray Data does not keep block
order by default: sort on the driver, as above), and the movers' embeddings must come in that
order. ``item_ids=ids`` makes :func:`assign_moves` check the latter on the batches (which carry
``item_id``): a ValueError, never a wrong ID; plain ``[m, D]`` arrays (or one ``[M, D]`` array)
are taken as they come. ``concurrency`` actors hold a CPU each: leave CPUs for the read and sort
tasks (with every CPU held by an actor, a ``read_parquet`` pipeline waits for ever). Memory on
the driver: the gathered columns (21 bytes a row), the final keys, suffixes and the rule's sorted
keys (~20 bytes a row), plus about 40 + 5 m bytes per mover (m = ``reassign_candidates``, 32 by
default) and one batch. Pass 2's arithmetic (the movers' encode and distances to the last
codebook: ~10-15 % of the new rows' encode) runs on the driver.

Spark recipe (no Spark dependency here): the same class in a pandas UDF::

    from pysid.integrations.ray import SidEncoder
    enc = None
    def encode_partition(frames):                      # df.mapInPandas(encode_partition, schema)
        global enc
        enc = enc or SidEncoder("sids.npz")              # once per Python worker
        for pdf in frames:
            yield enc(pdf)                               # a pandas DataFrame in, a DataFrame out
    schema = "item_id long, level_0 int, level_1 int, level_2 int, known boolean, table_suffix int, key long"
    coded = df.mapInPandas(encode_partition, schema)

and for a "reassign" table the same two passes (the driver collects the key columns in item id
order, pass 2 joins the embeddings with the movers' ids)::

    cols = coded.select("item_id", "key", "known", "table_suffix").orderBy("item_id").toPandas()
    ids, keys, known = cols["item_id"].to_numpy(), cols["key"].to_numpy(), cols["known"].to_numpy()
    movers = reassign_movers(table, keys, known)
    mids = spark.createDataFrame(pd.DataFrame({"item_id": ids[movers]}))
    mv = df.join(mids, "item_id").orderBy("item_id").select("item_id", "embedding")

    def batches(rows, n=65536):                          # Spark Rows -> [n, D] float32 arrays
        buf = []
        for r in rows:
            buf.append(r["embedding"])
            if len(buf) == n:
                yield np.asarray(buf, np.float32); buf = []
        if buf:
            yield np.asarray(buf, np.float32)
    moves = assign_moves(table, keys, known, batches(mv.toLocalIterator()),
                         table_suffix=cols["table_suffix"].to_numpy())
    fix = moves.batch_fn(ids)                            # the final IDs: level_{L-1} moved, + suffix if any
    final = coded.mapInPandas(lambda fs: (fix(f) for f in fs),
                              schema + (", suffix int" if moves.suffix is not None else ""))

(a float32 embedding read as Spark doubles converts back exactly).

ray is an optional dependency (``pip install "ray[data]"``, or ``pysid[ray]``); this module
imports without it (the encoder is a plain class), only the tests start a Ray cluster.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, NamedTuple, Union

import numpy as np
import torch

__all__ = ["SidEncoder", "assign_suffixes", "reassign_movers", "assign_moves", "Moves"]


def _embedding_matrix(emb: np.ndarray, what: str) -> np.ndarray:
    """[n, D] from an embedding column: a 2-D array, or an object column of per-row lists / arrays."""
    if emb.dtype == object:  # a column of per-row lists / arrays
        lens = {len(v) for v in emb}
        if len(lens) > 1:
            raise ValueError(f"{what}: embeddings of different lengths in one batch: {sorted(lens)[:4]}")
        emb = np.stack([np.asarray(v) for v in emb]) if len(emb) else np.zeros((0, 0), np.float32)
    if emb.ndim != 2:
        raise ValueError(f"{what}: embeddings must be [n, D], got shape {emb.shape}")
    if emb.dtype == np.float64:
        emb = emb.astype(np.float32)
    return emb


def _columns(batch):
    """(getter of a column as numpy, column names) of a dict of arrays or a pandas DataFrame."""
    if isinstance(batch, dict):
        return (lambda k: np.asarray(batch[k])), list(batch)
    return (lambda k: batch[k].to_numpy()), list(batch.columns)


def _one_input(table, what: str) -> None:
    if table.settings.get("inputs", 1) != 1:
        raise ValueError(f"{what} takes one embedding input per row: this table was fitted on several (hybrid)")


class SidEncoder:
    """Encode batches of ``{embedding_column: [n, D] (or n lists), id_column: [n]}`` (a dict of
    numpy arrays or a pandas DataFrame) with a table's codebooks; see the module docstring.

    table: a ``SemanticIds`` or the path of a saved one (loaded here, once per instance); its rule
    "suffix", "none" or "reassign" (then the level columns are the greedy codes: finish with
    :func:`reassign_movers` and :func:`assign_moves`).
    num_threads: torch threads of this worker (default: leave torch's setting)."""

    def __init__(self, table: Union[str, "os.PathLike[str]", Any], *, embedding_column: str = "embedding",
                 id_column: str = "item_id", num_threads: int | None = None) -> None:
        from ..sid import SemanticIds, _dedup

        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.table = table if isinstance(table, SemanticIds) else SemanticIds.load(table)
        rule = _dedup(self.table.dedup)
        if rule.moves and rule.name != "reassign":
            raise ValueError(f"SidEncoder supports the dedup rules suffix, reassign and none; this table's "
                             f"rule is {self.table.dedup!r}")
        _one_input(self.table, "SidEncoder")
        self.embedding_column, self.id_column = embedding_column, id_column

    def __call__(self, batch):
        from ..dedup import tuple_keys
        from ..sid import _method
        from ..stream import _encode_chunk

        pandas = not isinstance(batch, dict)
        get, cols = _columns(batch)
        for k in (self.embedding_column, self.id_column):
            if k not in cols:
                raise ValueError(f"batch has no column {k!r} (columns: {cols})")
        emb = _embedding_matrix(get(self.embedding_column), "batch")
        want = _method(self.table.method).input_dim(self.table)
        n = emb.shape[0]
        if n and emb.shape[1] != want:
            raise ValueError(f"embeddings have D={emb.shape[1]}, the table expects D={want}")
        ids = get(self.id_column)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{self.id_column} must be integers, got {ids.dtype}")
        L = self.table.num_levels
        if n:
            out = _encode_chunk(self.table, torch.from_numpy(np.ascontiguousarray(emb)),
                                torch.from_numpy(ids.astype(np.int64)), "batch")
        else:
            out = {"sem": np.zeros((0, L), np.int32), "known": np.zeros(0, bool),
                   "table_suffix": np.zeros(0, np.int32), "ids": np.zeros(0, np.int64)}
        res: dict[str, np.ndarray] = {"item_id": out["ids"]}
        for j in range(L):
            res[f"level_{j}"] = np.ascontiguousarray(out["sem"][:, j])
        res["known"] = out["known"]
        res["table_suffix"] = out["table_suffix"]
        res["key"] = tuple_keys(out["sem"], self.table.codebook_sizes)
        if pandas:
            import pandas as pd

            return pd.DataFrame(res)
        return res


def _keys_known(table, keys, known) -> tuple[np.ndarray, np.ndarray]:
    """keys [n] int64 and known [n] bool, checked (the new rows' keys in range of the table's sizes)."""
    import math

    k = np.asarray(keys)
    if k.ndim != 1 or (k.size and k.dtype.kind not in "iu"):
        raise ValueError(f"keys must be a 1-D integer array (SidEncoder's key column), got shape {k.shape} ({k.dtype})")
    k = k.astype(np.int64, copy=False)
    kn = np.asarray(known)
    if kn.shape != k.shape:
        raise ValueError(f"known has shape {kn.shape} for {k.size} keys")
    if kn.size and kn.dtype != bool:
        raise ValueError(f"known must be booleans (SidEncoder's known column), got {kn.dtype}")
    kn = kn.astype(bool, copy=False)
    new = k[~kn]
    top = math.prod(int(s) for s in table.codebook_sizes)
    if new.size and (int(new.min()) < 0 or int(new.max()) >= top):
        raise ValueError(f"keys out of range for this table's codebook sizes {list(map(int, table.codebook_sizes))} "
                         f"(0 <= key < {top}): keys of another table?")
    return k, kn


def _table_keys(table) -> np.ndarray:
    from ..dedup import tuple_keys

    return tuple_keys(table.codes[:, : table.num_levels].numpy(), table.codebook_sizes)


def _suffixes(table, k: np.ndarray, kn: np.ndarray, table_suffix) -> np.ndarray:
    """Every row's suffix from final keys: known rows the table's, new rows their rank among the
    table's items and the earlier new rows with their tuple."""
    from ..dedup import suffix_of_keys

    n = k.size
    tkeys = _table_keys(table)
    out = np.zeros(n, np.int32)
    out[~kn] = suffix_of_keys(np.concatenate([tkeys, k[~kn]]))[tkeys.size:]
    if kn.any() and table.has_suffix:
        if table_suffix is None:
            raise ValueError("known rows need their table_suffix (SidEncoder's table_suffix column)")
        ts = np.asarray(table_suffix)
        if ts.shape != (n,):
            raise ValueError(f"table_suffix has shape {ts.shape} for {n} keys")
        out[kn] = np.maximum(ts[kn], 0)
    return out


def assign_suffixes(table, keys, known=None, table_suffix=None) -> np.ndarray:
    """[n] int32 suffixes of rows in catalogue order from their packed keys [n] (``SidEncoder``'s
    ``key`` column): a known row (``known``) keeps ``table_suffix``; each new row gets its rank among
    the table's items and the earlier new rows with its tuple - ``SemanticIds.encode_result`` of
    all rows at once (table rule "suffix"). A "reassign" table: :func:`assign_moves`."""
    from ..sid import _dedup

    rule = _dedup(table.dedup)
    if rule.moves:
        raise ValueError(f"this table's rule {table.dedup!r} moves rows first: use reassign_movers and assign_moves "
                         "(its result has the suffixes)")
    if rule.suffix == "never":
        raise ValueError(f"this table's rule {table.dedup!r} has no suffix level")
    k, kn = _keys_known(table, keys, np.zeros(np.asarray(keys).shape, bool) if known is None else known)
    if kn.any() and table_suffix is None:
        raise ValueError("known rows need their table_suffix")
    return _suffixes(table, k, kn, table_suffix)


def _reassign_table(table, what: str) -> None:
    from ..sid import _dedup

    if not _dedup(table.dedup).moves:
        raise ValueError(f"{what} is for tables whose dedup rule moves rows (reassign); this table's rule is "
                         f"{table.dedup!r}" + (": use assign_suffixes" if table.dedup == "suffix" else ""))
    _one_input(table, what)


def reassign_movers(table, keys, known) -> np.ndarray:
    """The rows [M] int64 (ascending positions in catalogue order) of a "reassign" table's encode
    that move or try to: new rows after the first of their tuple, or on a table item's tuple.
    ``keys`` [n], ``known`` [n]: ``SidEncoder``'s ``key`` and ``known`` columns of every row in
    catalogue order. Pass their embeddings, in this order, to :func:`assign_moves`."""
    from ..sid import _movers

    _reassign_table(table, "reassign_movers")
    k, kn = _keys_known(table, keys, known)
    new_rows = np.flatnonzero(~kn)
    return new_rows[_movers(k[new_rows], _table_keys(table))]


class Moves(NamedTuple):
    """What :func:`assign_moves` returns (positions in catalogue order).

    rows:   [k] int64 rows whose last level moved (ascending);
    last:   [k] int32 their new ``level_{L-1}`` code;
    keys:   [n] int64 every row's final key (``pysid.dedup.tuple_keys`` of its semantic codes);
    suffix: [n] int32 every row's suffix level when the IDs have one (rows left on a taken tuple,
            or a table with a suffix level), else None."""

    rows: np.ndarray
    last: np.ndarray
    keys: np.ndarray
    suffix: np.ndarray | None

    def batch_fn(self, item_ids, *, id_column: str = "item_id"):
        """A function of ``SidEncoder`` output batches (dict of numpy arrays or pandas DataFrame), for
        ``coded.map_batches(moves.batch_fn(ids), batch_format="numpy")``: the final IDs - the moved
        rows' ``level_{L-1}``, and a ``suffix`` column when the IDs have a suffix level. ``item_ids``
        [n]: the catalogue's item ids (unique), in the order of the keys. Only the rows that differ
        from pass 1 (moved, or a new row with a suffix) travel with the function."""
        ids = np.asarray(item_ids)
        if ids.shape != self.keys.shape or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"item_ids must be [{self.keys.size}] integers (the catalogue's, in key order), "
                             f"got shape {ids.shape} ({ids.dtype})")
        srt = np.sort(ids)
        if srt.size > 1 and (srt[1:] == srt[:-1]).any():  # an id's moves would reach its namesakes too
            raise ValueError(f"item_ids are not unique (e.g. {int(srt[1:][srt[1:] == srt[:-1]][0])}): the moves "
                             "cannot be applied by item id")
        del srt
        change = np.zeros(ids.size, bool)
        change[self.rows] = True
        if self.suffix is not None:
            change |= self.suffix > 0  # known rows too: the suffix column is written from these for them
        rows = np.flatnonzero(change)
        uid = ids[rows].astype(np.int64)
        order = np.argsort(uid, kind="stable")
        uid, rows = uid[order], rows[order]
        last_col = np.full(ids.size, -1, np.int64)  # only at the changed rows
        last_col[self.rows] = self.last
        ulast = last_col[rows]
        usuf = None if self.suffix is None else self.suffix[rows]
        return _ApplyMoves(uid, ulast, usuf, id_column)


class _ApplyMoves:
    """``Moves.batch_fn``: picklable (Ray ships it to the workers), the changed rows sorted by id."""

    def __init__(self, ids, last, suffix, id_column):
        self.ids, self.last, self.suffix, self.id_column = ids, last, suffix, id_column

    def __call__(self, batch):
        get, cols = _columns(batch)
        levels = sorted((c for c in cols if c.startswith("level_")), key=lambda c: int(c[6:]))
        if self.id_column not in cols or not levels or "known" not in cols:
            raise ValueError(f"batch_fn takes SidEncoder output batches; columns: {cols}")
        bid = get(self.id_column).astype(np.int64)
        i = np.searchsorted(self.ids, bid)
        hit = i < self.ids.size
        hit[hit] = self.ids[i[hit]] == bid[hit]
        i = np.where(hit, i, 0)
        last_name = levels[-1]
        lastc = get(last_name).copy()
        moved = hit & (self.last[i] >= 0) if self.ids.size else hit
        lastc[moved] = self.last[i[moved]]
        out = {c: get(c) for c in cols}
        out[last_name] = lastc
        if self.suffix is not None:
            known = get("known").astype(bool)
            ts = get("table_suffix") if "table_suffix" in cols else np.zeros(bid.size, np.int32)
            s = np.where(known, np.maximum(ts, 0), 0).astype(np.int32)
            if self.ids.size:
                s[hit] = self.suffix[i[hit]]
            out["suffix"] = s
        if isinstance(batch, dict):
            return out
        import pandas as pd

        return pd.DataFrame(out)


def _mover_batches(embeddings, embedding_column: str, id_column: str):
    """(batch number, [m, D] array, ids or None) of ``assign_moves``'s embeddings argument."""
    if isinstance(embeddings, (np.ndarray, torch.Tensor, dict)) or hasattr(embeddings, "columns"):
        embeddings = [embeddings]  # one array or one batch
    if isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Iterable):
        raise TypeError("embeddings must be the movers' embeddings: an [M, D] array or an iterable of [m, D] arrays "
                        f"or of batches with an {embedding_column!r} column, got {type(embeddings).__name__}")
    for b, x in enumerate(embeddings):
        ids = None
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            if not (isinstance(x, dict) or hasattr(x, "columns")):
                raise TypeError(f"mover embeddings batch {b}: an array or a batch (dict / DataFrame) expected, "
                                f"got {type(x).__name__}")
            get, cols = _columns(x)
            if embedding_column not in cols:
                raise ValueError(f"mover embeddings batch {b} has no column {embedding_column!r} (columns: {cols})")
            ids = get(id_column) if id_column in cols else None
            x = _embedding_matrix(get(embedding_column), f"mover embeddings batch {b}")
        yield b, x, ids


def assign_moves(table, keys, known, embeddings, *, table_suffix=None, item_ids=None,
                 embedding_column: str = "embedding", id_column: str = "item_id") -> Moves:
    """The "reassign" rule over every row of a catalogue encoded by ``SidEncoder`` (pass 1):
    ``SemanticIds.encode_result`` of all rows at once in catalogue order, bit for bit.

    keys, known: [n] ``SidEncoder``'s ``key`` and ``known`` columns in catalogue order.
    embeddings: the embeddings of the rows :func:`reassign_movers` gives, in that order: an
        [M, D] array / tensor, or one batch, or an iterable (read once, a batch at a time) of
        [m, D] arrays or of batches (dict of numpy arrays, pandas DataFrame) with an
        ``embedding_column`` (and optionally an ``id_column``).
    table_suffix: [n] ``SidEncoder``'s ``table_suffix`` column (needed when the table has a
        suffix level and some rows are known).
    item_ids: [n] the catalogue's item ids: when given, batches that carry an ``id_column`` are
        checked against the movers' ids (a batch out of order is a ValueError).

    Returns :class:`Moves`. ValueError on keys/known of different lengths, keys out of range, too
    few or too many mover embeddings, a wrong D, NaN/Inf; a table of another rule or a hybrid one."""
    from ..sid import _as_embeddings, _method, _quantize, _reassign_with

    _reassign_table(table, "assign_moves")
    k, kn = _keys_known(table, keys, known)
    n = k.size
    if table_suffix is not None and np.asarray(table_suffix).shape != (n,):
        raise ValueError(f"table_suffix has shape {np.asarray(table_suffix).shape} for {n} keys")
    check = None
    if item_ids is not None:
        check = np.asarray(item_ids)
        if check.shape != (n,):
            raise ValueError(f"item_ids has shape {check.shape} for {n} keys")
    new_rows = np.flatnonzero(~kn)
    kn_new = k[new_rows]  # a copy: updated with the moves
    method = _method(table.method)
    want = method.input_dim(table)
    beam = table.settings.get("beam_width", 1)

    def residuals(mv: np.ndarray):  # the movers (ascending new-row numbers), their residuals in order
        M = mv.size
        mover_ids = None if check is None else check[new_rows[mv]]
        if embeddings is None:
            if M:
                raise ValueError(f"assign_moves: the embeddings of the {M} movers are missing (reassign_movers)")
            return
        got = 0
        for b, x, ids in _mover_batches(embeddings, embedding_column, id_column):
            if x.ndim == 2 and x.shape[0] == 0:
                continue
            x = _as_embeddings(x, f"mover embeddings batch {b}")
            if x.shape[1] != want:
                raise ValueError(f"mover embeddings batch {b} has D={x.shape[1]}, the table expects D={want}")
            m = x.shape[0]
            if got + m > M:
                raise ValueError(f"more mover embeddings than the {M} movers (reassign_movers): {got + m} by batch {b}")
            if mover_ids is not None and ids is not None:
                if ids.shape != (m,) or not np.array_equal(ids.astype(np.int64), mover_ids[got : got + m]):
                    raise ValueError(f"mover embeddings batch {b}: its {id_column} are not the movers' in catalogue "
                                     f"order (rows {got}..{got + m - 1} of the movers; sort the movers as the keys)")
            got += m
            yield _quantize(method.latents(table, x), table.codebooks, beam)[1]
        if got != M:
            raise ValueError(f"{got} mover embeddings for the {M} movers (reassign_movers): pass all of them, in order")

    k_last = int(table.codebook_sizes[-1])
    tkeys = _table_keys(table)
    rows, new, n_movers = _reassign_with(kn_new, tkeys if tkeys.size else None, table.codebooks[-1], k_last,
                                         table.settings.get("reassign_candidates", 32), residuals)
    kn_new[rows] += new - kn_new[rows] % k_last
    final = k.copy()
    final[new_rows] = kn_new
    suffix = None
    if table.has_suffix or n_movers > rows.size:  # the rule's "if-needed" suffix level
        suffix = _suffixes(table, final, kn, table_suffix)
    return Moves(rows=new_rows[rows].astype(np.int64), last=np.asarray(new, np.int32), keys=final, suffix=suffix)
