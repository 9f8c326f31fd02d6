"""Training images shared by the GAN and diffusion trainers: a folder of a few images (few-shot), or SynthFaces
rendered on the fly.

A data spec (``data.source``, ``target.image``, ``--real``) is a path, or SynthFaces images in one syntax
(:func:`parse_data_spec`)::

    synthfaces:<domain>[@<shots>][/<index>]

- ``synthfaces:cat``: faces of the SynthFaces domain ``cat`` (a domain of ``DOMAINS`` or a held-out style such as
  ``halftone``), rendered on the fly as training data; as one reference image, the first few-shot face;
- ``synthfaces:cat@10``: its fixed 10-shot set (the first 10 faces of the few-shot stream);
- ``synthfaces:cat/3`` or ``synthfaces:cat@10/3``: the one image at index 3 of that stream (the few-shot sets are
  prefixes of one stream, so both name the same face, rendered in a batch of 4 or of 10: equal up to float
  round-off; with ``@<shots>`` the index must be below the shots).

Folders may hold images of any size and mode: each is converted to RGB, centre-cropped to a square and resized,
with one summary line saying what was done; unreadable files are reported and skipped, never a crash midway.
"""
from __future__ import annotations

import re
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


SYNTHFACES = "synthfaces:"
SPEC_SYNTAX = "synthfaces:<domain>[@<shots>][/<index>]"
_SYNTHFACES_SPEC = re.compile(r"(?P<domain>[^@/]*)(?:@(?P<shots>[^@/]*))?(?:/(?P<index>[^@/]*))?")


class DataSpecError(ValueError):
    """A data spec that does not parse or names no SynthFaces domain."""


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: ``kind`` "synthfaces" (``domain``, optional ``shots`` and ``index``) or "path"."""

    kind: str
    domain: str | None = None
    shots: int | None = None
    index: int | None = None
    path: str | None = None

    @property
    def is_synthfaces(self) -> bool:
        return self.kind == "synthfaces"

    def __str__(self) -> str:
        if not self.is_synthfaces:
            return str(self.path)
        return (SYNTHFACES + self.domain + (f"@{self.shots}" if self.shots is not None else "")
                + (f"/{self.index}" if self.index is not None else ""))

    def fixed_images(self, size: int) -> torch.Tensor | None:
        """The SynthFaces images this spec fixes, [N, 3, size, size]: the ``shots``-shot set, or the one image at
        ``index``; None for a bare domain (a stream rendered on the fly)."""
        from adapt_common import synthfaces as sf
        if self.index is not None:
            if self.shots is None:
                return sf.fewshot_image(self.domain, self.index, size=size)
            return sf.fewshot_set(self.domain, self.shots, size=size)[0][self.index:self.index + 1]
        if self.shots is not None:
            return sf.fewshot_set(self.domain, self.shots, size=size)[0]
        return None

    def reference_image(self, size: int) -> torch.Tensor:
        """One image [1, 3, size, size]: the one at ``index`` (default the first) of the few-shot stream."""
        spec = self if self.index is not None else DataSpec(self.kind, self.domain, self.shots, 0)
        return spec.fixed_images(size)


def parse_data_spec(text: str) -> DataSpec:
    """``synthfaces:<domain>[@<shots>][/<index>]`` (see the module docstring) or anything else as a path. A
    malformed SynthFaces spec or an unknown domain is refused with what is wrong and the syntax."""
    text = str(text)
    if not text.startswith(SYNTHFACES):
        return DataSpec("path", path=text)
    m = _SYNTHFACES_SPEC.fullmatch(text[len(SYNTHFACES):])
    if m is None:
        raise DataSpecError(f"{text!r}: not a SynthFaces data spec; write {SPEC_SYNTAX} (shots before the index, "
                            "e.g. synthfaces:cat@10/3)")
    domain = m["domain"]
    if not domain:
        raise DataSpecError(f"{text!r}: no domain; write {SPEC_SYNTAX}, e.g. synthfaces:sketch")
    shots = _spec_number(text, "shots", m["shots"], minimum=1)
    index = _spec_number(text, "index", m["index"], minimum=0)
    if shots is not None and index is not None and index >= shots:
        raise DataSpecError(f"{text!r}: index {index} is outside the {shots}-shot set (0..{shots - 1}); use a "
                            "smaller index or more shots")
    _check_domain(text, domain)
    return DataSpec("synthfaces", domain, shots, index)


def _spec_number(text: str, what: str, value: str | None, minimum: int) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < minimum:
        least = "a positive integer" if minimum else "an integer >= 0"
        raise DataSpecError(f"{text!r}: {what} {value!r} is not {least}; write {SPEC_SYNTAX}")
    return int(value)


def _check_domain(text: str, domain: str) -> None:
    from adapt_common import synthfaces as sf
    if domain not in sf.DOMAINS and domain not in sf.HELDOUT_STYLES:
        raise DataSpecError(f"unknown SynthFaces domain {domain!r} in {text!r}; known: {sorted(sf.DOMAINS)}; "
                            f"held-out styles: {sorted(sf.HELDOUT_STYLES)}")


class ImageSource:
    """Batches of real images for the discriminator: a fixed tensor (folder, few-shot set) or a stream."""

    def __init__(self, spec: str, size: int, *, quiet: bool = False):
        self.spec, self.size = spec, size
        self.images: torch.Tensor | None = None
        self.domain: str | None = None
        parsed = parse_data_spec(spec)
        if parsed.is_synthfaces:
            self.domain = parsed.domain
            self.images = parsed.fixed_images(size)
            self.description = f"SynthFaces {parsed.domain}" + (
                f", image {parsed.index} of the few-shot set" if parsed.index is not None
                else f", {parsed.shots}-shot set" if parsed.shots is not None else " (rendered on the fly)")
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
