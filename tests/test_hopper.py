"""The `hopper` CUDA backend (sm_90a: TMA, wgmma, warp specialization)
against the dense float64 reference (tests/dense_reference.py), float16 and
bfloat16: ranks 1-3, odd/even kernels, stride, dilation, per-axis causal,
additional KV tokens (more than one KV tile of them), GQA, packed-qkv views,
more work items than SMs (persistent loop), LSE, and the backward (its own
sm_90a kernels; the fused kernels for additional KV tokens). Problems hopper
does not take fall back with a reason. Skips without an sm_90 GPU or a build
without 90a.
"""
from __future__ import annotations

import numpy as np
import pytest

import nhood
import dense_reference as ref

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    not (nhood.cuda_available() and "hopper" in nhood.backends("cuda") and torch.cuda.is_available()
         and torch.cuda.get_device_capability() == (9, 0)),
    reason="no sm_90 GPU, or nhood built without the hopper backend (90a)")

NA = {1: nhood.na1d, 2: nhood.na2d, 3: nhood.na3d}
NA_BWD = {1: nhood.na1d_backward, 2: nhood.na2d_backward, 3: nhood.na3d_backward}
TOL = 1e-2

# (spatial, kernel, stride, dilation, causal, heads, heads_kv, dim, n_add)
CASES = {
    "1d": ((300,), (7,), (1,), (1,), (False,), 2, 2, 64, 0),
    "1d-long-kernel": ((700,), (257,), (1,), (1,), (False,), 1, 1, 128, 0),
    "1d-stride-dil-causal": ((400,), (33,), (5,), (2,), (True,), 2, 1, 128, 0),
    "2d": ((33, 47), (9, 13), (1, 1), (1, 1), (False, False), 2, 2, 128, 0),
    "2d-even-stride": ((40, 36), (8, 6), (4, 3), (1, 1), (False, False), 2, 1, 64, 0),
    "2d-dilation": ((37, 41), (5, 7), (1, 1), (3, 2), (False, False), 1, 1, 64, 0),
    "2d-causal-mixed": ((30, 35), (7, 8), (1, 2), (1, 2), (True, False), 4, 2, 128, 5),
    "2d-add-gqa": ((20, 20), (5, 5), (1, 1), (1, 1), (False, False), 4, 1, 64, 200),
    "3d": ((10, 12, 14), (3, 5, 7), (1, 1, 1), (1, 1, 1), (False, False, False), 2, 2, 128, 0),
    "3d-all": ((9, 10, 16), (3, 4, 5), (2, 1, 3), (2, 2, 1), (True, False, True), 2, 1, 64, 4),
}


def rel_err(x, r):
    x = np.asarray(x, np.float64)
    return float(np.abs(x - r).max() / max(np.abs(r).max(), 1e-30))


def dev(a, dtype):
    return None if a is None else torch.from_numpy(a).to(getattr(torch, dtype)).cuda()


def host(x):
    return x.float().cpu().numpy().astype(np.float64)


def padded_like(x):
    """A NaN-filled view shaped like x whose rows are padded by two elements
    (token strides not a multiple of 16 bytes: no tensor map, no 16-byte stores)."""
    return torch.full((*x.shape[:-1], x.shape[-1] + 2), float("nan"), dtype=x.dtype, device="cuda")[..., :x.shape[-1]]


def problem(case, seed, batch=2):
    spatial, kernel, stride, dil, causal, h, hkv, d, n_add = CASES[case]
    rng = np.random.default_rng(seed)
    arr = lambda *s: rng.standard_normal(s)
    arrays = dict(q=arr(batch, *spatial, h, d), k=arr(batch, *spatial, hkv, d), v=arr(batch, *spatial, hkv, d),
                  ak=arr(batch, n_add, hkv, d) if n_add else None, av=arr(batch, n_add, hkv, d) if n_add else None,
                  do=arr(batch, *spatial, h, d))
    win = dict(kernel_size=kernel, stride=stride, dilation=dil, is_causal=causal)
    return arrays, win


# The backward's paths: the single pass that sums dQ by float32 TMA
# reductions (forced: these problems are below its size heuristic), the two
# passes the heuristic picks otherwise, and deterministic (always two passes);
# the first two with work items claimed at run time (forced too: these grids
# have too few items per SM), deterministic in the static order.
BACKWARD_MODES = {"single": ("1", False, "1"), "two": ("0", False, "1"), "deterministic": ("1", True, "0")}


def backward_mode(mode, monkeypatch):
    single, deterministic, claim = BACKWARD_MODES[mode]
    monkeypatch.setenv("NHOOD_HOPPER_SINGLE_PASS", single)
    monkeypatch.setenv("NHOOD_HOPPER_CLAIM_ITEMS", claim)
    return deterministic


