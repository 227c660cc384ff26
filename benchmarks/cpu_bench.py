"""Benchmark of nhood's `cpu` backend against torch on the same CPU, in one process.

    python benchmarks/cpu_bench.py [--quick]

Cases (targets from the cpu backend brief, results in docs/performance.md):
  (a) vision 1x56x56, 2 heads, d32, 7x7 float32: nhood cpu vs torch SDPA with a dense
      boolean neighborhood mask (target >= 25x faster);
  (b) 1x64x64, 4 heads, d64, 13x13 float32: nhood effective FLOP/s (4*B*H*N*|window|*D)
      vs torch.matmul float32 FLOP/s (target >= 30%);
  (c) relative error of cpu vs the float64 `reference` backend (target <= 1e-5).
Times are medians over many runs after warm-up, on random normal inputs.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

import nhood

# The dense mask comes from the tests' independent reference (DESIGN.md section 1 rule).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from dense_reference import neighborhood_mask  # noqa: E402

NA = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}
NA_BWD = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}


def median_time(fn, min_runs=10, min_seconds=1.0, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def matmul_flops(seconds):
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = median_time(lambda: torch.matmul(a, b), min_seconds=seconds)
    return 2 * n**3 / t


def case(spatial, heads, dim, kernel, seconds, sdpa):
    rank = len(spatial)
    g = torch.Generator().manual_seed(0)
    shape = (1, *spatial, heads, dim)
    q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    na = NA[rank]
    t_fwd = median_time(lambda: na(q, k, v, kernel, backend="cpu"), min_seconds=seconds)
    out, lse = na(q, k, v, kernel, backend="cpu", return_lse=True)
    d_out = torch.randn(out.shape, generator=g)
    bwd = lambda: NA_BWD[rank](q, k, v, out, lse, d_out, kernel, backend="cpu")  # noqa: E731
    t_bwd = median_time(bwd, min_seconds=seconds)
    ref_out, ref_lse = na(q, k, v, kernel, backend="reference", return_lse=True)
    ref_grads = NA_BWD[rank](q, k, v, ref_out, ref_lse, d_out, kernel, backend="reference")
    grads = bwd()
    err = max([rel(out, ref_out), rel(lse, ref_lse)] + [rel(a, b) for a, b in zip(grads, ref_grads)])
    n = math.prod(spatial)
    flops = 4 * heads * n * math.prod(kernel) * dim
    row = dict(case=f"{'x'.join(map(str, spatial))} h{heads} d{dim} k{'x'.join(map(str, kernel))}",
               fwd_ms=t_fwd * 1e3, bwd_ms=t_bwd * 1e3, fwd_gflops=flops / t_fwd / 1e9,
               bwd_gflops=2.5 * flops / t_bwd / 1e9, max_rel_err=err, sdpa_ms=float("nan"))
    if sdpa:
        mask = torch.from_numpy(neighborhood_mask(spatial, kernel, (1,) * rank, (1,) * rank, (False,) * rank))
        qh, kh, vh = (x.reshape(1, n, heads, dim).transpose(1, 2) for x in (q, k, v))
        sd = lambda: torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)  # noqa: E731
        row["sdpa_ms"] = median_time(sd, min_seconds=seconds) * 1e3
        ref = sd().transpose(1, 2).reshape(out.shape)
        row["sdpa_vs_cpu_err"] = rel(out, ref)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter timing (CI smoke run)")
    args = ap.parse_args()
    seconds = 0.3 if args.quick else 2.0
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, cpu kernels: "
          f"{os.environ.get('NHOOD_CPU_ISA', 'auto')}")
    mm = matmul_flops(seconds)
    a = case((56, 56), 2, 32, (7, 7), seconds, sdpa=True)
    b = case((64, 64), 4, 64, (13, 13), seconds, sdpa=False)
    print(f"torch.matmul 1024^3 float32: {mm / 1e9:.1f} GFLOP/s")
    print(f"{'case':28} {'fwd ms':>8} {'bwd ms':>8} {'fwd GF/s':>9} {'bwd GF/s':>9} {'sdpa ms':>9} {'max rel err':>12}")
    for r in (a, b):
        print(f"{r['case']:28} {r['fwd_ms']:8.3f} {r['bwd_ms']:8.3f} {r['fwd_gflops']:9.1f} {r['bwd_gflops']:9.1f} "
              f"{r['sdpa_ms']:9.2f} {r['max_rel_err']:12.2e}")
    print(f"(a) speedup vs SDPA+mask: {a['sdpa_ms'] / a['fwd_ms']:.1f}x (target >= 25x); "
          f"cpu vs SDPA rel diff {a['sdpa_vs_cpu_err']:.1e}")
    print(f"(b) fwd {b['fwd_gflops'] * 1e9 / mm * 100:.1f}% of matmul (target >= 30%), "
          f"bwd {b['bwd_gflops'] * 1e9 / mm * 100:.1f}%")
    ok = max(a["max_rel_err"], b["max_rel_err"]) <= 1e-5
    print(f"(c) max rel err vs reference: {max(a['max_rel_err'], b['max_rel_err']):.2e} ({'ok' if ok else 'FAIL'})")


if __name__ == "__main__":
    main()
