"""Streaming encode: embedding shards on disk -> Semantic IDs in Parquet, in bounded memory.

    table = pysid.SemanticIds.load("sids.npz")
    summary = pysid.stream.encode_shards(table, "emb/*.npy", "out/", chunk_rows=65536)
    ids = pysid.stream.read_output("out/")        # dict of numpy columns (small outputs, tests)

Inputs (``inputs``: a path, a directory, a glob pattern, or a list of them; files in sorted
order within a directory or pattern, the list's order otherwise):

* ``.npy`` [N, D] float16, float32 or float64 (encoded as float32), C order,
  read chunk by chunk with positioned reads (no memory map: mapped pages would count in the
  process's resident memory). Item ids: the global row number plus ``first_id``.
* ``.parquet`` with an embedding column (``embedding_column``, default "embedding": a list,
  large list or fixed-size list of floats) and, if present, an id column (``id_column``,
  default "item_id", integers; without it: the global row number plus ``first_id``), read
  by the row groups that overlap each chunk (pyarrow needed: ``pip install pyarrow``).

Every shard must have the table's input dimension D (checked for all shards before any
work; ValueError naming the shard).

Output (``out_dir``): one Parquet file per input chunk, ``part-000000.parquet``, ... in input
order, with the columns ``item_id`` (int64), one int32 column per semantic level (``level_0``,
``level_1``, ...), ``suffix`` (int32, when the table's rule has a suffix level) and ``known``
(bool). Rows are exactly ``table.encode_result(x, item_ids=ids)`` of all input rows at once:

* a row whose id is in the table (``known``) gets the table's ID of that item;
* every other row gets the codes of the table's codebooks, and its suffix is its rank among
  the table's items and the earlier new rows (in input order) with the same semantic tuple -
  the table's rule for new items, so that no new ID collides with a table ID or another new
  row's ID. (Rows are not added to the table.)

Tables whose dedup rule is "reassign": the new rows move as in ``encode_result`` (colliding rows
- after the first of their tuple, or on a table item's tuple - go to a free last-level code among
their m nearest). The final pass finds these movers from the keys alone (``pysid.dedup``), reads
the chunks that hold them again, computes only the movers' residuals before the last level and
their m nearest last-level codewords (in the same blocks as ``encode_result``: the same bits),
runs ``pysid.dedup.reassign_moves`` and writes the moved codes; the ``suffix`` column is there
only when some rows are left on a taken tuple (or the table has a suffix level). Extra memory:
about 5 m bytes per mover (m = 32 by default; ~12 % of the rows collide in fitted tables). Not
torch.distributed: ``pysid.dedup.sharded_reassign`` (each rank computes its own movers'
candidates; the prefixes are solved by their hash owners): the one-process output. Hybrid tables
(a list of inputs) are refused.

Crash safety and resume: ``out_dir/_manifest.json`` records the inputs (path, size,
modification time, rows, D), the table's digest and the settings; each chunk's codes are
written atomically to ``out_dir/_work/chunk-NNNNNN.npz`` (a crash leaves a chunk whole or
absent, never half). Calling ``encode_shards`` again with the same arguments skips the chunks
that are there and encodes the rest: no duplicates, no gaps. The final pass reads the codes
of every chunk into one int64 tuple key per row (after the table's items' keys), computes
the suffixes with ``pysid.dedup.suffix_of_keys`` (about 20 bytes per row and table item in
all: the keys, the sorted packed keys and the int32 suffixes), writes each ``part-*.parquet`` atomically, and
only then marks the manifest ``"complete": true`` and writes ``_SUCCESS``; ``read_output`` and
a reader that checks ``_SUCCESS`` never see a partial result as complete. An input that
fails mid-run (unreadable, truncated, NaN/Inf rows, a wrong list length) raises ValueError
naming the shard and rows; the output stays incomplete. Inputs that changed since the
manifest was written, or another table, are refused unless ``overwrite=True`` (which clears
the folder's pysid files and starts again).

torch.distributed (every rank calls ``encode_shards`` with the same arguments; inputs and
``out_dir`` on a file system every rank sees, e.g. under ``torchrun``): the chunks are split
over the ranks in contiguous blocks (rank r: chunks floor(r C / W) .. floor((r + 1) C / W) - 1),
each rank encodes its own into ``_work``, the final pass runs the suffix dedup over all ranks
(``pysid.dedup.sharded_suffix``: the table's items on rank 0, then every rank's new rows in
input order - exactly the one-process suffixes) and each rank writes its parts; rank 0 prepares
the folder and marks the run complete after every rank wrote its parts. The output is the
one-process output, part for part (the same rows and columns). A rank whose shard fails mid-run makes every rank raise
(naming the rank); the chunks finished so far stay, so a rerun - with any number of ranks, or
one process - resumes. The summary's counts are over all ranks; ``encode_s`` and ``rows_per_s``
are this rank's. (A rank that dies without raising stops the others with torch.distributed's
connection error; torchrun then ends the run; the output stays incomplete either way.)
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import math
import os
import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from ._io import atomic_write
from .dedup import suffix_of_keys, tuple_keys

__all__ = ["encode_shards", "read_output", "StreamSummary", "list_shards"]

_FORMAT = "pysid.stream"
_VERSION = 2  # 2: compact work files (uint8 codes, known rows, ids only from an id column)
_MANIFEST = "_manifest.json"
_SUCCESS = "_SUCCESS"
_WORK = "_work"

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class StreamSummary:
    """What :func:`encode_shards` did. ``rows``: input rows; ``known_rows``: rows whose id is a
    table item; ``new_rows``: the others; ``chunks``: input chunks (= output parts);
    ``chunks_skipped``: chunks found complete from an earlier run; ``parts``: the output files
    in order; ``encode_s`` / ``dedup_s``: seconds of the chunk pass (this call) and the final
    pass; ``rows_per_s``: rows encoded in this call per second of the chunk pass."""

    out_dir: str
    rows: int
    new_rows: int
    known_rows: int
    chunks: int
    chunks_skipped: int
    parts: list = field(default_factory=list)
    encode_s: float = 0.0
    dedup_s: float = 0.0
    rows_per_s: float = 0.0
    suffixed_rows: int = 0
    max_suffix: int = 0


# --------------------------------------------------------------------------- inputs
@dataclass
class _Shard:
    path: str
    kind: str  # "npy" | "parquet"
    rows: int
    dim: int
    size: int
    mtime_ns: int
    dtype: str = ""
    offset: int = 0  # npy: data offset
    row_groups: list = field(default_factory=list)  # parquet: rows per row group
    has_ids: bool = False

    def key(self) -> dict:
        return {"path": self.path, "kind": self.kind, "rows": self.rows, "dim": self.dim, "size": self.size,
                "mtime_ns": self.mtime_ns}


def list_shards(inputs) -> list[str]:
    """The input files of ``inputs`` (a path, directory, glob pattern, or a list of them), in
    order. ValueError if something matches no .npy / .parquet file."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("no inputs given")
    out: list[str] = []
    for it in items:
        p = os.fspath(it)
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith((".npy", ".parquet")))
            if not found:
                raise ValueError(f"input folder {p} holds no .npy or .parquet file")
            out += found
        elif any(ch in p for ch in "*?["):
            found = sorted(f for f in _glob.glob(p) if os.path.isfile(f))
            if not found:
                raise ValueError(f"input pattern {p} matches no file")
            out += found
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ValueError(f"input {p}: no such file or folder")
    bad = [f for f in out if not f.endswith((".npy", ".parquet"))]
    if bad:
        raise ValueError(f"inputs must be .npy or .parquet files, got {bad[0]}")
    return [os.path.abspath(f) for f in out]


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet input/output needs pyarrow: pip install pyarrow (or pysid[parquet])") from None
    return pa, pq