@pytest.mark.parametrize("mode", sorted(BACKWARD_MODES))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hopper_matches_reference(case, dtype, mode, monkeypatch):
    deterministic = backward_mode(mode, monkeypatch)
    arrays, win = problem(case, seed=sum(map(ord, case)))
    rank = len(win["kernel_size"])
    q, k, v, ak, av, do = (dev(arrays[n], dtype) for n in ("q", "k", "v", "ak", "av", "do"))
    rq, rk, rv, rak, rav, rdo = (None if x is None else host(x) for x in (q, k, v, ak, av, do))
    out = torch.full_like(q, float("nan"))  # every element must be written
    out, lse = NA[rank](q, k, v, **win, additional_keys=ak, additional_values=av, return_lse=True, backend="hopper",
                        out=out)
    ref_out, ref_lse = ref.forward(rq, rk, rv, **win, additional_keys=rak, additional_values=rav)
    assert rel_err(host(out), ref_out) <= TOL
    assert rel_err(host(lse), ref_lse) <= TOL
    grads = NA_BWD[rank](q, k, v, out, lse, do, **win, additional_keys=ak, additional_values=av, backend="hopper",
                         deterministic=deterministic)
    refs = ref.backward(rq, rk, rv, rdo, **win, additional_keys=rak, additional_values=rav)
    for name, g, r in zip(("dq", "dk", "dv", "d_add_k", "d_add_v"), grads, refs):
        assert rel_err(host(g), r) <= 2 * TOL, name


@pytest.mark.parametrize("dim", [64, 128])
def test_hopper_many_tiles_matches_fused(dim):
    """More (tile, head, batch) items than SMs: the persistent loop, its
    barrier phases across tiles, and the KV ring wrapping many times."""
    g = torch.Generator(device="cuda").manual_seed(dim)
    q, k, v = (torch.randn(2, 64, 96, 8, dim, device="cuda", generator=g).half() for _ in range(3))
    for kernel, causal in (((13, 17), False), ((31, 9), (True, False))):
        out = nhood.na2d(q, k, v, kernel_size=kernel, is_causal=causal, backend="hopper")
        want = nhood.na2d(q, k, v, kernel_size=kernel, is_causal=causal, backend="fused")
        err = ((out.float() - want.float()).abs().max() / want.float().abs().max()).item()
        assert err <= 5e-3


@pytest.mark.parametrize("mode", sorted(BACKWARD_MODES))
@pytest.mark.parametrize("dim", [64, 128])
def test_hopper_backward_many_tiles_matches_fused(dim, mode, monkeypatch):
    """The sm_90a backward kernels (the single pass with dQ reductions, or the
    deterministic dQ and dK/dV passes) on more work items than SMs, GQA (the
    dK/dV pass walks every query head of a kv head), causal and strided
    windows, against the fused backward; with `deterministic`, repeated calls
    are bit-identical (no atomics)."""
    deterministic = backward_mode(mode, monkeypatch)
    g = torch.Generator(device="cuda").manual_seed(100 + dim)
    q, do = (torch.randn(2, 64, 80, 8, dim, device="cuda", generator=g).half() for _ in range(2))
    k, v = (torch.randn(2, 64, 80, 2, dim, device="cuda", generator=g).half() for _ in range(2))
    for win in (dict(kernel_size=(13, 17)), dict(kernel_size=(31, 9), is_causal=(True, False)),
                dict(kernel_size=(9, 12), stride=(3, 4), dilation=(1, 2))):
        out, lse = nhood.na2d(q, k, v, **win, return_lse=True, backend="hopper")
        got = nhood.na2d_backward(q, k, v, out, lse, do, **win, backend="hopper", deterministic=deterministic)
        want = nhood.na2d_backward(q, k, v, out, lse, do, **win, backend="fused")
        for name, x, w in zip(("dq", "dk", "dv"), got, want):
            err = ((x.float() - w.float()).abs().max() / w.float().abs().max()).item()
            assert err <= 1e-2, (name, win, err)
        # A different accumulation order than fused: the hopper kernels ran, not the fallback.
        assert not all(torch.equal(x, w) for x, w in zip(got, want)), win
        if deterministic:
            again = nhood.na2d_backward(q, k, v, out, lse, do, **win, backend="hopper", deterministic=True)
            assert all(torch.equal(x, y) for x, y in zip(got, again)), win
        if mode == "single":  # the knob took effect: dQ summed in another order than the two passes'
            monkeypatch.setenv("NHOOD_HOPPER_SINGLE_PASS", "0")
            two = nhood.na2d_backward(q, k, v, out, lse, do, **win, backend="hopper")
            monkeypatch.setenv("NHOOD_HOPPER_SINGLE_PASS", "1")
            assert not torch.equal(got[0], two[0]), win


