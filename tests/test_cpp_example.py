"""Builds examples/cpp against the CMake package that the installed nhood
ships (nhood.cmake_dir()) and runs it: the example checks nhood::forward and
nhood::backward on raw pointers against a brute-force computation."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import nhood

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "cpp")


def _cxx_compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def _run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
@pytest.mark.skipif(_cxx_compiler() is None, reason="no C++ compiler")
def test_cpp_example_builds_against_installed_package_and_passes(tmp_path):
    build = str(tmp_path / "build")
    configure = ["cmake", "-S", EXAMPLE, "-B", build, f"-Dnhood_DIR={nhood.cmake_dir()}",
                 "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    _run(configure)
    _run(["cmake", "--build", build])
    exe = os.path.join(build, "nhood_example")
    result = _run([exe])
    assert "MISMATCH" not in result.stdout
    print(result.stdout, file=sys.stderr)


def test_cmake_dir_holds_the_package():
    d = nhood.cmake_dir()
    for name in ("nhoodConfig.cmake", "nhoodConfigVersion.cmake", "nhoodTargets.cmake"):
        assert os.path.isfile(os.path.join(d, name)), name
    # Headers sit beside the library, at the place the exported target names.
    root = os.path.dirname(os.path.dirname(os.path.dirname(d)))
    assert os.path.isfile(os.path.join(root, "include", "nhood", "nhood.hpp"))
