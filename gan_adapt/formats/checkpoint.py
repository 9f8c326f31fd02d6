"""The in-memory checkpoint every format loads into and saves from."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..networks import Discriminator, Generator


@dataclass
class StyleGANCheckpoint:
    """A generator (the EMA weights used for sampling) plus, when the file has them, the training generator
    and the discriminator. ``meta`` holds what else the file said (training args, conv_clamp, ...)."""

    g_ema: Generator
    d: Discriminator | None = None
    g: Generator | None = None
    source_format: str = "memory"
    path: str | None = None
    meta: dict = field(default_factory=dict)

    def to(self, device) -> "StyleGANCheckpoint":
        for m in (self.g_ema, self.d, self.g):
            if m is not None:
                m.to(device)
        return self


def finish_generator(g: Generator, latent_avg: torch.Tensor | None, meta: dict, seed: int = 0) -> Generator:
    """Set the truncation centre from the file, or compute it deterministically (mean of 4096 w)."""
    if latent_avg is not None:
        g.set_latent_avg(latent_avg)
        meta["latent_avg_source"] = "file"
    else:
        g.set_latent_avg(g.mean_latent(4096, seed=seed))
        meta["latent_avg_source"] = "computed: mean of 4096 w from seed 0"
    return g.eval().requires_grad_(False)
