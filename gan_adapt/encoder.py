"""A style-invariant encoder: image -> the W latent of the *source* face under any style.

One-shot adaptation from a reference image needs the pair (source face, reference). Optimisation-based inversion
(:mod:`.inversion`) finds a latent whose image reproduces the reference, style included, because a generator
can imitate a colour map or a texture with a few StyleSpace numbers; the pair then shows no style to learn. e4e
avoids this on real faces with an encoder trained on source photos only. This one goes further: it is trained on
the source generator's own images in random procedural styles (:mod:`adapt_common.random_styles`) to return the
latent of the *unstyled* face, so that it learns to see through styles as such, including ones it never saw.

    enc = StyleEncoder.from_pretrained("checkpoints/synthfaces_encoder.safetensors")
    inv = enc.invert(G, reference)          # .w [1, n_latent, D] (one W row repeated), .image = G(w)

It predicts one W row as ``w_avg + w_std * f(x)`` (the statistics of the generator's W, so the net's outputs are
unit scale), and is trained by ``python -m gan_adapt train --config configs/encoder_synthfaces.yaml``
(:mod:`.training.encoder`) for any generator: at 1024 px the image is resized to ``input_size`` first.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from adapt_common.files import (ManifestFileError, PretrainedFile, manifest_header, read_checked, require_size,
                                save_with_manifest, tensors_hash)
from .inversion import Inversion
from .networks import Generator

FORMAT = "domain-adapt/style-encoder"


class EncoderFileError(ManifestFileError):
    """An encoder file that is unreadable, or not of the expected kind."""


@dataclass
class EncoderConfig:
    style_dim: int = 512  # the generator's W size
    input_size: int = 64  # images are resized to this (a power of two >= 8)
    width: int = 16  # channels of the first block, doubled at each halving (up to max_width)
    max_width: int = 256


class _Block(nn.Module):
    """Two 3x3 convolutions (the second halving the size) with GroupNorm and LeakyReLU, plus a strided skip."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.LeakyReLU(0.2),
            nn.Conv2d(c_out, c_out, 3, stride=2, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.LeakyReLU(0.2))
        self.skip = nn.Conv2d(c_in, c_out, 1, stride=2)

    def forward(self, x):
        return self.body(x) + self.skip(x)


