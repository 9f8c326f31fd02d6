"""StyleGAN2's losses and regularisers (Karras et al. 2020), on rosinality's conventions.

- Non-saturating logistic loss for G and D.
- R1: ``(gamma / 2) * E[|grad_x D(x)|^2]`` on real images, applied lazily every ``k`` steps and scaled by
  ``k`` so its strength does not depend on the interval.
- Path-length regularisation: ``E[(|J_w^T y| - a)^2]`` with ``a`` an exponential moving average of the
  path lengths, ``y`` image-space noise scaled by 1/sqrt(H W).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """softplus(-D(x)) + softplus(D(G(z))), averaged."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """softplus(-D(G(z))), averaged."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """E[|grad_x D(x)|^2] over the batch (``real_img`` must require grad; the graph is kept for backward)."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def path_length_penalty(fake_img: torch.Tensor, latents: torch.Tensor, mean_path_length: torch.Tensor | float,
                        decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(penalty, new mean path length, path lengths) for images made from ``latents`` (w+, requires grad)."""
    noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    lengths = grad.square().sum(2).mean(1).sqrt()
    mean = torch.as_tensor(mean_path_length, dtype=lengths.dtype, device=lengths.device)
    new_mean = mean + decay * (lengths.detach().mean() - mean)
    return (lengths - new_mean).square().mean(), new_mean.detach(), lengths


@torch.no_grad()
def accumulate_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def ema_decay_for(batch: int, half_life_kimg: float = 10.0) -> float:
    """The EMA decay per step for a half-life in thousands of images (StyleGAN2-ADA's ``ema_kimg``)."""
    return 0.5 ** (batch / max(half_life_kimg * 1000, 1e-8))
