"""A learned image analogy: one network answers A : A' :: B : ? for any style, trained beforehand on a large
procedural space of styles instead of being fitted on the one pair a one-shot run has.

:class:`adapt_common.analogy.ImageAnalogy` learns a style from one (source face, reference) pair alone: it holds
what a colour map holds and, beyond that, whatever one pair can teach a small net without a prior. This net brings
the prior. It is trained (``exp.trainer: analogy_net``, :mod:`gan_adapt.training.analogy_net`) on pairs of
different source faces in the *same* random style of :mod:`adapt_common.random_styles` (colour maps, line
drawings, grain, stripes, pixelation, dithering, blur, composed at random): from the example pair (A, A') and
another face B it predicts B' = T(B). The example's A is what a user has, the style encoder's inversion of A', so
the net also learns to discount the inversion's errors. No SynthFaces style is used in training.

    net = AnalogyNet.from_pretrained("checkpoints/synthfaces_analogy_net.safetensors")
    analogy = net.bind(source_face, reference)         # [1, 3, H, W] each, [-1, 1]
    pseudo_target = analogy(G_A(w))                     # any faces of the source domain

Architecture: the output is the colour map fitted by least squares on the example pair
(:class:`adapt_common.colour_map.ColourMap`) plus a residual of a small U-Net on B, its colour-mapped image and the
pixel position, modulated (FiLM) by a code of the example pair and given the pair's features at 1/4 size (aligned
faces put a style's fixed patterns, stripes or a background, at the same place). The residual's last layer starts at
zero, so an untrained net is the colour map exactly, as :class:`~adapt_common.analogy.ImageAnalogy` starts.

The net works at ``config.size``: larger images are resized to it and only the predicted *change* is resized back,
so a 1024-px face keeps its detail where the style keeps it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .analogy import _coordinates
from .colour_map import ColourMap
from .files import ManifestFileError, PretrainedFile, manifest_header, read_checked, require_size, save_with_manifest, \
    tensors_hash

FORMAT = "domain-adapt/analogy-net"


class AnalogyNetFileError(ManifestFileError):
    """An analogy-net file that is unreadable, or not of the expected kind."""


@dataclass
class AnalogyNetConfig:
    size: int = 64  # the working size (a power of two >= 16)
    width: int = 32  # channels at the working size, doubled at each of the two halvings
    style_dim: int = 128  # the example pair's code
    degree: int = 3  # of the colour map fitted on the example pair


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class _FiLMBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm, the first modulated by the style code (scale, shift), and a skip."""

    def __init__(self, c: int, style_dim: int):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(c, c, 3, padding=1), _norm(c)
        self.conv2, self.norm2 = nn.Conv2d(c, c, 3, padding=1), _norm(c)
        self.film = nn.Linear(style_dim, 2 * c)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(z)[:, :, None, None].chunk(2, 1)
        h = F.leaky_relu(self.norm1(self.conv1(x)) * (1 + scale) + shift, 0.2)
        return x + F.leaky_relu(self.norm2(self.conv2(h)), 0.2)


def _down(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), _norm(c_out), nn.LeakyReLU(0.2))


def _conv(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), _norm(c_out), nn.LeakyReLU(0.2))


