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
e.g. ``coded.sort("item_id").select_columns(["key", "known", "table_suffix"])`` gathered, or read
back from the Parquet parts): exactly the suffixes ``SemanticIds.encode_result`` gives new rows
when all rows are encoded at once in that order (as ``pysid.stream`` does). For catalogues that
outgrow the driver, run ``pysid.dedup.sharded_suffix`` over the ranks that hold the keys.

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

ray is an optional dependency (``pip install "ray[data]"``, or ``pysid[ray]``); this module
imports without it (the encoder is a plain class), only the tests start a Ray cluster.
"""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np
import torch

__all__ = ["SidEncoder", "assign_suffixes"]


class SidEncoder:
    """Encode batches of ``{embedding_column: [n, D] (or n lists), id_column: [n]}`` (a dict of
    numpy arrays or a pandas DataFrame) with a table's codebooks; see the module docstring.

    table: a ``SemanticIds`` or the path of a saved one (loaded here, once per instance).
    num_threads: torch threads of this worker (default: leave torch's setting)."""

    def __init__(self, table: Union[str, "os.PathLike[str]", Any], *, embedding_column: str = "embedding",
                 id_column: str = "item_id", num_threads: int | None = None) -> None:
        from ..sid import SemanticIds, _dedup

        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.table = table if isinstance(table, SemanticIds) else SemanticIds.load(table)
        if _dedup(self.table.dedup).moves:
            raise ValueError(f"SidEncoder supports the dedup rules without moves (suffix, none); this table's "
                             f"rule is {self.table.dedup!r}")
        if self.table.settings.get("inputs", 1) != 1:
            raise ValueError("SidEncoder takes one embedding input per row: this table was fitted on several (hybrid)")
        self.embedding_column, self.id_column = embedding_column, id_column

    def __call__(self, batch):
        from ..dedup import tuple_keys
        from ..stream import _encode_chunk

        pandas = not isinstance(batch, dict)
        get = (lambda k: batch[k].to_numpy()) if pandas else (lambda k: np.asarray(batch[k]))
        cols = list(batch.columns) if pandas else list(batch)
        for k in (self.embedding_column, self.id_column):
            if k not in cols:
                raise ValueError(f"batch has no column {k!r} (columns: {cols})")
        emb = get(self.embedding_column)
        if emb.dtype == object:  # a column of per-row lists / arrays
            lens = {len(v) for v in emb}
            if len(lens) > 1:
                raise ValueError(f"embeddings of different lengths in one batch: {sorted(lens)[:4]}")
            emb = np.stack([np.asarray(v) for v in emb]) if len(emb) else np.zeros((0, 0), np.float32)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be [n, D], got shape {emb.shape}")
        if emb.dtype == np.float64:
            emb = emb.astype(np.float32)
        from ..sid import _method

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


def assign_suffixes(table, keys, known=None, table_suffix=None) -> np.ndarray:
    """[n] int32 suffixes of rows in catalogue order from their packed keys [n] (``SidEncoder``'s
    ``key`` column): a known row (``known``) keeps ``table_suffix``; each new row gets its rank among
    the table's items and the earlier new rows with its tuple - ``SemanticIds.encode_result`` of
    all rows at once (table rule "suffix")."""
    from ..dedup import suffix_of_keys, tuple_keys
    from ..sid import _dedup

    if _dedup(table.dedup).suffix == "never":
        raise ValueError(f"this table's rule {table.dedup!r} has no suffix level")
    k = np.asarray(keys, dtype=np.int64)
    n = k.size
    kn = np.zeros(n, bool) if known is None else np.asarray(known, bool)
    if kn.shape != (n,):
        raise ValueError(f"known has shape {kn.shape} for {n} keys")
    L = table.num_levels
    tkeys = tuple_keys(table.codes[:, :L].numpy(), table.codebook_sizes)
    allk = np.concatenate([tkeys, k[~kn]])
    out = np.zeros(n, np.int32)
    out[~kn] = suffix_of_keys(allk)[tkeys.size:]
    if kn.any():
        if table_suffix is None:
            raise ValueError("known rows need their table_suffix")
        out[kn] = np.maximum(np.asarray(table_suffix)[kn], 0)
    return out
