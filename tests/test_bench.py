"""The benchmark entry points run where they can without a GPU: the unfused
path's timing on the CPU (reference backend) and its table, and
python -m nhood.bench's refusal without CUDA. The GPU timings themselves are
taken by scripts/kernel-check.sh and scripts/gpu-check.sh."""
from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")


def test_unfused_bench_rows_on_cpu(capsys):
    from nhood import bench_unfused
    rows = bench_unfused.run(("small",), "float32", backward=True, reps=1, device="cpu")
    assert [r["backend"] for r in rows] == ["reference"]
    row = rows[0]
    assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0 and row["speedup"] == 1.0
    bench_unfused.print_rows(rows)
    assert "qk+softmax+av" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_bench_without_cuda_says_so():
    run = subprocess.run([sys.executable, "-m", "nhood.bench", "--cases", "vision", "--quick"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "no CUDA device" in run.stderr


class _FakeCuda:
    """Records what timeit queues on the stream: sleeps, events and calls."""

    def __init__(self, log):
        self.log = log
        outer = self

        class Event:
            def __init__(self, enable_timing):
                self.t = None

            def record(self):
                self.t = len(outer.log)
                outer.log.append("event")

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return float(end.t - self.t)

        class CUDAGraph:  # capture fails: timeit falls back to eager calls
            def __init__(self):
                raise RuntimeError("no capture here")

        self.Event, self.CUDAGraph = Event, CUDAGraph

    def synchronize(self):
        pass

    def _sleep(self, cycles):
        self.log.append("sleep")


def test_timeit_rotates_input_sets_behind_a_gpu_sleep():
    from types import SimpleNamespace

    from nhood.bench import timeit
    log = []
    fake = SimpleNamespace(cuda=_FakeCuda(log))
    calls = [lambda i=i: log.append(f"call{i}") for i in range(3)]
    ms, captured = timeit(fake, calls, reps=6, warmup=1, graphs=True)
    assert not captured
    timed = log[3:]  # after one warm-up call per set
    assert log[:3] == ["call0", "call1", "call2"]
    # every repetition: sleep, start event, one call (the sets in turn), end event
    assert timed == [x for i in range(6) for x in ("sleep", "event", f"call{i % 3}", "event")]
    assert ms == 2.0  # the end event two entries after the start event