class AnalogyNet(PretrainedFile, nn.Module):
    FILE_NAME = "analogy_net.safetensors"
    WHAT = "analogy-net file"

    def __init__(self, config: AnalogyNetConfig = AnalogyNetConfig()):
        super().__init__()
        if config.size < 16 or config.size & (config.size - 1):
            raise ValueError(f"size must be a power of two >= 16, got {config.size}")
        self.config = config
        w, d = config.width, config.style_dim
        # the example pair (A, A', A' - A): features at 1/4 size and a global code (mean and std of 1/8 features)
        self.pair = nn.Sequential(_conv(9, w), _down(w, 2 * w), _down(2 * w, 4 * w))
        self.pair_global = _down(4 * w, 4 * w)
        self.code = nn.Sequential(nn.Linear(8 * w, d), nn.LeakyReLU(0.2), nn.Linear(d, d))
        # the U-Net on B: [B, C(B), |x|, y] in, the residual over C(B) out
        self.enc1 = _conv(8, w)
        self.enc2 = _down(w, 2 * w)
        self.enc3 = _down(2 * w, 4 * w)
        self.merge = _conv(8 * w, 4 * w)
        self.mid = nn.ModuleList([_FiLMBlock(4 * w, d), _FiLMBlock(4 * w, d)])
        self.up2 = _conv(6 * w, 2 * w)
        self.dec2 = _FiLMBlock(2 * w, d)
        self.up1 = _conv(3 * w, w)
        self.dec1 = _FiLMBlock(w, d)
        self.out = nn.Conv2d(w, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.manifest: dict = {}

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        s = self.config.size
        if images.shape[-2:] == (s, s):
            return images
        return F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    def encode_pair(self, source: torch.Tensor, styled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code [N, style_dim], features at 1/4 size) of example pairs [N, 3, H, W] in [-1, 1]."""
        a, b = self._resize(source), self._resize(styled)
        feats = self.pair(torch.cat([a, b, b - a], 1))
        g = self.pair_global(feats)
        code = self.code(torch.cat([g.mean((2, 3)), g.std((2, 3))], 1))
        return code, feats

    def residual(self, images: torch.Tensor, mapped: torch.Tensor, code: torch.Tensor,
                 pair_feats: torch.Tensor) -> torch.Tensor:
        """The U-Net's correction of the colour-mapped ``mapped`` (both [N, 3, size, size]) for the pair's code."""
        n, _, h, w = images.shape
        e1 = self.enc1(torch.cat([images, mapped, _coordinates(n, h, w, images.device).to(images.dtype)], 1))
        e2 = self.enc2(e1)
        m = self.merge(torch.cat([self.enc3(e2), pair_feats.expand(n, -1, -1, -1)], 1))
        for block in self.mid:
            m = block(m, code)
        u2 = self.dec2(self.up2(torch.cat([F.interpolate(m, scale_factor=2.0), e2], 1)), code)
        u1 = self.dec1(self.up1(torch.cat([F.interpolate(u2, scale_factor=2.0), e1], 1)), code)
        return self.out(u1)

    def forward(self, source: torch.Tensor, styled: torch.Tensor, images: torch.Tensor,
                colour_maps: list[ColourMap] | None = None) -> torch.Tensor:
        """B' for example pairs (``source``, ``styled``) and ``images`` B, all [N, 3, H, W] in [-1, 1] (or one pair
        [1, 3, H, W] for N images); ``colour_maps`` (one per pair) skips refitting them."""
        if source.shape != styled.shape or source.ndim != 4 or source.shape[1] != 3:
            raise ValueError(f"an example pair is two RGB batches of one shape, got {tuple(source.shape)} and "
                             f"{tuple(styled.shape)}")
        if images.ndim != 4 or images.shape[1] != 3 or source.shape[0] not in (1, images.shape[0]):
            raise ValueError(f"expected images [N, 3, H, W] and one example pair or N of them, got "
                             f"{tuple(images.shape)} and {source.shape[0]} pairs")
        if colour_maps is None:
            colour_maps = [ColourMap.fit(a[None], b[None], degree=self.config.degree)
                           for a, b in zip(source, styled)]
        if len(colour_maps) == 1:
            mapped = colour_maps[0](images)
        else:
            mapped = torch.cat([c(x[None]) for c, x in zip(colour_maps, images)])
        code, feats = self.encode_pair(source, styled)
        return self.apply_code(images, mapped, code, feats)

    def apply_code(self, images: torch.Tensor, mapped: torch.Tensor, code: torch.Tensor,
                   pair_feats: torch.Tensor) -> torch.Tensor:
        """B' = C(B) + the residual resized to B's size, for ``images`` B and their colour maps ``mapped``."""
        small, small_mapped = self._resize(images), self._resize(mapped)
        change = self.residual(small, small_mapped, code.expand(images.shape[0], -1), pair_feats)
        if change.shape[-2:] != images.shape[-2:]:
            change = F.interpolate(change, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return (mapped + change).clamp(-1, 1)

    def bind(self, source: torch.Tensor, styled: torch.Tensor) -> "BoundAnalogy":
        """The analogy of one example pair ([1, 3, H, W] each), as a module images -> analogous images."""
        return BoundAnalogy(self, source, styled)

    # -- files ------------------------------------------------------------------------------------------------

    def _write_pretrained(self, path: Path, **manifest) -> Path:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        info = {**manifest_header(FORMAT), "analogy_net": asdict(self.config),
                "num_parameters": sum(p.numel() for p in self.parameters()), **manifest,
                "content_hash": tensors_hash(tensors)}
        return save_with_manifest(tensors, path, FORMAT, info)

    @classmethod
    def _read_pretrained(cls, path: Path, *, verify_hash: bool = True) -> "AnalogyNet":
        tensors, manifest, _ = read_checked(path, FORMAT, cls.WHAT, AnalogyNetFileError, verify_hash=verify_hash)
        raw = manifest.get("analogy_net")
        if not isinstance(raw, dict) or set(raw) - set(AnalogyNetConfig.__dataclass_fields__):
            raise AnalogyNetFileError(f"{path}: its manifest has no valid 'analogy_net' entry (got {raw!r})")
        try:
            config = AnalogyNetConfig(**{k: int(v) for k, v in raw.items()})
        except (TypeError, ValueError) as e:
            raise AnalogyNetFileError(f"{path}: its manifest's 'analogy_net' entry is not a set of integers "
                                      f"({raw!r})") from e
        require_size("size", config.size, 1024, path, 16)
        require_size("width", config.width, 512, path, 1)
        require_size("style_dim", config.style_dim, 4096, path, 1)
        require_size("degree", config.degree, 6, path, 0)
        with torch.device("meta"):  # check the shapes before allocating anything
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        if found != expected:
            wrong = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
            raise AnalogyNetFileError(f"{path}: its tensors do not fit the analogy net its manifest describes: "
                                      f"{wrong[:4]} differ")
        net = cls(config)
        net.load_state_dict(tensors)
        net.manifest = {**manifest, "path": str(path)}
        return net.requires_grad_(False).eval()


class BoundAnalogy(nn.Module):
    """An :class:`AnalogyNet` with its example pair fixed (the pair's colour map, code and features computed once):
    images -> analogous images, as an :class:`adapt_common.analogy.ImageAnalogy` is."""

    def __init__(self, net: AnalogyNet, source: torch.Tensor, styled: torch.Tensor):
        super().__init__()
        if source.shape[0] != 1:
            raise ValueError(f"an analogy is bound to one example pair, got {source.shape[0]}")
        self.net = net
        with torch.no_grad():
            source, styled = source.detach().float().clamp(-1, 1), styled.detach().float().clamp(-1, 1)
            self.colour_map = ColourMap.fit(source, styled, degree=net.config.degree)
            code, feats = net.encode_pair(source, styled)
        self.register_buffer("code", code)
        self.register_buffer("pair_feats", feats)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.apply_code(images, self.colour_map(images), self.code, self.pair_feats)