def _scan(path: str, embedding_column: str, id_column: str) -> _Shard:
    st = os.stat(path)
    if path.endswith(".npy"):
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                offset = f.tell()
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path} is not a readable .npy file ({e})") from None
        if len(shape) != 2:
            raise ValueError(f"{path}: embeddings must be [N, D], got shape {shape}")
        if fortran:
            raise ValueError(f"{path}: Fortran-order arrays are not supported (save it C-contiguous)")
        if dtype not in (np.float16, np.float32, np.float64):
            raise ValueError(f"{path}: dtype {dtype} is not float16, float32 or float64")
        need = offset + shape[0] * shape[1] * dtype.itemsize
        if st.st_size < need:
            raise ValueError(f"{path} is truncated: {st.st_size} bytes, the header promises {need}")
        return _Shard(path, "npy", int(shape[0]), int(shape[1]), st.st_size, st.st_mtime_ns, dtype.str, offset)
    pa, pq = _pyarrow()
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several kinds
        raise ValueError(f"{path} is not a readable Parquet file ({type(e).__name__}: {e})") from None
    schema = pf.schema_arrow
    if embedding_column not in schema.names:
        raise ValueError(f"{path} has no column {embedding_column!r} (columns: {schema.names})")
    t = schema.field(embedding_column).type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
            or not pa.types.is_floating(t.value_type):
        raise ValueError(f"{path}: column {embedding_column!r} must be a list of floats, got {t}")
    has_ids = id_column in schema.names
    if has_ids and not pa.types.is_integer(schema.field(id_column).type):
        raise ValueError(f"{path}: id column {id_column!r} must be integers, got {schema.field(id_column).type}")
    groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    rows = int(pf.metadata.num_rows)
    if pa.types.is_fixed_size_list(t):
        dim = int(t.list_size)
    elif rows:
        first = pf.read_row_group(0, columns=[embedding_column]).column(0)
        dim = len(first[0].as_py()) if len(first) else 0
    else:
        dim = 0
    return _Shard(path, "parquet", rows, dim, st.st_size, st.st_mtime_ns, str(t.value_type), 0, groups, has_ids)


