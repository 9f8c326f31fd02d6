"""Training images shared by the GAN and diffusion trainers: a folder of a few images (few-shot), or SynthFaces
rendered on the fly.

``"synthfaces:cat"`` means faces of the SynthFaces domain ``cat`` (``synthfaces:cat@10`` its fixed 10-shot
set); anything else is a folder path. Folders may hold images of any size and mode: each is converted to RGB,
centre-cropped to a square and resized, with one summary line saying what was done; unreadable files are
reported and skipped, never a crash midway.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from adapt_common.image_io import ImageReadError, load_image, peek_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class FolderReport:
    used: int
    skipped: list[tuple[str, str]]  # (file, reason)
    resized: int
    converted: int

    def summary(self, folder, size) -> str:
        parts = [f"{folder}: {self.used} images at {size}x{size}"]
        if self.resized:
            parts.append(f"{self.resized} resized/cropped")
        if self.converted:
            parts.append(f"{self.converted} converted to RGB")
        if self.skipped:
            parts.append(f"{len(self.skipped)} unreadable and skipped (" +
                         "; ".join(f"{Path(f).name}: {r}" for f, r in self.skipped[:3]) +
                         (" ..." if len(self.skipped) > 3 else "") + ")")
        return ", ".join(parts)


def load_image_folder(folder: str | Path, size: int) -> tuple[torch.Tensor, FolderReport]:
    """All images of a folder as [N, 3, size, size] in [-1, 1] (sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of training images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    images, skipped, resized, converted = [], [], 0, 0
    for f in files:
        try:
            mode, dims = peek_image(f)
            images.append(load_image(f, size=size))
        except (ImageReadError, OSError, ValueError) as e:
            skipped.append((str(f), str(e).split(": ", 1)[-1][:80]))
            continue
        resized += dims != (size, size)
        converted += mode != "RGB"
    if not images:
        hint = f" ({len(skipped)} files could not be read)" if skipped else ""
        raise ValueError(f"{folder}: no readable images{hint}; expected PNG/JPEG/WebP files")
    report = FolderReport(len(images), skipped, resized, converted)
    if skipped:
        warnings.warn(report.summary(folder, size))
    return torch.cat(images), report


class ImageSource:
    """Batches of real images for the discriminator: a fixed tensor (folder, few-shot set) or a stream."""

    def __init__(self, spec: str, size: int, *, quiet: bool = False):
        self.spec, self.size = spec, size
        self.images: torch.Tensor | None = None
        self.domain: str | None = None
        if spec.startswith("synthfaces:"):
            from adapt_common import synthfaces as sf
            name = spec.split(":", 1)[1]
            name, _, shots = name.partition("@")
            if name not in sf.DOMAINS and name not in sf.HELDOUT_STYLES:
                raise ValueError(f"unknown SynthFaces domain {name!r} in {spec!r}; known: {sorted(sf.DOMAINS)}; "
                                 f"held-out styles: {sorted(sf.HELDOUT_STYLES)}")
            self.domain = name
            if shots:
                self.images, _ = sf.fewshot_set(name, int(shots), size=size)
            self.description = f"SynthFaces {name}" + (f", {shots}-shot set" if shots else " (rendered on the fly)")
        else:
            self.images, report = load_image_folder(spec, size)
            self.description = report.summary(spec, size)
        if not quiet:
            print(f"data: {self.description}")

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else 2 ** 62

    def batch(self, step: int, batch: int, rank: int = 0, world: int = 1, seed: int = 0) -> torch.Tensor:
        """The real batch of one process at one step: rank ``rank``'s slice of the step's global batch of
        ``batch * world`` images, so ``world`` processes together see what one process with ``batch * world``
        sees (and every rank its own images); a pure function of the arguments, so resume is exact."""
        if self.images is None:  # an endless stream of fresh faces, disjoint across ranks and steps
            from adapt_common import synthfaces as sf
            offset = (step * world + rank) * batch
            return sf.render_domain(sf.sample_params(batch, seed=sf.SPLITS["train"], offset=offset), self.domain,
                                    size=self.size)
        # one process (world 1) draws exactly what it drew before the global batch was split this way
        gen = torch.Generator().manual_seed(seed * 7919 + step)
        idx = torch.randint(len(self.images), (batch * world,), generator=gen)
        return self.images[idx[rank * batch:(rank + 1) * batch]]
