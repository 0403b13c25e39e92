#!/usr/bin/env python3
"""Kernel peer: the shapes of build/benchmarks/bench_kernels run through PyTorch (F.linear,
F.scaled_dot_product_attention, F.layer_norm, F.rms_norm) with the same thread count, side by side with
our numbers, and the ratio. Usage (from the repository root, after scripts/build.sh):

    python benchmarks/peers/kernels_torch.py [--threads N] [--bench build/benchmarks/bench_kernels]
"""
import argparse
import json
import subprocess
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--bench", default="build/benchmarks/bench_kernels")
a = ap.parse_args()
torch.set_num_threads(a.threads)

env = dict(__import__("os").environ, OMP_NUM_THREADS=str(a.threads))
out = subprocess.run([a.bench, "--benchmark_format=json", "--benchmark_min_time=0.3"], capture_output=True,
                     text=True, check=True, env=env).stdout
ours = {b["name"]: b["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0}[b["time_unit"]]
        for b in json.loads(out)["benchmarks"]}


def timeit(fn, min_time=0.3):
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n * 1e3  # ms


def peer(name):
    kind, *args = name.split("/")
    args = [int(x) for x in args]
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        if kind == "BM_Linear":
            m, k, n = args
            x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
            return timeit(lambda: F.linear(x, w, b))
        if kind == "BM_Attention":
            bsz, t, h, d, causal = args
            q, kk, v = (torch.randn(bsz, h, t, d, generator=g) for _ in range(3))
            mask = None if causal else torch.ones(bsz, 1, 1, t, dtype=torch.bool)
            return timeit(lambda: F.scaled_dot_product_attention(q, kk, v, attn_mask=mask, is_causal=bool(causal)))
        if kind == "BM_LayerNorm":
            r, c = args
            x, w, b = torch.randn(r, c, generator=g), torch.randn(c, generator=g), torch.randn(c, generator=g)
            return timeit(lambda: F.layer_norm(x, (c,), w, b, 1e-12))
        if kind == "BM_RmsNorm":
            r, c = args
            x, w = torch.randn(r, c, generator=g), torch.randn(c, generator=g)
            return timeit(lambda: F.rms_norm(x, (c,), w, 1e-5))
    return None


print(f"{'kernel':36s} {'xvlm2vec ms':>12s} {'torch ms':>10s} {'ratio':>7s}   (torch {torch.__version__}, {a.threads} threads)")
for name, ms in ours.items():
    p = peer(name)
    if p is not None:
        print(f"{name:36s} {ms:12.3f} {p:10.3f} {p / ms:6.2f}x")
