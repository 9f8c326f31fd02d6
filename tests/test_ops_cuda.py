"""The CUDA side of the ops: build, lazy loading and fallback, kernels and their autograd glue.

- ``test_build_*``: compile the extension with nvcc against the installed torch (no GPU needed) and import it;
  skipped when nvcc is absent. One arch (8.0) unless a GPU or an arch list is given; the build cache
  (``~/.cache/domain_adapt/torch_extensions`` or ``$DOMAIN_ADAPT_EXT_DIR``) makes a second run take seconds.
- ``test_emu_*``: the kernels' own source compiled as plain C++ (``-DDA_HOST_EMULATION``: serial CPU emulation
  of the same generic / tiled bodies) against the ``ref`` implementations, and the autograd glue of
  ``ops._cuda`` driven through that emulation (gradcheck / gradgradcheck). Needs only g++.
- ``test_gpu_*``: the real kernels against ``ref`` on a GPU (forward, gradcheck, gradgradcheck); skipped
  without one.
- the rest: importing ``ops`` never builds; a failed build warns once and is never retried; stale locks.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ctypes  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.utils.cpp_extension  # noqa: E402,F401  (imported with the real environment, before tests patch it)

import ops  # noqa: E402
from ops import _cuda, _plugin  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_NVCC = bool(shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc"))
HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")

# (x shape, filter shape, up (x, y), down (x, y), pad (x0, x1, y0, y1))
UPFIRDN_CASES = [
    ((2, 3, 8, 9), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1)),  # StyleGAN2 upsample (tiled up2)
    ((2, 3, 10, 11), (4, 4), (1, 1), (2, 2), (1, 1, 1, 1)),  # downsample (tiled down2)
    ((1, 4, 9, 8), (4, 4), (1, 1), (1, 1), (1, 2, 2, 1)),  # blur after the transposed conv (tiled 1/1)
    ((1, 2, 7, 6), (4, 4), (1, 1), (1, 1), (2, 2, 2, 2)),  # blur before a stride-2 conv in D
    ((1, 2, 5, 6), (4, 4), (2, 2), (1, 1), (-1, -2, 0, 3)),  # tiled, with crops
    ((1, 2, 6, 7), (3, 5), (3, 2), (2, 3), (0, 3, -1, 2)),  # generic: anisotropic, odd sizes, a crop
    ((2, 1, 5, 5), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((1, 2, 9, 4), (4, 2), (2, 1), (1, 3), (-2, 1, 3, -1)),
    ((1, 1, 4, 6), (6, 6), (4, 4), (1, 1), (3, 2, 3, 2)),  # large up factor
    ((1, 2, 9, 9), (2, 2), (2, 2), (2, 2), (1, 0, 0, 1)),
]
# Larger cases whose outputs span several (partial) tiles and more planes than a block's grid z.
TILED_CASES = [
    ((1, 5, 37, 70), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1)),
    ((1, 5, 70, 131), (4, 4), (1, 1), (2, 2), (1, 1, 1, 1)),
    ((1, 5, 33, 67), (4, 4), (1, 1), (1, 1), (1, 2, 2, 1)),
    ((2, 2, 21, 45), (4, 4), (2, 2), (1, 1), (-3, 4, 5, -2)),
    ((2, 2, 40, 50), (4, 4), (1, 1), (2, 2), (3, -1, -2, 6)),
]
BIAS_ACT_CASES = [
    # (x shape, act, alpha, gain, clamp, with bias)
    ((2, 3, 4, 5), "lrelu", 0.2, math.sqrt(2), None, True),
    ((2, 3, 4, 5), "lrelu", 0.2, math.sqrt(2), 0.8, True),
    ((3, 4), "relu", 0.0, math.sqrt(2), None, True),
    ((2, 3, 5), "relu", 0.0, 1.5, 0.7, False),
    ((2, 3, 4, 5), "linear", 0.0, 1.0, None, True),
    ((2, 3, 4, 5), "linear", 0.0, 0.5, 0.3, True),
    ((1, 2, 3, 2, 2), "lrelu", 0.3, 0.9, None, True),
]


def _case_id(c):
    return "x{}-k{}-up{}-down{}-pad{}".format(*["x".join(map(str, v)) for v in c])


def _has_tiled(case) -> bool:
    """Whether the kernel has a tiled body for a case: a 4x4 filter with up 2, down 2 or neither (the dispatch of
    ops/csrc/upfirdn2d.cu; test_emu_tiled_dispatch checks this against the compiled code)."""
    _, fshape, up, down, _ = case
    return tuple(fshape) == (4, 4) and (tuple(up), tuple(down)) in {((2, 2), (1, 1)), ((1, 1), (2, 2)),
                                                                    ((1, 1), (1, 1))}


# every case with the generic body, the tiled ones with the tiled body too (no parametrization that cannot run)
EMU_UPFIRDN = [pytest.param(c, impl, id=f"{name}-{_case_id(c)}") for name, impl in (("generic", 1), ("tiled", 2))
               for c in UPFIRDN_CASES + TILED_CASES if impl == 1 or _has_tiled(c)]


def _rand(shape, dtype=torch.float64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


def _ref_upfirdn2d(x, f, up, down, pad):
    return ops.upfirdn2d(x, f, up, down, pad, impl="ref")


def _bias_act_inputs(shape, act, alpha, gain, clamp, with_bias, dtype=torch.float64, device="cpu", seed=0):
    """x, b with x + b away from 0 and |y| away from the clamp, so finite differences see no kink."""
    v = _rand(shape, seed=seed)
    v = torch.sign(v) * (0.15 + v.abs())
    if clamp is not None:
        for _ in range(4):
            y = gain * (torch.where(v > 0, v, v * (0.0 if act == "relu" else alpha)) if act != "linear" else v)
            near = (y.abs() - clamp).abs() < 0.05
            v = torch.where(near, v * 0.6, v)
    b = _rand((shape[1],), seed=seed + 1) if with_bias else None
    x = v - (b.reshape([1, -1] + [1] * (len(shape) - 2)) if b is not None else 0)
    x = x.to(dtype=dtype, device=device)
    b = b.to(dtype=dtype, device=device) if b is not None else None
    return x, b


# ==========================================================================================================
# CPU emulation of the kernels (the .cu sources compiled as C++ with -DDA_HOST_EMULATION)

_DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2}


class EmulatedPlugin:
    """Stands in for the compiled module (same functions and signatures), running the kernels' emulation."""

    def __init__(self, lib):
        self.lib = lib
        lib.da_emu_upfirdn2d.restype = ctypes.c_int
        lib.da_emu_upfirdn2d.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                         ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.da_emu_upfirdn2d_has_tiled.restype = ctypes.c_int
        lib.da_emu_upfirdn2d_has_tiled.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.da_emu_bias_act.restype = ctypes.c_int
        lib.da_emu_bias_act.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                                                ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                                ctypes.c_double, ctypes.c_double, ctypes.c_double]
        self.calls = 0

    @staticmethod
    def _iparams(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip):
        n, c, h, w = x.shape
        kh, kw = f.shape
        oh = (h * up_y + pad_y0 + pad_y1 - kh + down_y) // down_y
        ow = (w * up_x + pad_x0 + pad_x1 - kw + down_x) // down_x
        assert oh >= 1 and ow >= 1
        vals = [n * c, h, w, oh, ow, kh, kw, up_x, up_y, down_x, down_y, pad_x0, pad_y0, int(flip)]
        return (ctypes.c_int * 14)(*vals), (n, c, oh, ow)

    def upfirdn2d(self, x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter=False,
                  impl=0):
        self.calls += 1
        ip, shape = self._iparams(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter)
        xc = x.detach().contiguous()
        fc = f.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32).contiguous()
        y = torch.empty(shape, dtype=x.dtype)
        rc = self.lib.da_emu_upfirdn2d(xc.data_ptr(), fc.data_ptr(), y.data_ptr(), _DTYPE_CODE[x.dtype], impl, ip)
        if rc != 0:
            raise RuntimeError(f"emulated upfirdn2d failed with code {rc}")
        return y

    def upfirdn2d_has_tiled(self, kh, kw, up_x, up_y, down_x, down_y):
        ip = (ctypes.c_int * 14)(1, 64, 64, 64, 64, kh, kw, up_x, up_y, down_x, down_y, 0, 0, 0)
        return bool(self.lib.da_emu_upfirdn2d_has_tiled(ip))

    def _bias_act(self, x, b, ref, act, alpha, gain, clamp, grad):
        self.calls += 1
        xc = x.detach().contiguous()
        bc = b.detach().contiguous() if b is not None else None
        rc_ = ref.detach().contiguous() if ref is not None else None
        out = torch.empty_like(xc)
        a = {"linear": 0, "relu": 1, "lrelu": 2}[act]
        rc = self.lib.da_emu_bias_act(xc.data_ptr(), bc.data_ptr() if bc is not None else None,
                                      rc_.data_ptr() if rc_ is not None else None, out.data_ptr(),
                                      _DTYPE_CODE[x.dtype], xc.numel(), xc.numel() // (xc.shape[0] * xc.shape[1]),
                                      xc.shape[1], a, int(grad), 0.0 if act == "relu" else alpha, gain, clamp)
        if rc != 0:
            raise RuntimeError(f"emulated bias_act failed with code {rc}")
        return out

    def bias_act(self, x, b, act, alpha, gain, clamp):
        return self._bias_act(x, b, None, act, alpha, gain, clamp, False)

    def bias_act_grad(self, dy, y, act, alpha, gain, clamp):
        return self._bias_act(dy, None, y, act, alpha, gain, clamp, True)


