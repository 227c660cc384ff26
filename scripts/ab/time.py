"""One variant, one round of scripts/ab/ab.sh: per-kernel times (torch.profiler, mean
over calls) of the hopper forward + backward, and CUDA-graph times of the
forward, the forward + backward and their difference, and of the backward alone. Prints one JSON line
per case: python3 scripts/ab/time.py VARIANT ROUND CASES"""
import json
import sys

import torch

import nhood
from nhood.bench import CASES, timeit

KEYS = (("forward_kernel", "fwd"), ("dq_from_accum", "conv"), ("stats_kernel", "stats"), ("inverse_window", "inv"),
        ("true, true>", "fused"), ("true, false>", "dkdv"), ("false, false>", "dq"), ("emset", "memset"))


def main():
    var, rnd, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    det = var.endswith("+det")  # the deterministic backward of the same build
    for case in cases:
        B, spatial, H, D, kernel, stride, dil = CASES[case]
        rank = len(spatial)
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(B, *spatial, H, D, device="cuda", dtype=torch.float16, generator=g) for _ in range(4))
        na = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}[rank]
        nb = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}[rank]
        win = dict(kernel_size=kernel, stride=stride, dilation=dil, backend="hopper")

        def fb():
            o, lse = na(q, k, v, return_lse=True, **win)
            return nb(q, k, v, o, lse, do, **win, deterministic=det)

        reps = 20 if case == "1d" else 3
        for _ in range(2):
            fb()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fb()
            torch.cuda.synchronize()
        row = {"var": var, "round": rnd, "case": case}
        other = 0.0
        for e in prof.key_averages():
            t = getattr(e, "self_device_time_total", 0) / 1000 / reps
            if t <= 0:
                continue
            for pat, key in KEYS:
                if pat in e.key:
                    row[key] = row.get(key, 0.0) + t
                    break
            else:
                other += t
        row["other"] = other
        row["ksum"] = sum(row.get(k, 0.0) for _, k in KEYS) + other
        row["fb_graph"], _ = timeit(torch, fb, reps, 2, True)
        row["fwd_graph"], _ = timeit(torch, lambda: na(q, k, v, **win), reps, 2, True)
        row["bwd_graph"] = row["fb_graph"] - row["fwd_graph"]
        o, lse = na(q, k, v, return_lse=True, **win)
        row["bwd_alone"], _ = timeit(torch, lambda: nb(q, k, v, o, lse, do, **win, deterministic=det), reps, 2, True)
        del o, lse
        print(json.dumps(row), flush=True)
        del q, k, v, do
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