def _read_chunk(sh: _Shard, a: int, b: int, embedding_column: str, id_column: str):
    """Rows [a, b) of a shard: (float tensor [n, D], ids int64 [n] or None)."""
    if sh.kind == "npy":
        dt = np.dtype(sh.dtype)
        n = b - a
        buf = np.empty((n, sh.dim), dt)
        want = buf.nbytes
        with open(sh.path, "rb", buffering=0) as f:
            f.seek(sh.offset + a * sh.dim * dt.itemsize)
            mv = memoryview(buf.reshape(-1).view(np.uint8))
            got = 0
            while got < want:
                r = f.readinto(mv[got:])
                if not r:
                    break
                got += r
        if got != want:
            raise ValueError(f"{sh.path}: rows {a}..{b - 1} could not be read (file truncated during the run?)")
        x = torch.from_numpy(buf)
        if dt == np.float64:
            x = x.to(torch.float32)
        return x, None
    pa, pq = _pyarrow()
    pf = pq.ParquetFile(sh.path)
    cols = [embedding_column] + ([id_column] if sh.has_ids else [])
    starts = np.cumsum([0] + sh.row_groups)
    gs = [i for i in range(len(sh.row_groups)) if starts[i] < b and starts[i + 1] > a]
    tab = pf.read_row_groups(gs, columns=cols).slice(a - int(starts[gs[0]]), b - a)
    col = tab.column(embedding_column).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        vals = col.flatten()
        lens_ok = True
    else:
        offs = np.asarray(col.offsets)
        lens = np.diff(offs)
        lens_ok = bool((lens == sh.dim).all())
        if not lens_ok:
            i = int(np.flatnonzero(lens != sh.dim)[0])
            raise ValueError(f"{sh.path}: row {a + i} has an embedding of length {int(lens[i])}, expected {sh.dim}")
        vals = col.flatten()
    if col.null_count:
        raise ValueError(f"{sh.path}: rows {a}..{b - 1} hold null embeddings")
    v = vals.to_numpy(zero_copy_only=False)
    if v.dtype == np.float64:
        v = v.astype(np.float32)
    elif not v.flags.writeable:
        v = v.copy()
    x = torch.from_numpy(np.ascontiguousarray(v).reshape(b - a, sh.dim))
    ids = None
    if sh.has_ids:
        ic = tab.column(id_column)
        if ic.null_count:
            raise ValueError(f"{sh.path}: rows {a}..{b - 1} hold null ids")
        ids = torch.from_numpy(ic.to_numpy().astype(np.int64))
    return x, ids


# --------------------------------------------------------------------------- chunk encode
def _encode_chunk(table, x: torch.Tensor, ids: torch.Tensor, where: str) -> dict[str, np.ndarray]:
    """Codes of one chunk: semantic codes [n, L] int32 (new rows: the codebooks'; known rows: the
    table's), the table's suffix of known rows (-1 for new rows) and the known flags."""
    from .ops import residual_quantize
    from .sid import _MIN_ABS, _MAX_SQ, _as_embeddings, _method

    if x.numel():  # one min/max pass in the input dtype; the full checks (their messages) only when it fails
        mn, mx = (float(v) for v in torch.aminmax(x))  # half: no float32 copy
        big = max(-mn, mx)
        if not (math.isfinite(mn) and math.isfinite(mx)) or big > math.sqrt(_MAX_SQ / (4 * x.shape[1])) \
                or 0 < big < _MIN_ABS:
            _as_embeddings(x, where)
    n, L = x.shape[0], table.num_levels
    if len(table) and ids.numel() and (int(ids.min()) <= int(table.item_ids.max())
                                        and int(ids.max()) >= int(table.item_ids.min())):
        rows, known = table._find_ids(ids)
    else:  # no id of this chunk can be a table item
        rows, known = torch.zeros_like(ids), torch.zeros(ids.shape, dtype=torch.bool)
    sem = np.empty((n, L), np.int32)
    tsuf = np.full(n, -1, np.int32)
    k = known.numpy()
    if k.any():
        tc = table.codes[rows[known]]
        sem[k] = tc[:, :L].numpy()
        if table.has_suffix:
            tsuf[k] = tc[:, L].numpy()
    if not k.all():
        xn = x[~known] if k.any() else x  # the common case (no table item): no copy
        lat = _method(table.method).latents(table, xn)
        raw = residual_quantize(lat, [c.to(lat.device) for c in table.codebooks],
                                beam_width=table.settings.get("beam_width", 1)).codes
        if k.any():
            sem[~k] = raw.numpy()
        else:
            sem[:] = raw.numpy()
    return {"sem": sem, "table_suffix": tsuf, "known": k, "ids": ids.numpy().astype(np.int64)}


