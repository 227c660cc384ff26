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
