"""Image reading and writing shared by every tool: tensors in [-1, 1], NCHW, RGB."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageReadError(ValueError):
    """An input file that is not a readable image."""


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] (values outside are clamped)."""
    if images.ndim == 3:
        images = images[None]
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile [N, C, H, W] into one [C, H', W'] image, ``nrow`` images per row (default: about square)."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = images.new_full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one [3, H, W] (or [1, 3, H, W]) image in [-1, 1] as PNG (or any format PIL knows by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)[0]).save(path)
    return path


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    return save_image(make_grid(images.detach().float().cpu(), nrow=nrow), path)


def load_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """Read an image file as [1, 3, H, W] in [-1, 1]. Any mode is converted to RGB (alpha composited on
    white); ``size`` resizes (Lanczos) to size x size after a centre crop to a square."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("RGB")
    except FileNotFoundError:
        raise  # a missing file is not a corrupt one: keep its own error
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e}). Use a PNG, JPEG or WebP file.") from e
    if size is not None:
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((size, size), Image.LANCZOS)
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()
