"""The SynthFaces renderers: vectorised torch, signed-distance shapes with soft (antialiased) coverage,
composited back to front at ``supersample`` x the output size and area-downsampled.

Three renderers draw the same :class:`FaceParams` (so every face has a counterpart in each):

- ``photo``: a shaded portrait (the source domain);
- ``cat``: a cat face with the same pose, fur from the hair colour, slit pupils in the iris colour;
- ``robot``: a metal head with LED eyes, a grille mouth and a top piece chosen by the hair style.

Geometry: the image is ``[-1, 1]^2`` (y down). The head centre sits at ``(shift_x, shift_y - 0.06)``; the
face frame is rotated by ``tilt`` about it and divided by ``scale``; the body frame (shoulders) is only
shifted and scaled. The head semi-axes are ``A = 0.44 * head_width`` and ``B = 0.54 * head_height``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .colour import hsv_to_rgb
from .params import FaceParams, deg2rad

RENDERERS = ("photo", "cat", "robot")
HEAD_Y = -0.06

# colours (RGB in [0, 1])
HAIR_RGB = torch.tensor([
    [0.09, 0.075, 0.07],   # black
    [0.38, 0.22, 0.11],    # brown
    [0.95, 0.80, 0.42],    # blond
    [0.80, 0.30, 0.10],    # red
    [0.80, 0.80, 0.82],    # grey
    [0.14, 0.36, 0.90],    # blue
])
FUR_RGB = torch.tensor([
    [0.12, 0.11, 0.115],   # black cat
    [0.48, 0.32, 0.18],    # brown tabby
    [0.96, 0.84, 0.60],    # cream
    [0.93, 0.52, 0.18],    # ginger
    [0.62, 0.62, 0.64],    # grey
    [0.44, 0.52, 0.66],    # "blue" (blue-grey)
])
PAINT_RGB = torch.tensor([  # robot accent paint
    [0.20, 0.20, 0.23],
    [0.60, 0.38, 0.20],
    [0.95, 0.80, 0.25],
    [0.85, 0.18, 0.12],
    [0.85, 0.85, 0.88],
    [0.15, 0.40, 0.95],
])
IRIS_RGB = torch.tensor([
    [0.42, 0.24, 0.10],    # brown
    [0.25, 0.55, 0.95],    # blue
    [0.22, 0.65, 0.25],    # green
])
CAT_IRIS_RGB = torch.tensor([[0.90, 0.62, 0.08], [0.35, 0.65, 1.0], [0.45, 0.85, 0.20]])
LED_RGB = torch.tensor([[1.0, 0.55, 0.10], [0.25, 0.85, 1.0], [0.30, 1.0, 0.35]])
SKIN_RAMP = torch.tensor([
    [0.99, 0.87, 0.77],
    [0.92, 0.72, 0.57],
    [0.70, 0.48, 0.32],
    [0.40, 0.26, 0.17],
])
GOLD = (0.98, 0.78, 0.22)
FRAME = (0.08, 0.07, 0.07)


# ----------------------------------------------------------------------------------------------------------
# Signed distances (negative inside) and compositing
# ----------------------------------------------------------------------------------------------------------

def sd_circle(x, y, r):
    return torch.sqrt(x * x + y * y + 1e-12) - r


def sd_ellipse(x, y, a, b):
    """Approximate signed distance to an axis-aligned ellipse (good near the boundary)."""
    k0 = torch.sqrt((x / a) ** 2 + (y / b) ** 2 + 1e-12)
    k1 = torch.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2 + 1e-12)
    return k0 * (k0 - 1.0) / k1


def sd_box(x, y, hw, hh, r=0.0):
    qx = x.abs() - (hw - r)
    qy = y.abs() - (hh - r)
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2 + 1e-12)
    return outside + torch.clamp(torch.maximum(qx, qy), max=0.0) - r


def sd_segment(x, y, ax, ay, bx, by, r):
    pax, pay = x - ax, y - ay
    bax, bay = bx - ax, by - ay
    h = ((pax * bax + pay * bay) / (bax * bax + bay * bay + 1e-12)).clamp(0, 1)
    return torch.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2 + 1e-12) - r


def sd_parabola_stroke(x, y, yc, w, c, r):
    """Stroke of radius ``r`` along y = yc - c * ((x/w)^2 - 1/3) for |x| <= w (a curve whose ends rise
    by c*2/3 and whose middle drops by c/3: c > 0 is a smile in y-down coordinates)."""
    xc = torch.maximum(torch.minimum(x, w), -w)
    f = yc - c * ((xc / w) ** 2 - 1.0 / 3.0)
    df = -2.0 * c * xc / (w * w)
    dy = (y - f) / torch.sqrt(1.0 + df * df)
    return torch.sqrt((x - xc) ** 2 + dy * dy + 1e-12) - r


def sd_triangle(x, y, p0, p1, p2):
    """Signed distance to a triangle with vertices given as (x, y) tuples of broadcastable tensors."""
    (x0, y0), (x1, y1), (x2, y2) = p0, p1, p2
    e0x, e0y = x1 - x0, y1 - y0
    e1x, e1y = x2 - x1, y2 - y1
    e2x, e2y = x0 - x2, y0 - y2
    v0x, v0y = x - x0, y - y0
    v1x, v1y = x - x1, y - y1
    v2x, v2y = x - x2, y - y2

    def pq(vx, vy, ex, ey):
        h = ((vx * ex + vy * ey) / (ex * ex + ey * ey)).clamp(0, 1)
        return vx - ex * h, vy - ey * h

    q0 = pq(v0x, v0y, e0x, e0y)
    q1 = pq(v1x, v1y, e1x, e1y)
    q2 = pq(v2x, v2y, e2x, e2y)
    s = torch.sign(torch.as_tensor(e0x * e2y - e0y * e2x))
    d = torch.minimum(torch.minimum(q0[0] ** 2 + q0[1] ** 2, q1[0] ** 2 + q1[1] ** 2), q2[0] ** 2 + q2[1] ** 2)
    c0 = s * (v0x * e0y - v0y * e0x)
    c1 = s * (v1x * e1y - v1y * e1x)
    c2 = s * (v2x * e2y - v2y * e2x)
    inside = torch.minimum(torch.minimum(c0, c1), c2)
    return -torch.sqrt(d + 1e-12) * torch.sign(inside)


def union(*ds):
    out = ds[0]
    for d in ds[1:]:
        out = torch.minimum(out, d)
    return out


def intersect(*ds):
    out = ds[0]
    for d in ds[1:]:
        out = torch.maximum(out, d)
    return out


def smooth_union(a, b, k):
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return torch.lerp(b, a, h) - k * h * (1 - h)


def _col(c, n):
    """A colour as [N, 3, 1, 1]: from a tuple, an [N, 3] or an [N, 3, H, W] tensor."""
    if isinstance(c, (tuple, list)):
        return torch.tensor(c, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, 1, 1)
    if c.ndim == 1:
        return c.view(1, 3, 1, 1).expand(n, 3, 1, 1)
    if c.ndim == 2:
        return c[:, :, None, None]
    return c


class _Canvas:
    """Per-chunk drawing state: face-frame and body-frame coordinates ([n, h, w]), per-face parameters
    (``v``/``k`` give them as [n, 1, 1]) and the image being composited (owned by the root canvas).

    ``subset(faces)`` and ``crop(box)`` return canvases over some of the faces or a rectangle of pixels;
    drawing on them writes into the root image. Features that only some faces have, or that cover a small
    part of the image, are drawn on such canvases, which is most of the renderer's speed."""

    def __init__(self, p: FaceParams, res: int):
        self.p, self.n, self.res = p, len(p), res
        self.root, self.idx, self.r0, self.r1, self.c0, self.c1 = self, None, 0, res, 0, res
        c = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1
        self.X = c.view(1, 1, res)
        self.Y = c.view(1, res, 1)
        s = self.v("scale")
        th = deg2rad(self.v("tilt"))
        self.cos, self.sin = torch.cos(th), torch.sin(th)
        self.cx, self.cy = self.v("shift_x"), self.v("shift_y") + HEAD_Y
        dx = (self.X - self.cx) / s
        dy = (self.Y - self.cy) / s
        self.fx = dx * self.cos + dy * self.sin
        self.fy = -dx * self.sin + dy * self.cos
        self.bx, self.by = dx.expand(self.n, res, res), dy.expand(self.n, res, res)
        self.aa = (2.0 / res) / s  # one render pixel in face units, [N, 1, 1]
        self.A = 0.44 * self.v("head_width")
        self.B = 0.54 * self.v("head_height")
        self.img = torch.zeros(self.n, 3, res, res)

    def _derive(self, **kw) -> "_Canvas":
        c = object.__new__(_Canvas)
        c.__dict__.update(self.__dict__)
        c.__dict__.update(kw)
        return c

    def subset(self, faces: torch.Tensor) -> "_Canvas | None":
        """The faces where ``faces`` ([n] bool) is true; None when there are none."""
        faces = faces.view(-1)
        if bool(faces.all()):
            return self
        i = faces.nonzero().flatten()
        if len(i) == 0:
            return None
        root_idx = i if self.idx is None else self.idx[i]
        return self._derive(p=self.p[i], n=len(i), idx=root_idx, fx=self.fx[i], fy=self.fy[i], bx=self.bx[i],
                            by=self.by[i], aa=self.aa[i], A=self.A[i], B=self.B[i], cos=self.cos[i],
                            sin=self.sin[i], cx=self.cx[i], cy=self.cy[i])

    def crop(self, x0: float, x1: float, y0: float, y1: float) -> "_Canvas":
        """The pixels covering the face-frame box [x0, x1] x [y0, y1] (in units of the unscaled face) for
        every face of this canvas (the union over faces, plus a margin)."""
        xs = torch.tensor([x0, x1, x0, x1]).view(1, 4)
        ys = torch.tensor([y0, y0, y1, y1]).view(1, 4)
        s = self.v("scale").view(-1, 1)
        cos, sin = self.cos.view(-1, 1), self.sin.view(-1, 1)
        u = self.cx.view(-1, 1) + s * (xs * cos - ys * sin)
        v = self.cy.view(-1, 1) + s * (xs * sin + ys * cos)
        res = self.res
        c0 = int(math.floor(((u.min().item() + 1) / 2) * res)) - 2
        c1 = int(math.ceil(((u.max().item() + 1) / 2) * res)) + 2
        r0 = int(math.floor(((v.min().item() + 1) / 2) * res)) - 2
        r1 = int(math.ceil(((v.max().item() + 1) / 2) * res)) + 2
        r0, r1 = max(r0, self.r0), min(r1, self.r1)
        c0, c1 = max(c0, self.c0), min(c1, self.c1)
        if r1 <= r0:  # nothing of the box is on this canvas: keep one row/column so shapes stay valid
            r0 = min(max(r0, self.r0), self.r1 - 1)
            r1 = r0 + 1
        if c1 <= c0:
            c0 = min(max(c0, self.c0), self.c1 - 1)
            c1 = c0 + 1
        a, b = r0 - self.r0, r1 - self.r0
        e, f = c0 - self.c0, c1 - self.c0
        return self._derive(r0=r0, r1=r1, c0=c0, c1=c1, fx=self.fx[:, a:b, e:f], fy=self.fy[:, a:b, e:f],
                            bx=self.bx[:, a:b, e:f], by=self.by[:, a:b, e:f])

    def v(self, name: str) -> torch.Tensor:
        return getattr(self.p, name).float().view(-1, 1, 1)

    def k(self, name: str) -> torch.Tensor:
        return getattr(self.p, name).view(-1, 1, 1)

    def cov(self, d: torch.Tensor, soft: float = 1.0) -> torch.Tensor:
        return (0.5 - d / (self.aa * soft)).clamp(0, 1)

    def over(self, mask: torch.Tensor, colour, alpha: float = 1.0):
        """Composite ``colour`` ([n, 3], a tuple, or [n, 3, h, w]) with coverage ``mask`` [n, h, w]."""
        w = (mask * alpha if alpha != 1.0 else mask)[:, None]
        col = _col(colour, self.n)
        img = self.root.img
        if self.idx is None:
            img[:, :, self.r0:self.r1, self.c0:self.c1].lerp_(col, w)
        else:
            region = img[self.idx, :, self.r0:self.r1, self.c0:self.c1]
            img[self.idx, :, self.r0:self.r1, self.c0:self.c1] = region.lerp_(col, w)

    def shade(self, rgb: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """[n, 3] colour times an [n, h, w] brightness field -> [n, 3, h, w]."""
        return rgb[:, :, None, None] * factor[:, None]


# ----------------------------------------------------------------------------------------------------------
# Shared layers
# ----------------------------------------------------------------------------------------------------------

def sq(x):
    return x * x


def skin_colour(tone: torch.Tensor) -> torch.Tensor:
    t = tone.clamp(0, 1) * (len(SKIN_RAMP) - 1)
    i = t.floor().long().clamp(max=len(SKIN_RAMP) - 2)
    f = (t - i)[:, None]
    return SKIN_RAMP[i] * (1 - f) + SKIN_RAMP[i + 1] * f


def hair_colour(p: FaceParams) -> torch.Tensor:
    return (HAIR_RGB[p.hair_colour] * p.hair_shade[:, None]).clamp(0, 1)


def _background(cv: _Canvas):
    p = cv.p
    top = hsv_to_rgb(p.bg_hue, p.bg_sat, p.bg_value)
    g = cv.v("bg_gradient") * cv.Y  # [N, H, 1]: brightness offset from top to bottom
    cv.img.copy_((top[:, :, None, None] * (1 + g[:, None])).clamp(0, 1).expand(cv.n, 3, cv.res, cv.res))


def _eye_centres(cv: _Canvas, spacing=0.165, y=-0.02):
    ex = spacing * cv.v("eye_spacing") * (0.5 + 0.5 * cv.v("head_width"))
    return ex, torch.full_like(ex, y)


def _glasses(cv: _Canvas, spacing=0.165, ey=-0.02, lens=1.0, temples=True):
    """Round / square rims or sunglasses, centred on the eyes (face frame), with bridge and temples."""
    for kind in (1, 2, 3):
        c = cv.subset(cv.p.glasses == kind)
        if c is None:
            continue
        c = c.crop(-0.6, 0.6, -0.2, 0.14)
        ex, _ = _eye_centres(c, spacing, ey)
        fx, fy = c.fx, c.fy
        ax = fx.abs()  # both lenses at once (mirror symmetric)
        lx, ly = ax - ex, fy - ey
        if kind == 1:
            half_w = 0.105 * lens
            d_lens = sd_circle(lx, ly, half_w)
        elif kind == 2:
            half_w = 0.118 * lens
            d_lens = sd_box(lx, ly, half_w, 0.085 * lens, 0.025)
        else:
            half_w = 0.125 * lens
            d_lens = sd_box(lx, ly - 0.01, half_w, 0.085 * lens, 0.05)
        rim = union(d_lens.abs() - 0.013, sd_segment(ax, fy, 0.0, ey - 0.02, ex - half_w, ey - 0.02, 0.011))
        if temples:
            rim = union(rim, sd_segment(ax, fy, ex + half_w, ey - 0.015, c.A * 1.0, ey - 0.03, 0.009))
        lens_m = c.cov(d_lens)
        if kind == 3:  # dark lenses with a highlight streak
            streak = c.cov(sd_segment(lx, ly, -0.06 * lens, -0.01, -0.02 * lens, -0.05, 0.012))
            c.over(lens_m, (0.05, 0.05, 0.08), 0.96)
            c.over(lens_m * streak, (0.55, 0.6, 0.7), 0.8)
        else:  # clear lenses: a faint blue sheen
            c.over(lens_m, (0.75, 0.88, 1.0), 0.18)
        c.over(c.cov(rim), FRAME)


def _hat(cv: _Canvas, sa=1.0, sb=1.0):
    """Beanie (knitted, with fold and pom-pom) or top hat on the head top (head semi-axes times sa, sb)."""
    c = cv.subset(cv.p.hat == 1)
    if c is not None:
        c = c.crop(-0.75, 0.75, -1.0, -0.05)
        fx, fy, A, B = c.fx, c.fy, c.A * sa, c.B * sb
        colour = hsv_to_rgb(c.p.hat_hue, torch.full_like(c.p.hat_hue, 0.7), torch.full_like(c.p.hat_hue, 0.8))
        d_dome = intersect(sd_ellipse(fx, fy + 0.02, A * 1.1, B * 1.12), fy + B * 0.38)
        rib = 0.88 + 0.12 * torch.sin(fx * 90.0)
        fold = ((fy > -B * 0.58) & (fy < -B * 0.38)).float()
        c.over(c.cov(d_dome), c.shade(colour, rib * (1 - 0.15 * fold)))
        c.over(c.cov(d_dome.abs() - 0.006) * (fy > -B * 0.45).float(), colour * 0.6, 0.6)
        pom = c.cov(sd_circle(fx, fy + B * 1.17, 0.085))
        c.over(pom, c.shade(colour * 0.9 + 0.1, 0.9 + 0.1 * torch.sin(fx * 140) * torch.sin(fy * 140)))
    c = cv.subset(cv.p.hat == 2)
    if c is not None:
        c = c.crop(-0.8, 0.8, -1.2, -0.1)
        fx, fy, A, B = c.fx, c.fy, c.A * sa, c.B * sb
        colour = hsv_to_rgb(c.p.hat_hue, torch.full_like(c.p.hat_hue, 0.7), torch.full_like(c.p.hat_hue, 0.8))
        brim_y = -B * 0.62
        d_brim = sd_ellipse(fx, fy - brim_y, A * 1.35, 0.045 + 0 * A)
        d_crown = sd_box(fx, fy - (brim_y - 0.2), A * 0.82, 0.21, 0.02)
        d_band = intersect(d_crown, (fy - (brim_y - 0.055)).abs() - 0.04)
        sheen = 1.0 + 0.9 * torch.exp(-sq((fx + A * 0.4) / 0.06))
        black = torch.tensor([0.07, 0.07, 0.09]).expand(c.n, 3)
        c.over(c.cov(d_crown), c.shade(black, sheen))
        c.over(c.cov(d_band), colour * 0.85)
        c.over(c.cov(d_brim), black * 1.3)


def _shoulders(cv: _Canvas, colour_field):
    c = cv.crop(-1.5, 1.5, 0.55, 2.0)
    d = sd_ellipse(c.bx, c.by - 1.33, 0.86, 0.62)
    c.over(c.cov(d), colour_field(c) if callable(colour_field) else colour_field)
    return c, d


# ----------------------------------------------------------------------------------------------------------
# photo
# ----------------------------------------------------------------------------------------------------------

def head_sdf(fx, fy, A, B, jaw):
    t = (fy / B).clamp(0, 1)
    k = 0.42 * (1 - jaw) + 0.1
    return sd_ellipse(fx, fy, A * (1 - k * t * t), B)


def _hair_field(c: _Canvas, curly: bool) -> torch.Tensor:
    hair = hair_colour(c.p)
    fx, fy, B = c.fx, c.fy, c.B
    if curly:
        tex = 0.86 + 0.14 * torch.sin(fx * 75.0) * torch.sin(fy * 75.0)
    else:
        ang = torch.atan2(fx, -(fy + B * 0.5))
        tex = 1.0 + 0.1 * torch.sin(ang * 38.0) - 0.18 * ((fy + B) / (2.5 * B)).clamp(0, 1)
    return c.shade(hair, tex)


def _long_sdf(c: _Canvas):
    fx, fy, A, B = c.fx, c.fy, c.A, c.B
    long_end = B * (0.7 + 0.9 * c.v("hair_length"))
    return smooth_union(sd_ellipse(fx, fy + 0.03, A * 1.16, B * 1.1),
                        sd_box(fx, fy - (long_end - B * 0.1) / 2, A * 1.12, (long_end + B * 0.1) / 2, 0.1), 0.05)


def _photo(cv: _Canvas):
    p = cv.p
    skin = skin_colour(p.skin_tone)
    _background(cv)

    # --- behind the head: long hair, afro, bun
    c = cv.subset(p.hair_style == 1)
    if c is not None:
        c.over(c.cov(_long_sdf(c)), _hair_field(c, False))
    c = cv.subset(p.hair_style == 3)
    if c is not None:
        fx, fy, A, B = c.fx, c.fy, c.A, c.B
        theta = torch.atan2(fy + B * 0.2, fx)
        r_afro = A * (1.32 + 0.3 * c.v("hair_length"))
        d_afro = sd_ellipse(fx, fy + B * 0.22, r_afro, r_afro * 0.95) - 0.025 * torch.sin(theta * 14.0)
        c.over(c.cov(d_afro), _hair_field(c, True))
    c = cv.subset(p.hair_style == 4)
    if c is not None:
        c = c.crop(-0.4, 0.4, -1.05, -0.3)
        fx, fy, B, length = c.fx, c.fy, c.B, c.v("hair_length")
        d_bun = sd_circle(fx, fy + B * (1.12 + 0.1 * length), 0.15 + 0.05 * length)
        theta = torch.atan2(fy + B * 1.12, fx)
        c.over(c.cov(d_bun), c.shade(hair_colour(c.p), 0.92 + 0.08 * torch.sin(theta * 20)))

    # --- body: shirt, neck, collar
    shirt = hsv_to_rgb(p.shirt_hue, torch.full_like(p.shirt_hue, 0.55), p.shirt_value)
    sc, d_sh = _shoulders(cv, lambda c: c.shade(shirt, 1.0 - 0.25 * sq((c.bx.abs() / 0.9).clamp(0, 1))))
    c = cv.crop(-0.5, 0.5, 0.2, 1.3)
    A, B = c.A, c.B
    d_neck = sd_box(c.bx, c.by - B * 1.05, A * 0.4, B * 0.42, 0.05)
    neck_shade = 0.8 + 0.12 * ((c.by - B * 0.75) / (B * 0.5)).clamp(0, 1)
    c.over(c.cov(d_neck), c.shade(skin, neck_shade))
    A, B = sc.A, sc.B
    d_collar = sd_triangle(sc.bx, sc.by, (-A * 0.42, B * 1.3), (A * 0.42, B * 1.3), (0 * A, B * 1.75))
    sc.over(sc.cov(intersect(d_collar, d_sh)), skin * 0.85)
    # long hair falling in front of the shoulders
    c = cv.subset(p.hair_style == 1)
    if c is not None:
        c = c.crop(-0.8, 0.8, 0.2, 1.6)
        side = ((c.fx.abs() - c.A * 0.55) / 0.04).clamp(0, 1) * (c.fy > c.B * 0.4).float()
        c.over(c.cov(_long_sdf(c)) * side, _hair_field(c, False))

    # --- ears, head
    e = cv.crop(-0.62, 0.62, -0.2, 0.3)
    fx, fy, A = e.fx, e.fy, e.A
    e.over(e.cov(sd_ellipse(fx.abs() - A * 0.97, fy - 0.01, 0.065, 0.11)), skin * 0.9)
    e.over(e.cov(sd_ellipse(fx.abs() - A * 0.985, fy - 0.01, 0.03, 0.065)), skin * 0.72, 0.7)
    h = cv.crop(-0.62, 0.62, -0.65, 0.65)
    fx, fy, A, B = h.fx, h.fy, h.A, h.B
    d_head = head_sdf(fx, fy, A, B, h.v("jaw"))
    r2 = sq(fx / A) + sq(fy / B)
    head_shade = 1.04 - 0.2 * sq(r2.clamp(0, 1.2)) - 0.06 * fx / A - 0.04 * fy / B
    h.over(h.cov(d_head), h.shade(skin, head_shade))
    c = cv.subset((p.hair_style == 2) | (p.hair_style == 5))  # bald shine
    if c is not None:
        c = c.crop(-0.4, 0.3, -0.6, -0.2)
        c.over(c.cov(sd_ellipse(c.fx + c.A * 0.25, c.fy + c.B * 0.72, 0.09, 0.05), 4.0), (1.0, 1.0, 1.0), 0.35)

    # --- cheeks, nose
    f = cv.crop(-0.45, 0.45, -0.05, 0.45)
    fx, fy = f.fx, f.fy
    smile = f.v("smile")
    ex, ey = _eye_centres(f)
    blush = torch.exp(-(sq((fx.abs() - ex * 1.05) / 0.07) + sq((fy - 0.14) / 0.05)))
    f.over(blush * (0.12 + 0.2 * smile.clamp(min=0)), (0.95, 0.35, 0.35))
    ns = f.v("nose_size")
    nose = union(sd_ellipse(fx, fy - 0.14, 0.048 * ns, 0.03 * ns),
                 sd_segment(fx, fy, 0.0, 0.02, 0.0, 0.11 * ns + 0.02, 0.016 * ns))
    f.over(f.cov(nose, 3.0), skin * 0.78, 0.5)
    f.over(f.cov(sd_ellipse(fx.abs() - 0.022 * ns, fy - 0.155, 0.013 * ns, 0.008 * ns)), skin * 0.45, 0.8)

    # --- beard and moustache
    for kind in (1, 2):
        c = cv.subset(p.beard >= kind)
        if c is None:
            continue
        c = c.crop(-0.6, 0.6, 0.05, 0.65) if kind == 2 else c.crop(-0.3, 0.3, 0.15, 0.3)
        fx, fy, A, B = c.fx, c.fy, c.A, c.B
        mw = 0.135 * c.v("mouth_width")
        field = c.shade(hair_colour(c.p) * 0.85, 0.9 + 0.1 * torch.sin(fx * 110) * torch.sin(fy * 90))
        if kind == 2:
            d_beard = intersect(head_sdf(fx, fy, A * 1.03, B * 1.04, c.v("jaw")), -(fy - (0.2 - 0.13 * sq(fx / A))))
            d_beard = smooth_union(d_beard, sd_box(fx, fy - 0.225, mw + 0.04, 0.035, 0.03), 0.02)
            c.over(c.cov(d_beard) * (c.k("beard") == 2).float(), field)
        else:
            c.over(c.cov(sd_parabola_stroke(fx, fy, 0.215, mw + 0.03, -0.05 + 0 * mw, 0.028)), field)

    # --- mouth: lip line curved by the smile, open with teeth when smiling broadly
    m = cv.crop(-0.3, 0.3, 0.12, 0.42)
    fx, fy = m.fx, m.fy
    smile = m.v("smile")
    mw = 0.135 * m.v("mouth_width")
    my = 0.27
    c = 0.11 * smile
    xm = torch.maximum(torch.minimum(fx, mw), -mw)
    lower = my - c * (sq(xm / mw) - 1 / 3)
    opening = 0.075 * ((smile - 0.3) / 0.7).clamp(0, 1) * (1 - sq(xm / mw))
    d_open = intersect(fy - lower, (lower - opening) - fy, fx.abs() - mw)
    m.over(m.cov(d_open), (0.35, 0.06, 0.08))
    m.over(m.cov(intersect(d_open, fy - (lower - opening * 0.55))), (0.97, 0.95, 0.92))
    mskin = skin_colour(m.p.skin_tone)
    lip = mskin * 0.55 + torch.tensor([0.45, 0.08, 0.1]) * 0.45
    m.over(m.cov(sd_parabola_stroke(fx, fy, my, mw, c, 0.017)), lip * 0.75)
    m.over(m.cov(sd_ellipse(fx, fy - my - 0.035 - c * 0.2, mw * 0.45, 0.014), 3.0), mskin * 0.8, 0.5)

    # --- eyes and brows
    e = cv.crop(-0.45, 0.45, -0.22, 0.1)
    fx, fy = e.fx, e.fy
    eskin = skin_colour(e.p.skin_tone)
    ex, ey = _eye_centres(e)
    es = e.v("eye_size")
    ax = fx.abs()
    lx, ly = ax - ex, fy - ey
    d_sclera = sd_ellipse(lx, ly, 0.085 * es, 0.05 * es)
    gaze = e.v("gaze") * 0.025 * es
    ix = fx - torch.where(fx > 0, ex, -ex) - gaze  # the iris follows the gaze in both eyes
    ri = torch.sqrt(ix * ix + ly * ly)
    d_iris = intersect(ri - 0.045 * es, d_sclera)
    iris = IRIS_RGB[e.p.eye_colour]
    e.over(e.cov(d_sclera), (0.97, 0.97, 0.96))
    e.over(e.cov(d_iris), e.shade(iris, 1.05 - 0.35 * (ri / (0.045 * es)).clamp(0, 1)))
    e.over(e.cov(intersect(ri - 0.02 * es, d_sclera)), (0.03, 0.03, 0.03))
    e.over(e.cov(sd_circle(ix + 0.014 * es, ly + 0.014 * es, 0.009 * es)), (1.0, 1.0, 1.0), 0.9)
    e.over(e.cov(intersect(d_sclera.abs() - 0.008, ly + 0.01 * es)), (0.08, 0.05, 0.05))
    e.over(e.cov(d_sclera.abs() - 0.004), eskin * 0.4, 0.6)
    bt = 0.019 * e.v("brow_thickness")
    ba = e.v("brow_angle")
    by = ey - 0.085 * es - 0.01
    hair = hair_colour(e.p)
    brow_rgb = torch.where((e.p.hair_style == 2)[:, None], torch.tensor([0.25, 0.17, 0.1]).expand(e.n, 3), hair * 0.8)
    e.over(e.cov(sd_segment(ax, fy, ex - 0.075, by - 0.03 * ba, ex + 0.085, by + 0.012 * ba - 0.01, bt)), brow_rgb)

    # --- hair in front: short cap, long fringe and curtains, afro hairline, bun cap, mohawk
    c = cv.subset(p.hair_style == 0)
    if c is not None:
        c = c.crop(-0.62, 0.62, -0.75, 0.1)
        fx, fy, A, B = c.fx, c.fy, c.A, c.B
        hairline = -B * 0.5 + 0.3 * sq(fx / A)
        sideburn = (fx.abs() > A * 0.86).float() * (fy < -0.08).float()
        d = intersect(sd_ellipse(fx, fy + 0.035, A * 1.05, B * 1.1), fy - torch.maximum(hairline, sideburn * 2 - 1))
        c.over(c.cov(d), _hair_field(c, False))
    c = cv.subset(p.hair_style == 1)
    if c is not None:
        c = c.crop(-0.62, 0.62, -0.75, 0.3)
        fx, fy, A, B = c.fx, c.fy, c.A, c.B
        hairline = -B * 0.3 + 0.12 * (fx / A) - 0.06 * sq(fx / A)
        d = intersect(sd_ellipse(fx, fy + 0.03, A * 1.08, B * 1.1), union(fy - hairline, -(fx.abs() - A * 0.78)),
                      fy - B * 0.45)
        c.over(c.cov(d), _hair_field(c, False))
    c = cv.subset(p.hair_style == 3)
    if c is not None:
        c = c.crop(-0.62, 0.62, -0.75, 0.0)
        fx, fy, A, B = c.fx, c.fy, c.A, c.B
        d = intersect(sd_ellipse(fx, fy + 0.03, A * 1.1, B * 1.12), fy - (-B * 0.5 + 0.25 * sq(fx / A)))
        c.over(c.cov(d), _hair_field(c, True))
    for style in (4, 5):
        c = cv.subset(p.hair_style == style)
        if c is None:
            continue
        c = c.crop(-0.62, 0.62, -1.0, 0.0)
        fx, fy, A, B = c.fx, c.fy, c.A, c.B
        d_cap = intersect(sd_ellipse(fx, fy + 0.02, A * 1.04, B * 1.05), fy - (-B * 0.46 + 0.25 * sq(fx / A)))
        if style == 4:
            c.over(c.cov(d_cap), _hair_field(c, False))
        else:
            hair = hair_colour(c.p)
            c.over(c.cov(intersect(d_cap, sd_ellipse(fx, fy + 0.02, A * 1.01, B * 1.01))), hair, 0.25)
            spikes = 0.03 * torch.sin(fy * 45.0).abs()
            d_mohawk = intersect(sd_ellipse(fx, fy + B * 0.72, 0.085 + spikes, B * 0.72), fy + B * 0.42)
            c.over(c.cov(d_mohawk), c.shade(hair, 1.0 + 0.12 * torch.sin(fx * 120.0)))

    # --- accessories
    c = cv.subset(p.earrings == 1)
    if c is not None:
        c = c.crop(-0.62, 0.62, 0.05, 0.28)
        d_ring = sd_circle(c.fx.abs() - c.A * 0.97, c.fy - 0.165, 0.032).abs() - 0.01
        c.over(c.cov(d_ring), GOLD)
    _glasses(cv)
    _hat(cv)


# ----------------------------------------------------------------------------------------------------------
# cat
# ----------------------------------------------------------------------------------------------------------

FUR_TEX = lambda fx, fy: 1.0 + 0.06 * torch.sin(fx * 150.0 + 3 * torch.sin(fy * 40.0))  # noqa: E731


def _cat(cv: _Canvas):
    p = cv.p
    fur = (FUR_RGB[p.hair_colour] * (0.92 + 0.35 * (p.hair_shade[:, None] - 0.95))).clamp(0, 1)
    light_fur = fur * 0.4 + 0.6 * torch.tensor([0.98, 0.96, 0.92])
    _background(cv)
    # body: furry chest
    sc, _ = _shoulders(cv, lambda c: c.shade(fur[c.idx] if c.idx is not None else fur,
                                             FUR_TEX(c.bx, c.by) * (1 - 0.2 * (c.bx.abs() / 0.9).clamp(0, 1))))
    sc.over(sc.cov(sd_ellipse(sc.bx, sc.by - 1.05, 0.3, 0.38), 4.0), light_fur, 0.9)

    # head: wide with cheek fluff, ears on top
    h = cv.crop(-0.75, 0.75, -0.9, 0.62)
    fx, fy, A, B = h.fx, h.fy, h.A, h.B
    ax = fx.abs()
    CA, CB = A * 1.13, B * 0.86
    tex = FUR_TEX(fx, fy)
    theta = torch.atan2(fy, fx)
    fluff = 0.018 * torch.sin(theta * 22.0).abs() * (fy > 0.0).float() * (ax > A * 0.5).float()
    d_head = sd_ellipse(fx, fy - 0.04, CA, CB) - fluff
    ear = sd_triangle(ax, fy, (A * 0.22, -CB * 0.62), (A * 0.98, -CB * 0.35), (A * 0.78, -CB * 1.42))
    ear_in = sd_triangle(ax, fy, (A * 0.36, -CB * 0.66), (A * 0.86, -CB * 0.48), (A * 0.76, -CB * 1.22))
    head_shade = 1.04 - 0.18 * sq((sq(fx / CA) + sq((fy - 0.04) / CB)).clamp(0, 1.2))
    h.over(h.cov(ear - 0.02), h.shade(fur, tex * 0.95))
    h.over(h.cov(ear_in), (0.95, 0.62, 0.68))
    h.over(h.cov(d_head), h.shade(fur, tex * head_shade))
    # tabby stripes on the forehead and cheeks (not on black cats)
    c = cv.subset(p.hair_colour != 0)
    if c is not None:
        c = c.crop(-0.62, 0.62, -0.45, 0.25)
        fx, fy, A, B = c.fx, c.fy, c.A, c.B
        dark = (FUR_RGB[c.p.hair_colour] * 0.55)
        stripe_x = torch.remainder(fx / 0.07 + 0.5, 1.0) - 0.5
        d_stripes = intersect((stripe_x.abs() - 0.16) * 0.07, fy + 0.12, -(fy + B * 0.55), fx.abs() - A * 0.32)
        c.over(c.cov(d_stripes, 2.0), dark, 0.7)
        cheek = intersect((torch.remainder(fy / 0.06, 1.0) - 0.5).abs() * 0.06 - 0.012, -(fx.abs() - A * 1.13 * 0.8),
                          fy - 0.2, -fy)
        c.over(c.cov(cheek, 2.0), dark, 0.6)

    # muzzle, eyes, nose, mouth, whiskers
    f = cv.crop(-0.95, 0.95, -0.15, 0.42)
    fx, fy, A = f.fx, f.fy, f.A
    ax = fx.abs()
    lf = light_fur if f.idx is None else light_fur[f.idx]
    d_muzzle = sd_ellipse(ax - 0.065, fy - 0.235, 0.085, 0.065)
    f.over(f.cov(d_muzzle, 3.0), lf, 0.85)
    ex, ey = _eye_centres(f, spacing=0.19, y=0.0)
    es = f.v("eye_size")
    lx, ly = ax - ex, fy - ey
    d_eye = intersect(sd_circle(lx, ly - 0.05 * es, 0.095 * es), sd_circle(lx, ly + 0.05 * es, 0.095 * es))
    ix = fx - torch.where(fx > 0, ex, -ex) - f.v("gaze") * 0.015 * es
    iris = CAT_IRIS_RGB[f.p.eye_colour]
    f.over(f.cov(d_eye - 0.012), (0.05, 0.04, 0.04))
    f.over(f.cov(d_eye), f.shade(iris, 1.05 - 0.3 * (torch.sqrt(ix * ix + ly * ly) / (0.09 * es)).clamp(0, 1)))
    f.over(f.cov(intersect(sd_ellipse(ix, ly, 0.016 * es, 0.07 * es), d_eye)), (0.02, 0.02, 0.02))
    f.over(f.cov(sd_circle(ix + 0.025 * es, ly + 0.02 * es, 0.011 * es)), (1.0, 1.0, 1.0), 0.9)
    d_nose = sd_triangle(fx, fy, (-0.04, 0.155), (0.04, 0.155), (0.0, 0.2))
    f.over(f.cov(d_nose - 0.006), (0.92, 0.5, 0.58))
    c = 0.05 * f.v("smile")
    d_mouth = union(sd_segment(fx, fy, 0.0, 0.2, 0.0, 0.245, 0.008),
                    sd_parabola_stroke(ax - 0.045, fy, 0.26, 0.045 + 0 * c, 0.02 + c, 0.008))
    f.over(f.cov(d_mouth), (0.2, 0.1, 0.1))
    ffur = fur if f.idx is None else fur[f.idx]
    wcol = torch.where(ffur.mean(1, keepdim=True) < 0.45, torch.tensor([0.95, 0.95, 0.95]),
                       torch.tensor([0.18, 0.15, 0.15]))
    d_wh = union(*[sd_segment(ax, fy, 0.11, y0, A * 1.13 * 1.25, y1, 0.005)
                   for y0, y1 in [(0.21, 0.15), (0.235, 0.245), (0.26, 0.34)]])
    f.over(f.cov(d_wh), wcol, 0.9)
    _glasses(cv, spacing=0.19, ey=0.0, lens=1.05, temples=False)
    _hat(cv, 1.0, 0.95)


# ----------------------------------------------------------------------------------------------------------
# robot
# ----------------------------------------------------------------------------------------------------------

def _robot(cv: _Canvas):
    p = cv.p
    paint_all = PAINT_RGB[p.hair_colour]
    metal = torch.tensor([0.62, 0.64, 0.68])
    _background(cv)
    # body: plated shoulders with rivets, segmented neck
    sc, d_body = _shoulders(cv, lambda c: c.shade((metal * 0.75 + paint_all * 0.25)[c.idx] if c.idx is not None
                                                  else metal * 0.75 + paint_all * 0.25,
                                                  0.85 + 0.2 * (1 - (c.by - 0.7).clamp(0, 1))))
    rivets = sd_circle(torch.remainder(sc.bx + 0.05, 0.2) - 0.1, sc.by - 0.86, 0.018)
    sc.over(sc.cov(intersect(rivets, d_body + 0.03)), (0.3, 0.3, 0.33))
    c = cv.crop(-0.5, 0.5, 0.2, 1.3)
    d_neck = sd_box(c.bx, c.by - c.B * 1.05, c.A * 0.32, c.B * 0.45, 0.02)
    rings = 0.7 + 0.25 * (torch.sin(c.by * 90.0) > 0).float()
    c.over(c.cov(d_neck), c.shade(metal.expand(c.n, 3) * 0.8, rings))

    # top piece by hair style: antenna (short), two antennas (long), none (bald), dome (afro), knob (bun),
    # fin (mohawk)
    for style in (0, 1, 3, 4, 5):
        c = cv.subset(p.hair_style == style)
        if c is None:
            continue
        c = c.crop(-0.62, 0.62, -1.05, -0.25)
        fx, fy = c.fx, c.fy
        RA, RB = c.A * 1.02, c.B * 0.92
        paint = PAINT_RGB[c.p.hair_colour]
        glow = paint * 0.5 + 0.5
        if style == 0:
            c.over(c.cov(sd_segment(fx, fy, 0.0, -RB, 0.0, -RB - 0.24, 0.014)), (0.35, 0.36, 0.4))
            c.over(c.cov(sd_circle(fx, fy + RB + 0.26, 0.045)), glow)
        elif style == 1:
            ax = fx.abs()
            c.over(c.cov(sd_segment(ax, fy, RA * 0.55, -RB * 0.9, RA * 0.8, -RB - 0.2, 0.013)), (0.35, 0.36, 0.4))
            c.over(c.cov(sd_circle(ax - RA * 0.8, fy + RB + 0.22, 0.04)), glow)
        elif style == 3:
            dome = intersect(sd_ellipse(fx, fy + RB * 0.95, RA * 0.55, 0.2 + 0 * RA), fy + RB * 0.9)
            c.over(c.cov(dome), c.shade(paint, 0.8 + 0.3 * (-fy - RB) / 0.2))
        elif style == 4:
            c.over(c.cov(sd_box(fx, fy + RB + 0.05, 0.07, 0.08, 0.02)), paint)
        else:
            c.over(c.cov(intersect(sd_ellipse(fx, fy + RB * 0.9, 0.035, 0.3), fy + RB * 0.8)), paint)

    # side bolts (ears), head: rounded box, brushed-metal gradient with a specular band, panel line, screws
    h = cv.crop(-0.7, 0.7, -0.6, 0.6)
    fx, fy = h.fx, h.fy
    ax = fx.abs()
    RA, RB = h.A * 1.02, h.B * 0.92
    paint = PAINT_RGB[h.p.hair_colour]
    h.over(h.cov(sd_circle(ax - RA, fy, 0.085)), metal * 0.6)
    h.over(h.cov(sd_circle(ax - RA * 1.04, fy, 0.04)), paint)
    d_head = sd_box(fx, fy, RA, RB, 0.06 + 0.14 * h.v("jaw"))
    grad = 0.8 + 0.175 * (-fy / RB).clamp(-1, 1) + 0.25 * torch.exp(-sq((fx + RA * 0.45) / 0.07))
    h.over(h.cov(d_head), h.shade(metal * 0.85 + paint * 0.15, grad))
    h.over(h.cov(intersect(d_head.abs() - 0.012, d_head)), metal * 0.45)
    h.over(h.cov(intersect((fy + RB * 0.5).abs() - 0.007, d_head + 0.03)), metal * 0.4)
    h.over(h.cov(sd_circle(ax - RA * 0.8, (fy.abs() - RB * 0.78), 0.018)), metal * 0.45)

    # LED eyes in dark sockets with a glow, brow plates
    e = cv.crop(-0.45, 0.45, -0.25, 0.12)
    fx, fy = e.fx, e.fy
    ax = fx.abs()
    ex, ey = _eye_centres(e, spacing=0.18, y=-0.02)
    es = e.v("eye_size")
    lx, ly = ax - ex, fy - ey
    d_socket = sd_box(lx, ly, 0.095 * es, 0.07 * es, 0.02)
    e.over(e.cov(d_socket), (0.06, 0.06, 0.08))
    ix = fx - torch.where(fx > 0, ex, -ex) - e.v("gaze") * 0.02 * es
    led = LED_RGB[e.p.eye_colour]
    rr = torch.sqrt(ix * ix + ly * ly)
    e.over(torch.exp(-sq(rr / (0.06 * es))) * (d_socket < 0).float(), led, 0.6)
    e.over(e.cov(rr - 0.036 * es), led)
    e.over(e.cov(rr - 0.014 * es), (1.0, 1.0, 1.0), 0.8)
    bt = 0.014 * e.v("brow_thickness")
    ba = e.v("brow_angle")
    by = ey - 0.1 * es
    e.over(e.cov(sd_segment(ax, fy, ex - 0.08, by - 0.03 * ba, ex + 0.08, by + 0.012 * ba - 0.01, bt)), metal * 0.35)
    # grille mouth, bent by the smile
    m = cv.crop(-0.3, 0.3, 0.12, 0.42)
    fx, fy = m.fx, m.fy
    mw = 0.13 * m.v("mouth_width")
    bend = -0.08 * m.v("smile") * (sq((fx / mw).clamp(-1, 1)) - 1 / 3)
    d_grille = sd_box(fx, fy - 0.27 - bend, mw, 0.045, 0.015)
    bars = (torch.remainder(fx / 0.032, 1.0) - 0.5).abs()
    m.over(m.cov(d_grille), (0.08, 0.08, 0.1))
    m.over(m.cov(intersect(d_grille + 0.012, (bars - 0.2) * 0.032)), PAINT_RGB[m.p.hair_colour] * 0.6 + 0.35)
    _glasses(cv, spacing=0.18, lens=1.05)
    _hat(cv, 1.02, 0.92)


_DRAW = {"photo": _photo, "cat": _cat, "robot": _robot}


def _chunk_size(res: int, budget: int = 1 << 21) -> int:
    return max(1, budget // (res * res))


@torch.no_grad()
def render(params: FaceParams, domain: str = "photo", size: int = 64, supersample: int = 2) -> torch.Tensor:
    """Render faces: [N, 3, size, size] float32 in [-1, 1].

    ``domain`` is a renderer (``photo``, ``cat``, ``robot``) or any other SynthFaces domain (then this is
    :func:`adapt_common.synthfaces.render_domain`). Drawn at ``supersample * size`` and area-downsampled.
    """
    if domain not in _DRAW:
        from .domains import render_domain
        return render_domain(params, domain, size=size)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    res = size * supersample
    out = torch.empty(len(params), 3, size, size)
    step = _chunk_size(res)
    for i in range(0, len(params), step):
        cv = _Canvas(params[i:i + step], res)
        _DRAW[domain](cv)
        img = cv.img.clamp(0, 1)
        if supersample > 1:
            img = F.avg_pool2d(img, supersample)
        out[i:i + step] = img * 2 - 1
    return out


@torch.no_grad()
def render_background(params: FaceParams, size: int = 64) -> torch.Tensor:
    """The background layer alone (what every renderer draws first), [N, 3, size, size] in [-1, 1]."""
    cv = _Canvas(params, size)
    _background(cv)
    return cv.img.clamp(0, 1) * 2 - 1


