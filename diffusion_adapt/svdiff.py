"""SVDiff spectral shifts on any torch model (diffusers UNets, transformers text encoders).

Every ``Conv2d``, ``Linear`` and ``Embedding`` weight W (a conv kernel seen as C_out × (C_in·k·k)) is factored
once, W = U·diag(σ)·Vᵀ, and gets a trainable shift δ ∈ R^r (r = min(m, n)):

    W_δ = W + U·diag(ReLU(σ + s·δ) − σ)·Vᵀ

which equals U·diag(ReLU(σ + s·δ))·Vᵀ up to the SVD's round-off and is *exactly* W at δ = 0 (no residual buffer).
``GroupNorm``/``LayerNorm`` weights get an additive per-channel δ (the official code's convention; a length-1 δ
from mkshing's files rescales γ as a whole). Biases are never shifted. ``s`` is the strength (scale).

Files use the public layout of ``svdiff-pytorch``: ``spectral_shifts.safetensors`` with keys ``<module
path>.delta`` (1-D float32), so files from that tool load here and ours load there; our manifest (base model
hash, per-module sizes, the 1-D convention) goes in the safetensors metadata and beside the file as JSON.

SVDs are computed once per weight and cached on disk by content hash (``$DOMAIN_ADAPT_SVD_CACHE`` or
``~/.cache/domain_adapt/svd``): at Stable Diffusion scale the CPU SVD takes tens of minutes.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from adapt_common.files import atomic_path, read_with_manifest, save_with_manifest

FORMAT = "domain-adapt/spectral-shifts"
SVD_TYPES = (nn.Conv2d, nn.Linear, nn.Embedding)
NORM_TYPES = (nn.GroupNorm, nn.LayerNorm)


class ShiftFileError(ValueError):
    """A spectral-shift file that cannot be read or does not fit the model."""


def _svd_cache_dir() -> Path:
    return Path(os.environ.get("DOMAIN_ADAPT_SVD_CACHE", Path.home() / ".cache" / "domain_adapt" / "svd"))


def cached_svd(w: torch.Tensor, use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U [m, r], σ [r], Vᵀ [r, n] of a 2-D float tensor, from the disk cache when the same tensor was seen."""
    w = w.detach().float().cpu().contiguous()
    key = hashlib.sha256(w.numpy().tobytes()).hexdigest()[:24] + f"_{w.shape[0]}x{w.shape[1]}"
    path = _svd_cache_dir() / f"{key}.safetensors"
    if use_cache and path.exists():
        try:
            t = load_file(str(path))
            return t["u"], t["s"], t["vh"]
        except (SafetensorError, OSError, KeyError):
            pass  # a damaged cache entry is recomputed
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    u, s, vh = u.float().contiguous(), s.float().contiguous(), vh.float().contiguous()
    if use_cache:
        try:
            with atomic_path(path) as tmp:
                save_file({"u": u, "s": s, "vh": vh}, str(tmp))
        except OSError:
            pass  # a read-only cache is not an error
    return u, s, vh


class SpectralShift(nn.Module):
    """W -> W + U diag(ReLU(σ + s·δ) − σ) Vᵀ for a weight of shape ``shape`` (reshaped to [shape[0], -1])."""

    def __init__(self, weight: torch.Tensor, use_cache: bool = True):
        super().__init__()
        u, s, vh = cached_svd(weight.reshape(weight.shape[0], -1), use_cache)
        self.register_buffer("u", u.to(weight.device), persistent=False)
        self.register_buffer("s", s.to(weight.device), persistent=False)
        self.register_buffer("vh", vh.to(weight.device), persistent=False)
        self.delta = nn.Parameter(torch.zeros_like(s, device=weight.device))
        self.scale = 1.0

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        change = torch.relu(self.s + self.scale * self.delta) - self.s
        return w + ((self.u * change) @ self.vh).reshape(w.shape).to(w.dtype)


class NormShift(nn.Module):
    """γ -> γ + s·δ per channel (the official convention), or, for a length-1 δ (mkshing's files: γ's single
    singular value ‖γ‖ shifted), γ · ReLU(‖γ‖ + s·δ) / ‖γ‖."""

    def __init__(self, channels: int, device=None, per_channel: bool = True):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(channels if per_channel else 1, device=device))
        self.scale = 1.0

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        if self.delta.numel() == g.numel():
            return g + self.scale * self.delta.to(g.dtype)
        norm = g.norm().clamp_min(1e-12)
        return g * torch.relu(norm + self.scale * self.delta[0]) / norm


def add_spectral_shifts(model: nn.Module, *, norms: bool = True, use_cache: bool = True,
                        skip: Sequence[str] = ()) -> dict[str, nn.Module]:
    """Freeze ``model`` and attach a shift to every Conv2d/Linear/Embedding (and norm) weight; returns
    {module path: shift}. A module whose weight is already shifted is left as it is."""
    model.requires_grad_(False)
    shifts = {}
    for name, m in list(model.named_modules()):
        if any(name.startswith(p) for p in skip) or getattr(m, "weight", None) is None:
            continue
        if parametrize.is_parametrized(m, "weight"):
            shifts[name] = m.parametrizations.weight[0]
            continue
        if isinstance(m, SVD_TYPES):
            shift = SpectralShift(m.weight, use_cache)
        elif norms and isinstance(m, NORM_TYPES) and m.weight is not None:
            shift = NormShift(m.weight.numel(), m.weight.device)
        else:
            continue
        parametrize.register_parametrization(m, "weight", shift)
        shifts[name] = shift
    return shifts


def shifts_of(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m.parametrizations.weight[0] for name, m in model.named_modules()
            if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0],
                                                                        (SpectralShift, NormShift))}


