"""Fused bias + activation: ``y = clamp(gain * act(x + b), -clamp, clamp)`` with the bias along dim 1.

StyleGAN2 uses it after every convolution and fully connected layer (leaky ReLU, slope 0.2, gain sqrt(2)).
For the piecewise-linear activations the gradient can be computed from the output alone
(``dy/dx = gain`` where ``y > 0`` and ``gain * alpha`` elsewhere), which is what the CUDA kernel does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._impl import run

#: activation -> (default alpha, default gain)
ACTIVATIONS = {
    "linear": (0.0, 1.0),
    "relu": (0.0, math.sqrt(2)),
    "lrelu": (0.2, math.sqrt(2)),
}


def _bias_view(b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return b.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)


def _bias_act_ref(x, b, act, alpha, gain, clamp):
    """Textbook path: one op per step."""
    if b is not None:
        x = x + _bias_view(b, x)
    if act == "relu":
        x = F.relu(x)
    elif act == "lrelu":
        x = F.leaky_relu(x, alpha)
    x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _bias_act_torch(x, b, act, alpha, gain, clamp):
    """Optimised PyTorch path: the bias add and the lrelu make the only temporaries; the gain is applied in
    place (leaky_relu's backward reads its input, not its output, so scaling the output in place is safe)."""
    y = x if b is None else torch.add(x, _bias_view(b, x))
    if act == "lrelu":
        y = F.leaky_relu(y, alpha)
        return _gain_clamp(y.mul_(gain) if gain != 1 else y, clamp)
    if act == "relu":
        y = F.relu(y)  # relu's backward reads its output: no in-place update
    return _gain_clamp(y * gain if gain != 1 else y, clamp)


def _gain_clamp(y, clamp):
    return y if clamp is None else y.clamp(-clamp, clamp)


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", alpha: float | None = None,
             gain: float | None = None, clamp: float | None = None, *, impl: str = "auto") -> torch.Tensor:
    """Add ``b`` (shape [C], along dim 1) to ``x``, apply ``act`` and scale by ``gain``.

    ``act``: "linear", "relu" or "lrelu"; ``alpha``/``gain`` default to the activation's own (0.2, sqrt 2 for
    lrelu). ``clamp`` clips the output to [-clamp, clamp] (NVIDIA's ``conv_clamp``). ``impl`` as in :mod:`ops`.
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
    if x.ndim < 2:
        raise ValueError(f"bias_act expects x with a channel dim 1, got shape {tuple(x.shape)}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        raise ValueError(f"bias must have shape [{x.shape[1]}] to match x {tuple(x.shape)}, got {tuple(b.shape)}")
    d_alpha, d_gain = ACTIVATIONS[act]
    alpha = d_alpha if alpha is None else float(alpha)
    gain = d_gain if gain is None else float(gain)
    clamp = None if clamp is None or clamp < 0 else float(clamp)
    def cuda():
        from . import _cuda
        return _cuda.bias_act(x, b, act, alpha, gain, clamp)
    return run(impl, x, lambda: _bias_act_ref(x, b, act, alpha, gain, clamp),
               lambda: _bias_act_torch(x, b, act, alpha, gain, clamp), cuda)
