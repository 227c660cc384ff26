"""python -m nhood.bench: nhood's GPU backends against their peers, in one process.

Named cases (DESIGN section 8 anchors, fp16 by default). For each case and
implementation: forward ms, forward+backward ms (CUDA events, warm-up,
median), effective TFLOP/s (4 * B * H * N * |window| * D for the forward,
3.5x that for forward+backward), and speedups vs cuDNN dense SDPA and vs
FlexAttention with a neighborhood block mask. Table on stdout, JSON with --json.

    python -m nhood.bench [--cases 2d,vision] [--quick] [--no-backward] [--json out.json] [--unfused]

--unfused adds the unfused path (qk -> softmax -> av per backend, nhood.bench_unfused).
"""
from __future__ import annotations

import argparse
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


def timeit(torch, fn, reps, warmup, graphs=True):
    """Median ms of fn. With graphs, fn is captured once in a CUDA graph and
    the replays are timed, so host-side launch overhead (Python, dispatch)
    is left out for every implementation alike; falls back to eager calls
    when capture fails. Returns (ms, captured)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    captured = False
    if graphs:
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            graph.replay()
            torch.cuda.synchronize()
            fn, captured = graph.replay, True
        except Exception:  # noqa: BLE001 - not capturable: time eager calls
            torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2], captured


def flex_peer(torch, record, results, spatial, kernel, stride, dil, qkv, qkv_grad, dot):
    """Times torch FlexAttention (compiled) with a neighborhood block mask built from the window rule."""
    dev = "cuda"
    rank = len(spatial)
    N = math.prod(spatial)
    qt, kt, vt = qkv
    qg, kg, vg = qkv_grad
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

        def fwd():
            return flex(qt, kt, vt, block_mask=bm)

        def fwdbwd():
            o = flex(qg, kg, vg, block_mask=bm)
            return torch.autograd.grad(o, (qg, kg, vg), dot)

        record("flex", fwd, fwdbwd)
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
    q, k, v, do = (torch.randn(B, *spatial, H, D, device=dev, dtype=dtype, generator=g) for _ in range(4))
    results = {}
    reps, warm = (5, 2) if args.quick else (20, 5)

    def record(impl, fwd, fwdbwd):
        if args.impls and not any(sel in impl for sel in args.impls.split(",")):
            return
        try:
            f, cap = timeit(torch, fwd, reps, warm, not args.eager)
        except Exception as e:  # noqa: BLE001 - a peer may not support the case
            results[impl] = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
            torch.cuda.empty_cache()
            return
        r = {"fwd_ms": f, "fwd_tflops": flops / f / 1e9, "cuda_graph": cap}
        if fwdbwd is not None and not args.no_backward:
            try:
                fb, _ = timeit(torch, fwdbwd, reps, warm, not args.eager)
                r.update(fwdbwd_ms=fb, fwdbwd_tflops=3.5 * flops / fb / 1e9)
            except Exception as e:  # noqa: BLE001
                r["bwd_error"] = f"{type(e).__name__}: {str(e)[:120]}"
        results[impl] = r
        torch.cuda.empty_cache()

    na = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}[rank]
    na_bwd = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}[rank]
    win = dict(kernel_size=kernel, stride=stride, dilation=dil)
    for backend in [b for b in nhood.backends("cuda") if b != "reference"]:
        if backend == "naive" and (args.quick or B * H * N * window * 4 > 2**32):
            continue  # materializes weights: too slow/large at anchor sizes

        def fwd(backend=backend):
            return na(q, k, v, **win, backend=backend)

        def fwdbwd(backend=backend):
            o, lse = na(q, k, v, **win, backend=backend, return_lse=True)
            return na_bwd(q, k, v, o, lse, do, **win, backend=backend)

        record(f"nhood-{backend}", fwd, fwdbwd)

    # Dense SDPA peers, [B, H, N, D].
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    qt, kt, vt, dot = (x.reshape(B, N, H, D).transpose(1, 2).contiguous() for x in (q, k, v, do))
    qg, kg, vg = (x.detach().clone().requires_grad_(True) for x in (qt, kt, vt))
    for label, be in (("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash", SDPBackend.FLASH_ATTENTION)):
        def fwd(be=be):
            with sdpa_kernel(be):
                return F.scaled_dot_product_attention(qt, kt, vt)

        def fwdbwd(be=be):
            with sdpa_kernel(be):
                o = F.scaled_dot_product_attention(qg, kg, vg)
            return torch.autograd.grad(o, (qg, kg, vg), dot)

        record(label, fwd, fwdbwd)

    # FlexAttention with a neighborhood block mask (compiling it takes a while: skipped unless selected).
    if not args.impls or "flex" in args.impls:
        flex_peer(torch, record, results, spatial, kernel, stride, dil, (qt, kt, vt), (qg, kg, vg), dot)
    for key in ("fwd_ms", "fwdbwd_ms"):
        for peer, tag in (("sdpa-cudnn", "cudnn"), ("flex", "flex")):
            base = results.get(peer, {}).get(key)
            for impl, r in results.items():
                if impl.startswith("_") or key not in r or not base:
                    continue
                r[f"{key.split('_')[0]}_speedup_vs_{tag}"] = base / r[key]
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
    hdr = f"{'case':<12} {'impl':<14} {'fwd ms':>9} {'TF/s':>6} {'xcuDNN':>7} {'xFlex':>6} {'f+b ms':>9} {'TF/s':>6} {'xFlex':>6}"
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
                  f"{f('fwdbwd_ms', '9.3f')} {f('fwdbwd_tflops', '6.0f')} {f('fwdbwd_speedup_vs_flex', '6.2f')}")
    if args.unfused:
        print("unfused path (qk -> softmax -> av), speedup vs the slowest backend:")
        bench_unfused.print_rows(out["unfused"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
