"""Sampling, DDIM inversion and DDIB-style translation for unconditional diffusion models.

- :func:`ddim_sample`: DDIM (η = 0: deterministic) from given initial noise, N steps.
- :func:`ddim_invert`: the deterministic DDIM ODE run forwards (image -> x_T) with ``DDIMInverseScheduler``.
- :func:`translate`: DDIB (Su et al., ICLR 2023): invert with the source model, decode with the adapted one;
  no paired data and no training.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler


def noise_from_seeds(seeds, shape: tuple[int, int, int]) -> torch.Tensor:
    """Initial noise [N, *shape], one ``np.random.RandomState(seed)`` draw per seed (stable across runs)."""
    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(*shape) for s in seeds])).float()


def _schedule_args(scheduler, clip_x0: bool = False) -> dict:
    c = scheduler.config
    return dict(num_train_timesteps=c.num_train_timesteps, beta_start=c.beta_start, beta_end=c.beta_end,
                beta_schedule=c.beta_schedule, trained_betas=c.trained_betas, prediction_type=c.prediction_type,
                clip_sample=clip_x0, clip_sample_range=1.0, set_alpha_to_one=False)


def _ddim(scheduler, steps: int, clip_x0: bool = False) -> DDIMScheduler:
    s = DDIMScheduler(**_schedule_args(scheduler, clip_x0))
    s.set_timesteps(steps)
    return s


@torch.no_grad()
def ddim_sample(unet, scheduler, noise: torch.Tensor, steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, callback=None, clamp: bool = True) -> torch.Tensor:
    """Images in [-1, 1] from ``noise`` [N, C, H, W] in ``steps`` DDIM steps.

    ``clamp`` (default) clips each step's predicted x̂₀ to [-1, 1], as DDPM and DDIM sample pixel-space models: the
    early steps divide ε's error by √ᾱ_t ≈ 0.006, and an unclipped x̂₀ there saturates whole images of a model
    that is not yet perfect. ``clamp=False`` runs the exact ODE (what :func:`ddim_invert` inverts)."""
    device = next(unet.parameters()).device
    sched = _ddim(scheduler, steps, clip_x0=clamp)
    x = noise.to(device)
    for i, t in enumerate(sched.timesteps):
        eps = unet(x, t).sample
        x = sched.step(eps, t, x, eta=eta, generator=generator).prev_sample
        if callback is not None:
            callback(i, len(sched.timesteps))
    return x.clamp(-1, 1) if clamp else x


@torch.no_grad()
def ddim_invert(unet, scheduler, images: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """x_T for ``images`` in [-1, 1] by the deterministic DDIM ODE (the inverse of :func:`ddim_sample`)."""
    device = next(unet.parameters()).device
    inv = DDIMInverseScheduler(**_schedule_args(scheduler))
    inv.set_timesteps(steps)
    x = images.to(device).float()
    for t in inv.timesteps:
        eps = unet(x, t).sample
        x = inv.step(eps, t, x).prev_sample
    return x


@torch.no_grad()
def translate(source_unet, target_unet, scheduler, images: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """DDIB: encode ``images`` with the source model's ODE, decode with the target model's."""
    return ddim_sample(target_unet, scheduler, ddim_invert(source_unet, scheduler, images, steps), steps)
