"""Per-call time of nhood on a tiny problem, where the work is negligible and
what is left is the cost of a call: Python argument handling, output
allocation, DLPack import and the core's dispatch (docs/performance.md,
"Python overhead"). Prints the median over many calls; subtracts nothing.

    python scripts/python_overhead.py [--calls 20000] [--python-only]

--python-only replaces the native call (DLPack import, validation, kernel)
with a no-op, leaving the Python layer's own cost.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import nhood


def per_call_us(fn, calls: int, repeats: int = 7) -> float:
    for _ in range(calls // 10):  # warm-up: caches, first-call imports, thread pool
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - start) / calls / 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--python-only", action="store_true")
    args = parser.parse_args()
    if args.python_only:
        from nhood import functional

        class NoNative:
            def forward(self, *args):
                pass

        functional._core = NoNative()
    shape = (1, 8, 8, 1, 16)  # batch 1, 8x8 tokens, 1 head, head_dim 16; kernel 3x3
    q = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    out = np.empty_like(q)
    rows = [("numpy  na2d", lambda: nhood.na2d(q, q, q, 3)),
            ("numpy  na2d(out=)", lambda: nhood.na2d(q, q, q, 3, out=out))]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        t = torch.from_numpy(q.copy())
        tg = t.clone().requires_grad_()
        import nhood.torch as nt
        rows += [("torch  na2d", lambda: nhood.na2d(t, t, t, 3)),
                 ("torch  nhood.torch.na2d (no grad)", lambda: nt.na2d(t, t, t, 3)),
                 ("torch  na2d, requires_grad (autograd node)", lambda: nhood.na2d(tg, tg, tg, 3))]
    what = "Python layer only (native call stubbed)" if args.python_only else f"backends {nhood.backends('cpu')}"
    print(f"{what}; median per call over {args.calls} calls")
    for name, fn in rows:
        print(f"{per_call_us(fn, args.calls):8.2f} us  {name}")


if __name__ == "__main__":
    main()
