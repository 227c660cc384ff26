"""Clocks and power while one bench case runs back to back, phase by phase
(hopper forward, hopper backward, fused backward, cuDNN dense SDPA): the
H100's 700 W cap sets the SM clock of every one of them (docs/performance.md,
hopper session 25), so a kernel's speed follows its energy per call.

    python3 scripts/power_trace.py [CASE] [SECONDS_PER_PHASE]

Samples `nvidia-smi` every 100 ms; prints per phase the median ms per call and
the mean SM clock and power draw of the samples inside it, with the throttle
reasons seen (0x4: software power cap)."""
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import nhood
from nhood.bench import CASES

QUERY = "timestamp,clocks.sm,power.draw,clocks_event_reasons.active"


def main():
    case = sys.argv[1] if len(sys.argv) > 1 else "3d"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    B, spatial, H, D, kernel, stride, dil = CASES[case]
    rank = len(spatial)
    na = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}[rank]
    nb = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}[rank]
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, *spatial, H, D, device="cuda", dtype=torch.float16, generator=g) for _ in range(4))
    win = dict(kernel_size=kernel, stride=stride, dilation=dil)
    o, lse = na(q, k, v, return_lse=True, backend="hopper", **win)
    dense = q.reshape(B, -1, H, D).transpose(1, 2).contiguous()
    phases = {
        "hopper forward": lambda: na(q, k, v, backend="hopper", **win),
        "hopper backward": lambda: nb(q, k, v, o, lse, do, backend="hopper", **win),
        "fused backward": lambda: nb(q, k, v, o, lse, do, backend="fused", **win),
        "cudnn sdpa forward": lambda: F.scaled_dot_product_attention(dense, dense, dense),
    }
    smi = subprocess.Popen(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-lms", "100"],
                           stdout=subprocess.PIPE, text=True)
    spans = []
    for name, f in phases.items():
        f()
        torch.cuda.synchronize()
        time.sleep(1.0)  # let the power draw settle between phases
        t0 = time.time()
        times = []
        while time.time() - t0 < seconds:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            f()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        spans.append((name, t0, time.time(), statistics.median(times), len(times)))
    time.sleep(0.3)
    smi.terminate()
    samples = []
    for line in smi.communicate()[0].splitlines():
        stamp, clock, power, reasons = (x.strip() for x in line.split(","))
        t = time.mktime(time.strptime(stamp.split(".")[0], "%Y/%m/%d %H:%M:%S")) + float("0." + stamp.split(".")[1])
        samples.append((t, float(clock), float(power), reasons))
    print(f"case {case}, {torch.cuda.get_device_name()}")
    print(f"{'phase':<20} {'ms/call':>9} {'calls':>6} {'SM MHz':>7} {'W':>6}  throttle")
    for name, t0, t1, ms, n in spans:
        inside = [s for s in samples if t0 + 0.3 <= s[0] <= t1]  # skip the first samples: the sensor averages
        if not inside:
            print(f"{name:<20} {ms:9.3f} {n:6d}  (no samples)")
            continue
        clock = statistics.mean(s[1] for s in inside)
        power = statistics.mean(s[2] for s in inside)
        reasons = ",".join(sorted({s[3] for s in inside}))
        print(f"{name:<20} {ms:9.3f} {n:6d} {clock:7.0f} {power:6.0f}  {reasons}")


if __name__ == "__main__":
    main()
