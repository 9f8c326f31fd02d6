"""Held-out styles: the evaluation protocol's validation and test families.

The nine similar domains of :mod:`.domains` are the *train* family: the bundled CLIP was trained on them and the
project's configs were tuned on them. Judging a one-shot method on them rewards whatever the guide learned about
those very styles. So the protocol adds styles nobody trains or tunes on, each with an exact ground-truth transform
(any image in, its styled version out, as for the similar domains):

- **validation**: for choosing configs, learning rates, step counts and defaults;
- **test**: reported only, never used to choose anything.

Both families span the same kinds of style, unlike the train ones where they can be: colour maps and duotones,
line/edge drawings, texture and grain, local geometry (pixelation, halftone), and blends of two. Every transform is
deterministic (textures are fixed functions of the normalised pixel position, never of the face), works at any size
(lengths are given in pixels of a 64 px image) and on any image; most are differentiable almost everywhere.

    from adapt_common import synthfaces as sf
    sf.styles_of_family("test")            # ['duotone', 'cyanotype', ...]
    y = sf.apply_domain(G(w), "halftone")   # ground truth T(G_s(w)), as for any similar domain
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .colour import luminance
from .domains import Domain
from .transforms import (PAPER, _coords, _from01, _from01_ste, _px, _ste, _to01, colormap, gaussian_blur, sobel,
                         value_noise)

FAMILIES = ("train", "validation", "test")
#: The kinds of style both held-out families span.
STYLE_KINDS = ("colour map", "line drawing", "texture", "local geometry", "blend")


def _stops(*rgb) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32)


def _map(x: torch.Tensor, stops: torch.Tensor, lo: float = 0.08, hi: float = 0.92) -> torch.Tensor:
    """Luminance, stretched so that [lo, hi] spans the map, through the colour stops; in [0, 1]."""
    u = _to01(x)
    t = ((luminance(u) - lo) / (hi - lo)).clamp(0, 1)
    return colormap(t, stops.to(u.dtype).to(u.device))


def _edges(u: torch.Tensor, sigma_px64: float = 0.8) -> torch.Tensor:
    """Edge strength [N, 1, H, W] per 64-px pixel (the same look at any size), of the smoothed image."""
    h = u.shape[-1]
    return sobel(gaussian_blur(u, _px(h, sigma_px64))).amax(1, keepdim=True) * (h / 64.0)


def _halftone_ink(g: torch.Tensor, cell_px64: float = 3.0, angle_deg: float = 45.0) -> torch.Tensor:
    """Ink coverage [N, 1, H, W] of round halftone dots on a rotated grid: a dot's area follows the darkness of
    the (blurred, contrast-stretched) gray image ``g`` in [0, 1] under it; 1 px antialiasing."""
    n, _, h, w = g.shape
    cell = _px(h, cell_px64)  # in pixels of this image
    dark = ((0.9 - gaussian_blur(g, cell / 3)) / 0.75).clamp(0, 1) ** 1.5
    ys = torch.arange(h, dtype=g.dtype, device=g.device).view(1, 1, h, 1) + 0.5
    xs = torch.arange(w, dtype=g.dtype, device=g.device).view(1, 1, 1, w) + 0.5
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    a, b = (c * xs + s * ys) / cell, (-s * xs + c * ys) / cell
    dist = torch.sqrt((a - a.floor() - 0.5) ** 2 + (b - b.floor() - 0.5) ** 2) * cell  # pixels to the dot centre
    radius = cell * math.sqrt(1 / math.pi) * dark.sqrt() * 1.15  # area ~ darkness (touching at full ink)
    return (radius - dist + 0.5).clamp(0, 1)


# -- validation styles ---------------------------------------------------------------------------------------------


def tritone(x: torch.Tensor) -> torch.Tensor:
    """Tritone print: brightness through plum, magenta and pale yellow."""
    return _from01(_map(x, _stops((0.18, 0.04, 0.26), (0.86, 0.22, 0.52), (1.0, 0.96, 0.62))))


def chalkboard(x: torch.Tensor) -> torch.Tensor:
    """Chalk drawing: chalky white outlines (edges of the image) on a dark green board, with chalk texture."""
    u = _to01(x)
    h, w = u.shape[-2:]
    e = ((_edges(u) - 0.05) / 0.12).clamp(0, 1)
    dust = value_noise(h, w, 28, 511, u)
    chalk = e * (0.65 + 0.35 * dust) + 0.06 * luminance(u)
    board = u.new_tensor((0.11, 0.21, 0.15)).view(1, 3, 1, 1)
    white = u.new_tensor((0.93, 0.95, 0.9)).view(1, 3, 1, 1)
    return _from01(board + (white - board) * chalk.clamp(0, 1))


def scanlines(x: torch.Tensor) -> torch.Tensor:
    """CRT screen: a green-amber phosphor glow, every other 64-px row dark, slight horizontal bleed."""
    u = _to01(x)
    h, w = u.shape[-2:]
    glow = gaussian_blur(u, _px(h, 0.6))
    m = luminance(glow)
    tinted = (0.55 * glow + 0.45 * m * u.new_tensor((0.55, 1.0, 0.6)).view(1, 3, 1, 1)) * 1.1
    _, ys = _coords(h, w, u)
    row = ((ys + 1) / 2 * 64) % 2  # position within a pair of 64-px rows
    dark = 0.55 + 0.45 * (row < 1).to(u.dtype)
    return _from01(tinted * dark)


_BAYER4 = torch.tensor([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], dtype=torch.float32)


def dither(x: torch.Tensor) -> torch.Tensor:
    """1-bit ordered dither: black and white pixels by a 4x4 Bayer threshold matrix on 64-px pixels."""
    u = _to01(x)
    h, w = u.shape[-2:]
    g = luminance(u)
    iy = (torch.arange(h) * 64 // h) % 4
    ix = (torch.arange(w) * 64 // w) % 4
    thr = ((_BAYER4[iy][:, ix] + 0.5) / 16).to(u.dtype).to(u.device)[None, None]
    bw = _ste(g, (g > thr).to(u.dtype))
    return _from01_ste(bw.expand(-1, 3, -1, -1))


def retro_monitor(x: torch.Tensor) -> torch.Tensor:
    """Blend: the tritone colour map shown on the CRT screen."""
    return scanlines(tritone(x))


# -- test styles ---------------------------------------------------------------------------------------------------


def duotone(x: torch.Tensor) -> torch.Tensor:
    """Duotone print: brightness through deep navy to warm orange."""
    return _from01(_map(x, _stops((0.07, 0.09, 0.3), (0.98, 0.58, 0.22))))


def cyanotype(x: torch.Tensor) -> torch.Tensor:
    """Cyanotype: Prussian blue shadows to paper white highlights, slightly soft."""
    u = _to01(x)
    soft = _from01(gaussian_blur(u, _px(u.shape[-1], 0.5)))
    return _from01(_map(soft, _stops((0.03, 0.12, 0.33), (0.12, 0.36, 0.62), (0.88, 0.93, 0.95))))


def ink(x: torch.Tensor) -> torch.Tensor:
    """Ink drawing: solid black lines where the image has a dark-side edge (difference of Gaussians) and solid
    black in its darkest areas, on cream paper; no hatching, no gray."""
    u = _to01(x)
    h = u.shape[-1]
    g = luminance(u)
    dog = gaussian_blur(g, _px(h, 0.7)) - gaussian_blur(g, _px(h, 2.0))
    line = ((-dog - 0.012) / 0.025).clamp(0, 1)
    fill = ((0.16 - g) / 0.06).clamp(0, 1)
    inked = torch.maximum(line, fill)
    paper = u.new_tensor((0.98, 0.95, 0.86)).view(1, 3, 1, 1)
    return _from01(paper * (1 - inked))


def emboss(x: torch.Tensor) -> torch.Tensor:
    """Embossed metal relief: the image's brightness as a height field lit from the upper left, warm gray."""
    u = _to01(x)
    h = u.shape[-1]
    g = gaussian_blur(luminance(u), _px(h, 0.7))
    k = g.new_tensor([[-1.0, -1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]).view(1, 1, 3, 3) / 3
    relief = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k) * (h / 64.0)
    v = (0.55 - 2.2 * relief).clamp(0, 1)
    return _from01(v * u.new_tensor((1.0, 0.95, 0.86)).view(1, 3, 1, 1))


