"""z as a coordinate system of SynthFaces faces: what the bundled generators were distilled on.

The bundled StyleGAN2 generators were trained to draw, for a latent z, the renderer's face whose parameter
uniforms are the normal CDF of the first 32 coordinates of the pixel-normalised z (what the mapping network sees,
so the parameters are recoverable from G's input). So for such a generator the true image of z is known in every
domain rendered from face parameters, the dissimilar ones (cat, robot) included: ``render_from_z(z, "cat")`` is
the ground truth of a cat adaptation's G_t(z).
"""
from __future__ import annotations

import torch

from .domains import render_domain
from .params import PARAM_SPEC, FaceParams, params_from_uniform


def params_from_z(z: torch.Tensor) -> FaceParams:
    """The face parameters z encodes: ndtr of the first ``len(PARAM_SPEC)`` coordinates of PixelNorm(z)."""
    d = len(PARAM_SPEC)
    if z.ndim != 2 or z.shape[1] < d:
        raise ValueError(f"z must be [N, >= {d}] (the SynthFaces parameters are its first {d} coordinates), got "
                         f"{tuple(z.shape)}")
    z = z.detach().cpu().double()
    z = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)  # PixelNorm, as the mapping network's input
    return params_from_uniform(torch.special.ndtr(z[:, :d]).float())


def render_from_z(z: torch.Tensor, domain: str = "photo", size: int = 64) -> torch.Tensor:
    """The renderer's image of the face z encodes, in ``domain`` ([N, 3, size, size] in [-1, 1], on z's device)."""
    return render_domain(params_from_z(z), domain, size=size).to(z.device)