def _table_digest(table) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"method": table.method, "dedup": table.dedup, "sizes": list(map(int, table.codebook_sizes)),
                         "settings": table.settings},
                        sort_keys=True, default=str).encode())
    for t in list(table.codebooks) + [table.codes, table.item_ids]:
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    for k, v in sorted((table.model_state or {}).items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()


def _prepare_out(out_dir: str, manifest: dict, overwrite: bool) -> bool:
    """Create / check the output folder; True if a complete run with this manifest is there."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"output {out_dir} is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise ValueError(f"the folder {parent} (for the output folder) does not exist")
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {out_dir} is not writable")
    mpath = os.path.join(out_dir, _MANIFEST)
    ours = lambda f: f in (_MANIFEST, _SUCCESS, _WORK) or (f.startswith("part-") and f.endswith(".parquet")) \
        or (f.startswith(".") and f.endswith(".tmp"))
    if os.path.exists(mpath):
        try:
            with open(mpath) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        same = isinstance(old, dict) and {k: old.get(k) for k in manifest} == manifest
        if not same:
            if not overwrite:
                raise ValueError(f"output folder {out_dir} holds a run of other inputs, settings or table "
                                 "(an input changed?): pass overwrite=True or another folder")
            _clear(out_dir, ours)
        elif old.get("complete") and os.path.exists(os.path.join(out_dir, _SUCCESS)):
            return True
    else:
        others = [f for f in os.listdir(out_dir) if not ours(f)]
        if others:
            raise ValueError(f"output folder {out_dir} is not empty ({others[0]}, ...) and holds no pysid "
                             "stream manifest: choose an empty or new folder")
        _clear(out_dir, ours)  # parts / work files without a manifest: not ours to trust
    try:
        os.remove(os.path.join(out_dir, _SUCCESS))
    except FileNotFoundError:
        pass
    atomic_write(mpath, lambda f: f.write(json.dumps(dict(manifest, complete=False), indent=1).encode()))
    os.makedirs(os.path.join(out_dir, _WORK), exist_ok=True)
    return False


def _clear(out_dir: str, ours: Callable[[str], bool]) -> None:
    for f in os.listdir(out_dir):
        if ours(f):
            p = os.path.join(out_dir, f)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def _save_npz(path: str, arrays: dict) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _code_dtype(sizes: Sequence[int]):
    big = max(int(k) for k in sizes)
    return np.uint8 if big <= 256 else np.uint16 if big <= 65536 else np.int32


def _compact(arrays: dict, sizes: Sequence[int], own_ids: bool) -> dict:
    """What a work file keeps of ``_encode_chunk``'s arrays: the codes in the smallest unsigned
    type (3 bytes per row for 3 x 256), the known rows and their table suffixes, and the ids only
    when the shard has an id column (otherwise they follow from the row number)."""
    kr = np.flatnonzero(arrays["known"]).astype(np.int64)
    out = {"sem": arrays["sem"].astype(_code_dtype(sizes)), "known_rows": kr,
           "known_suffix": arrays["table_suffix"][kr]}
    if own_ids:
        out["ids"] = arrays["ids"]
    return out


def _load_work(path: str, n: int, first_row_id: int, full: bool = True):
    """A work file's (sem [n, L], known [n] bool, table suffix [n] int32 (-1: new row), ids [n]
    int64) - the last two None unless ``full``. ValueError if it is damaged."""
    try:
        with np.load(path) as z:
            sem, kr = z["sem"], z["known_rows"]
            ks = z["known_suffix"] if full else None
            ids = z["ids"] if (full and "ids" in z.files) else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    if sem.ndim != 2 or sem.shape[0] != n or (ids is not None and ids.shape != (n,)):
        raise ValueError(f"{path} is damaged (holds {sem.shape[0]} rows, the chunk has {n})")
    known = np.zeros(n, bool)
    known[kr] = True
    if not full:
        return sem, known, None, None
    tsuf = np.full(n, -1, np.int32)
    tsuf[kr] = ks
    if ids is None:
        ids = np.arange(first_row_id, first_row_id + n, dtype=np.int64)
    return sem, known, tsuf, ids


# --------------------------------------------------------------------------- the API
def _plan(table, inputs, out_dir, chunk_rows, embedding_column, id_column, first_id):
    """The checks before any work, the shards, the chunks and the manifest of a run."""
    from .sid import _dedup, _method

    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int >= 1, got {chunk_rows!r}")
    if isinstance(first_id, bool) or not isinstance(first_id, int) or first_id < 0:
        raise ValueError(f"first_id must be an int >= 0, got {first_id!r}")
    rule = _dedup(table.dedup)
    if rule.moves and rule.name != "reassign":
        raise ValueError(f"encode_shards supports the dedup rules suffix, reassign and none; this table's rule "
                         f"is {rule.name!r}: encode with SemanticIds.encode")
    if table.settings.get("inputs", 1) != 1:
        raise ValueError("encode_shards takes one embedding input per row: this table was fitted on several (hybrid)")
    _pyarrow()  # the output is Parquet: fail before any work
    paths = list_shards(inputs)
    inside = [p for p in paths if os.path.realpath(p).startswith(os.path.realpath(out_dir) + os.sep)]
    if inside:
        raise ValueError(f"input {inside[0]} is inside the output folder {out_dir}: choose another output folder")
    shards = [_scan(p, embedding_column, id_column) for p in paths]
    want = _method(table.method).input_dim(table)
    for sh in shards:
        if sh.rows and sh.dim != want:
            raise ValueError(f"{sh.path}: embeddings have D={sh.dim}, the table expects D={want} "
                             f"(shards: {sorted({s.dim for s in shards})})")
    chunks = []  # (shard index, a, b, global row of a)
    g = 0
    for i, sh in enumerate(shards):
        for a in range(0, sh.rows, chunk_rows):
            b = min(sh.rows, a + chunk_rows)
            chunks.append((i, a, b, g + a))
        g += sh.rows
    total = g
    manifest = {"format": _FORMAT, "version": _VERSION, "table": _table_digest(table), "chunk_rows": chunk_rows,
                "embedding_column": embedding_column, "id_column": id_column, "first_id": first_id,
                "shards": [s.key() for s in shards], "chunks": len(chunks), "rows": total,
                "levels": table.num_levels}
    return rule, shards, chunks, total, manifest


def encode_shards(table, inputs, out_dir: PathLike, *, chunk_rows: int = 65536, embedding_column: str = "embedding",
                  id_column: str = "item_id", first_id: int = 0, overwrite: bool = False, progress=False,
                  prefetch: bool = True) -> StreamSummary:
    """Encode every row of ``inputs`` with ``table`` into Parquet parts in ``out_dir`` (module
    docstring: inputs, output columns, suffix meaning, resume). Memory: a few chunks of
    embeddings (``chunk_rows`` x D, read ahead by one chunk when ``prefetch``) plus about 20
    bytes per row and table item in the final pass. Returns a :class:`StreamSummary`."""
    comm = _comm()
    out_dir = os.path.abspath(os.fspath(out_dir))
    err = plan = None
    try:
        plan = _plan(table, inputs, out_dir, chunk_rows, embedding_column, id_column, first_id)
    except (ValueError, TypeError, ImportError, OSError) as e:
        if not comm.on:
            raise
        err = e
    if comm.on:  # every rank stops if one failed its checks; every rank must see the same run
        facts = comm.agree(err, manifest=None if plan is None else json.dumps(plan[4], sort_keys=True))
        for r, f in enumerate(facts):
            if f["manifest"] != facts[0]["manifest"]:
                raise ValueError(f"encode_shards was called with other inputs, settings or table on rank {r} than on "
                                 "rank 0 (every rank passes the same arguments; the inputs and out_dir on a file "
                                 "system every rank sees)")
    rule, shards, chunks, total, manifest = plan
    done, err = False, None
    if comm.rank == 0:
        try:
            done = _prepare_out(out_dir, manifest, overwrite)
        except (ValueError, OSError) as e:
            if not comm.on:
                raise
            err = e
    if comm.on:  # rank 0 prepared the folder (or every rank raises its error)
        done = comm.agree(err, done=done)[0]["done"]
    if done:
        parts = [os.path.join(out_dir, f"part-{j:06d}.parquet") for j in range(len(chunks))]
        with open(os.path.join(out_dir, _MANIFEST)) as f:
            info = json.load(f)
        shutil.rmtree(os.path.join(out_dir, _WORK), ignore_errors=True)  # a kill during the last clean-up
        return StreamSummary(out_dir, total, info.get("new_rows", 0), info.get("known_rows", 0), len(chunks),
                             len(chunks), parts, 0.0, 0.0, 0.0, info.get("suffixed_rows", 0), info.get("max_suffix", 0))
    work = os.path.join(out_dir, _WORK)
    work_path = lambda j: os.path.join(work, f"chunk-{j:06d}.npz")
    mine = range(comm.rank * len(chunks) // comm.world, (comm.rank + 1) * len(chunks) // comm.world)
    todo = [j for j in mine if not os.path.exists(work_path(j))]
    skipped = len(mine) - len(todo)

    def load(j):
        i, a, b, g0 = chunks[j]
        x, ids = _read_chunk(shards[i], a, b, embedding_column, id_column)
        if ids is None:
            ids = torch.arange(first_id + g0, first_id + g0 + (b - a), dtype=torch.int64)
        return x, ids

    from ._progress import bar as _bar

    bar = _bar(progress, sum(chunks[j][2] - chunks[j][1] for j in todo),
               "encode rows" if not comm.on else f"encode rows (rank {comm.rank})")
    t0 = time.perf_counter()
    done_rows = 0
    err = None
    try:
        _encode_chunks(table, shards, chunks, todo, work_path, load, prefetch, bar)
        done_rows = sum(chunks[j][2] - chunks[j][1] for j in todo)
    except (ValueError, TypeError, OSError) as e:  # a shard that fails mid-run: the output stays incomplete
        if not comm.on:
            raise
        err = e
    finally:
        if bar is not None:
            bar.close()
    if comm.on:  # every rank finished its chunks (or every rank raises)
        skipped = sum(f["skipped"] for f in comm.agree(err, skipped=skipped))
    encode_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    stats = _finish(table, out_dir, chunks, first_id, rule, comm, mine, sum(chunks[j][2] - chunks[j][1] for j in mine),
                    load=load)
    dedup_s = time.perf_counter() - t1
    parts = [os.path.join(out_dir, f"part-{j:06d}.parquet") for j in range(len(chunks))]
    return StreamSummary(out_dir, total, stats["new_rows"], stats["known_rows"], len(chunks), skipped, parts,
                         encode_s, dedup_s, done_rows / encode_s if encode_s > 0 else 0.0,
                         stats["suffixed_rows"], stats["max_suffix"])


def _encode_chunks(table, shards, chunks, todo, work_path, load, prefetch, bar) -> None:
    """Encode the chunks ``todo`` into work files: the next chunk is read ahead (``prefetch``) and
    each work file written (atomically) by helper threads while the kernel runs on the next."""
    sizes = [int(k) for k in table.codebook_sizes]
    with ThreadPoolExecutor(1) as pool, ThreadPoolExecutor(1) as saver:
        nxt = pool.submit(load, todo[0]) if (todo and prefetch) else None
        saving = None
        for n_i, j in enumerate(todo):
            x, ids = nxt.result() if prefetch else load(j)
            if prefetch and n_i + 1 < len(todo):
                nxt = pool.submit(load, todo[n_i + 1])
            i, a, b, _ = chunks[j]
            arrays = _compact(_encode_chunk(table, x, ids, f"{shards[i].path} rows {a}..{b - 1}"), sizes,
                              shards[i].has_ids)
            if saving is not None:
                saving.result()  # one write in flight at most (and its error, if any, here)
            saving = saver.submit(_save_npz, work_path(j), arrays)
            if bar is not None:
                bar.update(b - a)
        if saving is not None:
            saving.result()


def _comm():
    """The torch.distributed group of a sharded run (gloo: CPU tensors; nccl: this rank's GPU)."""
    from ._dist import Comm

    dev = torch.device("cpu")
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_backend() == "nccl":
        dev = torch.device("cuda", torch.cuda.current_device())
    return Comm(dev)


def _mover_residuals(table, movers: np.ndarray, mine, new_counts: dict, wpath, rows_of, load):
    """The residuals before the last level of the new rows ``movers`` (new-row numbers of this
    process's chunks ``mine``, ascending), chunk by chunk: the chunks that hold some are read
    again and only those rows encoded (``encode_result``'s arithmetic: the same bits)."""
    from .sid import _method, _quantize

    method = _method(table.method)
    off = 0
    for j in mine:
        cnt = new_counts[j]
        lo, hi = np.searchsorted(movers, [off, off + cnt])
        if hi > lo:
            _, known, _, _ = _load_work(wpath(j), *rows_of(j), full=False)
            local = np.flatnonzero(~known)[movers[lo:hi] - off]
            x, _ = load(j)
            _, r = _quantize(method.latents(table, x[torch.from_numpy(local)]), table.codebooks,
                             table.settings.get("beam_width", 1))
            yield r
        off += cnt


def _reassign_pass(table, keys: np.ndarray, t: int, mine, new_counts: dict, wpath, rows_of, load, comm=None):
    """The "reassign" moves of the new rows (keys[t:], in input order; keys[:t]: the table's
    items): the movers (rows after the first of their tuple, or on a table item's tuple) are found
    from the keys, their embeddings read again chunk by chunk (only the chunks that hold movers),
    their residuals before the last level and m nearest last-level codewords computed as
    ``SemanticIds.encode_result`` does (``sid._reassign_with``: the same bits), under
    torch.distributed over the ranks (this rank's rows; the table's items on rank 0). Updates
    ``keys`` in place; returns (rows, new last codes, number of movers)."""
    from .sid import _reassign_with

    k_last = int(table.codebook_sizes[-1])
    kn = keys[t:]
    rows, new, n_movers = _reassign_with(
        kn, keys[:t] if t else None, table.codebooks[-1], k_last, table.settings.get("reassign_candidates", 32),
        lambda mv: _mover_residuals(table, mv, mine, new_counts, wpath, rows_of, load), comm)
    kn[rows] += new - kn[rows] % k_last
    return rows, new, n_movers


def _finish(table, out_dir: str, chunks: list, first_id: int, rule, comm=None, mine: range | None = None,
            rows_mine: int | None = None, load=None) -> dict[str, int]:
    """The final pass: suffixes over all chunks, one Parquet part per chunk, then the manifest's
    completion mark and _SUCCESS. Under torch.distributed (``comm`` on): this rank's chunks
    ``mine`` (contiguous, in rank order), suffixes by ``pysid.dedup.sharded_suffix``, rank 0
    marks the run complete once every rank wrote its parts."""
    pa, pq = _pyarrow()
    work = os.path.join(out_dir, _WORK)
    L = table.num_levels
    sizes = [int(k) for k in table.codebook_sizes]
    on = comm is not None and comm.on
    mine = range(len(chunks)) if mine is None else mine
    wpath = lambda j: os.path.join(work, f"chunk-{j:06d}.npz")
    rows_of = lambda j: (chunks[j][2] - chunks[j][1], first_id + chunks[j][3])
    with_suffix = rule.suffix != "never" and (table.has_suffix or rule.suffix == "always")
    with open(os.path.join(out_dir, _MANIFEST)) as f:
        total = int(json.load(f)["rows"])
    # one read of the chunks: the table's semantic keys first, then the new rows' in input order -
    # the suffix of a new row is its rank among the table's items and the earlier new rows
    err = None
    try:
        t = len(table) if (not on or comm.rank == 0) else 0
        rows_mine = total if rows_mine is None else rows_mine
        keys = np.empty(t + rows_mine, np.int64)
        if t:
            keys[:t] = tuple_keys(table.codes[:, :L].numpy(), sizes)
        pos, new_counts = t, {}
        for j in mine:
            sem, known, _, _ = _load_work(wpath(j), *rows_of(j), full=False)
            new = sem[~known] if known.any() else sem
            keys[pos : pos + new.shape[0]] = tuple_keys(new, sizes)
            pos += new.shape[0]
            new_counts[j] = new.shape[0]
    except (OSError, ValueError) as e:  # a chunk file missing or damaged
        err = ValueError(f"{out_dir}: the encoded chunks cannot be read ({e}): rerun with overwrite=True")
    if on:
        comm.agree(err)
    elif err is not None:
        raise err
    n_new = pos - t
    suffix = None
    moved = None
    if rule.moves:  # "reassign": the moves, then a suffix level only if rows are left over (on any rank)
        err = None
        try:
            moved = _reassign_pass(table, keys[:pos], t, mine, new_counts, wpath, rows_of, load, comm)
            left = moved[2] - moved[0].size
        except (OSError, ValueError) as e:
            err = ValueError(f"{out_dir}: the reassign pass failed ({e}); the output is not complete: rerun to "
                             "resume")
            if not on:
                raise err from e
        if on:
            left = sum(f["left"] for f in comm.agree(err, left=0 if err else left))
        with_suffix = table.has_suffix or left > 0
    if with_suffix:
        if on:
            from .dedup import sharded_suffix

            suffix = sharded_suffix(keys[:pos], device=comm.dev)[t:]
        else:
            suffix = suffix_of_keys(keys[:pos])[t:]
    del keys
    pos = 0
    suffixed, max_suffix = 0, 0
    names = [f"level_{j}" for j in range(L)]
    err = None

    def write(path: str, tab) -> None:
        atomic_write(path, lambda f: pq.write_table(tab, f))

    try:
        with ThreadPoolExecutor(2) as writers:  # parts written (and fsynced) while the next is built
            pending: list = []
            mrow = 0  # moved rows (reassign), as new-row numbers: the next ones to apply
            for j in mine:
                sem, known, tsuf, ids = _load_work(wpath(j), *rows_of(j))
                if moved is not None:
                    hi = int(np.searchsorted(moved[0], pos + new_counts[j]))
                    if hi > mrow:
                        local = np.flatnonzero(~known)[moved[0][mrow:hi] - pos]
                        sem[local, L - 1] = moved[1][mrow:hi]
                    mrow = hi
                cols = {"item_id": pa.array(ids, pa.int64())}
                for lvl in range(L):
                    cols[names[lvl]] = pa.array(sem[:, lvl].astype(np.int32), pa.int32())
                if with_suffix:
                    if known.any():
                        s = np.where(known, np.maximum(tsuf, 0), 0).astype(np.int32)
                        s[~known] = suffix[pos : pos + new_counts[j]]
                    else:
                        s = suffix[pos : pos + new_counts[j]]
                    suffixed += int((s > 0).sum())
                    max_suffix = max(max_suffix, int(s.max()) if s.size else 0)
                    cols["suffix"] = pa.array(s, pa.int32())
                cols["known"] = pa.array(known, pa.bool_())
                pos += new_counts[j]
                pending.append(writers.submit(write, os.path.join(out_dir, f"part-{j:06d}.parquet"), pa.table(cols)))
                if len(pending) > 2:
                    pending.pop(0).result()
            for f in pending:
                f.result()
    except (OSError, ValueError) as e:
        err = e
    stats = {"new_rows": n_new, "known_rows": rows_mine - n_new, "suffixed_rows": suffixed, "max_suffix": max_suffix}
    if on:  # every rank wrote its parts (or every rank raises): then rank 0 marks the run complete
        facts = comm.agree(err, **stats)
        stats = {k: (max if k == "max_suffix" else sum)(f[k] for f in facts) for k in stats}
    elif err is not None:
        raise err
    if not on or comm.rank == 0:
        mpath = os.path.join(out_dir, _MANIFEST)
        with open(mpath) as f:
            man = json.load(f)
        man.update(stats, complete=True)
        atomic_write(mpath, lambda f: f.write(json.dumps(man, indent=1).encode()))
        atomic_write(os.path.join(out_dir, _SUCCESS), lambda f: f.write(b""))
        shutil.rmtree(work, ignore_errors=True)
    if on:
        comm.agree(None)  # every rank returns once the run is marked complete
    return stats


def read_output(out_dir: PathLike) -> dict[str, np.ndarray]:
    """All rows of a complete :func:`encode_shards` output as numpy columns, in input order
    (holds everything in memory: for tests and small outputs). ValueError if the output is
    not complete (no ``_SUCCESS`` or the manifest not marked complete)."""
    pa, pq = _pyarrow()
    out_dir = os.fspath(out_dir)
    mpath = os.path.join(out_dir, _MANIFEST)
    try:
        with open(mpath) as f:
            man = json.load(f)
    except (OSError, ValueError):
        raise ValueError(f"{out_dir} holds no readable pysid stream manifest") from None
    if not man.get("complete") or not os.path.exists(os.path.join(out_dir, _SUCCESS)):
        raise ValueError(f"{out_dir}: the run is not complete (rerun encode_shards with the same arguments to resume)")
    tabs = [pq.read_table(os.path.join(out_dir, f"part-{j:06d}.parquet")) for j in range(man["chunks"])]
    if not tabs:
        return {}
    tab = pa.concat_tables(tabs)
    return {name: tab.column(name).to_numpy() for name in tab.column_names}
