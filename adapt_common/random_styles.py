"""A procedural space of image styles: random compositions of colour maps, line drawings, textures and local
geometry, for training models that must see *through* a style (or recognise one) without ever seeing the styles
they are judged on.

    from adapt_common.random_styles import random_styles
    styled = random_styles(images, generator=torch.Generator().manual_seed(0))   # [N, 3, H, W] in [-1, 1]

Every image gets its own draw: with probability ``p_identity`` none, otherwise one to ``max_ops`` operations
of different kinds, in random order:

- **colour**: a gradient map of the luminance through 2–4 random colours (duotones, tritones, false colour), a
  random channel-mixing matrix, inversion, gamma, desaturation, posterisation to 2–6 levels;
- **line**: edge strength of the blurred image as random ink on random paper (dark lines on light or light on
  dark), optionally kept over the image;
- **texture**: grain (monochrome or colour), periodic stripes at a random angle and period, smooth value noise;
- **geometry**: pixelation into 2–6 px blocks, ordered (Bayer) thresholding, blur, unsharp masking.

Sizes are in pixels of a 64-px image and scaled to the image's size, so the draw looks the same at any size.
The space is written from these generic kinds, not from the SynthFaces evaluation styles, and nothing in it is
fitted to them; the style encoder (:mod:`gan_adapt.encoder`) trains on it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .synthfaces.colour import luminance
from .synthfaces.transforms import gaussian_blur, sobel, value_noise

_BAYER4 = torch.tensor([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], dtype=torch.float32) / 16


def _rand(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def _colours(gen: torch.Generator, k: int) -> torch.Tensor:
    """k random colours [k, 3] in [0, 1], sorted dark to light by luminance (a gradient map's stops)."""
    c = torch.rand(k, 3, generator=gen)
    lum = c @ torch.tensor([0.299, 0.587, 0.114])
    c = c[lum.argsort()]
    # spread the luminance so the map keeps the image's tones readable
    c[0] *= _rand(gen, 0.0, 0.5)
    c[-1] = 1 - (1 - c[-1]) * _rand(gen, 0.0, 0.5)
    return c


def _gradient_map(u: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
    """Luminance of u [1, 3, H, W] through the colour stops [k, 3], piecewise linear."""
    t = luminance(u).clamp(0, 1)[:, 0]  # [1, H, W]
    k = stops.shape[0]
    pos = t * (k - 1)
    i = pos.floor().clamp(0, k - 2).long()
    f = (pos - i)[..., None]
    out = stops[i] * (1 - f) + stops[i + 1] * f  # [1, H, W, 3]
    return out.permute(0, 3, 1, 2)


def colour_op(u: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    choice = _randint(gen, 0, 5)
    if choice == 0:
        return _gradient_map(u, _colours(gen, _randint(gen, 2, 4)))
    if choice == 1:  # channel mixing: a random matrix near a random permutation
        m = torch.eye(3)[torch.randperm(3, generator=gen)] * _rand(gen, 0.3, 1.0) + _rand(gen, -0.4, 0.6, (3, 3))
        m = m / m.abs().sum(1, keepdim=True).clamp_min(0.5)
        return (torch.einsum("ij,njhw->nihw", m, u) + _rand(gen, -0.2, 0.4, (1, 3, 1, 1))).clamp(0, 1)
    if choice == 2:
        return 1 - u
    if choice == 3:
        return u.clamp(0, 1) ** math.exp(float(_rand(gen, -1.0, 1.0)))
    if choice == 4:  # desaturate, then tint
        gray = luminance(u).expand_as(u)
        return (gray * _rand(gen, 0.5, 1.0, (1, 3, 1, 1)) + _rand(gen, 0.0, 0.3, (1, 3, 1, 1))).clamp(0, 1)
    levels = _randint(gen, 2, 6)
    return (u.clamp(0, 1) * (levels - 1)).round() / (levels - 1)


def line_op(u: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    h = u.shape[-1]
    sigma = float(_rand(gen, 0.5, 1.5)) * h / 64
    e = sobel(gaussian_blur(u, sigma)).amax(1, keepdim=True) * (h / 64.0)
    e = (e * float(_rand(gen, 2.0, 6.0)) - float(_rand(gen, 0.0, 0.3))).clamp(0, 1)
    ink, paper = _colours(gen, 2)
    if torch.rand((), generator=gen) < 0.5:  # light lines on a dark ground
        ink, paper = paper, ink
    drawing = paper.view(1, 3, 1, 1) * (1 - e) + ink.view(1, 3, 1, 1) * e
    if torch.rand((), generator=gen) < 0.3:  # lines over the image
        a = float(_rand(gen, 0.3, 0.8))
        return (u * (1 - e) * a + drawing * (1 - a * (1 - e))).clamp(0, 1)
    return drawing


def texture_op(u: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    _, _, h, w = u.shape
    choice = _randint(gen, 0, 2)
    if choice == 0:  # grain
        shape = (1, 1 if torch.rand((), generator=gen) < 0.5 else 3, h, w)
        return (u + float(_rand(gen, 0.02, 0.15)) * torch.randn(shape, generator=gen)).clamp(0, 1)
    if choice == 1:  # stripes
        period = float(_rand(gen, 2.0, 6.0)) * h / 64
        angle = float(_rand(gen, 0, math.pi))
        ys = torch.arange(h, dtype=u.dtype).view(h, 1)
        xs = torch.arange(w, dtype=u.dtype).view(1, w)
        phase = (math.cos(angle) * xs + math.sin(angle) * ys) / period * 2 * math.pi + float(_rand(gen, 0, 6.3))
        depth = float(_rand(gen, 0.15, 0.6))
        return (u * (1 - depth * (0.5 + 0.5 * torch.sin(phase)))).clamp(0, 1)
    noise = value_noise(h, w, _randint(gen, 6, 24), _randint(gen, 0, 10 ** 6), u)  # [1, 1, H, W] in [0, 1]
    return (u * (1 - float(_rand(gen, 0.1, 0.5)) * noise)).clamp(0, 1)


def geometry_op(u: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    _, _, h, w = u.shape
    choice = _randint(gen, 0, 3)
    if choice == 0:  # pixelation
        block = max(1, round(_randint(gen, 2, 6) * h / 64))
        small = F.avg_pool2d(u, block, ceil_mode=True)
        return F.interpolate(small, scale_factor=block, mode="nearest")[..., :h, :w]
    if choice == 1:  # ordered thresholding of the luminance (or per channel), 1-bit
        cell = max(1, round(_randint(gen, 1, 2) * h / 64))
        pattern = _BAYER4.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        pattern = pattern.repeat(h // pattern.shape[0] + 1, w // pattern.shape[1] + 1)[:h, :w].to(u)
        x = luminance(u) if torch.rand((), generator=gen) < 0.5 else u
        out = (x > pattern).to(u.dtype)
        if out.shape[1] == 1:
            dark, light = _colours(gen, 2)
            out = dark.view(1, 3, 1, 1) * (1 - out) + light.view(1, 3, 1, 1) * out
        return out
    if choice == 2:
        return gaussian_blur(u, float(_rand(gen, 0.5, 2.0)) * h / 64)
    blurred = gaussian_blur(u, float(_rand(gen, 0.7, 2.0)) * h / 64)
    return (u + float(_rand(gen, 0.5, 2.0)) * (u - blurred)).clamp(0, 1)


_OPS = {"colour": colour_op, "line": line_op, "texture": texture_op, "geometry": geometry_op}
KINDS = tuple(_OPS)  # the kinds of operation, in the order the draws index them


def random_style(u: torch.Tensor, gen: torch.Generator, max_ops: int = 3) -> torch.Tensor:
    """One random composition of 1..max_ops operations of different kinds on u [1, 3, H, W] in [0, 1]."""
    n_ops = _randint(gen, 1, max_ops)
    kinds = [KINDS[i] for i in torch.randperm(len(KINDS), generator=gen)[:n_ops].tolist()]
    for kind in kinds:
        u = _OPS[kind](u, gen)
    return u


def random_styles(images: torch.Tensor, generator: torch.Generator | None = None, p_identity: float = 0.1,
                  max_ops: int = 3) -> torch.Tensor:
    """Each image of ``images`` [N, 3, H, W] in [-1, 1] in a random style of its own (or, with probability
    ``p_identity``, unchanged); the same ``generator`` state gives the same styles."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images [N, 3, H, W], got {tuple(images.shape)}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    out = []
    for x in images.detach().cpu().float():
        u = ((x[None] + 1) / 2).clamp(0, 1)
        if torch.rand((), generator=gen) >= p_identity:
            u = random_style(u, gen, max_ops)
        out.append(u * 2 - 1)
    return torch.cat(out).to(images.device, images.dtype)


def paired_random_styles(first: torch.Tensor, second: torch.Tensor, generator: torch.Generator,
                         p_identity: float = 0.1, max_ops: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``first[i]`` and ``second[i]`` (two faces, [N, 3, H, W] each in [-1, 1]) in one and the same random style,
    a draw of its own for each i (with probability ``p_identity``, both unchanged): the examples of an analogy."""
    if first.shape != second.shape:
        raise ValueError(f"paired styles need two batches of one shape, got {tuple(first.shape)} and "
                         f"{tuple(second.shape)}")
    outs: tuple[list, list] = ([], [])
    for pair in zip(first.detach().cpu().float(), second.detach().cpu().float()):
        keep = torch.rand((), generator=generator) < p_identity
        state = generator.get_state()
        for out, x in zip(outs, pair):
            u = ((x[None] + 1) / 2).clamp(0, 1)
            if not keep:
                generator.set_state(state)  # the second face gets the first one's draw
                u = random_style(u, generator, max_ops)
            out.append(u * 2 - 1)
    return tuple(torch.cat(o).to(first.device, first.dtype) for o in outs)
