"""Benchmark of nhood's `cpu` backend against torch on the same CPU, in one process.

    python benchmarks/cpu_bench.py [--quick]

Cases (targets from the cpu backend brief, results in docs/performance.md):
  (a) vision 1x56x56, 2 heads, d32, 7x7 float32: nhood cpu vs torch SDPA with a dense
      boolean neighborhood mask (target >= 25x faster);
  (b) 1x64x64, 4 heads, d64, 13x13 float32: nhood effective FLOP/s (4*B*H*N*|window|*D)
      vs torch.matmul float32 FLOP/s (target >= 30%);
  (c) relative error of cpu vs the float64 `reference` backend (target <= 1e-5).
Times are medians over many runs after warm-up, on random normal inputs; nhood and its peer
run in alternating rounds so both see the same background load.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

# torch's OpenMP workers spin after each op by default; with nhood's own pool
# on the same cores, that spinning would be charged to nhood in the
# interleaved rounds below. Passive waiting costs torch nothing measurable on
# ops of tens of milliseconds. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import nhood

# The dense mask comes from the tests' independent reference (DESIGN.md section 1 rule).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from dense_reference import neighborhood_mask  # noqa: E402

NA = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}
NA_BWD = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}


def interleaved_medians(fns, seconds, warmup=2):
    """Median time of each fn, timed in alternating rounds: on a shared, busy
    machine every fn then sees the same background load, so ratios hold up."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < 10 or time.perf_counter() - start < seconds:
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def matmul(n=1024):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return (lambda: torch.matmul(a, b)), 2 * n**3


def case(spatial, heads, dim, kernel, seconds, sdpa):
    """Times nhood cpu forward/backward interleaved with a peer: SDPA with a
    dense mask (sdpa=True) or a 1024^3 torch.matmul (row['matmul_flops'])."""
    rank = len(spatial)
    g = torch.Generator().manual_seed(0)
    shape = (1, *spatial, heads, dim)
    q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    na = NA[rank]
    fwd = lambda: na(q, k, v, kernel, backend="cpu")  # noqa: E731
    out, lse = na(q, k, v, kernel, backend="cpu", return_lse=True)
    d_out = torch.randn(out.shape, generator=g)
    bwd = lambda: NA_BWD[rank](q, k, v, out, lse, d_out, kernel, backend="cpu")  # noqa: E731
    if sdpa:
        mask = torch.from_numpy(neighborhood_mask(spatial, kernel, (1,) * rank, (1,) * rank, (False,) * rank))
        qh, kh, vh = (x.reshape(1, -1, heads, dim).transpose(1, 2) for x in (q, k, v))
        peer = lambda: torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)  # noqa: E731
    else:
        peer, mm_flops = matmul()
    t_fwd, t_bwd, t_peer = interleaved_medians([fwd, bwd, peer], seconds)
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
        row["sdpa_ms"] = t_peer * 1e3
        row["sdpa_vs_cpu_err"] = rel(out, peer().transpose(1, 2).reshape(out.shape))
    else:
        row["matmul_flops"] = mm_flops / t_peer
    return row


def cpu_name():
    """CPU model and its widest vector extension: nhood's kernel table (AVX-512, AVX2 or generic)
    and torch's both follow it, so ratios from different machines are not comparable."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "cpu unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    return f"{model} ({isa}, {os.cpu_count()} cpus)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter timing (CI smoke run)")
    args = ap.parse_args()
    seconds = 0.3 if args.quick else 2.0
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, cpu kernels: "
          f"{os.environ.get('NHOOD_CPU_ISA', 'auto')}, {cpu_name()}, load average {os.getloadavg()[0]:.2f}")
    a = case((56, 56), 2, 32, (7, 7), seconds, sdpa=True)
    b = case((64, 64), 4, 64, (13, 13), seconds, sdpa=False)
    mm = b["matmul_flops"]
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
