"""Timing of the unfused path: qk -> softmax -> av (and backward), per backend.

    python -m nhood.bench_unfused [--cases b4-128,vision] [--dtype float16] [--backward]

``run(cases, dtype, backward, reps)`` returns rows (dicts); ``print_rows``
prints them (``main`` here, and ``python -m nhood.bench --unfused``).
Times are medians of CUDA-event (or wall-clock, on the CPU) measurements
after warm-up, on random inputs; ``speedup`` is each backend vs the slowest.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

CASES = {
    # name: (batch, spatial, heads, dim, kernel)
    "b4-128": (4, (128, 128), 8, 64, (13, 13)),
    "vision": (32, (56, 56), 2, 32, (7, 7)),
    "small": (1, (32, 32), 2, 32, (7, 7)),
}


def _timer(torch, device, fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _backends(nhood, device):
    if device == "cpu":
        return ["reference"]
    return [b for b in ("gemm", "naive")]


def run(cases=("b4-128", "vision"), dtype="float16", backward=False, reps=20, device=None):
    import torch

    import nhood

    device = device or ("cuda" if nhood.cuda_available() and torch.cuda.is_available() else "cpu")
    rows = []
    for name in cases:
        b, spatial, heads, dim, kernel = CASES[name]
        rank = len(spatial)
        qk = getattr(nhood, f"na{rank}d_qk")
        av = getattr(nhood, f"na{rank}d_av")
        qk_bwd = getattr(nhood, f"na{rank}d_qk_backward")
        av_bwd = getattr(nhood, f"na{rank}d_av_backward")
        dt = getattr(torch, dtype)
        q, k, v = (torch.randn(b, *spatial, heads, dim, device=device, dtype=dt) for _ in range(3))
        qs = q * dim ** -0.5  # scaled once, outside the timed region
        times = {}
        for backend in _backends(nhood, device):
            try:
                def forward():
                    w = qk(qs, k, kernel, backend=backend).softmax(-1)
                    return w, av(w, v, kernel, backend=backend)

                ms = _timer(torch, device, forward, reps)
                row = {"case": name, "backend": backend, "dtype": dtype, "device": device, "forward_ms": ms}
                if backward:
                    w, out = forward()
                    d_out = torch.randn_like(out)

                    def fwd_bwd():
                        w, out = forward()
                        dw, dv, _ = av_bwd(w, v, d_out, kernel, backend=backend)
                        ds = w * (dw - (dw * w).sum(-1, keepdim=True))
                        qk_bwd(q, k, ds, kernel, backend=backend)

                    row["forward_backward_ms"] = _timer(torch, device, fwd_bwd, reps)
                rows.append(row)
                times[backend] = ms
            except (ValueError, RuntimeError) as e:
                rows.append({"case": name, "backend": backend, "error": str(e).splitlines()[0]})
        slowest = max(times.values(), default=None)
        for row in rows:
            if row["case"] == name and "forward_ms" in row:
                row["speedup"] = slowest / row["forward_ms"]
    return rows


def print_rows(rows):
    for r in rows:
        if "error" in r:
            print(f"{r['case']:>8} {r['backend']:>9}  error: {r['error']}")
        else:
            extra = f"  fwd+bwd {r['forward_backward_ms']:8.3f} ms" if "forward_backward_ms" in r else ""
            print(f"{r['case']:>8} {r['backend']:>9}  qk+softmax+av {r['forward_ms']:8.3f} ms"
                  f"  x{r['speedup']:.2f}{extra}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="b4-128,vision")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--backward", action="store_true")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = run(args.cases.split(","), args.dtype, args.backward, args.reps, args.device)
    print_rows(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
