"""upfirdn2d: upsample, pad, FIR-filter and downsample a batch of images.

Semantics (scipy.signal.upfirdn, per channel), for x [N, C, H, W] and a 2-D filter f [kh, kw]:

1. upsample by inserting ``up - 1`` zeros after every pixel (length ``H * up``);
2. pad by ``pad = (x0, x1, y0, y1)`` pixels (negative values crop);
3. convolve with ``f`` (a true convolution, valid mode: the output shrinks by ``k - 1``);
4. keep every ``down``-th pixel.

Output height: ``(H * up_y + y0 + y1 - kh + down_y) // down_y`` (same for the width).

The gradient with respect to ``x`` is the same op with ``up``/``down`` swapped, the filter flipped and the
padding given by :func:`_grad_pad`. The ``"ref"`` and ``"torch"`` paths get their gradients (of any order)
from autograd; the CUDA path implements that rule explicitly (``ops/_cuda.py``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ._impl import run

Pair = tuple[int, int]
Quad = tuple[int, int, int, int]


# ----------------------------------------------------------------------------------------------------------
# Argument normalisation and filters


def _pair(v: int | Sequence[int]) -> Pair:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair (x, y), got {v}")
    return v  # type: ignore[return-value]


def _quad(pad: int | Sequence[int]) -> Quad:
    """Padding as (x0, x1, y0, y1). An int pads all sides, a pair (px, py) pads both sides of each axis."""
    if isinstance(pad, int):
        return (pad, pad, pad, pad)
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return (pad[0], pad[0], pad[1], pad[1])
    if len(pad) == 4:
        return pad  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, (px, py) or (x0, x1, y0, y1), got {pad}")


def setup_filter(f: Sequence[float] | torch.Tensor, *, normalize: bool = True, gain: float = 1.0,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """A 2-D FIR filter from 1-D taps (outer product) or a 2-D array, normalised to sum 1, times ``gain``."""
    f = torch.as_tensor(f, dtype=torch.float32, device=device)
    if f.ndim == 1:
        f = f[:, None] * f[None, :]
    if f.ndim != 2:
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    if normalize:
        f = f / f.sum()
    return f * gain


def output_size(size: int, up: int, down: int, p0: int, p1: int, k: int) -> int:
    return (size * up + p0 + p1 - k + down) // down


def _grad_pad(in_size: int, out_size: int, up: int, down: int, p0: int, p1: int, k: int) -> Pair:
    """Padding of the upfirdn2d that computes the gradient with respect to the input (one axis)."""
    g0 = k - p0 - 1
    g1 = in_size * up - out_size * down + p0 - up + 1
    return g0, g1


# ----------------------------------------------------------------------------------------------------------
# Implementations


def _upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor, up: Pair, down: Pair, pad: Quad) -> torch.Tensor:
    """The textbook implementation, one step per line of the definition, on one channel at a time."""
    n, c, h, w = x.shape
    (ux, uy), (dx, dy), (px0, px1, py0, py1) = up, down, pad
    kh, kw = f.shape
    x = x.reshape(n * c, 1, h, 1, w, 1)
    x = F.pad(x, [0, ux - 1, 0, 0, 0, uy - 1])  # 1. zero insertion
    x = x.reshape(n * c, 1, h * uy, w * ux)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])  # 2. pad ...
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]  # ... or crop
    weight = f.flip([0, 1]).reshape(1, 1, kh, kw).to(x.dtype)  # 3. true convolution = correlation, flipped
    x = F.conv2d(x, weight)
    x = x[:, :, ::dy, ::dx]  # 4. decimation
    return x.reshape(n, c, x.shape[2], x.shape[3])


def _upfirdn2d_torch(x: torch.Tensor, f: torch.Tensor, up: Pair, down: Pair, pad: Quad) -> torch.Tensor:
    """Optimised PyTorch path: depthwise convs on NCHW (no reshape to one channel, no zero-inserted copy).

    Upsampling uses a depthwise transposed convolution (it *is* zero insertion + full convolution), and
    decimation uses the convolution stride, so no work is spent on pixels that are thrown away.
    """
    n, c, h, w = x.shape
    (ux, uy), (dx, dy), (px0, px1, py0, py1) = up, down, pad
    kh, kw = f.shape
    f = f.to(x.dtype)
    if ux == 1 and uy == 1:
        # Symmetric non-negative padding goes into the conv itself; anything else through F.pad.
        if px0 == px1 >= 0 and py0 == py1 >= 0:
            conv_pad = (py0, px0)
        else:
            x = F.pad(x, [px0, px1, py0, py1])
            conv_pad = (0, 0)
        weight = f.flip([0, 1]).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
        return F.conv2d(x, weight, stride=(dy, dx), padding=conv_pad, groups=c)

    # Transposed conv computes the full convolution of the zero-inserted signal (without trailing zeros),
    # indices [0, (h-1)*uy + kh). The definition's output j is full index j + kh - 1 - py0.
    oh = output_size(h, uy, dy, py0, py1, kh)
    ow = output_size(w, ux, dx, px0, px1, kw)
    sy, sx = kh - 1 - py0, kw - 1 - px0  # first full index needed
    ey, ex = sy + (oh - 1) * dy + 1, sx + (ow - 1) * dx + 1  # one past the last
    full_h, full_w = (h - 1) * uy + kh, (w - 1) * ux + kw
    # conv_transpose2d's own padding crops symmetrically; use it for the common symmetric case.
    crop_y, crop_x = min(sy, full_h - ey), min(sx, full_w - ex)
    crop_y, crop_x = max(crop_y, 0), max(crop_x, 0)
    weight = f.reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    y = F.conv_transpose2d(x, weight, stride=(uy, ux), padding=(crop_y, crop_x), groups=c)
    sy, ey, sx, ex = sy - crop_y, ey - crop_y, sx - crop_x, ex - crop_x
    full_h, full_w = y.shape[2], y.shape[3]
    if sy < 0 or sx < 0 or ey > full_h or ex > full_w:  # the window reaches past the signal: zero-pad
        y = F.pad(y, [max(-sx, 0), max(ex - full_w, 0), max(-sy, 0), max(ey - full_h, 0)])
        sy, ey, sx, ex = sy + max(-sy, 0), ey + max(-sy, 0), sx + max(-sx, 0), ex + max(-sx, 0)
    if (sy, ey, sx, ex) != (0, y.shape[2], 0, y.shape[3]) or dy > 1 or dx > 1:
        y = y[:, :, sy:ey:dy, sx:ex:dx]
    return y


# ----------------------------------------------------------------------------------------------------------
# Public API


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int | Sequence[int] = 1, down: int | Sequence[int] = 1,
              pad: int | Sequence[int] = 0, *, impl: str = "auto") -> torch.Tensor:
    """Upsample, pad, filter and downsample ``x`` [N, C, H, W] with the 2-D FIR filter ``f``.

    ``up``/``down`` are an int or (x, y); ``pad`` an int, (px, py) or (x0, x1, y0, y1).
    ``impl`` is ``"auto"``, ``"ref"``, ``"torch"`` or ``"cuda"`` (see :mod:`ops`).
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    if f.ndim != 2:
        raise ValueError(f"upfirdn2d expects a 2-D filter, got shape {tuple(f.shape)} (use setup_filter)")
    if f.requires_grad:
        raise ValueError("upfirdn2d does not differentiate with respect to the filter; pass f.detach()")
    up_, down_, pad_ = _pair(up), _pair(down), _quad(pad)
    if min(up_) < 1 or min(down_) < 1:
        raise ValueError(f"up and down must be >= 1, got up={up_}, down={down_}")
    oh = output_size(x.shape[2], up_[1], down_[1], pad_[2], pad_[3], f.shape[0])
    ow = output_size(x.shape[3], up_[0], down_[0], pad_[0], pad_[1], f.shape[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"upfirdn2d output would be empty ({oh}x{ow}) for input {tuple(x.shape)}, "
                         f"filter {tuple(f.shape)}, up={up_}, down={down_}, pad={pad_}")
    def cuda():
        from . import _cuda
        return _cuda.upfirdn2d(x, f.to(device=x.device), up_, down_, pad_)
    return run(impl, x, lambda: _upfirdn2d_ref(x, f, up_, down_, pad_),
               lambda: _upfirdn2d_torch(x, f, up_, down_, pad_), cuda)


def filter2d(x: torch.Tensor, f: torch.Tensor, pad: int | Sequence[int] | None = None, *,
             impl: str = "auto") -> torch.Tensor:
    """Filter with ``f`` keeping the size (by default, padding (k-1)//2 before and k//2 after)."""
    if pad is None:
        kh, kw = f.shape
        pad = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    return upfirdn2d(x, f, pad=pad, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2, *, impl: str = "auto") -> torch.Tensor:
    """2x (or ``factor``x) upsampling with filter ``f`` (which should be scaled by factor**2)."""
    k = f.shape[0]
    p = k - factor
    p0, p1 = (p + 1) // 2 + factor - 1, p // 2
    return upfirdn2d(x, f, up=factor, pad=(p0, p1, p0, p1), impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2, *, impl: str = "auto") -> torch.Tensor:
    """``factor``x downsampling with filter ``f``."""
    k = f.shape[0]
    p = k - factor
    p0, p1 = (p + 1) // 2, p // 2
    return upfirdn2d(x, f, down=factor, pad=(p0, p1, p0, p1), impl=impl)
