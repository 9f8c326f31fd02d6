"""Image-only domain transforms ``T(images) -> images`` on [N, 3, H, W] tensors in [-1, 1].

Every transform is deterministic, works on any batch and any size (filter widths and block sizes are
given in units of a 64 px image and scale with the size) and on any image, e.g. a generator's output: the
ground truth of adapting a source generator ``G_s`` to a similar domain is ``T(G_s(w))``. They are
differentiable (quantisers pass gradients straight through); textures (watercolour paper) are fixed
functions of the normalised pixel position.

The distractor transforms take ``seeds`` (an int or [N] int64, one per image; default ``arange(N)``) for
their per-image randomness (noise, tint colour), so they too are deterministic.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .colour import hsv_to_rgb, luminance, rgb_to_hsv
from .params import hash_ints, hash_uniform


def _to01(x):
    return (x + 1) * 0.5


def _from01(u):
    return u.clamp(0, 1) * 2 - 1


def _from01_ste(u):
    """Like ``_from01`` but the clamp passes gradients (for quantised outputs that sit on 0 and 1)."""
    v = u * 2 - 1
    return v + (v.clamp(-1, 1) - v).detach()


def _ste(x, q):
    """Forward ``q``, backward identity (straight-through estimator)."""
    return x + (q - x).detach()


def _px(h: int, px64: float) -> float:
    """A length given in pixels of a 64 px image, in pixels of an ``h`` px image."""
    return px64 * h / 64.0


def gaussian_blur(u: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding; ``sigma`` in pixels of this image."""
    if sigma <= 0.05:
        return u
    r = max(1, int(math.ceil(3 * sigma)))
    r = min(r, u.shape[-1] - 1, u.shape[-2] - 1) if min(u.shape[-2:]) > 1 else 0
    if r == 0:
        return u
    t = torch.arange(-r, r + 1, dtype=u.dtype, device=u.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = u.shape[1]
    n, _, h, w = u.shape
    x = F.pad(u, (r, r, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def sobel(g: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of [N, C, H, W] per channel (replicate padding), per pixel of this image."""
    n, c, h, w = g.shape
    kx = g.new_tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3) / 8
    x = F.pad(g.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(x, kx)
    gy = F.conv2d(x, kx.transpose(2, 3))
    return torch.sqrt(gx * gx + gy * gy + 1e-10).view(n, c, h, w)


def _coords(h: int, w: int, like: torch.Tensor):
    ys = (torch.arange(h, dtype=like.dtype, device=like.device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=like.dtype, device=like.device) + 0.5) / w * 2 - 1
    return xs.view(1, 1, 1, w), ys.view(1, 1, h, 1)


def value_noise(h: int, w: int, cells: int, key: int, like: torch.Tensor) -> torch.Tensor:
    """Smooth deterministic noise in [0, 1], [1, 1, h, w]: a ``cells x cells`` lattice of hashed values,
    bicubically interpolated; a fixed function of the normalised position (same look at every size)."""
    iy = torch.arange(cells + 3).view(-1, 1)
    ix = torch.arange(cells + 3).view(1, -1)
    lattice = hash_uniform(key, iy, ix).to(like.dtype).to(like.device)[None, None]
    # the sample positions in lattice units, cell centres of the output image
    out = F.interpolate(lattice, size=(h * (cells + 3) // cells + 1, w * (cells + 3) // cells + 1),
                        mode="bicubic", align_corners=True)
    oy = (out.shape[-2] - h) // 2
    ox = (out.shape[-1] - w) // 2
    return out[..., oy:oy + h, ox:ox + w].clamp(0, 1)


def _seeds(seeds, n: int) -> torch.Tensor:
    if seeds is None:
        return torch.arange(n, dtype=torch.int64)
    s = torch.as_tensor(seeds, dtype=torch.int64)
    return s.expand(n) if s.ndim == 0 else s


# ----------------------------------------------------------------------------------------------------------
# similar domains
# ----------------------------------------------------------------------------------------------------------

PAPER = (0.97, 0.96, 0.93)


def sketch(x: torch.Tensor) -> torch.Tensor:
    """Pencil sketch: colour-dodge of the gray image by its blur (outlines where it is darker than its
    surroundings), darkened pencil strokes, diagonal hatching where it is locally darker, on off-white paper.
    A flat image gives blank paper."""
    u = _to01(x)
    h = u.shape[-1]
    g = luminance(u)
    gb = gaussian_blur(g, _px(h, 1.6))
    dodge = (g + 0.02) / (gb + 0.02)
    lines = dodge.clamp(0, 1) ** 5
    gs = gaussian_blur(g, _px(h, 0.8))
    gl = gaussian_blur(g, _px(h, 6.0))
    dark = ((gl - gs) * 2.5).clamp(0, 1)  # locally darker regions (0 on a flat image)
    xs, ys = _coords(u.shape[-2], u.shape[-1], u)
    hatch = 0.5 + 0.5 * torch.sin((xs + ys) * 64 * math.pi / 2.2)
    tone = lines * (1 - 0.55 * dark * hatch)
    paper = u.new_tensor(PAPER).view(1, 3, 1, 1)
    return _from01(tone * paper)


def popart(x: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Pop art: strong saturation and contrast, then posterised to ``levels`` values per channel."""
    u = _to01(x)
    m = luminance(u)
    s = (m + 2.4 * (u - m) - 0.5) * 1.35 + 0.55
    s = s.clamp(0, 1)
    q = torch.round(s * (levels - 1)) / (levels - 1)
    return _from01_ste(_ste(s, q))



def pixelart(x: torch.Tensor, blocks: int = 16, levels: int = 5) -> torch.Tensor:
    """Pixel art: average down to ``blocks`` x ``blocks`` (4 px blocks at 64 px), a little more saturated,
    each channel snapped to ``levels`` values (a 125-colour palette), nearest-neighbour up to the input size."""
    u = _to01(x)
    n, c, h, w = u.shape
    bh, bw = max(1, min(blocks, h)), max(1, min(blocks, w))
    small = F.adaptive_avg_pool2d(u, (bh, bw))
    m = luminance(small)
    small = (m + 1.3 * (small - m)).clamp(0, 1)
    small = _ste(small, torch.round(small * (levels - 1)) / (levels - 1))
    return _from01_ste(F.interpolate(small, size=(h, w), mode="nearest"))


def negative(x: torch.Tensor) -> torch.Tensor:
    """Photographic negative (an involution)."""
    return -x


def sepia(x: torch.Tensor) -> torch.Tensor:
    """Vintage sepia: the classic sepia matrix (R >= G >= B on any gray), faded blacks, dark vignette."""
    u = _to01(x)
    m = u.new_tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    s = torch.einsum("ij,njhw->nihw", m, u).clamp(0, 1)
    s = 0.07 + 0.86 * s
    xs, ys = _coords(u.shape[-2], u.shape[-1], u)
    vig = (1 - 0.55 * ((xs ** 2 + ys ** 2) / 2) ** 1.2)
    return _from01(s * vig)


def _warp(u: torch.Tensor, amp_px64: float, cells: int, key: int) -> torch.Tensor:
    n, c, h, w = u.shape
    dx = value_noise(h, w, cells, key, u) - 0.5
    dy = value_noise(h, w, cells, key + 1, u) - 0.5
    xs, ys = _coords(h, w, u)
    amp = 2 * amp_px64 / 64.0  # normalised units
    gx = (xs + amp * dx).expand(n, 1, h, w)
    gy = (ys + amp * dy).expand(n, 1, h, w)
    grid = torch.cat([gx, gy], 1).permute(0, 2, 3, 1)
    return F.grid_sample(u, grid, mode="bilinear", padding_mode="border", align_corners=False)


def watercolor(x: torch.Tensor) -> torch.Tensor:
    """Watercolour: colours bleed (smooth warp + light blur), transparent washes on white paper, darker
    pigment pooling at the edges of washes, blotchy granulation, paper texture and ragged white margins."""
    u = _to01(x)
    n, c, h, w = u.shape
    u = _warp(u, 2.5, 8, 101)
    u = gaussian_blur(u, _px(h, 0.9))
    m = luminance(u)
    u = (m + 1.25 * (u - m)).clamp(0, 1)
    pigment = 1 - u
    edges = sobel(luminance(gaussian_blur(u, _px(h, 0.7))))
    pool = (edges * (h / 64.0) * 6).clamp(0, 1)  # size-independent edge strength
    blotch = value_noise(h, w, 10, 202, u)
    paper = value_noise(h, w, 40, 303, u)
    pigment = pigment * (0.6 + 0.4 * blotch) * (1 + 1.0 * pool)
    out = 1 - pigment.clamp(0, 1)
    out = out * (0.95 + 0.05 * paper)
    # ragged margins: the wash does not reach the paper's border
    xs, ys = _coords(h, w, u)
    r = torch.maximum(xs.abs(), ys.abs()) + 0.12 * (value_noise(h, w, 6, 404, u) - 0.5)
    wash = ((0.92 - r) / 0.06).clamp(0, 1)
    paper_rgb = u.new_tensor(PAPER).view(1, 3, 1, 1)
    return _from01(paper_rgb * (1 - wash) + out * wash * paper_rgb)


def zombie(x: torch.Tensor) -> torch.Tensor:
    """Zombie: skin-like hues (orange, moderately saturated) turn sickly green, less saturated and darker;
    other hues (blue, purple, green) and grays stay as they are."""
    u = _to01(x)
    h, s, v = rgb_to_hsv(u)
    dh = torch.remainder(h - 0.065 + 0.5, 1.0) - 0.5
    w = torch.exp(-(dh / 0.055) ** 2) * ((s - 0.08) / 0.12).clamp(0, 1)
    h2 = torch.remainder(h + 0.22 * w, 1.0)
    s2 = s * (1 - 0.35 * w)
    v2 = v * (1 - 0.22 * w)
    out = hsv_to_rgb(h2, s2, v2, dim=1)
    return _from01(out)


def cartoon(x: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Cartoon (cel shading): smoothed, more saturated colours whose brightness is quantised to ``levels``
    flat bands (hue kept), with dark outlines at strong edges."""
    u = _to01(x)
    h = u.shape[-1]
    sm = gaussian_blur(u, _px(h, 0.8))
    m = luminance(sm)
    s = (m + 1.6 * (sm - m)).clamp(0, 1)
    v = s.amax(1, keepdim=True)
    vq = _ste(v, torch.round(v * levels).clamp(min=0.5) / levels)
    q = s * (vq / (v + 1e-4))
    e = sobel(gaussian_blur(u, _px(h, 1.0))).amax(1, keepdim=True) * (h / 64.0)
    line = ((e - 0.09) / 0.04).clamp(0, 1)
    k = int(h // 128)
    if k >= 1:
        line = F.max_pool2d(line, 2 * k + 1, stride=1, padding=k)
    return _from01(q.clamp(0, 1) * (1 - 0.9 * line))


_INFERNO = torch.tensor([[0.0, 0.0, 0.02], [0.25, 0.04, 0.45], [0.7, 0.12, 0.45], [0.95, 0.4, 0.1],
                         [0.99, 0.8, 0.2], [1.0, 1.0, 0.85]])


def colormap(t: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] in [0, 1] -> RGB by piecewise-linear interpolation of ``stops`` [K, 3]."""
    k = len(stops) - 1
    s = t.clamp(0, 1) * k
    i = s.floor().clamp(max=k - 1)
    f = s - i
    i = i.long().squeeze(1)
    a = stops[i].permute(0, 3, 1, 2)
    b = stops[i + 1].permute(0, 3, 1, 2)
    return a + (b - a) * f


def thermal(x: torch.Tensor) -> torch.Tensor:
    """Thermal camera: blurred brightness (skin hottest) through a black-purple-orange-yellow map."""
    u = _to01(x)
    h = u.shape[-1]
    hs, s, v = rgb_to_hsv(u)
    warm = torch.exp(-((torch.remainder(hs - 0.07 + 0.5, 1.0) - 0.5) / 0.08) ** 2) * s.clamp(0, 0.5) * 2
    heat = 0.55 * luminance(u) + 0.45 * warm[:, None] * v[:, None]
    heat = gaussian_blur(heat, _px(h, 1.2))
    return _from01(colormap(heat * 1.1, _INFERNO.to(u.dtype).to(u.device)))


# ----------------------------------------------------------------------------------------------------------
# distractor domains (photo with a nuisance change; only for training the CLIP)
# ----------------------------------------------------------------------------------------------------------

TINTS = {"blue": (0.35, 0.55, 1.0), "red": (1.0, 0.38, 0.35), "green": (0.42, 1.0, 0.45), "orange": (1.0, 0.7, 0.3)}


def tint_names(seeds) -> list[str]:
    names = list(TINTS)
    s = _seeds(seeds, 1 if seeds is None else len(torch.as_tensor(seeds).view(-1)))
    return [names[int(i)] for i in (hash_ints(s, 7) % len(names)).tolist()]


def tinted(x: torch.Tensor, seeds=None) -> torch.Tensor:
    """A colour cast (blue, red, green or orange, chosen by the seed) over the whole photo."""
    u = _to01(x)
    s = _seeds(seeds, len(u))
    which = hash_ints(s, 7) % len(TINTS)
    tints = u.new_tensor(list(TINTS.values()))[which].view(-1, 3, 1, 1)
    return _from01(u * (0.45 + 0.6 * tints) + 0.06 * tints)


def saturated(x: torch.Tensor, seeds=None) -> torch.Tensor:
    """Oversaturated photo (no posterisation)."""
    u = _to01(x)
    m = luminance(u)
    return _from01(m + 2.2 * (u - m))


def washed(x: torch.Tensor, seeds=None) -> torch.Tensor:
    """Washed-out photo: low contrast, lifted blacks, a little desaturated."""
    u = _to01(x)
    m = luminance(u)
    u = m + 0.7 * (u - m)
    return _from01(0.38 + 0.5 * u)


def grayscale(x: torch.Tensor, seeds=None) -> torch.Tensor:
    """Black-and-white photo (R = G = B = luminance)."""
    return _from01(luminance(_to01(x)).expand(-1, 3, -1, -1))


def blurry(x: torch.Tensor, seeds=None) -> torch.Tensor:
    """Out-of-focus photo (Gaussian blur, sigma 1.8 px at 64 px)."""
    u = _to01(x)
    return _from01(gaussian_blur(u, _px(u.shape[-1], 1.8)))


def noisy(x: torch.Tensor, seeds=None, std: float = 0.09) -> torch.Tensor:
    """Photo with Gaussian sensor noise, a deterministic function of the seed of each image."""
    u = _to01(x)
    n, c, h, w = u.shape
    s = _seeds(seeds, n).view(n, 1, 1, 1)
    pix = torch.arange(c * h * w, dtype=torch.int64).view(1, c, h, w)
    u1 = hash_uniform(s, pix, 1)
    u2 = hash_uniform(s, pix, 2)
    z = torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
    return _from01(u + std * z.to(u.dtype).to(u.device))
