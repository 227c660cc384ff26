"""Where the installed wheel keeps nhood's C++ package (headers, libnhood,
nhoodConfig.cmake), for C++ projects that build against it."""
from __future__ import annotations

import os


def cmake_dir() -> str:
    """The directory holding nhoodConfig.cmake: pass it as -Dnhood_DIR=... to
    CMake, then find_package(nhood) and link nhood::nhood.

    CMake installs the package next to the native module (site-packages/nhood/
    lib/cmake/nhood), in regular and editable installs alike."""
    from . import _core

    path = os.path.join(os.path.dirname(os.path.abspath(_core.__file__)), "lib", "cmake", "nhood")
    if not os.path.isfile(os.path.join(path, "nhoodConfig.cmake")):
        raise FileNotFoundError(f"nhood's CMake package is not installed at {path}; reinstall nhood (pip install .)")
    return path