def film_grain(x: torch.Tensor) -> torch.Tensor:
    """Grainy film: faded, desaturated, contrasty, under a coarse fixed grain (about 2 px clumps at 64 px)."""
    u = _to01(x)
    h, w = u.shape[-2:]
    m = luminance(u)
    v = m + 0.35 * (u - m)
    v = ((v - 0.5) * 1.3 + 0.5).clamp(0, 1)
    grain = value_noise(h, w, 32, 617, u) - 0.5
    return _from01(0.04 + 0.9 * v + 0.38 * grain)


def canvas(x: torch.Tensor) -> torch.Tensor:
    """Oil on canvas: smoothed, richer colours with a woven canvas texture (1.5 px threads at 64 px)."""
    u = _to01(x)
    h, w = u.shape[-2:]
    sm = gaussian_blur(u, _px(h, 1.0))
    m = luminance(sm)
    s = (m + 1.35 * (sm - m)).clamp(0, 1)
    xs, ys = _coords(h, w, u)
    weave = 0.5 + 0.25 * (torch.sin(xs * 64 * math.pi / 1.5) + torch.sin(ys * 64 * math.pi / 1.5))
    return _from01(s * (0.8 + 0.25 * weave) + 0.03)


def halftone(x: torch.Tensor) -> torch.Tensor:
    """Halftone print: black ink dots on a 45-degree grid (3 px cells at 64 px), dot area by darkness."""
    u = _to01(x)
    ink_ = _halftone_ink(luminance(u))
    paper = u.new_tensor(PAPER).view(1, 3, 1, 1)
    return _from01(paper * (1 - ink_) + 0.08 * ink_)


