"""The ``pysid`` command line (also ``python -m pysid``).

    pysid fit EMBEDDINGS... -o SIDS.npz [--levels 3 --codebook-size 256 --method rq-kmeans --dedup suffix]
    pysid encode SIDS.npz EMBEDDINGS -o CODES.npy    # cold-start items, the table's dedup rule
    pysid encode SIDS.npz EMBEDDINGS --add --in-place # ... and append them to the table
    pysid encode SIDS.npz 'emb/*.npy' --out-dir OUT/  # stream shards into Parquet parts (resumable)
    torchrun --nproc_per_node 4 -m pysid fit 'emb/*.npy' -o SIDS.npz   # each process: its share of the files
    torchrun --nproc_per_node 4 -m pysid encode SIDS.npz 'emb/*.npy' --out-dir OUT/
    pysid stats SIDS.npz [--embeddings EMBEDDINGS] [--json]
    pysid bench [rq|beam|kmeans|sid|startup|all] [--full]   # the benchmark scripts (quick by default)
    pysid demo [--data FILE]                         # embeddings -> SIDs -> trie -> decoding

EMBEDDINGS: .npy, .pt (a tensor, or a dict of tensors with --key) or .npz (--key, default the
first array), [M, D] floating point. ``fit`` takes several files, folders (their .npy / .npz /
.pt files, sorted) or glob patterns: their rows in that order. ``encode --out-dir`` takes .npy
and Parquet shards, folders or patterns (``pysid.stream.encode_shards``).

torchrun (WORLD_SIZE > 1 in the environment; gloo on the CPU): ``fit`` gives each process a
contiguous share of the S files in order (rank r: files floor(r S / W) .. floor((r + 1) S / W) - 1;
at least one file per process) - the table equals ``pysid fit`` of the same files in one
process, and rank 0 writes it; ``encode --out-dir`` gives each process its share of the chunks
(the folder must be on a file system every process sees). An error on one process stops all:
each prints its line (``rank R: ...`` for another process's error) and the run exits non-zero
with no output written.

Rules:
* Every bad input ends with one line ``pysid: error: ...`` on stderr and exit status 2
  (``PYSID_DEBUG=1`` shows the traceback instead).
* Outputs are checked before any work (the folder exists and is writable, the output is not
  an input, an existing file is replaced only with ``--force``) and written atomically (a
  temporary file in the same folder, then a rename): an interrupted run leaves the old file.
* Long work reports progress on stderr: a tqdm bar on a terminal, otherwise a line every few
  seconds with rate and ETA (``PYSID_PROGRESS_INTERVAL`` seconds, default 5); ``--quiet``: none.

This module imports numpy and torch only inside the commands: ``pysid --help`` and
``pysid --version`` start without them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, NoReturn, Optional, Sequence

from . import __version__
from ._io import atomic_write, check_writable


class CliError(Exception):
    """A user error: printed as 'pysid: error: ...', exit status 2."""


# --------------------------------------------------------------------------- input files
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"


def _check_file(path: str, what: str = "file") -> str:
    """The extension of an existing, non-empty regular file (CliError otherwise)."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path}: is a folder, not a {what}")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise CliError(f"{path}: cannot read ({e.strerror})") from None
    if size == 0:
        raise CliError(f"{path}: the file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise CliError(f"{path}: permission denied")
    return os.path.splitext(path)[1].lower()


def _magic(path: str, n: int = 6) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _check_magic(path: str, ext: str) -> None:
    head = _magic(path)
    if ext == ".npy" and not head.startswith(_NPY_MAGIC):
        raise CliError(f"{path}: not a numpy .npy file (no NPY header; a text file? use numpy.save)")
    if ext == ".npz":
        if not head.startswith(_ZIP_MAGIC):
            raise CliError(f"{path}: not a numpy .npz archive (not a zip file)")
        _check_zip(path)


def _check_zip(path: str) -> None:
    """An .npz must be a whole zip archive: every member's CRC is checked (and the file closed)
    before numpy reads it (numpy leaves the file open when the archive is broken)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except Exception as e:  # BadZipFile, EOFError, zlib.error, OSError, ...
        raise _read_error(path, e) from None
    if bad is not None:
        raise CliError(f"{path}: cannot read: the file is truncated or corrupt (member {bad!r} fails its CRC check)")


def _read_error(path: str, e: BaseException) -> CliError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    kind = type(e).__name__
    if "pickled data" in msg:  # numpy's message for anything that is not an array file
        msg = "not a numpy array file"
    elif kind in ("BadZipFile", "EOFError", "error") or "truncated" in msg.lower() or "zip" in msg.lower():
        msg = f"the file is truncated or corrupt ({kind}{': ' + msg if msg else ''})"
    else:
        msg = f"{kind}: {msg}" if msg else kind
    return CliError(f"{path}: cannot read: {msg}")


def load_array(path: str, key: Optional[str] = None, what: str = "array"):
    """The numpy array (or torch tensor for .pt) in a .npy / .npz / .pt file."""
    ext = _check_file(path)
    if ext not in (".npy", ".npz", ".pt", ".pth"):
        raise CliError(f"{path}: unknown extension {ext or '(none)'!r} (use .npy, .npz or .pt)")
    if ext in (".npy", ".npz"):
        _check_magic(path, ext)
    import numpy as np

    try:
        if ext == ".npy":
            if key is not None:
                raise CliError(f"{path}: --key applies to .npz and .pt files")
            return np.load(path, allow_pickle=False)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if not names:
                    raise CliError(f"{path}: the archive is empty")
                name = key or names[0]
                if name not in names:
                    raise CliError(f"{path}: no array {name!r} (has {names[:8]})")
                return z[name]
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if key is None and len(obj) != 1:
                raise CliError(f"{path}: a dict of {len(obj)} entries; choose one with --key ({list(obj)[:8]})")
            if key is not None and key not in obj:
                raise CliError(f"{path}: no entry {key!r} (has {list(obj)[:8]})")
            obj = obj[key] if key is not None else next(iter(obj.values()))
        elif key is not None:
            raise CliError(f"{path}: --key given but the file holds a {type(obj).__name__}, not a dict")
        if not isinstance(obj, torch.Tensor):
            raise CliError(f"{path}: expected a tensor, found {type(obj).__name__}")
        return obj
    except CliError:
        raise
    except MemoryError:
        raise CliError(f"{path}: not enough memory to load it") from None
    except Exception as e:  # BadZipFile, EOFError, zlib.error, UnpicklingError, ValueError, OSError, ...
        raise _read_error(path, e) from None


def load_embeddings(path: str, key: Optional[str] = None):
    """[M, D] float tensor from a file, with the checks of pysid.fit (shape, dtype, NaN/Inf, scale)."""
    import numpy as np
    import torch

    arr = load_array(path, key)
    if isinstance(arr, np.ndarray):
        if arr.dtype.kind not in "fiub" or arr.dtype == object:
            raise CliError(f"{path}: the array must be floating point, got dtype {arr.dtype}")
        arr = torch.from_numpy(np.ascontiguousarray(arr))
    from .sid import _as_embeddings

    try:  # shape, dtype, NaN/Inf rows (named by index) and scale: the same checks as pysid.fit
        x = _as_embeddings(arr, "the array")
    except (ValueError, TypeError) as e:
        raise CliError(f"{path}: {e}") from None
    return x


def load_item_ids(path: str, n: int):
    """[n] int64 unique non-negative item ids from a .npy (integer array) or a text file (one
    integer per line, or whitespace separated)."""
    import numpy as np
    import torch

    ext = _check_file(path)
    if ext == ".npy":
        _check_magic(path, ext)
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:
            raise _read_error(path, e) from None
        if arr.dtype.kind not in "iu":
            raise CliError(f"{path}: item ids must be integers, got dtype {arr.dtype}")
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise CliError(f"{path}: item ids must be a 1-D array, got shape {arr.shape}")
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= 2**63:
            raise CliError(f"{path}: item id {int(arr.max())} does not fit in int64")
        ids = torch.from_numpy(arr.astype(np.int64))
    elif ext in (".txt", ".csv", ".tsv", ""):
        vals: list[int] = []
        try:
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    for tok in line.replace(",", " ").split():
                        try:
                            v = int(tok)
                        except ValueError:
                            raise CliError(f"{path}:{lineno}: item ids must be integers, found {tok!r}") from None
                        if not -(2**63) <= v < 2**63:
                            raise CliError(f"{path}:{lineno}: item id {v} does not fit in int64")
                        vals.append(v)
        except UnicodeDecodeError:
            raise CliError(f"{path}: not a text file of integers (use .npy for a numpy array)") from None
        ids = torch.tensor(vals, dtype=torch.int64)
    else:
        raise CliError(f"{path}: unknown extension {ext!r} for item ids (use .npy or .txt)")
    if ids.numel() != n:
        raise CliError(f"{path}: {ids.numel()} item ids for {n} embedding rows")
    if n and int(ids.min()) < 0:
        raise CliError(f"{path}: negative item id {int(ids.min())}")
    u, counts = torch.unique(ids, return_counts=True)
    if u.numel() != n:
        raise CliError(f"{path}: duplicate item id {int(u[counts > 1][0])}")
    return ids


def _load_sids(path: str):
    ext = _check_file(path, "table")
    if ext == ".npz" or _magic(path, 2) == _ZIP_MAGIC:
        _check_magic(path, ".npz")
    else:
        raise CliError(f"{path}: not a pysid SemanticIds file (expected the .npz that 'pysid fit' writes)")
    from .sid import SemanticIds

    try:
        return SemanticIds.load(path)
    except Exception as e:  # the file passed the zip check: anything else is a corrupt / foreign archive
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if msg.startswith(str(path)):
            raise CliError(msg) from None
        if isinstance(e, (ValueError, KeyError)):
            raise CliError(f"{path}: not a pysid SemanticIds file ({msg})") from None
        raise _read_error(path, e) from None


def _check_device(device: Optional[str]) -> Optional[str]:
    """Validate --device before any work: a torch device string that exists here."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise CliError(f"--device {device}: not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return device
    if dev.type != "cuda":
        raise CliError(f"--device {device}: pysid runs on cpu or cuda")
    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise CliError(f"--device {device}: CUDA is not available ({why})")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CliError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def _progress(a) -> Any:
    return False if getattr(a, "quiet", False) else "auto"


def save_table(sids, path: str) -> None:
    """``sids.save(path)``: atomic (pysid._io.atomic_write), ``path`` is the old table or the new one."""
    sids.save(path)


def save_npy(arr, path: str) -> None:
    import numpy as np

    atomic_write(path, lambda f: np.save(f, arr))


def _npy_name(path: str) -> str:
    """The file numpy.save writes for ``path``: '.npy' is appended unless present."""
    return path if path.endswith(".npy") else path + ".npy"


def _writable(path: str, inputs: Sequence[Optional[str]], force: bool) -> None:
    """The output rules (pysid._io.check_writable), checked before any work starts."""
    try:
        check_writable(path, inputs=[i for i in inputs if i], force=force)
    except ValueError as e:
        raise CliError(str(e)) from None


# --------------------------------------------------------------------------- collision figures
def collision_figures(sids) -> dict[str, Any]:
    """Collision rates of a table before dedup (its semantic tuples) and after (its full IDs),
    and the suffix level's size: ``SemanticIds.collision_summary()`` grouped for printing."""
    from .sid import DEDUP

    c = sids.collision_summary()
    before = {"items": c["items_before"], "distinct": c["distinct_before"],
              "collision_rate": c["collision_rate_before"], "max_per_tuple": c["max_per_tuple_before"],
              "source": ("fit (tuples before reassignment are not stored)" if DEDUP[sids.dedup].moves
                         else "table codes")}
    after = {"items": c["items"], "distinct": c["distinct_after"], "collision_rate": c["collision_rate_after"],
             "max_per_tuple": c["max_per_tuple_after"]}
    suffix = ({"size": c["suffix_size"], "items_with_nonzero_suffix": c["suffixed_items"]}
              if c["suffix_level"] else None)
    return {"before_dedup": before, "after_dedup": after, "suffix_level": suffix}


def _collision_lines(fig: dict[str, Any]) -> list[str]:
    b, a, s = fig["before_dedup"], fig["after_dedup"], fig["suffix_level"]
    lines = [f"collision rate before dedup: {b.get('collision_rate', float('nan')):.4f} "
             f"({b.get('distinct', '?')} distinct tuples, largest group {b.get('max_per_tuple', '?')}"
             + (", as fitted" if b.get("source", "").startswith("fit") else "") + ")",
             f"collision rate after dedup:  {a['collision_rate']:.4f} ({a['distinct']} distinct IDs)"]
    if s is None:
        lines.append("suffix level: none")
    else:
        lines.append(f"suffix level: {s['size']} codes ({s['items_with_nonzero_suffix']} items with a suffix > 0)")
    return lines


# --------------------------------------------------------------------------- commands
def _expand_inputs(items: Sequence[str], exts: tuple) -> list[str]:
    """Files of the EMBEDDINGS arguments, in order: a file as given, a folder's files with one of
    ``exts`` (sorted), a glob pattern's matches (sorted)."""
    import glob

    out: list[str] = []
    for p in items:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(exts))
            if not found:
                raise CliError(f"{p}: the folder holds no {'/'.join(exts)} file")
            out += found
        elif not os.path.exists(p) and any(ch in p for ch in "*?["):
            found = sorted(f for f in glob.glob(p) if os.path.isfile(f))
            if not found:
                raise CliError(f"{p}: the pattern matches no file")
            out += found
        else:
            out.append(p)
    return out


