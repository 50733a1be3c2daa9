"""Benchmark: residual codeword search (encode N vectors with L fixed codebooks).

One run times, on the same data: the PyTorch reference (eager and torch.compile),
pysid's kernels (CPU; Triton and CUDA on a GPU), faiss's ResidualQuantizer
(greedy and beam) and vector-quantize-pytorch's ResidualVQ (eval, no grad).
Every row reports the median time, the mean final distortion and the share of
codes equal to the float64 reference's (greedy rows).

    python bench/bench_residual_quantize.py            # CPU goal shape: N=100k D=128 L=3 K=256
    python bench/bench_residual_quantize.py --quick    # seconds, for CI
    python bench/bench_residual_quantize.py --gpu      # N=2^20, the three GPU goal shapes
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, print_table, time_fn, write_json  # noqa: E402

import pysid  # noqa: E402
from pysid.reference import residual_quantize_ref  # noqa: E402


def make_data(n: int, d: int, k: int, levels: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered data and codebooks drawn from the data's residuals (a k-means-like start)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(64, d, generator=g) * 2
    x = centers[torch.randint(0, 64, (n,), generator=g)] + torch.randn(n, d, generator=g)
    cbs = []
    r = x[: min(n, 65536)].clone()
    for _ in range(levels):
        c = r[torch.randperm(r.shape[0], generator=g)[:k]].clone()
        if c.shape[0] < k:
            c = torch.cat([c, torch.randn(k - c.shape[0], d, generator=g)])
        cbs.append(c)
        r = r - c[residual_quantize_ref(r, [c])[2][:, 0].long()]
    return x.to(device), torch.stack(cbs).to(device)


def faiss_rows(x: torch.Tensor, cb: torch.Tensor, repeat: int) -> list[dict[str, Any]]:
    try:
        import faiss
    except ImportError:
        return [{"method": "faiss ResidualQuantizer", "note": "faiss-cpu not installed"}]
    levels, k, d = cb.shape
    nbits = k.bit_length() - 1
    if 1 << nbits != k:
        return [{"method": "faiss ResidualQuantizer", "note": f"K={k} is not a power of two"}]
    xn = x.numpy()
    rows = []
    for beam in (1, 5):
        rq = faiss.ResidualQuantizer(d, levels, nbits)
        faiss.copy_array_to_vector(cb.reshape(-1).numpy(), rq.codebooks)
        rq.is_trained = True
        rq.max_beam_size = beam
        rq.compute_codebook_tables()
        t = time_fn(lambda: rq.compute_codes(xn), repeat=repeat)
        codes = rq.compute_codes(xn)
        recon = torch.from_numpy(rq.decode(codes))
        dist = ((x - recon) ** 2).sum(1)
        rows.append({"method": f"faiss ResidualQuantizer beam {beam}", "beam": beam, "seconds": t,
                     "distortion": dist.mean().item(), "codes": torch.from_numpy(codes.astype("int64")) if nbits == 8 else None})
    return rows


def vqp_row(x: torch.Tensor, cb: torch.Tensor, repeat: int) -> dict[str, Any]:
    try:
        from vector_quantize_pytorch import ResidualVQ
    except ImportError:
        return {"method": "vector-quantize-pytorch ResidualVQ", "note": "not installed"}
    levels, k, d = cb.shape
    rvq = ResidualVQ(dim=d, num_quantizers=levels, codebook_size=k).to(x.device).eval()
    with torch.no_grad():
        for level, layer in enumerate(rvq.layers):
            layer._codebook.embed.copy_(cb[level][None])
            layer._codebook.initted.fill_(True)

    def run():
        with torch.no_grad():
            return rvq(x[:, None, :])

    t = time_fn(run, device=str(x.device), repeat=repeat)
    quant, idx, _ = run()
    dist = ((x - quant[:, 0]) ** 2).sum(1)
    return {"method": "vector-quantize-pytorch ResidualVQ", "seconds": t, "distortion": dist.mean().item(), "codes": idx[:, 0].long().cpu()}


def pysid_row(name: str, backend: str, x, cb, beam: int, repeat: int) -> dict[str, Any]:
    def run():
        with pysid.backend(backend):
            return pysid.residual_quantize(x, cb, beam_width=beam)

    try:
        t = time_fn(run, device=str(x.device), repeat=repeat)
    except (RuntimeError, NotImplementedError, ValueError) as e:
        return {"method": name, "beam": beam, "note": f"failed: {e}"}
    extra: dict[str, Any] = {}
    if x.is_cuda:  # peak memory of one call above what it returns: shows no N x K matrix is allocated
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = run()
        torch.cuda.synchronize()
        held = sum(t.numel() * t.element_size() for t in (out.quantized, out.distances, out.codes))
        extra["peak_extra_mb"] = (torch.cuda.max_memory_allocated() - base - held) / 2**20
        extra["n_by_k_fp32_mb"] = x.shape[0] * cb.shape[1] * 4 / 2**20
    else:
        out = run()
    return {"method": name, "beam": beam, "seconds": t, "distortion": out.distances[:, -1].mean().item(),
            "codes": out.codes.long().cpu(), **extra}


def bench_case(n: int, d: int, k: int, levels: int, device: str, repeat: int, peers: bool) -> list[dict[str, Any]]:
    x, cb = make_data(n, d, k, levels, device)
    print(f"\n# N={n} D={d} K={k} L={levels} fp32 on {device}", flush=True)
    ref_codes = residual_quantize_ref(x.double(), cb.double())[2].long().cpu()  # the oracle for 'same codes'
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        print(f"  {row['method']}: {row.get('seconds', row.get('note'))}", flush=True)

    cbl = list(cb.unbind(0))
    ref = lambda: residual_quantize_ref(x, cbl)  # noqa: E731
    t = time_fn(ref, device=device, repeat=repeat)
    out = ref()
    add({"method": "torch reference (eager)", "beam": 1, "seconds": t, "distortion": out[1][:, -1].mean().item(), "codes": out[2].long().cpu()})
    try:
        compiled = torch.compile(residual_quantize_ref)
        cref = lambda: compiled(x, cbl)  # noqa: E731
        t = time_fn(cref, device=device, repeat=repeat, warmup=2)
        out = cref()
        add({"method": "torch.compile(reference)", "beam": 1, "seconds": t, "distortion": out[1][:, -1].mean().item(), "codes": out[2].long().cpu()})
    except Exception as e:  # compile needs a C++ toolchain on CPU
        add({"method": "torch.compile(reference)", "note": f"failed: {type(e).__name__}: {e}"[:200]})
    if device == "cpu":
        add(pysid_row("pysid cpu", "cpu", x, cb, 1, repeat))
        add(pysid_row("pysid cpu beam 5", "cpu", x, cb, 5, repeat))
        if peers:
            for row in faiss_rows(x, cb, repeat):
                add(row)
    else:
        add(pysid_row("pysid triton", "triton", x, cb, 1, repeat))
        add(pysid_row("pysid cuda", "cuda", x, cb, 1, repeat))
        add(pysid_row("pysid triton beam 5", "triton", x, cb, 5, repeat))
    if peers:
        add(vqp_row(x, cb, repeat))
    for row in rows:
        codes = row.pop("codes", None)
        row.update(n=n, d=d, k=k, levels=levels, device=device)
        if codes is not None and row.get("beam", 1) == 1:
            row["same_codes"] = (codes == ref_codes).all(1).double().mean().item()
    base = next((r["seconds"] for r in rows if r["method"] == "torch reference (eager)"), None)
    for row in rows:
        if base and row.get("seconds"):
            row["vs_eager"] = base / row["seconds"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, seconds (CI smoke run)")
    p.add_argument("--gpu", action="store_true", help="N=2^20 GPU goal shapes (needs CUDA)")
    p.add_argument("--n", type=int, default=None, help="rows (default 100000 CPU, 2^20 GPU, 2000 quick)")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--no-peers", action="store_true", help="skip faiss and vector-quantize-pytorch")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_residual_quantize.json"))
    args = p.parse_args()

    if args.gpu:
        if not torch.cuda.is_available():
            sys.exit("--gpu needs a CUDA GPU")
        n = args.n or 1 << 20
        cases = [(n, 256, 256, 3), (n, 64, 256, 3), (n, 256, 1024, 4)]
        device, repeat = "cuda", args.repeat or 20
    elif args.quick:
        cases = [(args.n or 2000, 32, 64, 3)]
        device, repeat = "cpu", args.repeat or 2
    else:
        cases = [(args.n or 100_000, 128, 256, 3)]
        device, repeat = "cpu", args.repeat or 5
    rows = []
    for n, d, k, levels in cases:
        rows += bench_case(n, d, k, levels, device, repeat, peers=not args.no_peers)
    print()
    print_table(rows, ["n", "d", "k", "levels", "method", "seconds", "vs_eager", "distortion", "same_codes", "peak_extra_mb", "note"])
    write_json(args.out, {"benchmark": "residual_quantize", "env": environment(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
