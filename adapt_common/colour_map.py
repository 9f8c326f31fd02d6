"""The colour-map baseline of one-shot tables: one global map from source colours to target colours.

A style that is mostly a recolouring (sepia, duotone, a thermal map) is reproduced by a function of each pixel's
RGB alone. Fitting such a function by least squares on one (source image, styled image) pair is what a one-shot
method must beat to show that it learned more than a palette: a polynomial in (r, g, b) of a small degree
(degree 3: 20 coefficients per output channel), fitted with a little ridge regularisation towards the identity, applied to any image.

    cmap = ColourMap.fit(source_image, reference_image)      # [1, 3, H, W] each, in [-1, 1]
    styled = cmap(G(w))                                       # any images, [-1, 1]

Two fits bracket a method in the one-shot tables: on what a user has (the reference and its inversion into the
source generator) and, privileged, on the reference and its true source image (SynthFaces knows it).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


def _monomials(degree: int) -> list[tuple[int, int, int]]:
    """Exponents (i, j, k) of r^i g^j b^k with i + j + k <= degree, constant first."""
    return [e for d in range(degree + 1) for e in itertools.product(range(d + 1), repeat=3) if sum(e) == d]


def _features(images: torch.Tensor, exps: list[tuple[int, int, int]]) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> [N * H * W, len(exps)] monomials of the 0..1 colours (float64)."""
    u = ((images.detach().double().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).reshape(-1, 3)
    r, g, b = u.unbind(1)
    return torch.stack([r ** i * g ** j * b ** k for i, j, k in exps], 1)


@dataclass
class ColourMap:
    """A polynomial map of (r, g, b); ``coef`` [n_monomials, 3] on the 0..1 scale."""
    degree: int
    coef: torch.Tensor

    @classmethod
    def identity(cls, degree: int = 3) -> "ColourMap":
        """The map that leaves every colour as it is."""
        exps = _monomials(degree)
        coef = torch.zeros(len(exps), 3, dtype=torch.float64)
        for c, e in enumerate(((1, 0, 0), (0, 1, 0), (0, 0, 1))):
            if e in exps:
                coef[exps.index(e), c] = 1
        return cls(degree=degree, coef=coef)

    @classmethod
    def fit(cls, source: torch.Tensor, target: torch.Tensor, degree: int = 3, ridge: float = 1e-4) -> "ColourMap":
        """Least squares from the pixels of ``source`` to the same pixels of ``target`` (same shape, [-1, 1])."""
        if source.shape != target.shape or source.ndim != 4 or source.shape[1] != 3:
            raise ValueError(f"source and target must be RGB batches of one shape, got {tuple(source.shape)} and "
                             f"{tuple(target.shape)}")
        if not 0 <= degree <= 6:
            raise ValueError(f"degree must be 0..6, got {degree}")
        exps = _monomials(degree)
        x = _features(source, exps)
        y = ((target.detach().double().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).reshape(-1, 3)
        # The ridge pulls towards the identity map, not towards zero: colours the pair does not show (one image has
        # few) keep their value instead of collapsing. It is scaled by the pixel count (the same at any size).
        ident = cls.identity(degree).coef
        reg = torch.eye(len(exps), dtype=torch.float64) * ridge * x.shape[0]
        delta = torch.linalg.solve(x.T @ x + reg, x.T @ (y - x @ ident))
        return cls(degree=degree, coef=ident + delta)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        y = _features(images, _monomials(self.degree)) @ self.coef
        out = y.reshape(n, h, w, 3).permute(0, 3, 1, 2).clamp(0, 1) * 2 - 1
        return out.to(images.dtype).to(images.device)
