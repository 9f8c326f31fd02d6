"""Seeds and latents as NVIDIA's ``generate.py`` makes them, so a seed gives the face people know."""
from __future__ import annotations

import numpy as np
import torch


def parse_seeds(text: str, limit: int | None = None) -> list[int]:
    """``"0-7"``, ``"1,5,9"`` or ``"0-3,10"`` -> a list of ints (ranges are inclusive). ``limit``: the most seeds
    allowed, checked from the range bounds before any list is built (``0-40000000`` is 40 million ints)."""
    ranges: list[tuple[int, int]] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0],
                                                                              part[1:].split("-", 1)[1])
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                ranges.append((lo_i, hi_i))
            else:
                ranges.append((int(part), int(part)))
        except ValueError:
            raise ValueError(f"bad seed list {text!r}: use numbers and inclusive ranges like 0-7,12") from None
    if not ranges:
        raise ValueError(f"bad seed list {text!r}: no seeds")
    for lo, hi in ranges:
        for s in (lo, hi):
            if not 0 <= s < 2 ** 32:
                raise ValueError(f"seed {s} out of range: numpy seeds are 0 .. 2**32-1")
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if limit is not None and count > limit:
        raise ValueError(f"at most {limit} seeds at once, got {count:,} in {text!r}")
    return [s for lo, hi in ranges for s in range(lo, hi + 1)]


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """[1, z_dim] float32: ``np.random.RandomState(seed).randn(1, z_dim)``, exactly as NVIDIA's generate.py."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def z_from_seeds(seeds: list[int], z_dim: int) -> torch.Tensor:
    return torch.cat([z_from_seed(s, z_dim) for s in seeds])
