"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

Every augmentation is applied to each image independently with probability ``p``; the discriminator sees
augmented reals and fakes alike, and gradients flow through the augmentations to the generator. The
geometric ones (x-flip, 90° rotations, integer translation, isotropic and anisotropic scaling, rotations,
fractional translation) compose into one affine matrix per image, applied with a single ``grid_sample``
(reflection padding); the colour ones (brightness, contrast, luma flip, hue rotation, saturation) compose
into one 4x4 matrix. Strengths follow ADA's ``bgc`` pipeline.

:class:`AdaController` raises ``p`` when the discriminator overfits, judged by ``r_t = E[sign(D(real))]``
against a target (0.6), moving ``p`` by at most ``batch * interval / (ada_kimg * 1000)`` per adjustment.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rot2(theta):
    c, s = torch.cos(theta), torch.sin(theta)
    m = torch.zeros(theta.shape[0], 3, 3, device=theta.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = c, -s, s, c, 1
    return m


def _scale2(sx, sy):
    m = torch.zeros(sx.shape[0], 3, 3, device=sx.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1
    return m


def _translate2(tx, ty):
    m = torch.eye(3, device=tx.device).repeat(tx.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


class AugmentPipe(torch.nn.Module):
    """ADA's ``bgc`` augmentations with probability ``p`` (a float or a 0-dim tensor)."""

    def __init__(self, p: float = 0.0, *, xflip=1.0, rotate90=1.0, xint=1.0, scale=1.0, rotate=1.0, aniso=1.0,
                 xfrac=1.0, brightness=1.0, contrast=1.0, lumaflip=1.0, hue=1.0, saturation=1.0):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))
        self.w = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso,
                      xfrac=xfrac, brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue,
                      saturation=saturation)

    def _gate(self, name, n, device, gen, prob=None):
        prob = self.p * self.w[name] if prob is None else prob
        return torch.rand(n, device=device, generator=gen) < prob

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if float(self.p) <= 0:
            return images
        n, c, h, w = images.shape
        dev = images.device
        g = generator
        eye = torch.eye(3, device=dev).repeat(n, 1, 1)
        m = eye.clone()  # maps output coordinates ([-1, 1] normalised) to input coordinates

        def rnd(*shape):
            return torch.rand(*shape, device=dev, generator=g)

        def nrm(*shape):
            return torch.randn(*shape, device=dev, generator=g)

        # -- blit: x-flip, 90-degree rotations, integer translation (exact under grid_sample)
        flip = torch.where(self._gate("xflip", n, dev, g) & (rnd(n) < 0.5), -1.0, 1.0)
        m = m @ _scale2(flip, torch.ones(n, device=dev))
        k = torch.where(self._gate("rotate90", n, dev, g), torch.floor(rnd(n) * 4), torch.zeros(n, device=dev))
        m = m @ _rot2(k * math.pi / 2)
        t = (rnd(n, 2) * 2 - 1) * 0.125
        t = torch.where(self._gate("xint", n, dev, g)[:, None], t, torch.zeros_like(t))
        t = torch.round(t * torch.tensor([w, h], device=dev)) * 2 / torch.tensor([w, h], device=dev)
        m = m @ _translate2(t[:, 0], t[:, 1])
        # -- general geometric: isotropic scale, rotation, anisotropic scale, rotation, fractional translation
        s = torch.where(self._gate("scale", n, dev, g), torch.exp2(nrm(n) * 0.2), torch.ones(n, device=dev))
        m = m @ _scale2(s, s)
        p_rot = 1 - torch.sqrt((1 - self.p * self.w["rotate"]).clamp(0, 1))
        r = torch.where(self._gate("rotate", n, dev, g, p_rot), (rnd(n) * 2 - 1) * math.pi, torch.zeros(n, device=dev))
        m = m @ _rot2(r)
        a = torch.where(self._gate("aniso", n, dev, g), torch.exp2(nrm(n) * 0.2), torch.ones(n, device=dev))
        m = m @ _scale2(a, 1 / a)
        r = torch.where(self._gate("rotate", n, dev, g, p_rot), (rnd(n) * 2 - 1) * math.pi, torch.zeros(n, device=dev))
        m = m @ _rot2(r)
        t = nrm(n, 2) * 0.125 * 2
        t = torch.where(self._gate("xfrac", n, dev, g)[:, None], t, torch.zeros_like(t))
        m = m @ _translate2(t[:, 0], t[:, 1])
        if not torch.equal(m, eye):
            grid = F.affine_grid(m[:, :2, :].to(images.dtype), list(images.shape), align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        # -- colour, as a 4x4 matrix on homogeneous RGB
        if c == 3:
            cm = torch.eye(4, device=dev).repeat(n, 1, 1)
            luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)
            b = torch.where(self._gate("brightness", n, dev, g), nrm(n) * 0.2, torch.zeros(n, device=dev))
            tb = torch.eye(4, device=dev).repeat(n, 1, 1)
            tb[:, :3, 3] = b[:, None]
            cm = tb @ cm
            ct = torch.where(self._gate("contrast", n, dev, g), torch.exp2(nrm(n) * 0.5), torch.ones(n, device=dev))
            sc = torch.diag_embed(torch.stack([ct, ct, ct, torch.ones_like(ct)], 1))
            cm = sc @ cm
            v = luma[None, :, None]  # the luma axis
            proj = v @ v.transpose(1, 2)
            i = torch.floor(rnd(n) * 2)
            i = torch.where(self._gate("lumaflip", n, dev, g), i, torch.zeros_like(i))
            cm = (torch.eye(4, device=dev) - 2 * proj * i[:, None, None]) @ cm  # Householder reflection
            theta = torch.where(self._gate("hue", n, dev, g), (rnd(n) * 2 - 1) * math.pi, torch.zeros(n, device=dev))
            cm = _rot_axis(theta, luma[:3]) @ cm
            sat = torch.where(self._gate("saturation", n, dev, g), torch.exp2(nrm(n)), torch.ones(n, device=dev))
            cm = (proj + (torch.eye(4, device=dev) - proj) * sat[:, None, None]) @ cm
            if not torch.equal(cm, torch.eye(4, device=dev).expand_as(cm)):
                flat = images.reshape(n, 3, h * w)
                images = (cm[:, :3, :3].to(images.dtype) @ flat + cm[:, :3, 3:].to(images.dtype)).reshape(n, 3, h, w)
        return images


