"""CMake configuration of the CUDA architectures: the hopper backend is built
for a 90a entry in any of CMake's spellings (90a, 90a-real, 90a-virtual) and
only for those (plain 90 has no wgmma/TMA instructions). Configures a scratch
build tree (no compilation); skips without cmake or a CUDA compiler.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("nvcc") is None,
                                reason="needs cmake and nvcc")


def _hopper_status(archs, tmp_path):
    args = ["cmake", "-S", ROOT, "-B", str(tmp_path), f"-DNHOOD_CUDA_ARCHITECTURES={archs}",
            "-DNHOOD_BUILD_TESTS=OFF"]
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "NHOOD_CUDA_ARCHS": ""})
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [l for l in out.stdout.splitlines() if "hopper backend" in l]
    assert len(lines) == 1, out.stdout
    return lines[0]


@pytest.mark.parametrize("archs,expected", [("80;90a-real", "ON (90a-real)"), ("80;90", "OFF")])
def test_hopper_enabled_by_any_90a_spelling(archs, expected, tmp_path):
    assert expected in _hopper_status(archs, tmp_path)
