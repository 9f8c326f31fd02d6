"""Fixed splits, few-shot and evaluation sets, folder export and the preview grid."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..image_io import make_grid, save_image, to_uint8
from .captions import captions
from .domains import DOMAINS, get_domain, render_domain
from .params import FaceParams, sample_params

#: Seed stream of each split. Faces of different splits never coincide (different hash streams).
SPLITS = {"train": 0, "fewshot": 1, "eval": 2}
FEWSHOT_SHOTS = (1, 5, 10)


def split_params(split: str, n: int, offset: int = 0) -> FaceParams:
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; known: {list(SPLITS)}")
    return sample_params(n, seed=SPLITS[split], offset=offset)


def fewshot_set(domain: str, shots: int, size: int = 64) -> tuple[torch.Tensor, FaceParams]:
    """The fixed ``shots``-shot set of a domain: the first ``shots`` faces of the fewshot stream, so the
    1-shot set is the first face of the 5-shot set, which is the first five of the 10-shot set."""
    if shots < 1:
        raise ValueError("shots must be >= 1")
    if shots not in FEWSHOT_SHOTS:
        import warnings
        warnings.warn(f"{shots} shots: the standard settings are {FEWSHOT_SHOTS}", stacklevel=2)
    return _fewshot_prefix(domain, shots, size)


def fewshot_image(domain: str, index: int, size: int = 64) -> torch.Tensor:
    """Face ``index`` of the fewshot stream [1, 3, size, size], as every few-shot set holding it has it (the faces
    before it are rendered with it, so its pixels are those of the set's batch; no shots setting, so no warning)."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    return _fewshot_prefix(domain, index + 1, size)[0][index:index + 1]


def _fewshot_prefix(domain: str, n: int, size: int) -> tuple[torch.Tensor, FaceParams]:
    params = split_params("fewshot", n)
    return render_domain(params, domain, size=size), params


def eval_set(domain: str, n: int, size: int = 64, offset: int = 0) -> tuple[torch.Tensor, FaceParams]:
    """Held-out faces ``offset .. offset+n-1`` of the eval stream, rendered in ``domain``."""
    params = split_params("eval", n, offset)
    return render_domain(params, domain, size=size), params


def export_folder(domain: str, n: int, out_dir: str | os.PathLike, size: int = 64, split: str = "train",
                  offset: int = 0, batch: int = 256, caption_seed: int = 0) -> Path:
    """Write ``n`` images of ``domain`` as PNGs (``000000.png`` ...) plus ``metadata.jsonl`` (one line per
    image: ``file_name``, ``domain``, ``split``, ``index``, ``caption``, ``captions`` (3 variants),
    ``attributes`` and ``params``). The layout Hugging Face ``imagefolder`` datasets read."""
    get_domain(domain)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    from .captions import ATTRIBUTE_VALUES, attributes
    lines = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        params = split_params(split, m, offset + start)
        images = to_uint8(render_domain(params, domain, size=size))
        caps = [captions(params, domain, seed=caption_seed + k) for k in range(3)]
        attrs = attributes(params)
        rows = params.to_dict()
        for i in range(m):
            idx = offset + start + i
            name = f"{idx:06d}.png"
            Image.fromarray(images[i]).save(out / name)
            lines.append(json.dumps({
                "file_name": name, "domain": domain, "split": split, "index": idx,
                "caption": caps[0][i], "captions": [c[i] for c in caps],
                "attributes": {a: ATTRIBUTE_VALUES[a][int(v[i])] for a, v in attrs.items()},
                "params": {k: v[i] for k, v in rows.items()},
            }))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return out


def preview_grid(path: str | os.PathLike | None = None, n_faces: int = 6, size: int = 64,
                 domains: list[str] | None = None, split: str = "eval", offset: int = 0,
                 labels: bool = True) -> torch.Tensor:
    """One row per domain (all domains by default), the same ``n_faces`` faces in every column, with the
    domain name on the left when ``labels``. Saved as PNG when ``path`` is given; returns [3, H, W]."""
    domains = list(domains or DOMAINS)
    params = split_params(split, n_faces, offset)
    rows = torch.cat([render_domain(params, d, size=size) for d in domains])
    grid = make_grid(rows, nrow=n_faces, padding=2, pad_value=1.0)
    if labels:
        grid = _add_labels(grid, domains, size, padding=2)
    if path is not None:
        save_image(grid, path)
    return grid


def _add_labels(grid: torch.Tensor, names: list[str], size: int, padding: int) -> torch.Tensor:
    from PIL import Image, ImageDraw, ImageFont
    try:
        font = ImageFont.load_default(size=max(10, min(18, size // 4)))
    except TypeError:  # very old Pillow
        font = ImageFont.load_default()
    width = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=font)) for n in names) + 10
    arr = to_uint8(grid)[0]
    h = arr.shape[0]
    canvas = Image.new("RGB", (width + arr.shape[1], h), (255, 255, 255))
    canvas.paste(Image.fromarray(arr), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(names):
        y = padding + r * (size + padding) + size // 2
        draw.text((4, y), name, fill=(0, 0, 0), font=font, anchor="lm")
    import numpy as np
    t = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
    return t.contiguous()