def _rot_axis(theta: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """4x4 rotations by ``theta`` around the unit 3-vector ``axis`` (Rodrigues)."""
    x, y, z = axis
    k = torch.tensor([[0, -z, y], [z, 0, -x], [-y, x, 0]], device=theta.device)
    r = torch.eye(3, device=theta.device) + torch.sin(theta)[:, None, None] * k + \
        (1 - torch.cos(theta))[:, None, None] * (k @ k)
    out = torch.eye(4, device=theta.device).repeat(theta.shape[0], 1, 1)
    out[:, :3, :3] = r
    return out


class AdaController:
    """Adjusts ``pipe.p`` from the sign of the discriminator's outputs on reals (ADA's r_t heuristic)."""

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, ada_kimg: float = 500.0):
        self.pipe, self.target, self.interval, self.ada_kimg = pipe, target, interval, ada_kimg
        self.signs: list[float] = []
        self.count = 0
        self.last_rt = float("nan")

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self.signs.append(float(torch.sign(real_logits.detach()).sum()))
        self.count += real_logits.numel()

    def step(self, images_per_step: int, step: int) -> None:
        if step % self.interval or self.count == 0:
            return
        self.last_rt = sum(self.signs) / self.count
        adjust = math.copysign(1.0, self.last_rt - self.target) * images_per_step * self.interval / (
            self.ada_kimg * 1000)
        self.pipe.p.copy_((self.pipe.p + adjust).clamp(0, 1))
        self.signs, self.count = [], 0

    def state_dict(self) -> dict:
        return {"p": float(self.pipe.p), "signs": list(self.signs), "count": self.count, "last_rt": self.last_rt}

    def load_state_dict(self, state: dict) -> None:
        self.pipe.p.fill_(state["p"])
        self.signs, self.count, self.last_rt = list(state["signs"]), state["count"], state["last_rt"]
