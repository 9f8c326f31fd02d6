"""Which implementation an op call uses (one rule for every op)."""
from __future__ import annotations

from typing import Callable

import torch

IMPLS = ("auto", "ref", "torch", "cuda")


def run(impl: str, x: torch.Tensor, ref: Callable[[], torch.Tensor], fast: Callable[[], torch.Tensor],
        cuda: Callable[[], torch.Tensor | None]) -> torch.Tensor:
    """``ref`` for impl="ref"; the CUDA kernel for CUDA tensors (impl "auto"/"cuda") when it is built, which
    returns None otherwise; the optimised PyTorch path in every other case."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; expected one of {', '.join(IMPLS)}")
    if impl == "ref":
        return ref()
    if x.is_cuda:
        y = cuda()
        if y is not None:
            return y
    elif impl == "cuda":
        raise ValueError("impl='cuda' needs a CUDA tensor")
    return fast()
