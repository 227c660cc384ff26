"""The extension modules use the process's shared C++ runtime, not a private
copy of libstdc++ (cmake/cxx_runtime.cmake says why).

A module that carried libstdc++.a exported that copy's STB_GNU_UNIQUE symbols
(locale facet ids such as std::num_put<char>::id); glibc binds those
process-wide to the libstdc++.so.6 that numpy/torch/jaxlib loaded first, so
with a different libstdc++ version in the process (the GPU image: its
/opt/gcc g++ 13 linked libstdc++.a, the process had libstdc++.so.6.0.33),
`ostringstream << integer` in libnhood's error messages read the wrong facet
and segfaulted the interpreter (tests/test_unfused.py::test_errors,
tests/test_jax.py trace-time errors). The first test fails on such a build
wherever it runs; the second crashes there.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

import nhood


def _modules():
    paths = [nhood._core.__file__]
    try:
        from nhood import _jax_ffi
        paths.append(_jax_ffi.__file__)
    except ImportError:
        pass
    return paths


# Symbols of the C++ runtime itself: a module that defines (exports) any of them
# carries its own libstdc++ (facet ids, the classic locale, the exception ABI).
_RUNTIME = re.compile(r"^(_ZNSt(7__cxx11)?\d+\w+?2idE|_ZGVNSt\w+2idE|_ZNSt6locale\w*|__cxa_\w+|__gxx_personality_v0)$")


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("readelf") is None,
                    reason="needs Linux and readelf")
def test_extension_exports_no_private_cxx_runtime():
    for path in _modules():
        out = subprocess.run(["readelf", "--dyn-syms", "-W", path], capture_output=True, text=True,
                             check=True).stdout
        defined = []
        for line in out.splitlines():
            f = line.split()
            # Num: Value Size Type Bind Vis Ndx Name
            if len(f) >= 8 and f[0].endswith(":") and f[6] != "UND":
                defined.append(f[7].split("@")[0])
        runtime = sorted(s for s in defined if _RUNTIME.match(s))
        assert not runtime, (f"{os.path.basename(path)} exports {len(runtime)} C++ runtime symbols "
                             f"(a private static libstdc++), e.g. {runtime[:5]}")


# Every kind of libnhood error message with integers in it (fail() formats them
# with std::ostringstream): make_problem before the GIL is released, a tensor
# check (shape_string) after it, and nhood.jax's trace-time validation. In a
# fresh interpreter that loads the frameworks' C++ libraries before nhood, as a
# test session does; a subprocess so that a crash fails this test only.
_ERRORS = r"""
import importlib, numpy as np
for name in ("torch", "jax"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
import nhood
q = np.zeros((1, 6, 6, 2, 4))
calls = [lambda: nhood.na2d(q, q, q, 9),
         lambda: nhood.na2d_qk(q, q, 3, rpb=np.zeros((2, 4, 5))),
         lambda: nhood.na2d_av(np.zeros((1, 6, 6, 2, 8)), q, 3)]
try:
    import jax.numpy as jnp, nhood.jax as nj
    calls.append(lambda: nj.na1d(*(jnp.ones((1, 6, 2, 8)),) * 3, kernel_size=3, dilation=3))
except ImportError:
    pass
for call in calls:
    try:
        call()
    except (ValueError, TypeError) as e:
        print("ERROR", e)
    else:
        print("NO ERROR")
"""


def test_error_messages_with_numbers_do_not_crash():
    run = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _ERRORS], capture_output=True, text=True,
                         timeout=300, cwd=tempfile.gettempdir())
    assert run.returncode == 0, f"exit code {run.returncode}: {run.stderr[-3000:]}"
    lines = run.stdout.splitlines()
    assert len(lines) >= 3 and all(line.startswith("ERROR ") for line in lines), run.stdout
    assert "kernel_size[0] * dilation[0] (9 * 1 = 9)" in lines[0], lines[0]
    assert "rpb must have shape (2, 5, 5), got (2, 4, 5)" in lines[1], lines[1]
    assert "9 columns" in lines[2], lines[2]
    if len(lines) > 3:
        assert "kernel_size[0] * dilation[0] (3 * 3 = 9)" in lines[3], lines[3]
