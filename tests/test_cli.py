"""`python -m nhood`: runs small problems end to end in a subprocess and
prints a table with a row per CPU backend and an error column that is small."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import nhood


def _run(*flags):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the CPU path, on any machine
    return subprocess.run([sys.executable, "-m", "nhood", *flags, "--warmup", "0", "--iters", "1"],
                          capture_output=True, text=True, env=env, timeout=300)


def _table(stdout):
    """{backend: {column: cell}} from the printed table (header, dashes, rows)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("backend"))
    header = [c.strip() for c in lines[start].split("  ") if c.strip()]
    assert set(lines[start + 1].replace(" ", "")) == {"-"}
    rows = {}
    for line in lines[start + 2:]:
        if line.startswith("skipped "):
            continue
        cells = line.split()
        assert len(cells) == len(header), (header, line)
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


CASES = [
    (["-i", "12", "10", "-w", "3", "-n", "2", "--dim", "8", "--backprop"], "float32", 1e-5),
    (["-i", "16", "-w", "5", "-s", "2", "-d", "2", "-c", "--dim", "4", "--dtype", "float64"], "float64", 1e-10),
    (["-i", "4", "5", "6", "-w", "2", "3", "3", "-c", "1", "0", "1", "-n", "4", "--heads-kv", "2", "--dim", "8",
      "--dim-v", "4", "--additional-tokens", "3", "--backprop", "--dtype", "float16"], "float16", 1e-2),
    (["-i", "20", "-w", "4", "--dim", "16", "--backprop", "--dtype", "bfloat16"], "bfloat16", 1e-2),
]


@pytest.mark.parametrize("flags, dtype, tol", CASES, ids=["2d-backprop", "1d-causal-f64", "3d-gqa-add-f16", "1d-bf16"])
def test_cli_prints_table_with_small_errors(flags, dtype, tol):
    if dtype == "bfloat16":
        pytest.importorskip("torch")
    result = _run(*flags)
    assert result.returncode == 0, result.stderr
    header, rows = _table(result.stdout)
    assert "reference" in rows
    error_column = next(c for c in header if "error" in c)
    # every CPU backend has a row, or a line saying why it cannot run this problem
    skipped = {line.split()[1].rstrip(":") for line in result.stdout.splitlines() if line.startswith("skipped ")}
    assert set(nhood.backends("cpu")) == set(rows) | skipped and not set(rows) & skipped
    for line in result.stdout.splitlines():
        if line.startswith("skipped "):
            assert "does not support" in line
    for name, row in rows.items():
        assert row["device"] == "cpu" and row["dtype"] == dtype
        assert float(row["fwd ms"]) > 0
        error = float(row[error_column])
        assert 0 <= error <= tol, (name, error)
        if "--backprop" in flags:
            assert float(row["bwd ms"]) > 0


def test_cli_rejects_bad_window():
    result = _run("-i", "12", "-w", "20")
    assert result.returncode != 0
    assert "kernel_size[0] * dilation[0]" in result.stderr


def test_cli_rejects_wrong_number_of_axis_values():
    result = _run("-i", "8", "8", "-w", "3", "3", "3")
    assert result.returncode != 0
    assert "-w/--window" in result.stderr


def test_cli_batch_and_backend_flags():
    """-b sets the batch (it changes the FLOP count, so TFLOP/s = flops / time);
    --backend runs only the one named (or the automatic choice)."""
    result = _run("-b", "3", "-i", "10", "-w", "3", "-n", "1", "--dim", "4", "--backend", "reference")
    assert result.returncode == 0, result.stderr
    assert "batch=3" in result.stdout
    _, rows = _table(result.stdout)
    assert list(rows) == ["reference"] and float(rows["reference"]["max rel error"]) <= 1e-5
    result = _run("-i", "10", "-w", "3", "--dim", "4", "--backend", "auto", "--dtype", "float64")
    assert result.returncode == 0, result.stderr
    _, rows = _table(result.stdout)
    assert list(rows) == ["auto"] and float(rows["auto"]["max rel error"]) <= 1e-10


def test_cli_rejects_unknown_backend():
    result = _run("-i", "10", "-w", "3", "--backend", "nope")
    assert result.returncode != 0
    assert "backend" in result.stderr and "'nope'" in result.stderr
