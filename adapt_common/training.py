"""What every trainer needs: atomic, resumable checkpoints (with RNG states), CSV logs, progress bars."""
from __future__ import annotations

import csv
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .files import atomic_path


def rng_state() -> dict:
    """All global RNG states, as tensors and plain containers (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                     gauss], "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_state` (weights_only: tensors, containers, numpy RNG)."""
    return torch.load(path, map_location="cpu", weights_only=True)


class CsvLogger:
    """Appends one row per call to ``path``; columns are fixed by the first row. Resume-safe: an existing
    file is truncated to the rows at or before the resumed step so a restarted run does not log twice."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] | None = None
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                self.fields = list(rows[0].keys())
                keep = [r for r in rows if int(float(r.get("step", 0))) <= resume_step]
                with open(self.path, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=self.fields)
                    w.writeheader()
                    w.writerows(keep)
        elif self.path.exists():
            self.path.unlink()

    def log(self, **row) -> None:
        if self.fields is None:
            self.fields = list(row.keys())
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def progress(total: int, initial: int = 0, desc: str = "", quiet: bool = False) -> tqdm:
    """A tqdm bar; off when stderr is not a terminal (CI logs) unless DOMAIN_ADAPT_PROGRESS=1."""
    enabled = (sys.stderr.isatty() or os.environ.get("DOMAIN_ADAPT_PROGRESS") == "1") and not quiet
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)