def mosaic(x: torch.Tensor) -> torch.Tensor:
    """Tile mosaic: 8 x 8 tiles of the average colour (8 px at 64 px), each a little lighter or darker by a
    fixed pattern, separated by gray grout lines."""
    u = _to01(x)
    n, c, h, w = u.shape
    tiles = F.interpolate(F.adaptive_avg_pool2d(u, (8, 8)), size=(h, w), mode="nearest")
    jitter = F.interpolate(value_noise(8, 8, 8, 733, u), size=(h, w), mode="nearest") - 0.5
    tiles = tiles * (1 + 0.25 * jitter)
    xs, ys = _coords(h, w, u)
    fx, fy = ((xs + 1) / 2 * 8) % 1, ((ys + 1) / 2 * 8) % 1  # position inside a tile
    grout = ((fx < 1 / 16) | (fy < 1 / 16)).to(u.dtype)  # 0.5 px of each 8 px tile, at 64 px
    return _from01(tiles * (1 - grout) + 0.55 * grout)


def neon(x: torch.Tensor) -> torch.Tensor:
    """Blend of a line drawing and a colour map: the image's edges glow on black, coloured magenta to cyan by
    the brightness under them."""
    u = _to01(x)
    h = u.shape[-1]
    e = ((_edges(u) - 0.04) / 0.1).clamp(0, 1)
    glow = (e + 1.5 * gaussian_blur(e, _px(h, 1.5))).clamp(0, 1)
    colour = _map(x, _stops((1.0, 0.15, 0.75), (0.2, 0.95, 1.0)))
    return _from01(colour * glow)


def duotone_halftone(x: torch.Tensor) -> torch.Tensor:
    """Blend of a duotone and a halftone: navy dots on warm orange paper."""
    u = _to01(x)
    ink_ = _halftone_ink(luminance(u), angle_deg=15.0)
    paper = u.new_tensor((0.99, 0.7, 0.4)).view(1, 3, 1, 1)
    navy = u.new_tensor((0.08, 0.1, 0.33)).view(1, 3, 1, 1)
    return _from01(paper * (1 - ink_) + navy * ink_)


# -- the registry --------------------------------------------------------------------------------------------------


def _style(name, family, kind, description, phrases, transform) -> tuple[Domain, str, str]:
    return Domain(name, "similar", description, phrases, transform), family, kind


