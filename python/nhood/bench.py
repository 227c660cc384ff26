"""python -m nhood.bench: nhood's GPU backends against their peers, in one process.

Named cases (DESIGN section 8 anchors, fp16 by default). For each case and
implementation: forward ms, forward+backward ms (CUDA events around graph
replays, each behind a GPU sleep; warm-up; median; input sets rotated where
one would fit in L2), effective TFLOP/s (4 * B * H * N * |window| * D for the forward,
3.5x that for forward+backward), and speedups vs cuDNN dense SDPA and vs
FlexAttention with a neighborhood block mask. nhood's backends also time their
backward call alone (given the output and logsumexp of their own forward;
2.5x the forward's FLOPs) against the `fused` backend's. Table on stdout, JSON
with --json.

    python -m nhood.bench [--cases 2d,vision] [--quick] [--no-backward] [--json out.json] [--unfused]

--unfused adds the unfused path (qk -> softmax -> av per backend, nhood.bench_unfused).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time

CASES = {
    # name: (batch, spatial, heads, dim, kernel, stride, dilation)
    "1d": (1, (32768,), 1, 128, (2048,), (1,), (1,)),
    "2d": (1, (256, 256), 24, 128, (80, 80), (1, 1), (1, 1)),
    "2d-stride16": (1, (256, 256), 24, 128, (80, 80), (16, 16), (1, 1)),
    "3d": (1, (30, 48, 80), 24, 128, (18, 24, 24), (1, 1, 1), (1, 1, 1)),
    "vision": (32, (56, 56), 2, 32, (7, 7), (1, 1), (1, 1)),
    "vision-dil4": (32, (56, 56), 2, 32, (7, 7), (1, 1), (4, 4)),
    "b4-128": (4, (128, 128), 8, 64, (13, 13), (1, 1), (1, 1)),
}


def axis_windows(length, kernel, stride, dilation):
    """Per query index: (first key index, count) on one axis (DESIGN section 1, non-causal)."""
    first, count = [], []
    for i in range(length):
        g, p = i % dilation, i // dilation
        lg = -(-(length - g) // dilation)
        left, right = kernel // 2, kernel - 1 - kernel // 2
        leader = min((p // stride) * stride + stride // 2, lg - 1)
        start = max(leader - left, 0)
        if leader + right >= lg:
            start += lg - right - leader - 1
        first.append(g + start * dilation)
        count.append(kernel)
    return first, count


# A GPU-side sleep queued before each repetition's start event (cycles: ~50 us).
SLEEP_CYCLES = 100_000


def timeit(torch, fns, reps, warmup, graphs=True):
    """Median ms of one call. fns: the call, or the same call on several input
    sets (input_sets), which the repetitions take in turn so that inputs the
    L2 cache could hold are not timed from it. With graphs, each is captured
    once in a CUDA graph and the replays are timed, so host-side launch
    overhead (Python, dispatch) is left out for every implementation alike;
    falls back to eager calls when capture fails. Each repetition first
    queues a short GPU sleep, so that the start event is recorded while the
    GPU is busy: recorded on an idle GPU, the event pair also timed the
    host's submission of the replay (3-4 us, 5% of the 1-D anchor's
    forward; docs/performance.md, hopper session 21). Returns (ms, captured)."""
    if callable(fns):
        fns = [fns]
    for _ in range(warmup):
        for fn in fns:
            fn()
    torch.cuda.synchronize()
    captured = False
    if graphs:
        try:
            replays = []
            for fn in fns:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    fn()
                graph.replay()
                replays.append(graph.replay)
            torch.cuda.synchronize()
            fns, captured = replays, True
        except Exception:  # noqa: BLE001 - not capturable: time eager calls
            torch.cuda.synchronize()
    sleep = getattr(torch.cuda, "_sleep", None)
    times = []
    for i in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        if sleep is not None:
            sleep(SLEEP_CYCLES)
        a.record()
        fns[i % len(fns)]()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2], captured


def release(torch):
    """Frees what earlier timings left: graphs and tensors that reference
    cycles keep alive (a caught exception's frames, graph capture) until the
    collector runs. Left alone, they held gigabytes across cases and the next
    case's short kernels read 20-30% slower in graph replays (the 1-D anchor
    after the 2-D stride-16 case: hopper 0.070 -> 0.084-0.090 ms, its kernel's
    own time unchanged; cuDNN's 0.83 ms unaffected)."""
    gc.collect()
    torch.cuda.empty_cache()


def input_sets(torch, set_bytes):
    """How many input sets the timings rotate through: together at least twice
    the L2 cache, so that each call reads its inputs from device memory
    (repeated calls on one buffer would time the cache: the 1-D anchor's q, k
    and v take 24 MB, an H100's L2 50 MB)."""
    l2 = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "L2_cache_size", 0) or 50 * 2**20
    return max(1, math.ceil(2 * l2 / set_bytes))


