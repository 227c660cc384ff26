"""The window facts the GPU tilings rely on, checked against the independent
dense reference mask (tests/dense_reference.py), on the CPU.

- The windows of consecutive positions of a dilation group are intervals whose
  union is one interval (the fused and hopper kernels walk it as a box).
- That union, for n consecutive positions, spans at most
  min(kernel + n - 1 + stride - 1, group length): cuda/fused/geometry.hpp
  (window_union_extent) sizes the small-window forward's shared-memory box and
  per-warp key lists by it before launch, and the kernel trusts it.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import dense_reference as ref


@st.composite
def axes(draw):
    dilation = draw(st.integers(1, 4))
    kernel = draw(st.integers(1, 12))
    length = draw(st.integers(kernel * dilation, kernel * dilation + 40))
    stride = draw(st.integers(1, kernel))
    causal = draw(st.booleans())
    return length, kernel, stride, dilation, causal


@settings(max_examples=300, deadline=None)
@given(axis=axes(), n=st.sampled_from([1, 2, 4, 8, 16, 64]), data=st.data())
def test_window_union_of_consecutive_positions_is_a_bounded_interval(axis, n, data):
    length, kernel, stride, dilation, causal = axis
    mask = ref.axis_mask(length, kernel, stride, dilation, causal)
    g = data.draw(st.integers(0, dilation - 1))
    lg = math.ceil((length - g) / dilation)
    first = data.draw(st.integers(0, lg - 1))
    positions = range(first, min(first + n, lg))
    union = np.zeros(lg, dtype=bool)
    for p in positions:
        window = mask[g + dilation * p, g::dilation][:lg]
        keys = np.flatnonzero(window)
        assert keys.size and keys[-1] - keys[0] + 1 == keys.size  # an interval
        union[keys] = True
    keys = np.flatnonzero(union)
    assert keys[-1] - keys[0] + 1 == keys.size
    assert keys.size <= min(kernel + n - 1 + stride - 1, lg)