class StyleEncoder(PretrainedFile, nn.Module):
    FILE_NAME = "encoder.safetensors"
    WHAT = "encoder file"

    def __init__(self, config: EncoderConfig):
        super().__init__()
        size = config.input_size
        if size < 8 or size & (size - 1):
            raise ValueError(f"input_size must be a power of two >= 8, got {size}")
        self.config = config
        c = config.width
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.LeakyReLU(0.2)]
        while size > 4:
            c_out = min(c * 2, config.max_width)
            layers.append(_Block(c, c_out))
            c, size = c_out, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * 16, 512), nn.LeakyReLU(0.2),
                                  nn.Linear(512, config.style_dim))
        self.register_buffer("w_avg", torch.zeros(config.style_dim))
        self.register_buffer("w_std", torch.ones(config.style_dim))
        self.manifest: dict = {}

    @classmethod
    def for_generator(cls, g: Generator, input_size: int | None = None, width: int = 16, max_width: int = 256,
                      n_stats: int = 10000, seed: int = 0) -> "StyleEncoder":
        """An untrained encoder for ``g``, its output scaled by the statistics of ``n_stats`` of g's W latents."""
        enc = cls(EncoderConfig(style_dim=g.style_dim, input_size=input_size or min(g.size, 256), width=width,
                                max_width=max_width))
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            z = torch.randn(n_stats, g.style_dim, generator=gen).to(next(g.parameters()).device)
            w = torch.cat([g.get_latent(z[i:i + 1000]) for i in range(0, n_stats, 1000)]).cpu()
        enc.w_avg.copy_(w.mean(0))
        enc.w_std.copy_(w.std(0).clamp_min(1e-4))
        return enc

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` [N, 3, H, W] at the encoder's input size (antialiased bilinear; unchanged when it fits)."""
        size = self.config.input_size
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """W latents [N, style_dim] of ``images`` [N, 3, H, W] in [-1, 1] (any size: resized to input_size)."""
        return self.w_avg + self.w_std * self.head(self.features(self.to_input(images)))

    def normalised_error(self, w_pred: torch.Tensor, w_true: torch.Tensor) -> torch.Tensor:
        """Mean square error in units of W's spread per dimension (the training loss)."""
        return ((w_pred - w_true) / self.w_std).square().mean()

    @torch.no_grad()
    def invert(self, g: Generator, image: torch.Tensor) -> Inversion:
        """The source face of one image [1, 3, H, W] (or [3, H, W]) in [-1, 1]: W+ latent [1, n_latent, D] (one W
        row repeated) and its rendering with the generator's stored noise."""
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"expected one RGB image [1, 3, H, W], got {tuple(image.shape)}")
        self.check_generator(g)
        device = next(g.parameters()).device
        was = self.training
        self.eval()
        try:
            w = self(image.to(device).float())
        finally:
            self.train(was)
        wp = w[:, None].expand(1, g.n_latent, -1).clone()
        img = g.synthesis(g.styles_from_latent(wp), "const")
        target = image.to(device).float()
        if target.shape[-1] != g.size:
            target = F.interpolate(target, size=(g.size, g.size), mode="bilinear", align_corners=False, antialias=True)
        return Inversion(w=wp, image=img, losses=[], mse=float(F.mse_loss(img, target)))

    def check_generator(self, g: Generator) -> None:
        """Refuse a generator of another W size; warn when it is not the one the encoder was trained on."""
        if g.style_dim != self.config.style_dim:
            raise EncoderFileError(f"{self.manifest.get('path', 'this encoder')} was trained for a generator with "
                                   f"{self.config.style_dim}-d W latents; this one has {g.style_dim}. Train an "
                                   "encoder for it (exp.trainer: encoder).")
        base = self.manifest.get("base_generator", {}).get("hash")
        if base is not None and base != tensors_hash(g.state_dict()):
            warnings.warn(f"{self.manifest.get('path', 'this encoder')} was trained on generator {base}, not on "
                          "this one: its latents may not fit it", stacklevel=3)

    # -- files ------------------------------------------------------------------------------------------------

    def _write_pretrained(self, path: Path, **manifest) -> Path:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        info = {**manifest_header(FORMAT), "encoder": asdict(self.config),
                "num_parameters": sum(p.numel() for p in self.parameters()), **manifest,
                "content_hash": tensors_hash(tensors)}
        return save_with_manifest(tensors, path, FORMAT, info)

    @classmethod
    def _read_pretrained(cls, path: Path, *, verify_hash: bool = True) -> "StyleEncoder":
        tensors, manifest, _ = read_checked(path, FORMAT, cls.WHAT, EncoderFileError, verify_hash=verify_hash)
        raw = manifest.get("encoder")
        if not isinstance(raw, dict) or set(raw) - set(EncoderConfig.__dataclass_fields__):
            raise EncoderFileError(f"{path}: its manifest has no valid 'encoder' entry (got {raw!r})")
        try:
            config = EncoderConfig(**{k: int(v) for k, v in raw.items()})
        except (TypeError, ValueError) as e:
            raise EncoderFileError(f"{path}: its manifest's 'encoder' entry is not a set of integers ({raw!r})") from e
        require_size("style_dim", config.style_dim, 4096, path, 1)
        require_size("input_size", config.input_size, 1024, path, 8)
        require_size("width", config.width, 1024, path, 1)
        require_size("max_width", config.max_width, 4096, path, 1)
        with torch.device("meta"):  # check the shapes before allocating anything
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        if found != expected:
            wrong = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
            raise EncoderFileError(f"{path}: its tensors do not fit the encoder its manifest describes: "
                                   f"{wrong[:4]} differ")
        enc = cls(config)
        enc.load_state_dict(tensors)
        enc.manifest = {**manifest, "path": str(path)}
        return enc.eval()