@pytest.mark.parametrize("case", ["1d-stride-dil-causal", "2d-dilation", "3d-all"])
def test_hopper_output_layouts_agree(case):
    """The forward writes O through TMA stores where a tensor map can
    describe `out` (every reference case above), else as element pairs: an
    `out` view with padded rows (token strides not a multiple of 16 bytes) takes the
    second path, and both write the same bits, every element."""
    arrays, win = problem(case, seed=7)
    rank = len(win["kernel_size"])
    q, k, v, ak, av = (dev(arrays[n], "float16") for n in ("q", "k", "v", "ak", "av"))
    packed = torch.full_like(q, float("nan"))
    padded = padded_like(q)
    for out in (packed, padded):
        NA[rank](q, k, v, **win, additional_keys=ak, additional_values=av, backend="hopper", out=out)
    assert not torch.isnan(padded).any()
    assert torch.equal(packed, padded)
    ref_out, _ = ref.forward(host(q), host(k), host(v), **win, additional_keys=None if ak is None else host(ak),
                             additional_values=None if av is None else host(av))
    assert rel_err(host(packed), ref_out) <= TOL


@pytest.mark.parametrize("mode", ["single", "two-pass"])
def test_hopper_backward_grad_layouts_agree(mode, monkeypatch):
    """The backward writes dK, dV (and the two passes' dQ) as element pairs,
    the single pass's dQ conversion 8 elements at a time where rows allow
    16-byte stores, else as pairs: grads into views with padded rows (strides
    not a multiple of 8 elements) take the pair paths, and agree with packed
    grads (bit for bit, but for the single pass's dQ, summed by reductions
    whose order varies) and with the reference. The public API always
    allocates packed grads, so the native call is made directly."""
    from nhood import _args, _arrays, _core
    from nhood.functional import _window
    monkeypatch.setenv("NHOOD_HOPPER_SINGLE_PASS", "1" if mode == "single" else "0")
    arrays, win = problem("2d", seed=11)
    q, k, v, do = (dev(arrays[n], "float16") for n in ("q", "k", "v", "do"))
    out, lse = nhood.na2d(q, k, v, **win, return_lse=True, backend="hopper")
    packed = nhood.na2d_backward(q, k, v, out, lse, do, **win, backend="hopper")
    padded = [padded_like(x) for x in (q, k, v)]
    lib = _arrays.adapter(q)
    kernel, strides, dilations, causal = _window(2, win["kernel_size"], win["stride"], win["dilation"], win["is_causal"])
    _core.backward(q, k, v, out, lse, do, *padded, None, None, None, None, 2, kernel, strides, dilations, causal,
                   _args.scale_arg(None), _args.backend_arg("hopper"), lib.stream(q), False)
    torch.cuda.synchronize()
    assert not any(torch.isnan(x).any() for x in padded)
    want = nhood.na2d_backward(q, k, v, out, lse, do, **win, backend="fused")
    assert not torch.equal(padded[1], want[1])  # the hopper kernels ran, not the fused fallback
    assert torch.equal(padded[1], packed[1]) and torch.equal(padded[2], packed[2])
    if mode == "single":
        assert rel_err(host(padded[0]), host(packed[0])) <= 1e-3
    else:
        assert torch.equal(padded[0], packed[0])
    refs = ref.backward(host(q), host(k), host(v), host(do), **win)
    for name, g_, r in zip(("dq", "dk", "dv"), padded, refs):
        assert rel_err(host(g_), r) <= 2 * TOL, name


def test_hopper_packed_qkv_views():
    rng = np.random.default_rng(1)
    qkv = torch.from_numpy(rng.standard_normal((2, 18, 21, 3, 2, 64))).half().cuda()
    q, k, v = qkv.unbind(3)
    out, lse = nhood.na2d(q, k, v, kernel_size=(5, 7), return_lse=True, backend="hopper")
    ref_out, _ = ref.forward(host(q), host(k), host(v), kernel_size=(5, 7))
    assert rel_err(host(out), ref_out) <= TOL
    do = torch.from_numpy(rng.standard_normal(q.shape)).half().cuda()
    grads = nhood.na2d_backward(q, k, v, out, lse, do, kernel_size=(5, 7), backend="hopper")
    refs = ref.backward(host(q), host(k), host(v), host(do), kernel_size=(5, 7))
    for name, g_, r in zip(("dq", "dk", "dv"), grads, refs):
        assert rel_err(host(g_), r) <= 2 * TOL, name


def test_hopper_refusals_are_clear_and_auto_falls_back():
    q = torch.randn(1, 40, 2, 32, device="cuda").half()
    with pytest.raises(ValueError, match="head_dim == head_dim_v in {64, 128}"):
        nhood.na1d(q, q, q, kernel_size=5, backend="hopper")
    q = torch.randn(1, 40, 2, 64, device="cuda").half()
    with pytest.raises(ValueError, match="dilation up to 8"):
        nhood.na1d(q, q, q, kernel_size=3, dilation=9, backend="hopper")
    t = torch.randn(1, 40, 64, 2, device="cuda").half().transpose(-1, -2)  # head dim not unit-stride
    with pytest.raises(ValueError, match="unit-stride head dimensions"):
        nhood.na1d(t, t, t, kernel_size=5, backend="hopper")
    out = nhood.na1d(t, t, t, kernel_size=5)  # automatic dispatch takes fused
    ref_out, _ = ref.forward(host(t), host(t), host(t), kernel_size=5)
    assert rel_err(host(out), ref_out) <= TOL