def shift_parameter_groups(model: nn.Module, lr: float, lr_1d: float) -> list[dict]:
    """AdamW groups: spectral shifts at ``lr``, norm shifts at ``lr_1d`` (SVDiff: 1e-3 and 1e-6)."""
    s2d, s1d = [], []
    for shift in shifts_of(model).values():
        (s1d if isinstance(shift, NormShift) else s2d).append(shift.delta)
    return [g for g in ({"params": s2d, "lr": lr}, {"params": s1d, "lr": lr_1d}) if g["params"]]


def num_shift_values(model: nn.Module) -> tuple[int, int]:
    """(spectral shift values, norm shift values)."""
    a = b = 0
    for shift in shifts_of(model).values():
        if isinstance(shift, NormShift):
            b += shift.delta.numel()
        else:
            a += shift.delta.numel()
    return a, b


def set_scale(model: nn.Module, scale: float) -> None:
    for shift in shifts_of(model).values():
        shift.scale = float(scale)


#: transformers 4 nested the CLIP text transformer under ``text_model``; transformers 5's ``CLIPTextModel`` is the
#: transformer itself. Public text-encoder files keep the ``text_model.`` names, so they are written and read so.
TEXT_MODEL_PREFIX = "text_model."


def _key_prefix(model: nn.Module) -> str:
    is_text = type(model).__name__.startswith("CLIPText") and not hasattr(model, "text_model")
    return TEXT_MODEL_PREFIX if is_text else ""


def shift_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<module path>.delta": δ} (the public layout; CLIP text encoders under ``text_model.``)."""
    prefix = _key_prefix(model)
    return {f"{prefix}{name}.delta": shift.delta.detach().float().cpu().contiguous()
            for name, shift in shifts_of(model).items()}


def load_shift_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "shift file") -> None:
    """Put δs into the model's shifts; every key must name a shifted module of the right size."""
    shifts = shifts_of(model)
    prefix = _key_prefix(model)
    if prefix:
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    unknown = [k for k in state if not k.endswith(".delta") or k[:-len(".delta")] not in shifts]
    if unknown:
        raise ShiftFileError(f"{source}: {len(unknown)} keys name no shifted module of this model, e.g. "
                             f"{unknown[:3]}; it was made for another architecture")
    with torch.no_grad():
        for name, shift in shifts.items():
            d = state.get(f"{name}.delta")
            if d is None:
                shift.delta.zero_()
                continue
            d = d.reshape(-1).float()
            if isinstance(shift, NormShift) and d.numel() != shift.delta.numel():
                if d.numel() != 1 and d.numel() != shift.delta.numel():
                    raise ShiftFileError(f"{source}: {name}.delta has {d.numel()} values; a norm of this model "
                                         f"takes {shift.delta.numel()} (per channel) or 1 (mkshing's scalar)")
                shift.delta = nn.Parameter(d.to(shift.delta.device))  # mkshing's length-1 convention
                continue
            if d.numel() != shift.delta.numel():
                raise ShiftFileError(f"{source}: {name}.delta has {d.numel()} values, this model's weight has "
                                     f"{shift.delta.numel()} singular values: another architecture")
            shift.delta.copy_(d)


def save_shifts(model: nn.Module, path: str | Path, *, base_hash: str | None = None, extra: dict | None = None,
                half: bool = False) -> Path:
    """Write ``<module path>.delta`` tensors (the public layout) with our manifest in the metadata."""
    path = Path(path)
    state = shift_state(model)
    if half:
        state = {k: v.half() for k, v in state.items()}
    sizes = {k[:-len(".delta")]: v.numel() for k, v in state.items()}
    norm_names = [n for n, s in shifts_of(model).items() if isinstance(s, NormShift)]
    manifest = {"format": FORMAT, "version": "1", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "base_model_hash": base_hash, "num_values": sum(sizes.values()),
                "norm_convention": "per-channel additive", "norm_modules": len(norm_names),
                "dtype": "float16" if half else "float32", **(extra or {})}
    return save_with_manifest(state, path, FORMAT, {**manifest, "sizes": sizes})


def read_shifts(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, manifest); a public svdiff-pytorch file has no manifest ({} then)."""
    tensors, manifest, _ = read_with_manifest(path, None, "shift file", ShiftFileError)
    tensors = {k: v.float() for k, v in tensors.items()}
    bad = [k for k in tensors if not k.endswith(".delta")]
    if bad:
        raise ShiftFileError(f"{path}: keys {bad[:3]} are not spectral shifts ('<module path>.delta')")
    return tensors, manifest


def mix_shifts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Σ wᵢ·δᵢ key by key (a key missing from a file counts as 0): adding, weighting and interpolating
    (α, 1 − α) shift files, which share the base model's SVD basis."""
    if len(states) != len(weights) or not states:
        raise ValueError("need one weight per shift file")
    out: dict[str, torch.Tensor] = {}
    for st, w in zip(states, weights):
        for k, v in st.items():
            out[k] = out[k] + float(w) * v if k in out else float(w) * v
    return out


def bake(model: nn.Module) -> nn.Module:
    """Replace every shifted weight by its current value (at the current scale): a plain model again."""
    for name, m in list(model.named_modules()):
        if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0],
                                                                    (SpectralShift, NormShift)):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


def apply_shift_files(model: nn.Module, files: Iterable[tuple[str, float]], use_cache: bool = True) -> nn.Module:
    """Shift ``model`` (in place) by Σ wᵢ·δᵢ of the given files."""
    states = []
    weights = []
    for path, w in files:
        tensors, _ = read_shifts(path)
        states.append(tensors)
        weights.append(w)
    add_spectral_shifts(model, use_cache=use_cache)
    load_shift_state(model, mix_shifts(states, weights), source=", ".join(str(p) for p, _ in files))
    return model
