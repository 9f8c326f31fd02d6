"""Projecting an image into a generator: optimisation-based inversion in W or W+.

    python -m gan_adapt invert --ckpt G.safetensors --image photo.png --out runs/invert [--space w+] [--steps 300]

Starts at the generator's average latent (``latent_avg``) and minimises, with Adam and a decaying learning
rate, a pixel MSE plus (when a CLIP is given) a CLIP image-embedding distance, plus a small pull towards the
average latent (II2S-style regularisation that keeps W+ codes in the region the generator knows). Noise is the
generator's stored constant noise, so the result renders the same every time. The result's ``w`` [1, L, D] is
the input of every editing path: directions (``DomainEdit(...).generate(w=...)``), mixing, morphing, and the
reconstruction term of image-guided training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .networks import Generator


@dataclass
class Inversion:
    w: torch.Tensor  # [1, n_latent, D] (W+; for space "w" all rows are equal)
    image: torch.Tensor  # the reconstruction [1, 3, H, W]
    losses: list  # the total loss per step
    mse: float  # final pixel MSE ([-1, 1] scale)


def invert(g: Generator, target: torch.Tensor, *, space: str = "w+", steps: int = 300, lr: float = 0.05,
           clip=None, clip_weight: float = 0.5, latent_weight: float = 1e-3, seed: int = 0,
           callback: Callable[[int, float], bool | None] | None = None) -> Inversion:
    """Project ``target`` ([1, 3, H, W] or [3, H, W] in [-1, 1], resized to the generator's size) into ``g``.

    ``callback(step, loss)`` is called every step; returning True stops early (a UI's cancel button).
    """
    if space not in ("w", "w+"):
        raise ValueError(f"space must be 'w' or 'w+', got {space!r}")
    if target.ndim == 3:
        target = target[None]
    if target.ndim != 4 or target.shape[:2] != (1, 3):
        raise ValueError(f"expected one RGB image [1, 3, H, W], got {tuple(target.shape)}")
    device = next(g.parameters()).device
    target = target.to(device).float()
    if target.shape[-1] != g.size or target.shape[-2] != g.size:
        target = F.interpolate(target, size=(g.size, g.size), mode="bilinear", align_corners=False, antialias=True)
    g = g.eval()
    torch.manual_seed(seed)
    avg = g.latent_avg if g.latent_avg_known else g.mean_latent(4096, seed=0)[0]
    avg = avg.reshape(1, 1, -1).to(device)
    rows = g.n_latent if space == "w+" else 1
    w = avg.expand(1, rows, -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    target_emb = clip.encode_images(target).detach() if clip is not None else None
    losses = []
    params = [p for p in g.parameters()]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        for step in range(steps):
            for group in opt.param_groups:  # cosine decay to 10 % of lr
                group["lr"] = lr * (0.55 + 0.45 * torch.cos(torch.tensor(step / max(steps, 1) * 3.14159)).item())
            wp = w.expand(1, g.n_latent, -1)
            img = g.synthesis(g.styles_from_latent(wp), "const")
            loss = F.mse_loss(img, target)
            if target_emb is not None:
                loss = loss + clip_weight * (1 - (clip.encode_images(img) * target_emb).sum(-1)).mean()
            if latent_weight > 0:
                loss = loss + latent_weight * (w - avg).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if callback is not None and callback(step, losses[-1]):
                break
    finally:
        for p, r in zip(params, was):
            p.requires_grad_(r)
    with torch.no_grad():
        wp = w.detach().expand(1, g.n_latent, -1).clone()
        img = g.synthesis(g.styles_from_latent(wp), "const")
    return Inversion(w=wp, image=img, losses=losses, mse=float(F.mse_loss(img, target)))
