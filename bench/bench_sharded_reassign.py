"""Benchmark: pysid.dedup.sharded_reassign on 2 gloo ranks of this machine (ranks share its cores),
N rows per rank of 4 x 256 uint8 codes (the bench_scale reassign data: 15 % of the rows copy another
row's tuple; synthetic candidates, m = 32). Prints each rank's wall time (keys + sharded reassign)
and peak RSS.

    python bench/bench_sharded_reassign.py 5000000
"""
import os, sys, time, socket, numpy as np, torch, resource
import torch.distributed as dist

def main(rank, world, port, n):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from pysid.dedup import tuple_keys, sharded_reassign
    rng = np.random.default_rng(rank)
    m, k = 32, 256
    codes = rng.integers(0, k, (n, 4), dtype=np.uint8)
    c = int(0.15 * n)
    codes[rng.integers(0, n, c)] = codes[rng.integers(0, n, c)]
    orders = np.stack([np.random.default_rng(9).permutation(np.arange(1, k))[: m - 1] for _ in range(8)])
    table = np.empty((k, 8, m), np.int32); table[:, :, 0] = np.arange(k)[:, None]
    table[:, :, 1:] = (np.arange(k)[:, None, None] + orders[None]) % k
    sbase = np.cumsum(np.random.default_rng(8).integers(1, 4, (64, m)), 1).astype(np.float32)
    cb = lambda rows: (table[codes[rows, 3], rows % 8], sbase[rows % 64])
    dist.barrier()
    t = time.perf_counter()
    keys = tuple_keys(codes, [k] * 4)
    rows, new = sharded_reassign(keys, k, cb)
    dist.barrier()
    dt = time.perf_counter() - t
    print(f"rank {rank}: {n} rows, {dt:.2f} s, moved {rows.size}, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB", flush=True)
    dist.destroy_process_group()

if __name__ == "__main__":
    n = int(sys.argv[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    torch.multiprocessing.spawn(main, args=(2, port, n), nprocs=2, join=True)
