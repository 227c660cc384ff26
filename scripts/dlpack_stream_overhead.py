"""Host cost of handing torch CUDA tensors to nhood: nanobind's own
`__dlpack__()` call (no stream: torch then orders the legacy default stream
after the current one with an event when they differ) vs capsules exported
with `__dlpack__(stream=current)` (no event). Tiny problem, so the host path
dominates; median of many calls, on the default stream and on a side stream.
"""
from __future__ import annotations

import statistics
import time

import torch

import nhood
from nhood import _args, _core


def call(q, out, capsules):
    s = torch.cuda.current_stream().cuda_stream
    dl = s if s != 0 else 1  # DLPack forbids 0; 1 names the legacy default stream (torch asserts on 0)
    a = (lambda x: x.__dlpack__(stream=dl)) if capsules else (lambda x: x)
    _core.forward(a(q), a(q), a(q), a(out), None, None, None, 1, (3, 1, 1), (1, 1, 1), (1, 1, 1), (False,) * 3, None,
                  _args.backend_arg("naive"), s)


def median_us(fn, n=2000):
    for _ in range(100):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    return statistics.median(times) * 1e6


def main():
    q = torch.randn(1, 16, 1, 8, device="cuda")
    out = torch.empty_like(q)
    side = torch.cuda.Stream()
    rows = []
    for where, ctx in (("default stream", torch.cuda.stream(torch.cuda.default_stream())),
                       ("side stream", torch.cuda.stream(side))):
        with ctx:
            for capsules in (False, True):
                rows.append((where, "capsule(stream=cur)" if capsules else "plain __dlpack__()",
                             median_us(lambda: call(q, out, capsules))))
            rows.append((where, "nhood.na1d (public)", median_us(lambda: nhood.na1d(q, q, q, 3, backend="naive"))))
    print(f"{'where':16} {'import':22} {'host us/call':>12}")
    for r in rows:
        print(f"{r[0]:16} {r[1]:22} {r[2]:12.1f}")


if __name__ == "__main__":
    main()