_STARTED_GROUP: list = []


def _distributed() -> tuple[int, int]:
    """(rank, world) of a run under torchrun (WORLD_SIZE > 1 in the environment: the default
    process group is initialised here, gloo - nccl when --device is cuda), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if not all(k in os.environ for k in ("RANK", "MASTER_ADDR", "MASTER_PORT")):
            raise CliError("WORLD_SIZE > 1 but RANK / MASTER_ADDR / MASTER_PORT are not set: start with torchrun")
        dist.init_process_group("gloo")
        _STARTED_GROUP.append(True)
    return dist.get_rank(), dist.get_world_size()


def _load_shards(paths: Sequence[str], key: Optional[str]):
    """[M, D] float tensor: the rows of the files in order (one D and dtype for all)."""
    import torch

    xs = []
    for p in paths:
        x = load_embeddings(p, key)
        if xs and x.shape[1] != xs[0].shape[1]:
            raise CliError(f"{p}: embeddings have D={x.shape[1]}, {paths[0]} has D={xs[0].shape[1]} "
                           "(every shard must have the same D)")
        if xs and x.dtype != xs[0].dtype:
            raise CliError(f"{p}: dtype {x.dtype}, {paths[0]} has {xs[0].dtype} (convert every shard to one dtype)")
        xs.append(x)
    return xs[0] if len(xs) == 1 else torch.cat(xs)


def cmd_fit(a) -> int:
    if a.method != "rq-vae":
        for opt, v in (("--epochs", a.epochs), ("--latent", a.latent), ("--batch-size", a.batch_size)):
            if v is not None:
                raise CliError(f"{opt} applies to --method rq-vae")
    elif a.balanced:
        raise CliError("--balanced applies to --method rq-kmeans")
    paths = _expand_inputs(a.embeddings, (".npy", ".npz", ".pt", ".pth"))
    _writable(a.output, [*paths, a.item_ids], a.force)
    device = _check_device(a.device)
    rank, world = _distributed()
    if world > 1:
        from ._dist import Comm
        import torch

        if device is not None and device.startswith("cuda"):
            raise CliError("--device cuda under torchrun: not supported by the CLI yet (the API runs on NCCL); "
                           "use the CPU (gloo)")
        if len(paths) < world:
            raise CliError(f"{len(paths)} embedding file(s) for {world} processes: give at least one per process "
                           "(rank r reads files r*S/W .. (r+1)*S/W - 1 of the S files in order)")
        comm = Comm(torch.device("cpu"))
        mine = paths[rank * len(paths) // world : (rank + 1) * len(paths) // world]
        err: Optional[BaseException] = None
        x = None
        try:
            x = _load_shards(mine, a.key)
        except CliError as e:
            err = e
        try:  # every rank stops here if one failed to read its files
            facts = comm.agree(err, rows=0 if x is None else int(x.shape[0]), dim=0 if x is None else int(x.shape[1]))
        except ValueError as e:
            raise CliError(str(e)) from None
        m_all = sum(f["rows"] for f in facts)
        off = sum(f["rows"] for f in facts[:rank])
    else:
        x = _load_shards(paths, a.key)
        m_all, off = x.shape[0], 0
    ids = load_item_ids(a.item_ids, m_all)[off : off + x.shape[0]] if a.item_ids else None
    sizes = a.codebook_size
    if len(sizes) not in (1, a.levels):
        raise CliError(f"--codebook-size: {len(sizes)} sizes for --levels {a.levels} (give 1 or {a.levels})")
    if a.method == "rq-kmeans" and max(sizes) > m_all:
        raise CliError(f"--codebook-size {max(sizes)} is larger than the number of items {m_all}")
    rq = None
    if a.method == "rq-vae":
        rq = {k: v for k, v in (("epochs", a.epochs), ("latent", a.latent), ("batch_size", a.batch_size))
              if v is not None}
    from .sid import fit

    t0 = time.perf_counter()
    try:
        sids = fit(x, method=a.method, levels=a.levels, codebook_size=sizes[0] if len(sizes) == 1 else sizes,
                   dedup=a.dedup, seed=a.seed, iters=a.iters, beam_width=a.beam_width, device=device,
                   balanced=a.balanced, item_ids=ids, rqvae_options=rq, progress=_progress(a) if rank == 0 else False,
                   sample=a.sample, sample_seed=a.sample_seed, precision=a.precision)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    secs = time.perf_counter() - t0
    if rank != 0:  # rank 0 writes the table
        return 0
    save_table(sids, a.output)
    how = f" on {world} processes" if world > 1 else ""
    print(f"fit {len(sids)} items x {x.shape[1]} dims in {secs:.2f} s{how}: {a.method}, {sids.num_levels} levels "
          f"{sids.codebook_sizes}, dedup {a.dedup}")
    for line in _collision_lines(collision_figures(sids)):
        print("  " + line)
    print(f"wrote {a.output}")
    return 0


def cmd_encode_parts(a) -> int:
    """pysid encode SIDS INPUT... --out-dir DIR: pysid.stream.encode_shards (under torchrun: by rank)."""
    for opt, v in (("-o/--output", a.output), ("--add", a.add), ("--in-place", a.in_place),
                   ("--table-out", a.table_out), ("--item-ids", a.item_ids), ("--key", a.key)):
        if v:
            raise CliError(f"{opt} does not apply with --out-dir (Parquet parts: item ids come from the Parquet "
                           "'item_id' column or the row numbers plus --first-id)")
    sids = _load_sids(a.sids)
    # rows without an id column are new items unless told otherwise: ids after the table's
    first_id = a.first_id if a.first_id is not None else (int(sids.item_ids.max()) + 1 if len(sids) else 0)
    rank, world = _distributed()
    from . import stream

    try:
        s = stream.encode_shards(sids, a.embeddings, a.out_dir, chunk_rows=a.chunk_rows or 65536,
                                 embedding_column=a.embedding_column or "embedding",
                                 id_column=a.id_column or "item_id", first_id=first_id,
                                 overwrite=a.force, progress=_progress(a))
    except (ValueError, TypeError, ImportError) as e:
        raise CliError(str(e).replace("pass overwrite=True", "pass --force")) from None
    if rank == 0:
        how = f" on {world} processes" if world > 1 else ""
        resumed = f", {s.chunks_skipped} of them done by an earlier run" if s.chunks_skipped else ""
        print(f"encoded {s.rows} items{how} in {s.chunks} parts{resumed}: {s.known_rows} known items (their table "
              f"ID), {s.new_rows} new (a fresh ID that collides with no table ID); largest suffix {s.max_suffix}")
        print(f"wrote {a.out_dir} (part-*.parquet, _SUCCESS)")
    return 0


def cmd_encode(a) -> int:
    if a.out_dir:
        return cmd_encode_parts(a)
    for opt, v in (("--chunk-rows", a.chunk_rows), ("--embedding-column", a.embedding_column),
                   ("--id-column", a.id_column), ("--first-id", a.first_id)):
        if v is not None:
            raise CliError(f"{opt} applies with --out-dir (streamed encode into Parquet parts)")
    if len(a.embeddings) > 1 or not os.path.isfile(a.embeddings[0]) and (
            os.path.isdir(a.embeddings[0]) or any(ch in a.embeddings[0] for ch in "*?[")) \
            or a.embeddings[0].lower().endswith(".parquet"):
        raise CliError("several inputs, a folder, a pattern or Parquet are encoded into Parquet parts: "
                       "give --out-dir DIR")
    a.embeddings = a.embeddings[0]
    if a.add and not (a.in_place or a.table_out):
        raise CliError("--add needs --in-place (update SIDS) or --table-out FILE (write the grown table there)")
    if (a.in_place or a.table_out) and not a.add:
        raise CliError("--in-place / --table-out apply with --add")
    if a.in_place and a.table_out:
        raise CliError("give --in-place or --table-out, not both")
    if not a.output and not a.add:
        raise CliError("-o/--output is required (the .npy of codes), unless --add")
    out = _npy_name(a.output) if a.output else None
    table_out = a.sids if a.in_place else a.table_out
    if table_out and not a.in_place:
        _writable(table_out, [a.sids, a.embeddings, a.item_ids], a.force)
    elif table_out:
        _writable(table_out, [a.embeddings, a.item_ids], True)
    if out:
        _writable(out, [a.sids, a.embeddings, a.item_ids, table_out], a.force)
    sids = _load_sids(a.sids)
    x = load_embeddings(a.embeddings, a.key)
    ids = load_item_ids(a.item_ids, x.shape[0]) if a.item_ids else None
    try:
        res = sids.encode_result(x, item_ids=ids, add=bool(a.add))
    except (ValueError, TypeError, KeyError) as e:
        raise CliError(str(e).strip("'\"")) from None
    codes = res.codes
    if out:
        save_npy(codes.numpy(), out)
    n_known = int(res.known.sum())
    if a.add:
        save_table(sids, table_out)
        print(f"encoded {codes.shape[0]} items ({codes.shape[1]} columns), added to the table: "
              f"{len(sids)} items -> {table_out}")
    else:
        print(f"encoded {codes.shape[0]} items ({codes.shape[1]} columns): {n_known} known items (their table ID), "
              f"{codes.shape[0] - n_known} new (a fresh ID that collides with no table ID)")
    if out:
        print(f"wrote {out}")
    return 0


def cmd_stats(a) -> int:
    sids = _load_sids(a.sids)
    x = load_embeddings(a.embeddings, a.key) if a.embeddings else None
    if x is not None and x.shape[0] != len(sids):
        raise CliError(f"{a.embeddings}: {x.shape[0]} rows for a table of {len(sids)} items")
    try:
        rep = sids.report(x)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    fig = collision_figures(sids)
    if a.json:
        payload = {"file": a.sids, "items": len(sids), "method": sids.method, "dedup": sids.dedup,
                   "levels": sids.num_levels, "codebook_sizes": [int(k) for k in sids.codebook_sizes],
                   "columns": int(sids.codes.shape[1]), "collisions": fig, "report": rep.to_dict()}
        print(json.dumps(payload, indent=2, default=str))
        return 0
    print(sids)
    for line in _collision_lines(fig):
        print(line)
    print(rep)
    return 0


_BENCHES = {"rq": "bench_residual_quantize.py", "beam": "bench_beam_search.py", "kmeans": "bench_kmeans.py",
            "sid": "bench_sid.py", "startup": "bench_startup.py"}


def bench_dir() -> str:
    from . import bench

    return os.path.dirname(bench.__file__)


def cmd_bench(a) -> int:
    if not os.path.isdir(a.out_dir):
        raise CliError(f"--out-dir {a.out_dir}: no such folder")
    names = list(_BENCHES) if a.which == "all" else [a.which]
    rc = 0
    for name in names:
        cmd = [sys.executable, os.path.join(bench_dir(), _BENCHES[name]), "--out",
               os.path.join(a.out_dir, f"pysid_bench_{name}.json")] + ([] if a.full else ["--quick"])
        print("$", " ".join(cmd), flush=True)
        rc = max(rc, subprocess.call(cmd))
    return rc


def _demo_catalogue(a):
    """(x [M, D] float32, item ids [M] int64, description)."""
    import torch

    if a.data:
        from .collab import item_embeddings
        from .data import read_sequences

        try:
            seqs = read_sequences(a.data)
        except UnicodeDecodeError:  # before ValueError, its base class
            raise CliError(f"--data {a.data}: not a text file of 'user_id item_id ...' lines") from None
        except (OSError, ValueError) as e:
            raise CliError(f"--data: {e}") from None
        if not seqs:
            raise CliError(f"--data {a.data}: no interaction sequences (the file is empty or blank)")
        train = [s[:-2] for s in seqs]
        if not any(train):
            raise CliError(f"--data {a.data}: every sequence has fewer than 3 items: nothing to train on "
                           "(the last two items of each user are held out)")
        try:
            x = item_embeddings(train, dim=64, seed=a.seed)
        except (ValueError, TypeError) as e:
            raise CliError(f"--data {a.data}: {e}") from None
        ids = (x.norm(dim=1) > 0).nonzero()[:, 0]  # row i is item id i; ids that never co-occur are zero
        x = x[ids]
        if x.shape[0] < 2:
            raise CliError(f"--data {a.data}: only {x.shape[0]} item(s) co-occur with another item; need 2 or more")
        return x, ids, f"collaborative embeddings of {a.data}: {x.shape[0]} items x {x.shape[1]}"
    g = torch.Generator().manual_seed(a.seed)
    topics = torch.randn(200, 64, generator=g)
    lab = torch.multinomial(1.0 / torch.arange(1, 201) ** 0.7, a.items, replacement=True, generator=g)
    x = topics[lab] + 0.5 * torch.randn(a.items, 64, generator=g)
    return x, torch.arange(a.items), (f"{a.items} synthetic items x 64 dims (200 topics, Zipf sizes); "
                                      "--data FILE for real data")


def nn_distance(x, sample: int = 1000, seed: int = 0) -> float:
    """Median distance from (up to ``sample``) rows of x to their nearest other row."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(x.shape[0], generator=g)[:sample]
    best = torch.full((rows.numel(),), float("inf"), dtype=torch.float64)
    q = x[rows].double()
    for i in range(0, x.shape[0], 8192):
        d = torch.cdist(q, x[i : i + 8192].double())
        own = (rows[:, None] == torch.arange(i, i + d.shape[1])[None])
        d[own] = float("inf")
        best = torch.minimum(best, d.min(1).values)
    best = best[torch.isfinite(best)]
    return float(best.median()) if best.numel() else 0.0