@pytest.fixture(scope="session")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++) to build the kernel emulation")
    out = tmp_path_factory.mktemp("emu") / "libda_emu.so"
    csrc = os.path.join(REPO, "ops", "csrc")
    torch_inc = os.path.join(os.path.dirname(torch.__file__), "include")
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-x", "c++", "-DDA_HOST_EMULATION", "-I", csrc,
           "-I", torch_inc, os.path.join(csrc, "upfirdn2d.cu"), os.path.join(csrc, "bias_act.cu"), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"emulation build failed:\n{' '.join(cmd)}\n{res.stderr[-4000:]}"
    return EmulatedPlugin(ctypes.CDLL(str(out)))


@pytest.fixture
def emu_glue(emu, monkeypatch):
    """ops._cuda driven by the emulated plugin on CPU tensors."""
    monkeypatch.setattr(_plugin, "get_plugin", lambda: emu)
    monkeypatch.setattr(_cuda, "_device_ok", lambda x: True)
    return emu


def _call(plugin, x, f, up, down, pad, flip=False, impl=0):
    return plugin.upfirdn2d(x, f, up[0], up[1], down[0], down[1], pad[0], pad[1], pad[2], pad[3], flip, impl)


@pytest.mark.parametrize("case,impl", EMU_UPFIRDN)
@pytest.mark.parametrize("flip", [False, True], ids=["conv", "flipped"])
def test_emu_upfirdn2d_matches_ref(emu, case, impl, flip):
    shape, fshape, up, down, pad = case
    x, f = _rand(shape, seed=1), _rand(fshape, seed=2)
    ref = _ref_upfirdn2d(x, f.flip([0, 1]) if flip else f, up, down, pad)
    got = _call(emu, x, f, up, down, pad, flip, impl)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got32 = _call(emu, x.float(), f.float(), up, down, pad, flip, impl)
    torch.testing.assert_close(got32, ref.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [UPFIRDN_CASES[0], UPFIRDN_CASES[1], UPFIRDN_CASES[5]], ids=_case_id)
