"""Colour helpers on tensors: HSV <-> RGB (differentiable almost everywhere), luminance."""
from __future__ import annotations

import torch

LUMA = (0.299, 0.587, 0.114)


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Hue in [0, 1) (wraps), saturation and value in [0, 1]; returns RGB stacked along ``dim``."""
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h * 6.0, 6.0)
        out.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=dim)


def rgb_to_hsv(img: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, 3, H, W] in [0, 1] -> hue [0, 1), saturation, value (each [N, H, W])."""
    r, g, b = img.unbind(1)
    mx, _ = img.max(1)
    mn, _ = img.min(1)
    c = mx - mn
    cs = c + eps
    h = torch.where(mx == r, torch.remainder((g - b) / cs, 6.0),
                    torch.where(mx == g, (b - r) / cs + 2.0, (r - g) / cs + 4.0)) / 6.0
    h = torch.where(c > eps, h, torch.zeros_like(h))
    s = c / (mx + eps)
    return torch.remainder(h, 1.0), s, mx


def luminance(img: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 1, H, W] (Rec. 601 weights)."""
    w = img.new_tensor(LUMA).view(1, 3, 1, 1)
    return (img * w).sum(1, keepdim=True)
