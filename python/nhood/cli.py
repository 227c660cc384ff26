"""`python -m nhood`: run one neighborhood attention problem on the best
device, time every available backend, check each against the float64
reference backend, print a table. Flags mirror NATTEN's profiler."""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from . import functional as F
from ._core import backends as _backends, cuda_available as _cuda_available


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m nhood", description=__doc__)
    p.add_argument("-b", "--batch", type=int, default=1)
    p.add_argument("-n", "--heads", type=int, default=4)
    p.add_argument("-i", "--input-size", type=int, nargs="+", default=[32, 32], help="spatial shape (1-3 ints)")
    p.add_argument("-w", "--window", type=int, nargs="+", default=None, help="kernel size (one int or one per axis)")
    p.add_argument("-s", "--stride", type=int, nargs="+", default=[1])
    p.add_argument("-d", "--dilation", type=int, nargs="+", default=[1])
    p.add_argument("-c", "--causal", type=int, nargs="*", default=None,
                   help="causal masking: -c for every axis, or one 0/1 per axis")
    p.add_argument("--dim", type=int, default=32, help="head dim")
    p.add_argument("--dim-v", type=int, default=None, help="value head dim (default: --dim)")
    p.add_argument("--heads-kv", type=int, default=None, help="key/value heads (GQA; default: --heads)")
    p.add_argument("--additional-tokens", type=int, default=0, help="extra KV tokens every query attends")
    p.add_argument("--dtype", choices=["float64", "float32", "float16", "bfloat16"], default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--backend", default="all", help="'all' (default), 'auto' or a backend name")
    p.add_argument("--backprop", action="store_true", help="also time and check the backward pass")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--no-check", action="store_true", help="skip the comparison against the reference backend")
    return p.parse_args(argv)


def _per_axis(values, rank, name):
    if len(values) == 1:
        return tuple(values) * rank
    if len(values) != rank:
        raise SystemExit(f"{name}: give one value or {rank} (one per axis), got {values}")
    return tuple(values)


class _Arrays:
    """Creates inputs and times calls on one device with one library."""

    def __init__(self, device, dtype):
        self.device = device
        self.dtype = dtype
        self.torch = None
        if device == "cuda" or dtype == "bfloat16":
            import torch  # GPU runs and bfloat16 use torch tensors

            self.torch = torch

    def random(self, shape, rng):
        data = rng.standard_normal(shape).astype(np.float32)
        if self.torch is None:
            return data.astype(self.dtype)
        t = self.torch
        return t.from_numpy(data).to(device=self.device, dtype=getattr(t, self.dtype))

    def to_float64(self, x):
        if self.torch is None:
            return np.asarray(x, dtype=np.float64)
        return x.detach().to("cpu", self.torch.float64).numpy()

    def time_ms(self, fn, warmup, iters):
        for _ in range(warmup):
            fn()
        samples = []
        if self.device == "cuda":
            t = self.torch
            for _ in range(iters):
                start, end = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
        else:
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)


def _rel_error(x, ref):
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(x - ref) / (denom if denom > 0 else 1.0))


def main(argv=None):
    a = parse_args(argv)
    rank = len(a.input_size)
    if not 1 <= rank <= 3:
        raise SystemExit("-i/--input-size takes 1 to 3 ints")
    kernel = _per_axis(a.window or [7], rank, "-w/--window")
    stride = _per_axis(a.stride, rank, "-s/--stride")
    dilation = _per_axis(a.dilation, rank, "-d/--dilation")
    causal = (True,) * rank if a.causal == [] else (False,) * rank if a.causal is None else tuple(
        bool(c) for c in _per_axis(a.causal, rank, "-c/--causal"))
    device = a.device
    if device == "auto":
        device = "cuda" if _cuda_available() and _has_torch() else "cpu"
    dtype = a.dtype or ("float16" if device == "cuda" else "float32")
    heads_kv = a.heads_kv or a.heads
    dim_v = a.dim_v or a.dim

    arrays = _Arrays(device, dtype)
    rng = np.random.default_rng(0)
    spatial = tuple(a.input_size)
    q = arrays.random((a.batch, *spatial, a.heads, a.dim), rng)
    k = arrays.random((a.batch, *spatial, heads_kv, a.dim), rng)
    v = arrays.random((a.batch, *spatial, heads_kv, dim_v), rng)
    d_out = arrays.random((a.batch, *spatial, a.heads, dim_v), rng)
    extra = {}
    if a.additional_tokens:
        extra = dict(additional_keys=arrays.random((a.batch, a.additional_tokens, heads_kv, a.dim), rng),
                     additional_values=arrays.random((a.batch, a.additional_tokens, heads_kv, dim_v), rng))
    window = dict(kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal)
    na = (F.na1d, F.na2d, F.na3d)[rank - 1]
    na_backward = (F.na1d_backward, F.na2d_backward, F.na3d_backward)[rank - 1]

    names = _backends(device) if a.backend == "all" else [a.backend]
    reference = None
    if not a.no_check:
        as64 = {key: arrays.to_float64(x) for key, x in dict(q=q, k=k, v=v, d_out=d_out, **extra).items()}
        add64 = {key: as64[key] for key in extra}
        ref_out, ref_lse = na(as64["q"], as64["k"], as64["v"], **window, **add64, return_lse=True,
                              backend="reference")
        reference = [ref_out]
        if a.backprop:
            reference += list(na_backward(as64["q"], as64["k"], as64["v"], ref_out, ref_lse, as64["d_out"],
                                          **window, **add64, backend="reference"))

    window_size = math.prod(kernel) + a.additional_tokens
    flops = 4.0 * a.batch * a.heads * math.prod(spatial) * window_size * a.dim
    rows, skipped = [], []
    for name in names:
        backend = None if name == "auto" else name

        def forward():
            return na(q, k, v, **window, **extra, return_lse=True, backend=backend)

        try:
            out, lse = forward()
        except ValueError as e:
            # e.g. `cpu` leaves float64 to `reference`: list it, run the others
            if a.backend != "all" or "does not support" not in str(e):
                raise
            skipped.append(f"{name}: {e}")
            continue
        fwd_ms = arrays.time_ms(forward, a.warmup, a.iters)
        results = [out]
        bwd_ms = None
        if a.backprop:
            def backward():
                return na_backward(q, k, v, out, lse, d_out, **window, **extra, backend=backend)

            results += list(backward())
            bwd_ms = arrays.time_ms(backward, a.warmup, a.iters)
        error = None
        if reference is not None:
            error = max(_rel_error(arrays.to_float64(x), r) for x, r in zip(results, reference))
        rows.append((name, f"{device}", dtype, fwd_ms, flops / (fwd_ms * 1e9), bwd_ms, error))

    _print_table(a, spatial, kernel, stride, dilation, causal, rows)
    for line in skipped:
        print(f"skipped {line}")


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _print_table(a, spatial, kernel, stride, dilation, causal, rows):
    print(f"nhood: batch={a.batch} heads={a.heads} input={spatial} dim={a.dim} kernel={kernel} "
          f"stride={stride} dilation={dilation} causal={causal}")
    header = ("backend", "device", "dtype", "fwd ms", "fwd TFLOP/s", "bwd ms", "max rel error")
    table = [header] + [
        (n, dev, dt, f"{f:.3f}", f"{t:.3f}", "-" if b is None else f"{b:.3f}", "-" if e is None else f"{e:.2e}")
        for n, dev, dt, f, t, b, e in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
