"""Normalization of window arguments (int or per-axis tuple) for the core."""
from __future__ import annotations

import operator

_INT32_MAX = 2**31 - 1


def per_axis_ints(value, rank: int, name: str) -> tuple[int, int, int]:
    """An int or a sequence of `rank` ints -> a 3-tuple padded with 1s."""
    # Fast path for the common plain int (exactly int: bool is rejected below).
    if type(value) is int and -_INT32_MAX <= value <= _INT32_MAX:
        return (value,) * rank + (1,) * (3 - rank)
    values = _per_axis(value, rank, name)
    ints = []
    for v in values:
        try:
            if isinstance(v, bool):
                raise TypeError
            i = operator.index(v)  # ints and NumPy integer scalars; not floats, not arrays of several values
        except TypeError:
            raise TypeError(f"{name} must be an int or a tuple of {rank} ints, got {value!r}") from None
        if not -_INT32_MAX <= i <= _INT32_MAX:
            raise ValueError(f"{name} must be a 32-bit integer per axis, got {value!r}")
        ints.append(i)
    return tuple(ints) + (1,) * (3 - rank)


def per_axis_bools(value, rank: int, name: str) -> tuple[bool, bool, bool]:
    if type(value) is bool:  # fast path, as in per_axis_ints
        return (value,) * rank + (False,) * (3 - rank)
    values = _per_axis(value, rank, name)
    for v in values:
        if not isinstance(v, bool) and type(v).__name__ not in ("bool_", "bool"):  # NumPy 1.x bool_, 2.x bool
            raise TypeError(f"{name} must be a bool or a tuple of {rank} bools, got {value!r}")
    return tuple(bool(v) for v in values) + (False,) * (3 - rank)


def _per_axis(value, rank: int, name: str):
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            raise ValueError(f"{name} must have {rank} entries (one per spatial axis), got {value!r}")
        return tuple(value)
    return (value,) * rank


def scale_arg(scale):
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) and not hasattr(scale, "__float__"):
        raise TypeError(f"scale must be a float or None, got {scale!r}")
    return float(scale)


def backend_arg(backend) -> str:
    if backend is None:
        return "auto"
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string or None, got {backend!r}")
    return backend