def flex_peer(torch, record, results, spatial, kernel, stride, dil, dense_sets):
    """Times torch FlexAttention (compiled) with a neighborhood block mask built from the window rule.
    dense_sets: per input set (q, k, v, do) as [B, H, N, D] and (q, k, v) leaves requiring grad."""
    dev = "cuda"
    rank = len(spatial)
    N = math.prod(spatial)
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        firsts, counts = [], []
        for a in range(rank):
            f, c = axis_windows(spatial[a], kernel[a], stride[a], dil[a])
            firsts.append(torch.tensor(f, device=dev))
            counts.append(torch.tensor(c, device=dev))
        strides_ = [math.prod(spatial[a + 1:]) for a in range(rank)]

        def mask_mod(b, h, q_idx, kv_idx):
            ok = None
            for a in range(rank):
                qa = (q_idx // strides_[a]) % spatial[a]
                ka = (kv_idx // strides_[a]) % spatial[a]
                off = ka - firsts[a][qa]
                m = (off >= 0) & (off < counts[a][qa] * dil[a]) & (off % dil[a] == 0)
                ok = m if ok is None else ok & m
            return ok

        t0 = time.time()
        bm = create_block_mask(mask_mod, None, None, N, N, device=dev, _compile=True)
        flex = torch.compile(flex_attention, dynamic=False)
        results["_flex_mask_s"] = time.time() - t0

        def fwd(dense, leaves):
            return lambda: flex(*dense[:3], block_mask=bm)

        def fwdbwd(dense, leaves):
            return lambda: torch.autograd.grad(flex(*leaves, block_mask=bm), leaves, dense[3])

        record("flex", [fwd(*d) for d in dense_sets], [fwdbwd(*d) for d in dense_sets])
    except Exception as e:  # noqa: BLE001
        results["flex"] = {"error": f"{type(e).__name__}: {str(e)[:160]}"}


def run_case(name, args, torch, nhood):
    B, spatial, H, D, kernel, stride, dil = CASES[name]
    rank = len(spatial)
    N = math.prod(spatial)
    window = math.prod(kernel)
    flops = 4 * B * H * N * window * D
    dtype = getattr(torch, args.dtype)
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    n_sets = input_sets(torch, 3 * B * N * H * D * torch.finfo(dtype).bits // 8)
    sets = [tuple(torch.randn(B, *spatial, H, D, device=dev, dtype=dtype, generator=g) for _ in range(4))
            for _ in range(n_sets)]  # (q, k, v, do) each
    results = {"_input_sets": n_sets}
    reps, warm = (5, 2) if args.quick else (20, 5)
    reps = max(reps, 2 * n_sets)  # each set at least twice

    def record(impl, fwds, fwdbwds, bwds=None):
        """Times one implementation; fwds / fwdbwds / bwds: its calls, one per input set."""
        if args.impls and not any(sel in impl for sel in args.impls.split(",")):
            return
        try:
            f, cap = timeit(torch, fwds, reps, warm, not args.eager)
        except Exception as e:  # noqa: BLE001 - a peer may not support the case
            results[impl] = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
            release(torch)
            return
        r = {"fwd_ms": f, "fwd_tflops": flops / f / 1e9, "cuda_graph": cap}
        if fwdbwds is not None and not args.no_backward:
            try:
                fb, _ = timeit(torch, fwdbwds, reps, warm, not args.eager)
                r.update(fwdbwd_ms=fb, fwdbwd_tflops=3.5 * flops / fb / 1e9)
                if bwds is not None:
                    b, _ = timeit(torch, bwds(), reps, warm, not args.eager)
                    r.update(bwd_ms=b, bwd_tflops=2.5 * flops / b / 1e9)
            except Exception as e:  # noqa: BLE001
                r["bwd_error"] = f"{type(e).__name__}: {str(e)[:120]}"
        results[impl] = r
        release(torch)

    na = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}[rank]
    na_bwd = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}[rank]
    win = dict(kernel_size=kernel, stride=stride, dilation=dil)
    for backend in [b for b in nhood.backends("cuda") if b != "reference"]:
        if backend == "naive" and (args.quick or B * H * N * window * 4 > 2**32):
            continue  # materializes weights: too slow/large at anchor sizes

        def fwd(q, k, v, do, backend=backend):
            return lambda: na(q, k, v, **win, backend=backend)

        def fwdbwd(q, k, v, do, backend=backend):
            def call():
                o, lse = na(q, k, v, **win, backend=backend, return_lse=True)
                return na_bwd(q, k, v, o, lse, do, **win, backend=backend)
            return call

        # The backward alone: the backward call on its own forward's output and
        # logsumexp (forward + backward minus forward is the peers' only
        # measure; it also carries the forward's difference between timed
        # alone and timed inside the sequence: docs/performance.md, hopper
        # session 24).
        def bwd(q, k, v, do, backend=backend):
            o, lse = na(q, k, v, **win, backend=backend, return_lse=True)
            return lambda: na_bwd(q, k, v, o, lse, do, **win, backend=backend)

        record(f"nhood-{backend}", [fwd(*x) for x in sets], [fwdbwd(*x) for x in sets],
               lambda: [bwd(*x) for x in sets])

    # Dense SDPA peers, [B, H, N, D]; per input set its tensors and leaves requiring grad.
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    dense_sets = []
    for x in sets:
        dense = tuple(t.reshape(B, N, H, D).transpose(1, 2).contiguous() for t in x)
        dense_sets.append((dense, tuple(t.detach().clone().requires_grad_(True) for t in dense[:3])))
    for label, be in (("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash", SDPBackend.FLASH_ATTENTION)):
        def fwd(dense, leaves, be=be):
            def call():
                with sdpa_kernel(be):
                    return F.scaled_dot_product_attention(*dense[:3])
            return call

        def fwdbwd(dense, leaves, be=be):
            def call():
                with sdpa_kernel(be):
                    o = F.scaled_dot_product_attention(*leaves)
                return torch.autograd.grad(o, leaves, dense[3])
            return call

        record(label, [fwd(*d) for d in dense_sets], [fwdbwd(*d) for d in dense_sets])

    # FlexAttention with a neighborhood block mask (compiling it takes a while: skipped unless selected).
    if not args.impls or "flex" in args.impls:
        flex_peer(torch, record, results, spatial, kernel, stride, dil, dense_sets)
    for key in ("fwd_ms", "fwdbwd_ms"):
        for peer, tag in (("sdpa-cudnn", "cudnn"), ("flex", "flex")):
            base = results.get(peer, {}).get(key)
            for impl, r in results.items():
                if impl.startswith("_") or key not in r or not base:
                    continue
                r[f"{key.split('_')[0]}_speedup_vs_{tag}"] = base / r[key]
    base = results.get("nhood-fused", {}).get("bwd_ms")
    for impl, r in results.items():
        if not impl.startswith("_") and "bwd_ms" in r and base:
            r["bwd_speedup_vs_fused"] = base / r["bwd_ms"]
    return {"case": name, "batch": B, "spatial": spatial, "heads": H, "dim": D, "kernel": kernel, "stride": stride,
            "dilation": dil, "dtype": args.dtype, "flops_fwd": flops, "results": results}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m nhood.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of: {', '.join(CASES)}")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, skip naive")
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--eager", action="store_true", help="time eager calls (includes host overhead), no CUDA graphs")
    ap.add_argument("--unfused", action="store_true", help="also time the unfused qk/softmax/av path per backend")
    ap.add_argument("--impls", default="", help="only implementations whose name contains one of these "
                    "(comma list, e.g. hopper,cudnn); ratios need their peers selected too")
    args = ap.parse_args(argv)
    import torch
    import nhood
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 1
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cases": []}
    for name in args.cases.split(","):
        release(torch)
        res = run_case(name, args, torch, nhood)
        out["cases"].append(res)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    if args.unfused:
        from nhood import bench_unfused
        out["unfused"] = bench_unfused.run(("b4-128", "vision"), args.dtype, not args.no_backward,
                                           5 if args.quick else 20)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    print(f"device: {out['device']}  torch {out['torch']}  dtype {args.dtype}")
    hdr = (f"{'case':<12} {'impl':<14} {'fwd ms':>9} {'TF/s':>6} {'xcuDNN':>7} {'xFlex':>6} {'f+b ms':>9} {'TF/s':>6} "
           f"{'xFlex':>6} {'bwd ms':>9} {'xfused':>6}")
    print(hdr)
    for c in out["cases"]:
        for impl, r in c["results"].items():
            if impl.startswith("_"):
                continue
            if "error" in r:
                print(f"{c['case']:<12} {impl:<14} error: {r['error'][:70]}")
                continue
            f = lambda k, fmt: format(r[k], fmt) if k in r else "-"
            print(f"{c['case']:<12} {impl:<14} {f('fwd_ms', '9.3f')} {f('fwd_tflops', '6.0f')} "
                  f"{f('fwd_speedup_vs_cudnn', '7.2f')} {f('fwd_speedup_vs_flex', '6.2f')} "
                  f"{f('fwdbwd_ms', '9.3f')} {f('fwdbwd_tflops', '6.0f')} {f('fwdbwd_speedup_vs_flex', '6.2f')} "
                  f"{f('bwd_ms', '9.3f')} {f('bwd_speedup_vs_fused', '6.2f')}")
    if args.unfused:
        print("unfused path (qk -> softmax -> av), speedup vs the slowest backend:")
        bench_unfused.print_rows(out["unfused"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
