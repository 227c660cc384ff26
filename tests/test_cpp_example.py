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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "cpp")


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


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
@pytest.mark.skipif(_cxx_compiler() is None, reason="no C++ compiler")
@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "CMakeLists.txt")), reason="no nhood source tree")
def test_cpp_example_builds_against_cmake_install(tmp_path):
    """The other way README's "Using nhood from C++" offers: build libnhood with
    CMake (CPU-only, to keep it short), `cmake --install` it into a prefix, and
    build and run the example with find_package(nhood) through CMAKE_PREFIX_PATH."""
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    lib_build, prefix, build = (str(tmp_path / d) for d in ("lib", "prefix", "example"))
    _run(["cmake", "-S", ROOT, "-B", lib_build, *generator, "-DNHOOD_ENABLE_CUDA=OFF", "-DNHOOD_BUILD_TESTS=OFF",
          "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", lib_build])
    _run(["cmake", "--install", lib_build, "--prefix", prefix])
    assert os.path.isfile(os.path.join(prefix, "include", "nhood", "nhood.hpp"))
    libdirs = [d for d in ("lib", "lib64") if os.path.isdir(os.path.join(prefix, d, "cmake", "nhood"))]
    assert libdirs, os.listdir(prefix)
    for name in ("nhoodConfig.cmake", "nhoodConfigVersion.cmake", "nhoodTargets.cmake"):
        assert os.path.isfile(os.path.join(prefix, libdirs[0], "cmake", "nhood", name)), name
    _run(["cmake", "-S", EXAMPLE, "-B", build, *generator, f"-DCMAKE_PREFIX_PATH={prefix}",
          "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", build])
    result = _run([os.path.join(build, "nhood_example")])
    assert "MISMATCH" not in result.stdout and "ok" in result.stdout, result.stdout
