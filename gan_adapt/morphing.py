"""Cross-domain morphing: frames along a path of keyframes, each a generator plus weighted directions.

Between two keyframes the directions' weights are interpolated linearly (a direction missing from one side
has weight 0 there) and, when the generators differ, so are their weights, ``θ(t) = (1 − t)·θ_A + t·θ_B``
(StyleDomain's weight morphing of aligned generators: both must be fine-tuned from the same source). The
truncation centre follows the same interpolation. This covers direction ramps, domain-to-domain morphs, weight
morphs to a few-shot generator, and the paper's combined morphing (a direction ramp, a weight morph with the
direction on, a direction swap on the target generator, and the way back).

Output: a frame tensor [F, B, 3, H, W] in [-1, 1], written as a strip (rows = samples, columns = frames), an
animated GIF and an MP4 (H.264 through imageio-ffmpeg's bundled ffmpeg).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from adapt_common.files import atomic_path
from adapt_common.image_io import save_grid, to_uint8
from .directions import Direction, DomainEdit
from .networks import Generator


@dataclass
class Keyframe:
    generator: Generator
    directions: list[tuple[Direction, float]] = field(default_factory=list)
    label: str = ""


def lerp_generators(g_a: Generator, g_b: Generator, t: float) -> Generator:
    """A new generator with weights ``(1 − t)·θ_A + t·θ_B`` (both of one architecture)."""
    sa, sb = g_a.state_dict(), g_b.state_dict()
    if g_a.config.to_dict() != g_b.config.to_dict() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError("weight morphing needs two generators of the same architecture (fine-tuned from one "
                         f"source); got {g_a.config.to_dict()} and {g_b.config.to_dict()}")
    g = Generator(config=g_a.config).to(next(g_a.parameters()).device)
    g.load_state_dict({k: torch.lerp(sa[k].float(), sb[k].float(), float(t)).to(sa[k].dtype) for k in sa})
    if g_a.latent_avg_known and g_b.latent_avg_known:
        g.set_latent_avg(torch.lerp(g_a.latent_avg, g_b.latent_avg, float(t)))
    return g.eval().requires_grad_(False)


def _blend(a: Sequence[tuple[Direction, float]], b: Sequence[tuple[Direction, float]], t: float):
    weights: dict[int, list] = {}
    for d, w in a:
        weights.setdefault(id(d), [d, 0.0, 0.0])[1] += w
    for d, w in b:
        weights.setdefault(id(d), [d, 0.0, 0.0])[2] += w
    return [(d, (1 - t) * wa + t * wb) for d, wa, wb in weights.values()]


@torch.no_grad()
def morph(keyframes: Sequence[Keyframe], z: torch.Tensor, steps: int = 8, *, truncation: float = 1.0,
          noise_mode: str = "const", callback: Callable[[int, int], object] | None = None) -> torch.Tensor:
    """Frames [F, B, 3, H, W] along the keyframes for latents z [B, D]: ``steps`` frames per segment, the
    last keyframe included once (F = (K − 1)·(steps − 1) + 1). ``callback(done, F)``, when given, is called after
    each frame with the number of frames rendered so far (1 .. F); its return value is ignored."""
    if len(keyframes) < 2:
        raise ValueError("a morph needs at least two keyframes")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    for k in keyframes:  # refuse misfits (and note transfers) once, not per frame
        DomainEdit(k.generator, k.directions)
    frames = []
    total = (len(keyframes) - 1) * (steps - 1) + 1
    for i, (ka, kb) in enumerate(zip(keyframes[:-1], keyframes[1:])):
        ts = torch.linspace(0, 1, steps).tolist()
        for t in ts if i == len(keyframes) - 2 else ts[:-1]:
            g = ka.generator if kb.generator is ka.generator or t == 0 else \
                kb.generator if t == 1 else lerp_generators(ka.generator, kb.generator, t)
            edit = DomainEdit(g, _blend(ka.directions, kb.directions, t), check=False)
            frames.append(edit.generate(z.to(next(g.parameters()).device), truncation=truncation,
                                        noise_mode=noise_mode).float().cpu())
            if callback is not None:
                callback(len(frames), total)
    return torch.stack(frames)


def save_strip(frames: torch.Tensor, path: str | Path) -> Path:
    """One row per sample, one column per frame."""
    f, b = frames.shape[:2]
    return save_grid(frames.transpose(0, 1).reshape(f * b, *frames.shape[2:]), path, nrow=f)


def _tiles(frames: torch.Tensor) -> list:
    """Each frame's samples side by side, as uint8 HxWx3 arrays."""
    return [to_uint8(torch.cat(list(fr), dim=2))[0] for fr in frames]


def save_gif(frames: torch.Tensor, path: str | Path, fps: float = 8, boomerang: bool = True) -> Path:
    from PIL import Image
    images = [Image.fromarray(a) for a in _tiles(frames)]
    if boomerang:
        images = images + images[-2:0:-1]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def save_mp4(frames: torch.Tensor, path: str | Path, fps: float = 8, boomerang: bool = True) -> Path:
    import imageio_ffmpeg
    arrays = _tiles(frames)
    if boomerang:
        arrays = arrays + arrays[-2:0:-1]
    h, w = arrays[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        # "-f mp4": the temporary name has no .mp4; macro_block_size pads sizes H.264 cannot take.
        writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", quality=8,
                                             macro_block_size=16, output_params=["-f", "mp4"])
        writer.send(None)
        for a in arrays:
            writer.send(a.tobytes())
        writer.close()
    return path
