"""Projecting an image into a generator: optimisation-based inversion in W or W+.

    python -m gan_adapt invert --ckpt G.safetensors --image photo.png --out runs/invert [--space w+] [--steps 300]

Starts at the generator's average latent (``latent_avg``) and minimises, with Adam and a decaying learning
rate, a pixel MSE plus (when a CLIP is given) a CLIP image-embedding distance, plus a small pull towards the
average latent (II2S-style regularisation that keeps W+ codes in the region the generator knows). Noise is the
generator's stored constant noise, so the result renders the same every time.

A *source-domain* inversion (``source_prompt`` with ``contrast_prompts``) adds a CLIP classification term: the
reconstruction is pushed to be read as the source prompt ("a photo of a face") rather than any of the contrast
prompts (other styles). A generator that can draw the style of a stylised reference (a colour map is a few
StyleSpace numbers away) otherwise reproduces it, and the pair (G_A(w_ref), reference) then shows no style to learn;
with the term, the inversion returns the nearest face *of the source domain*, the role e4e's encoder plays on real
faces (trained on source photos only). In W (one row) the generator has the least room to imitate the style. The result's ``w`` [1, L, D] is
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
           source_prompt: str | None = None, contrast_prompts: list[str] | tuple[str, ...] = (),
           prompt_weight: float = 0.2, logit_scale: float = 100.0,
           callback: Callable[[int, float], bool | None] | None = None) -> Inversion:
    """Project ``target`` ([1, 3, H, W] or [3, H, W] in [-1, 1], resized to the generator's size) into ``g``.

    ``callback(step, loss)`` is called every step; returning True stops early (a UI's cancel button).
    With ``source_prompt`` (and ``clip``), ``prompt_weight`` × the cross-entropy of classifying the reconstruction
    as ``source_prompt`` among ``[source_prompt, *contrast_prompts]`` (cosine logits × ``logit_scale``) is added;
    the CLIP image-embedding term then stays off (it would pull towards the styled reference's embedding).
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
    prompts = None
    if source_prompt is not None:
        if clip is None:
            raise ValueError("a source-domain inversion (source_prompt) needs a CLIP")
        if not contrast_prompts:
            raise ValueError("a source-domain inversion needs contrast_prompts: the styles it must not look like")
        with torch.no_grad():
            prompts = clip.encode_texts([source_prompt, *contrast_prompts]).to(device)
    target_emb = clip.encode_images(target).detach() if clip is not None and prompts is None else None
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
            if prompts is not None:  # read as the source prompt, not as any other style
                logits = logit_scale * clip.encode_images(img) @ prompts.t()
                loss = loss + prompt_weight * F.cross_entropy(logits, torch.zeros(1, dtype=torch.long, device=device))
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