_S = [
    # validation
    _style("tritone", "validation", "colour map", "tritone print: plum, magenta, pale yellow",
           ("a tritone print of {}", "a three color print of {}"), tritone),
    _style("chalkboard", "validation", "line drawing", "chalk outlines on a dark green board",
           ("a chalk drawing of {}", "a chalkboard drawing of {}"), chalkboard),
    _style("scanlines", "validation", "texture", "CRT screen: phosphor tint, dark scanlines",
           ("a crt screen image of {}", "a retro monitor picture of {}"), scanlines),
    _style("dither", "validation", "local geometry", "1-bit ordered (Bayer 4x4) dither",
           ("a 1-bit dithered image of {}", "a dithered black and white image of {}"), dither),
    _style("retro_monitor", "validation", "blend", "tritone shown on a CRT screen",
           ("a tritone crt screen image of {}",), retro_monitor),
    # test
    _style("duotone", "test", "colour map", "duotone print: navy to orange",
           ("a duotone print of {}", "a two color print of {}"), duotone),
    _style("cyanotype", "test", "colour map", "cyanotype: Prussian blue to paper white",
           ("a cyanotype of {}", "a blueprint photo of {}"), cyanotype),
    _style("ink", "test", "line drawing", "black ink lines and fills on cream paper",
           ("an ink drawing of {}", "a pen and ink drawing of {}"), ink),
    _style("emboss", "test", "line drawing", "embossed metal relief lit from the upper left",
           ("an embossed relief of {}", "a metal relief of {}"), emboss),
    _style("film_grain", "test", "texture", "faded desaturated film with coarse grain",
           ("a grainy film photo of {}", "an old film still of {}"), film_grain),
    _style("canvas", "test", "texture", "oil on canvas: smooth rich colour, woven threads",
           ("an oil painting on canvas of {}", "a canvas painting of {}"), canvas),
    _style("halftone", "test", "local geometry", "black halftone dots, 45-degree grid",
           ("a halftone print of {}", "a newspaper halftone of {}"), halftone),
    _style("mosaic", "test", "local geometry", "8 x 8 tile mosaic with grout lines",
           ("a tile mosaic of {}", "a mosaic of {}"), mosaic),
    _style("neon", "test", "blend", "line drawing x colour map: glowing magenta-cyan edges on black",
           ("a neon glow drawing of {}", "a neon sign of {}"), neon),
    _style("duotone_halftone", "test", "blend", "duotone x halftone: navy dots on orange paper",
           ("a duotone halftone print of {}",), duotone_halftone),
]

#: The held-out styles by name (validation and test families), each a similar-kind :class:`Domain`.
HELDOUT_STYLES: dict[str, Domain] = {d.name: d for d, _, _ in _S}
#: name -> family ("validation" / "test"); the nine similar domains of ``DOMAINS`` are "train".
STYLE_FAMILY: dict[str, str] = {d.name: f for d, f, _ in _S}
#: name -> kind of style (one of STYLE_KINDS).
STYLE_KIND: dict[str, str] = {d.name: k for d, _, k in _S}


def styles_of_family(family: str) -> list[str]:
    """The style names of one family: "train" (the similar domains every CLIP and config may use), "validation"
    (for choosing configs) or "test" (reported only)."""
    from .domains import domains_of_kind
    if family not in FAMILIES:
        raise ValueError(f"unknown style family {family!r}; one of {FAMILIES}")
    if family == "train":
        return domains_of_kind("similar")
    return [n for n, f in STYLE_FAMILY.items() if f == family]


def expand_families(names) -> list[str]:
    """Style names with each family name among them (train, validation, test) replaced by its styles, in order:
    what a config's list of report styles means."""
    return [style for name in names for style in (styles_of_family(name) if name in FAMILIES else [name])]


def family_of(name: str) -> str:
    """The family of a style name (train for the similar domains)."""
    from .domains import DOMAINS
    if name in STYLE_FAMILY:
        return STYLE_FAMILY[name]
    if name in DOMAINS and DOMAINS[name].kind == "similar":
        return "train"
    raise KeyError(f"{name!r} is not a style (the similar domains and the held-out styles are)")
