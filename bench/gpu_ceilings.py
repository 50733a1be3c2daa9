"""Measure the two ceilings of the GPU at hand (METHOD: bytes over bandwidth, FLOPs over rate).

    python bench/gpu_ceilings.py --out OUT.json

copy: a 2 GiB device-to-device copy, bytes read + written over time (DRAM).
l2_copy: a copy between two buffers of a quarter of the L2 each, 64 times per timed call: both stay in
L2, so bytes read + written over time is the L2 bandwidth a kernel can reach with plain loads/stores.
matmul: 8192^3 products in fp32 (no tf32), tf32 and bf16 on random data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import time_fn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_ceilings: needs a CUDA GPU")
    res = {"gpu": torch.cuda.get_device_name(), "sms": torch.cuda.get_device_properties(0).multi_processor_count}
    a = torch.randn(2**29, device="cuda")  # 2 GiB
    b = torch.empty_like(a)
    t = time_fn(lambda: b.copy_(a), device="cuda", repeat=20, warmup=3)
    res["copy_GBps"] = 2 * a.numel() * 4 / t / 1e9
    del a, b
    l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 50 * 2**20)
    res["l2_bytes"] = l2
    a = torch.randn(l2 // 4 // 4, device="cuda")  # a quarter of the L2 each
    b = torch.empty_like(a)

    def l2_copies() -> None:
        for _ in range(64):
            b.copy_(a)

    t = time_fn(l2_copies, device="cuda", repeat=10, warmup=2)
    res["l2_copy_GBps"] = 64 * 2 * a.numel() * 4 / t / 1e9
    del a, b
    n = 8192
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x = torch.randn(n, n, device="cuda", dtype=dtype)
        y = torch.randn(n, n, device="cuda", dtype=dtype)
        t = time_fn(lambda: x @ y, device="cuda", repeat=10, warmup=3)
        res[f"{name}_TFLOPs"] = 2 * n**3 / t / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    print(json.dumps(res))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