@pytest.mark.parametrize("impl", [0, 1])
def test_emu_upfirdn2d_half(emu, case, impl):
    shape, fshape, up, down, pad = case
    x, f = _rand(shape, torch.float16, seed=3), _rand(fshape, seed=4).float()
    got = _call(emu, x, f, up, down, pad, False, impl)
    ref = _ref_upfirdn2d(x.double(), f.double(), up, down, pad)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.double(), ref, rtol=2e-3, atol=2e-3 * float(ref.abs().max()))


def test_emu_tiled_dispatch(emu):
    assert emu.upfirdn2d_has_tiled(4, 4, 2, 2, 1, 1)
    assert emu.upfirdn2d_has_tiled(4, 4, 1, 1, 2, 2)
    assert emu.upfirdn2d_has_tiled(4, 4, 1, 1, 1, 1)
    assert not emu.upfirdn2d_has_tiled(3, 3, 1, 1, 1, 1)
    assert not emu.upfirdn2d_has_tiled(4, 4, 2, 2, 2, 2)
    for case in UPFIRDN_CASES + TILED_CASES:  # the list the tests above are parametrized from
        _, fshape, up, down, _ = case
        assert emu.upfirdn2d_has_tiled(*fshape, *up, *down) == _has_tiled(case), _case_id(case)