def cmd_demo(a) -> int:
    if a.topk is not None and a.topk > a.beam:
        raise CliError(f"--topk {a.topk} is larger than --beam {a.beam} (a beam search returns at most --beam items)")
    import torch

    from .search import beam_search
    from .sid import fit

    torch.manual_seed(a.seed)
    x, ids, desc = _demo_catalogue(a)
    m = x.shape[0]
    if a.queries > m:
        raise CliError(f"--queries {a.queries} is larger than the catalogue ({m} items)")
    print(f"catalogue: {desc}")
    t0 = time.perf_counter()
    sids = fit(x, levels=3, codebook_size=min(256, m), dedup="suffix", seed=a.seed, item_ids=ids,
               progress=_progress(a))
    print(f"\nfit (rq-kmeans, 3 x {sids.codebook_sizes[0]} + suffix) in {time.perf_counter() - t0:.2f} s")
    print(sids.report(x))
    trie = sids.trie()
    print(f"\ntrie: {trie.num_items} items, {trie.nbytes} bytes = {trie.nbytes / trie.num_items:.1f} bytes/item "
          f"(measured: Trie.nbytes)")
    print(f"tokens of item {int(ids[0])}:", sids.to_tokens(codes=sids.codes[:1])[0])

    # decode: queries are noisy item embeddings; the 'model' scores the next code by how close
    # the partial reconstruction comes to the query; the trie keeps only existing SIDs.
    # The noise is scaled to the data: its expected norm is --noise x the median distance
    # between an item and its nearest neighbour.
    d_nn = nn_distance(x, seed=a.seed)
    sigma = a.noise * d_nn / x.shape[1] ** 0.5
    g = torch.Generator().manual_seed(a.seed)
    q_rows = torch.randperm(m, generator=g)[: a.queries]
    q = x[q_rows].float() + sigma * torch.randn(a.queries, x.shape[1], generator=g)
    cbs = sids.codebooks
    L, K = sids.num_levels, a.beam
    topk = a.topk if a.topk is not None else min(5, K)

    def step_fn(tokens, parent):
        t = tokens.shape[1]
        qq = q.repeat_interleave(K, 0)
        if t >= L:  # the suffix level: no preference
            return torch.zeros(tokens.shape[0], trie.vocab_sizes[t])
        prefix = sum((cbs[j][tokens[:, j]] for j in range(t)), torch.zeros_like(qq))
        r = qq - prefix
        return -(((r[:, None, :] - cbs[t][None]) ** 2).sum(-1))

    out = beam_search(step_fn, trie, a.queries, K, topk=topk)
    q_ids = ids[q_rows]
    hits = (out.items == q_ids[:, None]).any(1)
    print(f"\nconstrained beam search (beam {K}, top {topk}) for {a.queries} noisy item embeddings "
          f"(noise norm ~{a.noise:g} x the median nearest-neighbour distance {d_nn:.3g}):")
    for i in range(a.queries):
        print(f"  item {int(q_ids[i]):6d} -> top-{topk} items {out.items[i].tolist()}  {'hit' if hits[i] else 'miss'}")
    print(f"recall@{topk} {hits.float().mean():.2f}, invalid items {int((out.items < 0).sum())}")
    return 0


