"""Autograd glue between the public ops and the compiled CUDA kernels (``ops/csrc``, built by ``ops._plugin``).

``upfirdn2d(...)`` and ``bias_act(...)`` return ``None`` whenever the CUDA path cannot serve the call (CPU
tensor, unsupported dtype or parameters, extension unavailable), so the caller falls back to PyTorch.

Gradients (any order):

- upfirdn2d: the gradient w.r.t. ``x`` is the same op with up/down swapped, the filter flipped and the padding
  ``(k - p0 - 1, in*up - out*down + p0 - up + 1)`` per axis. The backward calls the same autograd Function, so
  double-backward (R1, path-length regularisation) and higher orders work. The filter gets no gradient.
- bias_act: ``dx = dy * gain * act'(y)`` (zero where the clamp is active), computed by the kernel's grad mode
  from the forward output ``y``, in a second Function whose own backward applies the same mask again (the
  activations are piecewise linear, so the second derivative w.r.t. ``x`` is zero). The bias gradient is
  ``dx`` summed over every dim but 1.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from . import _plugin
from .upfirdn2d import _grad_pad, _pair, _quad

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16)
ACTIVATIONS = ("linear", "relu", "lrelu")

# Which upfirdn2d kernel the Functions use: 0 = automatic (tiled where available), 1 = generic, 2 = tiled.
kernel_impl = 0


def _device_ok(x: torch.Tensor) -> bool:
    """Whether ``x`` lives where the kernels run (tests swap this to drive the glue with an emulated plugin)."""
    return x.is_cuda


# ----------------------------------------------------------------------------------------------------------
# upfirdn2d


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, up, down, pad, flip):  # type: ignore[override]
        plugin = _plugin.get_plugin()
        y = plugin.upfirdn2d(x, f, up[0], up[1], down[0], down[1], pad[0], pad[1], pad[2], pad[3], flip,
                             kernel_impl)
        ctx.save_for_backward(f)
        ctx.cfg = (up, down, pad, flip, x.shape[2], x.shape[3])
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        (f,) = ctx.saved_tensors
        up, down, pad, flip, in_h, in_w = ctx.cfg
        dx = None
        if ctx.needs_input_grad[0]:
            kh, kw = f.shape
            gx = _grad_pad(in_w, dy.shape[3], up[0], down[0], pad[0], pad[1], kw)
            gy = _grad_pad(in_h, dy.shape[2], up[1], down[1], pad[2], pad[3], kh)
            dx = _Upfirdn2d.apply(dy, f, down, up, (gx[0], gx[1], gy[0], gy[1]), not flip)
            assert dx.shape[2:] == (in_h, in_w), (dx.shape, in_h, in_w)
        return dx, None, None, None, None, None


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int | Sequence[int] = 1, down: int | Sequence[int] = 1,
              pad: int | Sequence[int] = 0) -> torch.Tensor | None:
    """CUDA upfirdn2d of ``x`` [N, C, H, W] with the 2-D filter ``f``, or ``None`` if the CUDA path is unusable.

    ``up``/``down`` are (x, y), ``pad`` is (x0, x1, y0, y1) (ints are broadcast).
    """
    if f.requires_grad:
        raise ValueError("upfirdn2d: the filter receives no gradient; pass f.detach() (f.requires_grad is True)")
    if not _device_ok(x) or x.dtype not in SUPPORTED_DTYPES or x.ndim != 4 or f.ndim != 2:
        return None
    up_, down_, pad_ = _pair(up), _pair(down), _quad(pad)
    if min(up_) < 1 or min(down_) < 1:
        return None
    plugin = _plugin.get_plugin()
    if plugin is None:
        return None
    if f.dtype not in (x.dtype, torch.float32):
        f = f.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    f = f.to(device=x.device)
    return _Upfirdn2d.apply(x, f, up_, down_, pad_, False)


# ----------------------------------------------------------------------------------------------------------
# bias_act


class _BiasActGrad(torch.autograd.Function):
    """dx = mask(y) * dy; linear in dy, so its backward is the same mask applied to the incoming gradient."""

    @staticmethod
    def forward(ctx, dy, y, act, alpha, gain, clamp):  # type: ignore[override]
        ctx.save_for_backward(y)
        ctx.cfg = (act, alpha, gain, clamp)
        return _plugin.get_plugin().bias_act_grad(dy, y, act, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, ddx):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        dddy = None
        if ctx.needs_input_grad[0]:
            dddy = _BiasActGrad.apply(ddx, y, *ctx.cfg)
        # d(dx)/dy is zero almost everywhere (piecewise-linear activations, piecewise-constant clamp mask).
        return dddy, None, None, None, None, None


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, act, alpha, gain, clamp):  # type: ignore[override]
        y = _plugin.get_plugin().bias_act(x, b, act, alpha, gain, clamp)
        needs_y = act != "linear" or clamp >= 0
        ctx.save_for_backward(y if needs_y else None)
        ctx.cfg = (act, alpha, gain, clamp)
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        act, alpha, gain, clamp = ctx.cfg
        dx = db = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dx = dy * gain if y is None else _BiasActGrad.apply(dy, y, act, alpha, gain, clamp)
        if ctx.needs_input_grad[1]:
            db = dx.sum(dim=[d for d in range(dx.ndim) if d != 1])
        if not ctx.needs_input_grad[0]:
            dx = None
        return dx, db, None, None, None, None


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", alpha: float | None = None,
             gain: float | None = None, clamp: float | None = None) -> torch.Tensor | None:
    """CUDA ``clamp(gain * act(x + b), -clamp, clamp)`` (bias along dim 1), or ``None`` if unusable here.

    ``act`` is "linear", "relu" or "lrelu"; ``alpha`` defaults to 0.2 (lrelu slope), ``gain`` to sqrt(2) for
    relu/lrelu and 1 for linear; ``clamp=None`` disables clamping.
    """
    if clamp is not None and clamp < 0:
        raise ValueError(f"bias_act: clamp must be None or >= 0, got {clamp}")
    if not _device_ok(x) or x.dtype not in SUPPORTED_DTYPES or x.ndim < 2 or act not in ACTIVATIONS:
        return None
    alpha = 0.2 if alpha is None else float(alpha)
    gain = (math.sqrt(2.0) if act != "linear" else 1.0) if gain is None else float(gain)
    # The kernel's derivative reads the sign of the forward output: valid for gain > 0 and alpha >= 0.
    if act != "linear" and (gain <= 0 or (act == "lrelu" and alpha < 0)):
        return None
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        return None
    plugin = _plugin.get_plugin()
    if plugin is None:
        return None
    if b is not None:
        b = b.to(device=x.device, dtype=x.dtype)
    clamp_ = -1.0 if clamp is None else float(clamp)
    return _BiasAct.apply(x, b, act, alpha if act == "lrelu" else 0.0, gain, clamp_)