@pytest.mark.parametrize("case", BIAS_ACT_CASES, ids=lambda c: f"{c[1]}-{len(c[0])}d-clamp{c[4]}-b{int(c[5])}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_emu_bias_act_matches_ref(emu, case, dtype):
    shape, act, alpha, gain, clamp, with_bias = case
    x, b = _bias_act_inputs(shape, act, alpha, gain, clamp, with_bias, dtype)
    c = -1.0 if clamp is None else clamp
    y = emu.bias_act(x, b, act, alpha, gain, c)
    # Reference in float64 (on the same rounded inputs).
    xr = x.double().requires_grad_(True)
    yr = ops.bias_act(xr, None if b is None else b.double(), act, alpha, gain, clamp, impl="ref")
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(y.double(), yr.detach(), rtol=tol, atol=tol)
    dy = _rand(shape, seed=7).to(dtype)
    (gx_ref,) = torch.autograd.grad(yr, xr, dy.double())
    gx = emu.bias_act_grad(dy, y, act, alpha, gain, c)
    torch.testing.assert_close(gx.double(), gx_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", UPFIRDN_CASES[:6] + UPFIRDN_CASES[7:], ids=_case_id)
def test_emu_glue_upfirdn2d_gradients(emu_glue, case):
    shape, fshape, up, down, pad = case
    x = _rand(shape, seed=5).requires_grad_(True)
    f = _rand(fshape, seed=6)
    y = _cuda.upfirdn2d(x, f, up, down, pad)
    assert y is not None
    xr = x.detach().clone().requires_grad_(True)
    yr = _ref_upfirdn2d(xr, f, up, down, pad)
    torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
    dy = _rand(y.shape, seed=8)
    torch.testing.assert_close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(yr, xr, dy)[0],
                               rtol=1e-12, atol=1e-12)
    fn = lambda t: _cuda.upfirdn2d(t, f, up, down, pad)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", BIAS_ACT_CASES, ids=lambda c: f"{c[1]}-{len(c[0])}d-clamp{c[4]}-b{int(c[5])}")
def test_emu_glue_bias_act_gradients(emu_glue, case):
    shape, act, alpha, gain, clamp, with_bias = case
    x, b = _bias_act_inputs(shape, act, alpha, gain, clamp, with_bias)
    x.requires_grad_(True)
    inputs = (x, b.requires_grad_(True)) if b is not None else (x,)
    fn = lambda t, bb=None: _cuda.bias_act(t, bb, act, alpha, gain, clamp)  # noqa: E731
    y = fn(*inputs)
    assert y is not None
    yr = ops.bias_act(*inputs, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref")
    torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
    dy = _rand(shape, seed=9)
    for g, gr in zip(torch.autograd.grad(y, inputs, dy), torch.autograd.grad(yr, inputs, dy)):
        torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-8)


def test_emu_glue_bias_act_third_order(emu_glue):
    """The backward of the grad Function is itself differentiable (arbitrary order, all zero beyond 1st)."""
    x, b = _bias_act_inputs((2, 3, 4), "lrelu", 0.2, math.sqrt(2), 0.9, True)
    x.requires_grad_(True)
    y = _cuda.bias_act(x, b, "lrelu", 0.2, math.sqrt(2), 0.9)
    dy = _rand(y.shape, seed=3).requires_grad_(True)
    (gx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    (gdy,) = torch.autograd.grad(gx.square().sum(), dy, create_graph=True)
    (g3,) = torch.autograd.grad(gdy.sum(), dy)
    mask = (torch.where(y > 0, 1.0, 0.2) * math.sqrt(2) * (y.abs() < 0.9)).to(y.dtype)
    torch.testing.assert_close(g3, (2 * mask * mask).detach())


def test_emu_glue_r1_style_double_backward(emu_glue):
    """An R1-like penalty through upsample -> lrelu -> downsample: grad of a grad norm, vs the ref path."""
    f = ops.setup_filter([1, 3, 3, 1]).double()
    w = _rand((3,), seed=11).requires_grad_(True)

    def net(x, impl):
        if impl == "cuda":
            h = _cuda.upfirdn2d(x, f * 4, (2, 2), (1, 1), (2, 1, 2, 1))
            h = _cuda.bias_act(h, w, "lrelu", 0.2, math.sqrt(2), None)
            return _cuda.upfirdn2d(h, f, (1, 1), (2, 2), (1, 1, 1, 1))
        h = ops.upfirdn2d(x, f * 4, 2, 1, (2, 1, 2, 1), impl="ref")
        h = ops.bias_act(h, w, "lrelu", impl="ref")
        return ops.upfirdn2d(h, f, 1, 2, (1, 1, 1, 1), impl="ref")

    results = []
    for impl in ("cuda", "ref"):
        x = _rand((2, 3, 6, 6), seed=12).requires_grad_(True)
        out = net(x, impl)
        (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        penalty = gx.square().sum()
        results.append(torch.autograd.grad(penalty, [x, w]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_cuda_glue_declines_cpu_and_unsupported_inputs(monkeypatch):
    calls = []
    monkeypatch.setattr(_plugin, "get_plugin", lambda: calls.append(1))
    x, f = torch.randn(1, 2, 5, 5), torch.ones(2, 2)
    assert _cuda.upfirdn2d(x, f, (1, 1), (1, 1), (0, 0, 0, 0)) is None
    assert _cuda.bias_act(x, None, "lrelu", 0.2, math.sqrt(2), None) is None
    monkeypatch.setattr(_cuda, "_device_ok", lambda t: True)
    assert _cuda.upfirdn2d(x.bfloat16(), f, (1, 1), (1, 1), (0, 0, 0, 0)) is None
    assert _cuda.bias_act(x, None, "tanh", 0.2, 1.0, None) is None
    assert _cuda.bias_act(x, None, "lrelu", 0.2, -1.0, None) is None  # output-sign derivative needs gain > 0
    assert _cuda.bias_act(x, torch.zeros(3), "lrelu", 0.2, 1.0, None) is None  # bias shape mismatch
    assert calls == []
    with pytest.raises(ValueError, match="no gradient"):
        _cuda.upfirdn2d(x, f.requires_grad_(True), (1, 1), (1, 1), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="clamp"):
        _cuda.bias_act(x, None, "lrelu", 0.2, 1.0, -1.0)


# ==========================================================================================================
# Real GPU


@pytest.fixture(scope="module")
def gpu_plugin():
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    mod = _plugin.get_plugin()
    assert mod is not None, f"CUDA extension unavailable on a GPU machine: {_plugin.failure_reason()}"
    return mod


@needs_gpu
@pytest.mark.parametrize("case", UPFIRDN_CASES + TILED_CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_gpu_upfirdn2d_forward(gpu_plugin, case, dtype):
    shape, fshape, up, down, pad = case
    x, f = _rand(shape, dtype, seed=1, device="cuda"), _rand(fshape, seed=2, device="cuda")
    ref = _ref_upfirdn2d(x.double(), f, up, down, pad)
    rtol, atol = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5),
                  torch.float16: (2e-3, 2e-3 * float(ref.abs().max()))}[dtype]
    fk = f.double() if dtype == torch.float64 else f.float()
    out = ops.upfirdn2d(x, fk, up, down, pad, impl="cuda")
    assert out.dtype == dtype and out.is_cuda
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)
    assert gpu_plugin.upfirdn2d_has_tiled(*fshape, *up, *down) == _has_tiled(case)
    for impl in (1, 2) if _has_tiled(case) else (1,):
        got = _call(gpu_plugin, x, fk, up, down, pad, False, impl)
        torch.testing.assert_close(got.double(), ref, rtol=rtol, atol=atol)


@needs_gpu
def test_gpu_upfirdn2d_noncontiguous_and_channels_last(gpu_plugin):
    x = _rand((2, 6, 16, 16), torch.float32, device="cuda")
    f = ops.setup_filter([1, 3, 3, 1], device="cuda") * 4
    for xi in (x.to(memory_format=torch.channels_last), x[:, ::2], x.transpose(2, 3)):
        ref = ops.upfirdn2d(xi, f, 2, 1, (2, 1, 2, 1), impl="ref")
        torch.testing.assert_close(ops.upfirdn2d(xi, f, 2, 1, (2, 1, 2, 1), impl="cuda"), ref, rtol=1e-5, atol=1e-5)


@needs_gpu
@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=_case_id)
@pytest.mark.parametrize("kernel", [0, 1])
def test_gpu_upfirdn2d_gradcheck(gpu_plugin, case, kernel, monkeypatch):
    monkeypatch.setattr(_cuda, "kernel_impl", kernel)
    shape, fshape, up, down, pad = case
    x = _rand(shape, device="cuda", seed=5).requires_grad_(True)
    f = _rand(fshape, device="cuda", seed=6)
    fn = lambda t: ops.upfirdn2d(t, f, up, down, pad, impl="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-8)


@needs_gpu
@pytest.mark.parametrize("case", BIAS_ACT_CASES, ids=lambda c: f"{c[1]}-{len(c[0])}d-clamp{c[4]}-b{int(c[5])}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_gpu_bias_act_forward_backward(gpu_plugin, case, dtype):
    shape, act, alpha, gain, clamp, with_bias = case
    x, b = _bias_act_inputs(shape, act, alpha, gain, clamp, with_bias, dtype, device="cuda")
    x.requires_grad_(True)
    y = ops.bias_act(x, b, act, alpha, gain, clamp, impl="cuda")
    xr = x.detach().double().requires_grad_(True)
    yr = ops.bias_act(xr, None if b is None else b.double(), act, alpha, gain, clamp, impl="ref")
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(y.double(), yr, rtol=tol, atol=tol)
    dy = _rand(shape, dtype, seed=7, device="cuda")
    torch.testing.assert_close(torch.autograd.grad(y, x, dy)[0].double(), torch.autograd.grad(yr, xr, dy.double())[0],
                               rtol=tol, atol=tol)


@needs_gpu
@pytest.mark.parametrize("case", BIAS_ACT_CASES, ids=lambda c: f"{c[1]}-{len(c[0])}d-clamp{c[4]}-b{int(c[5])}")
def test_gpu_bias_act_gradcheck(gpu_plugin, case):
    shape, act, alpha, gain, clamp, with_bias = case
    x, b = _bias_act_inputs(shape, act, alpha, gain, clamp, with_bias, device="cuda")
    x.requires_grad_(True)
    inputs = (x, b.requires_grad_(True)) if b is not None else (x,)
    fn = lambda t, bb=None: ops.bias_act(t, bb, act, alpha, gain, clamp, impl="cuda")  # noqa: E731
    assert _cuda.bias_act(x, b, act, alpha, gain, clamp) is not None  # really the CUDA path
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-8)


# ==========================================================================================================
# Building the extension (nvcc, no GPU needed)


@pytest.mark.timeout(1200)
@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not found (neither on PATH nor /usr/local/cuda/bin/nvcc)")
@pytest.mark.skipif(not torch.version.cuda, reason="torch is a CPU-only build; the extension needs CUDA torch")
def test_build_extension_and_import(monkeypatch):
    # One arch keeps the CPU-only build short; on a GPU machine build for the GPU (so later tests can use it).
    if not HAS_GPU and not os.environ.get("DOMAIN_ADAPT_CUDA_ARCH") and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        monkeypatch.setenv("DOMAIN_ADAPT_CUDA_ARCH", "8.0")
    t0 = time.perf_counter()
    mod = _plugin.build(verbose=False)
    dt = time.perf_counter() - t0
    for fn in ("upfirdn2d", "bias_act", "bias_act_grad", "upfirdn2d_has_tiled"):
        assert callable(getattr(mod, fn)), fn
    assert _plugin.is_loaded() and _plugin.get_plugin() is mod
    assert mod.upfirdn2d_has_tiled(4, 4, 2, 2, 1, 1) and not mod.upfirdn2d_has_tiled(3, 3, 1, 1, 1, 1)
    if not HAS_GPU:  # the checks in ops.cpp run before any CUDA call
        with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
            mod.upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2), 1, 1, 1, 1, 0, 0, 0, 0)
        with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
            mod.bias_act(torch.zeros(2, 3), None, "lrelu", 0.2, 1.0, -1.0)
    print(f"extension build/load took {dt:.1f} s")


@pytest.mark.timeout(600)
@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not found (neither on PATH nor /usr/local/cuda/bin/nvcc)")
@pytest.mark.skipif(not torch.version.cuda, reason="torch is a CPU-only build; the extension needs CUDA torch")
def test_build_check_cli():
    """``python -m ops.build_check`` (reuses the cache of the test above when the arch list matches)."""
    env = dict(os.environ)
    if not HAS_GPU and not env.get("DOMAIN_ADAPT_CUDA_ARCH") and not env.get("TORCH_CUDA_ARCH_LIST"):
        env["DOMAIN_ADAPT_CUDA_ARCH"] = "8.0"
    res = subprocess.run([sys.executable, "-m", "ops.build_check", "--quiet"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "exported functions: bias_act, bias_act_grad, upfirdn2d, upfirdn2d_has_tiled" in res.stdout


def test_build_check_skips_without_nvcc(monkeypatch, capsys):
    from ops import build_check

    monkeypatch.setattr(_plugin, "find_nvcc", lambda: None)
    assert build_check.main([]) == 0
    assert "skipped: nvcc not found" in capsys.readouterr().out
    assert build_check.main(["--strict"]) != 0


# ==========================================================================================================
# Lazy loading, fallback, locks (CPU only)


@pytest.fixture
def plugin_state():
    """Run a test with a fresh plugin state and restore the real one afterwards."""
    saved = (_plugin._module, _plugin._failure, _plugin._warned, _plugin._build_attempts)
    _plugin._reset_for_tests()
    yield _plugin
    _plugin._module, _plugin._failure, _plugin._warned, _plugin._build_attempts = saved


def test_import_and_cpu_ops_never_build():
    script = r"""
import torch.utils.cpp_extension as ce
calls = []
def boom(*a, **k):
    calls.append(a)
    raise RuntimeError("a build was attempted")
ce.load = boom
import torch, ops
from ops import _plugin
x = torch.randn(1, 2, 8, 8)
f = ops.setup_filter([1, 3, 3, 1])
for impl in ("auto", "torch", "ref"):
    y = ops.upfirdn2d(x, f * 4, up=2, pad=(2, 1, 2, 1), impl=impl)
    z = ops.bias_act(y, torch.zeros(2), act="lrelu", impl=impl)
assert z.shape == (1, 2, 16, 16)
assert not calls, calls
assert _plugin._build_attempts == 0 and not _plugin.is_loaded() and _plugin.failure_reason() is None
print("NO-BUILD-OK")
"""
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "NO-BUILD-OK" in res.stdout, res.stdout + res.stderr


def test_failed_build_warns_once_and_never_retries(plugin_state, monkeypatch, tmp_path):
    calls = []

    def failing_load(*args, **kwargs):
        calls.append(kwargs.get("build_directory"))
        raise RuntimeError("simulated nvcc failure")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", failing_load)
    monkeypatch.setattr(_plugin, "_missing_prerequisite", lambda: None)  # get as far as load() even without nvcc
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    monkeypatch.setenv("DOMAIN_ADAPT_EXT_DIR", str(tmp_path / "ext"))
    monkeypatch.delenv("DOMAIN_ADAPT_NO_CUDA_EXT", raising=False)
    monkeypatch.setattr(_cuda, "_device_ok", lambda t: True)
    x, f = torch.randn(1, 2, 6, 6), torch.ones(2, 2)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(4):
            assert _plugin.get_plugin() is None
            assert _cuda.upfirdn2d(x, f, (1, 1), (1, 1), (0, 0, 0, 0)) is None
            assert _cuda.bias_act(x, None, "lrelu", 0.2, 1.0, None) is None
    msgs = [str(w.message) for w in rec if "falling back to the PyTorch implementation" in str(w.message)]
    assert len(msgs) == 1, [str(w.message) for w in rec]
    assert "simulated nvcc failure" in msgs[0]
    assert len(calls) == 1 and calls[0].startswith(str(tmp_path / "ext"))
    assert _plugin._build_attempts == 1
    assert not _plugin.is_available() and "simulated" in _plugin.failure_reason()
    # The explicit build() does try again, and raises.
    with pytest.raises(_plugin.BuildError, match="simulated nvcc failure"):
        _plugin.build(verbose=False)
    assert len(calls) == 2


@pytest.mark.parametrize("how", ["missing-nvcc", "bad-source-path"])
def test_unbuildable_warns_once(plugin_state, monkeypatch, tmp_path, how):
    calls = []
    monkeypatch.setattr(torch.utils.cpp_extension, "load", lambda *a, **k: calls.append(1))
    monkeypatch.setenv("DOMAIN_ADAPT_EXT_DIR", str(tmp_path / "ext"))
    monkeypatch.delenv("DOMAIN_ADAPT_NO_CUDA_EXT", raising=False)
    if how == "missing-nvcc":
        monkeypatch.setattr(_plugin, "_missing_prerequisite", lambda: "nvcc not found (simulated)")
    else:
        monkeypatch.setattr(_plugin, "_missing_prerequisite", lambda: None)
        monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
        monkeypatch.setattr(_plugin, "SOURCES", ("does_not_exist.cpp",))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert all(_plugin.get_plugin() is None for _ in range(3))
    assert len([w for w in rec if "falling back" in str(w.message)]) == 1
    assert calls == []


def test_disabled_by_env_is_silent(plugin_state, monkeypatch):
    monkeypatch.setenv("DOMAIN_ADAPT_NO_CUDA_EXT", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _plugin.get_plugin() is None
    assert not _plugin.is_available() and _plugin._build_attempts == 0


def test_is_available_never_builds(plugin_state, monkeypatch):
    monkeypatch.setattr(torch.utils.cpp_extension, "load", lambda *a, **k: pytest.fail("built"))
    monkeypatch.delenv("DOMAIN_ADAPT_NO_CUDA_EXT", raising=False)
    expected = bool(torch.version.cuda) and _plugin.find_nvcc() is not None and shutil.which("ninja") is not None
    assert _plugin.is_available() == expected
    assert _plugin._build_attempts == 0


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_locks_are_removed(tmp_path):
    import json
    import socket

    d = tmp_path / "build"
    d.mkdir()
    own, torch_lock = d / _plugin.OWN_LOCK_NAME, d / _plugin.TORCH_LOCK_NAME
    # Lock of a builder that died on this host, and a torch lock file nobody holds.
    own.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    torch_lock.write_text("")
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="stale"):
        with _plugin.build_lock(str(d), timeout=5):
            assert not torch_lock.exists()
            assert json.loads(own.read_text())["pid"] == os.getpid()
    assert not own.exists() and time.monotonic() - t0 < 5
    # A lock from another host, older than the limit.
    own.write_text(json.dumps({"pid": 1, "host": "some-other-host"}))
    old = time.time() - _plugin.STALE_LOCK_S - 60
    os.utime(own, (old, old))
    with pytest.warns(RuntimeWarning, match="stale"):
        with _plugin.build_lock(str(d), timeout=5):
            pass
    # remove_stale_locks: an old torch lock goes, a fresh one held by a live process stays.
    torch_lock.write_text("")
    os.utime(torch_lock, (old, old))
    assert _plugin.remove_stale_locks(str(d)) and not torch_lock.exists()


def test_live_lock_is_waited_for(tmp_path):
    import fcntl
    import json
    import socket

    d = tmp_path / "build"
    d.mkdir()
    own = d / _plugin.OWN_LOCK_NAME
    own.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))  # a live process
    with pytest.raises(_plugin.BuildError, match="timed out"):
        with _plugin.build_lock(str(d), timeout=1.5):
            pass
    assert own.exists()
    own.unlink()
    # A torch lock currently held (flock) by someone is not touched.
    tl = d / _plugin.TORCH_LOCK_NAME
    fd = os.open(tl, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert _plugin.remove_stale_locks(str(d)) == []
        assert tl.exists()
    finally:
        os.close(fd)


def test_arch_list_and_flags(monkeypatch):
    monkeypatch.setenv("DOMAIN_ADAPT_CUDA_ARCH", "8.6")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.5")
    assert _plugin.arch_list() == "8.6"
    monkeypatch.delenv("DOMAIN_ADAPT_CUDA_ARCH")
    assert _plugin.arch_list() == "7.5"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    if not HAS_GPU:
        assert _plugin.arch_list() == "8.0;9.0"
    assert _plugin.arch_flags("8.0;9.0a 8.6+PTX") == [
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_86,code=compute_86",
    ]
    assert _plugin.arch_flags("10.0") == ["-gencode=arch=compute_100,code=sm_100"]
    assert _plugin.arch_flags("Ampere")[-1] == "-gencode=arch=compute_86,code=compute_86"
    with pytest.raises(_plugin.BuildError, match="invalid CUDA architecture"):
        _plugin.arch_flags("Fermi")
    # The build directory depends on the arch list and lives under the cache root.
    monkeypatch.setenv("DOMAIN_ADAPT_EXT_DIR", "/tmp/da-ext-test")
    a, b = _plugin.build_directory("8.0", "/usr/local/cuda"), _plugin.build_directory("9.0", "/usr/local/cuda")
    assert a != b and a.startswith("/tmp/da-ext-test/") and a == _plugin.build_directory("8.0", "/usr/local/cuda")


def test_toolchain_discovery(monkeypatch):
    monkeypatch.setenv("CUDA_HOME", "/opt/my-cuda")
    assert _plugin.cuda_home() == "/opt/my-cuda"
    inc = _plugin.nvidia_include_dirs()
    assert all(os.path.isdir(p) for p in inc)
    try:
        import nvidia  # noqa: F401
    except ImportError:
        return
    if any(os.path.isdir(os.path.join(p, "cu13", "include")) for p in nvidia.__path__):
        assert any(p.endswith(os.path.join("cu13", "include")) for p in inc)
    monkeypatch.setenv("PATH", "/usr/bin")
    _plugin._ensure_venv_bin_on_path()
    assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