# --------------------------------------------------------------------------- argument types
def _int_at_least(lo: int, name: str = "an integer"):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {s!r}: expected {name} >= {lo}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"invalid value {s!r}: expected {name} >= {lo}")
        return v

    parse.__name__ = f"int>={lo}"
    return parse


def _sample(s: str):
    """--sample: an integer item count >= 1, or a fraction in (0, 1]."""
    try:
        v = int(s)
    except ValueError:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {s!r}: expected an item count or a fraction in (0, 1]") from None
        if not 0.0 < v <= 1.0:
            raise argparse.ArgumentTypeError(f"invalid value {s!r}: a fraction must be in (0, 1]")
        return v
    if v < 1:
        raise argparse.ArgumentTypeError(f"invalid value {s!r}: expected an item count >= 1 or a fraction in (0, 1]")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {s!r}: expected a number >= 0") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {s!r}: expected a finite number >= 0")
    return v


def _codebook_sizes(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        try:
            v = int(part)
        except ValueError:
            v = 0
        if v < 1:
            raise argparse.ArgumentTypeError(
                f"invalid value {s!r}: expected an integer >= 1, or one per level separated by commas (256,256,128)")
        out.append(v)
    return out


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless it is None / False or the help states it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        d = action.default
        if ("default" in h or d is None or d is False or d is argparse.SUPPRESS or isinstance(d, bool)
                or not action.option_strings or action.nargs == 0):
            return h
        if isinstance(d, list):
            return h + f" (default: {','.join(map(str, d))})"
        return h + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """One-line errors: 'pysid: error: ...' and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        hint = f" (see 'pysid {sub} --help')" if sub else " (see 'pysid --help')"
        self.exit(2, f"pysid: error: {message}{hint}\n")


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pysid", formatter_class=_Formatter,
                description="Semantic IDs: fit, encode, inspect, benchmark, demo.",
                epilog="Errors: one line 'pysid: error: ...', exit status 2 (PYSID_DEBUG=1: traceback).\n"
                       "Outputs are written atomically; an existing output is replaced only with --force.\n"
                       "Progress goes to stderr: a bar on a terminal, else a log line every PYSID_PROGRESS_INTERVAL\n"
                       "seconds (default 5); --quiet: none. 'pysid COMMAND --help' for each command's options.")
    p.add_argument("--version", action="version", version=f"pysid {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, formatter_class=_Formatter)

    emb_help = ".npy, .npz or .pt file of [M, D] floating-point embeddings, one row per item"
    f = cmd("fit", "train codebooks and assign Semantic IDs",
            "Train codebooks on item embeddings and write the table of unique Semantic IDs (.npz).\n"
            "rq-kmeans: residual k-means, the same table for the same seed. rq-vae: TIGER's RQ-VAE, trained\n"
            "here (its reproducibility for a seed is stated in pysid.fit's docstring).\n"
            "Several EMBEDDINGS (files, folders, glob patterns): their rows in order. Under torchrun each\n"
            "process reads its share of the files; the table equals one process's; rank 0 writes it.")
    f.add_argument("embeddings", nargs="+", metavar="EMBEDDINGS",
                   help=emb_help + "; several files, folders or glob patterns: their rows in order (under torchrun "
                                   "each process reads its share of the files)")
    f.add_argument("-o", "--output", required=True, metavar="SIDS.npz",
                   help="output table (SemanticIds .npz; the name is used as given)")
    f.add_argument("--force", action="store_true", help="replace an existing output file")
    f.add_argument("--key", help="array name inside an .npz / entry of a .pt dict (default: the first / only one)")
    f.add_argument("--item-ids", metavar="FILE",
                   help="item ids, one per embedding row: .npy of integers or a text file of integers "
                        "(default: the row numbers 0..M-1)")
    f.add_argument("--levels", type=_int_at_least(1), default=3, metavar="L", help="semantic levels L")
    f.add_argument("--codebook-size", type=_codebook_sizes, default=[256], metavar="K[,K...]",
                   help="codes per level: K, or one per level (256,256,128)")
    f.add_argument("--method", choices=["rq-kmeans", "rq-vae"], default="rq-kmeans",
                   help="residual k-means codebooks, or TIGER's RQ-VAE (trained here)")
    f.add_argument("--dedup", choices=["suffix", "reassign", "none"], default="suffix",
                   help="collision rule: an extra suffix level (TIGER), reassignment to a free code, or none")
    f.add_argument("--iters", type=_int_at_least(1), default=50, metavar="N",
                   help="most k-means (Lloyd) iterations per level (each stops earlier at < 0.1 %% inertia gain)")
    f.add_argument("--balanced", action="store_true",
                   help="balanced k-means at every level: equal-size clusters (rq-kmeans)")
    f.add_argument("--beam-width", type=_int_at_least(1), default=1, metavar="W",
                   help="codes by beam search over the levels (1: greedy)")
    f.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="codes of the float32 score (exact), or CUDA tensor-core codes that may differ on near-ties (fast)")
    f.add_argument("--epochs", type=_int_at_least(1), default=None, metavar="N",
                   help="rq-vae training epochs (default: 100, pysid.nn.train_rqvae's)")
    f.add_argument("--latent", type=_int_at_least(1), default=None, metavar="D",
                   help="rq-vae latent dimension (default: 32, pysid.nn.RQVAE's)")
    f.add_argument("--batch-size", type=_int_at_least(1), default=None, metavar="B", help="rq-vae batch size (default: 1024)")
    f.add_argument("--sample", type=_sample, default=None, metavar="N|F",
                   help="train the codebooks on a uniform sample: N items, or a fraction F in (0, 1]; every item "
                        "is then encoded and deduplicated (keep ~100 sampled items per codeword; default: all)")
    f.add_argument("--sample-seed", type=int, default=0, help="seed of the --sample draw")
    f.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    f.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    f.add_argument("--quiet", action="store_true", help="no progress output")
    f.set_defaults(func=cmd_fit)

    e = cmd("encode", "Semantic IDs for new (cold-start) items",
            "Encode embeddings with a table's codebooks and dedup rule.\n"
            "Writes the codes [N, columns] as .npy (-o; '.npy' is appended to a name without it, as numpy does)\n"
            "or, with --out-dir DIR, streams .npy / Parquet shards (files, folders, glob patterns) chunk by chunk\n"
            "into Parquet parts (item_id, level_0.., suffix, known) in bounded memory, resumably.\n"
            "Known items (--item-ids in the table, or an embedding equal to a fitted one) get their table ID\n"
            "back, new items a fresh ID that collides with no table ID; it reports how many of each.\n"
            "--add appends the items to the table: --in-place replaces SIDS (atomically), --table-out FILE\n"
            "writes the grown table to another file.")
    e.add_argument("sids", metavar="SIDS.npz", help="the table written by 'pysid fit'")
    e.add_argument("embeddings", nargs="+", metavar="EMBEDDINGS",
                   help=emb_help + "; with --out-dir: .npy / .parquet files, folders or glob patterns")
    e.add_argument("-o", "--output", metavar="CODES.npy", help="output .npy of codes (required unless --add)")
    e.add_argument("--force", action="store_true", help="replace existing output files")
    e.add_argument("--key", help="array name inside an .npz / entry of a .pt dict")
    e.add_argument("--item-ids", metavar="FILE", help="item ids of the rows (.npy or text of integers); with --add "
                                                      "the new items' ids (default: max id + 1, ...)")
    e.add_argument("--add", action="store_true", help="append the items to the table (needs --in-place or "
                                                      "--table-out)")
    e.add_argument("--in-place", action="store_true", help="with --add: replace SIDS with the grown table")
    e.add_argument("--table-out", metavar="FILE", help="with --add: write the grown table to FILE")
    e.add_argument("--out-dir", metavar="DIR",
                   help="stream: encode .npy / Parquet shards chunk by chunk into Parquet parts in DIR (item_id, "
                        "level_0.., suffix, known); rerunning the same command resumes an interrupted run; --force "
                        "starts again; under torchrun each process encodes its share")
    e.add_argument("--chunk-rows", type=_int_at_least(1), default=None, metavar="N",
                   help="with --out-dir: rows per chunk (= per Parquet part; default: 65536)")
    e.add_argument("--embedding-column", default=None, metavar="NAME",
                   help="with --out-dir: Parquet column of embeddings (default: embedding)")
    e.add_argument("--id-column", default=None, metavar="NAME",
                   help="with --out-dir: Parquet column of item ids (default: item_id)")
    e.add_argument("--first-id", type=_int_at_least(0), default=None, metavar="ID",
                   help="with --out-dir: ids of rows without an id column are row number + ID (default: the table's "
                        "largest item id + 1: such rows are new items)")
    e.add_argument("--quiet", action="store_true", help="no progress output")
    e.set_defaults(func=cmd_encode)

    s = cmd("stats", "print a table's metrics",
            "Metrics of a table: collision rate before dedup (semantic tuples) and after (full IDs), the\n"
            "suffix level's size, per-level usage and perplexity, prefix fan-out.")
    s.add_argument("sids", metavar="SIDS.npz", help="the table written by 'pysid fit'")
    s.add_argument("--embeddings", metavar="EMBEDDINGS", help="the fitted embeddings: adds the reconstruction error")
    s.add_argument("--key", help="array name inside an .npz / entry of a .pt dict")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    s.set_defaults(func=cmd_stats)

    b = cmd("bench", "run the benchmark scripts (quick mode unless --full)",
            "Run bench/*.py: each prints a table and writes JSON (pysid_bench_NAME.json).")
    b.add_argument("which", nargs="?", default="all", choices=["all", *_BENCHES], help="which benchmark")
    b.add_argument("--full", action="store_true", help="full sizes (minutes) instead of --quick")
    b.add_argument("--out-dir", default=".", help="folder for the JSON results")
    b.set_defaults(func=cmd_bench)

    d = cmd("demo", "embeddings -> SIDs -> metrics -> trie -> constrained decoding",
            "The main job end to end: fit 3 x 256 codes + suffix, print the report and the trie size,\n"
            "decode noisy item embeddings by trie-constrained beam search and report the recall.")
    d.add_argument("--items", type=_int_at_least(2), default=20000, help="synthetic catalogue size")
    d.add_argument("--data", metavar="FILE", help="an Amazon-format sequence file ('user_id item_id ...' lines): "
                                                  "collaborative embeddings of its items instead of synthetic ones")
    d.add_argument("--queries", type=_int_at_least(1), default=5, help="queries to decode")
    d.add_argument("--beam", type=_int_at_least(1), default=10, help="beam width")
    d.add_argument("--topk", type=_int_at_least(1), default=None, help="results per query (default: min(5, --beam))")
    d.add_argument("--noise", type=_positive_float, default=0.25,
                   help="query noise: expected norm as a fraction of the median nearest-neighbour distance")
    d.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=cmd_demo)
    return p


def _run(args) -> int:
    try:
        return int(args.func(args) or 0)
    finally:
        if _STARTED_GROUP:  # the process group _distributed() started under torchrun
            import torch.distributed as dist

            _STARTED_GROUP.clear()
            if dist.is_initialized():
                dist.destroy_process_group()


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2)
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 2
    debug = bool(os.environ.get("PYSID_DEBUG"))
    try:
        return _run(args)
    except CliError as e:
        if debug:
            raise
        print(f"pysid: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing an output: disk full, permissions changed meanwhile, ...
        if debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"pysid: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. 'pysid stats --json | head': the reader left
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except KeyboardInterrupt:
        print("pysid: interrupted (outputs are unchanged unless reported written)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
