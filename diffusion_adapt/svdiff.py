"""SVDiff spectral shifts on any torch model (diffusers UNets, transformers text encoders).

Every ``Conv2d``, ``Linear`` and ``Embedding`` weight W (a conv kernel seen as C_out × (C_in·k·k)) is factored
once, W = U·diag(σ)·Vᵀ, and gets a trainable shift δ ∈ R^r (r = min(m, n)):

    W_δ = W + U·diag(ReLU(σ + s·δ) − σ)·Vᵀ

which equals U·diag(ReLU(σ + s·δ))·Vᵀ up to the SVD's round-off and is *exactly* W at δ = 0 (no residual buffer).
Biases are never shifted. ``s`` is the strength (scale). ``GroupNorm``/``LayerNorm`` weights γ follow one of two
conventions (:data:`NORM_CONVENTIONS`):

- ``public`` (the default): one δ per norm, γ -> γ·ReLU(‖γ‖ + s·δ)/‖γ‖. This is svdiff-pytorch's
  ``SVDGroupNorm``/``SVDLayerNorm``: γ seen as a 1 × C matrix has the single singular value ‖γ‖.
- ``per_channel``: γ -> γ + s·δ, one δ per channel. More freedom, but svdiff-pytorch refuses such files.

Files use the public layout of ``svdiff-pytorch``: ``spectral_shifts.safetensors`` with keys ``<module
path>.delta`` (1-D float32). Its files load here; ours load there when their norms are ``public`` (the
manifest's ``norm_convention`` says which). Our manifest (base model hash, per-module sizes, the norm convention)
goes in the safetensors metadata and beside the file as JSON. ``SpectralShifts.from_pretrained(path)`` reads a file
or a checkpoint folder holding ``spectral_shifts.safetensors`` (``weight_name="spectral_shifts_te.safetensors"``
for a text encoder's); ``SpectralShifts.from_model(model, ...).save_pretrained(path)`` writes one. ``save_shifts``
and ``read_shifts`` are the old names, kept for one release.

SVDs are computed once per weight and cached on disk by content hash (``$DOMAIN_ADAPT_SVD_CACHE`` or
``~/.cache/domain_adapt/svd``): at Stable Diffusion scale the CPU SVD takes tens of minutes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from adapt_common.files import PretrainedFile, atomic_path, manifest_header, pretrained_file, read_with_manifest, \
    require_finite, save_with_manifest, warn_deprecated

FORMAT = "domain-adapt/spectral-shifts"
SVD_TYPES = (nn.Conv2d, nn.Linear, nn.Embedding)
NORM_TYPES = (nn.GroupNorm, nn.LayerNorm)
#: How norm weights are shifted: svdiff-pytorch's one value per norm, one per channel, or not at all.
NORM_CONVENTIONS = ("public", "per_channel", "none")
#: The file name svdiff-pytorch looks for in a checkpoint folder.
SHIFTS_FILE = "spectral_shifts.safetensors"


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
    """A length-1 δ (``public``, svdiff-pytorch's: γ's single singular value ‖γ‖ shifted):
    γ -> γ · ReLU(‖γ‖ + s·δ) / ‖γ‖; a δ per channel (``per_channel``): γ -> γ + s·δ."""

    def __init__(self, channels: int, device=None, per_channel: bool = False):
        super().__init__()
        self.channels = channels
        self.delta = nn.Parameter(torch.zeros(channels if per_channel else 1, device=device))
        self.scale = 1.0

    @property
    def convention(self) -> str:
        return "public" if self.delta.numel() == 1 else "per_channel"

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        if self.delta.numel() == 1:
            norm = g.norm().clamp_min(1e-12)
            # the factor first: ReLU(‖γ‖ + 0)/‖γ‖ is exactly 1, so δ = 0 gives γ bit for bit
            return g * (torch.relu(norm + self.scale * self.delta[0].to(g.dtype)) / norm)
        return g + self.scale * self.delta.to(g.dtype)


def public_norm_change(gamma: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The per-channel change γ·(ReLU(‖γ‖ + δ) − ‖γ‖)/‖γ‖ that a one-value (public) norm shift δ makes at
    scale 1: the same shift written per channel, so it can be added to per-channel ones."""
    gamma = gamma.detach().float().cpu().reshape(-1)
    norm = gamma.norm().clamp_min(1e-12)
    return gamma * (torch.relu(norm + delta.reshape(-1)[0].float()) - norm) / norm


def add_spectral_shifts(model: nn.Module, *, norms: str = "public", use_cache: bool = True,
                        skip: Sequence[str] = ()) -> dict[str, nn.Module]:
    """Freeze ``model`` and attach a shift to every Conv2d/Linear/Embedding (and norm, in the ``norms``
    convention of :data:`NORM_CONVENTIONS`) weight; returns {module path: shift}. A module whose weight is already
    shifted is left as it is."""
    if norms not in NORM_CONVENTIONS:
        raise ValueError(f"norm shifts {norms!r}: choose one of {NORM_CONVENTIONS} ('public' files load in "
                         "svdiff-pytorch)")
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
        elif norms != "none" and isinstance(m, NORM_TYPES) and m.weight is not None:
            shift = NormShift(m.weight.numel(), m.weight.device, per_channel=norms == "per_channel")
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


def restore_trained(params: Sequence[torch.Tensor], saved: Sequence[torch.Tensor]) -> None:
    """Checkpointed values back into the trained tensors. A size that differs is a run of another norm convention
    (runs before one-value norms became the default trained per-channel ones)."""
    for p, v in zip(params, saved):
        if p.shape != v.shape:
            raise ValueError(f"the checkpoint holds a trained tensor of shape {list(v.shape)} where this config "
                             f"trains {list(p.shape)}: it was trained with another training.norm_shifts "
                             f"({'per_channel' if p.numel() == 1 else 'public'}?); resume with that setting")
    with torch.no_grad():
        for p, v in zip(params, saved):
            p.copy_(v)


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
                if d.numel() not in (1, shift.channels):
                    raise ShiftFileError(f"{source}: {name}.delta has {d.numel()} values; a norm of this model "
                                         f"takes 1 (svdiff-pytorch's convention) or {shift.channels} (per channel)")
                # the file's convention replaces the model's
                shift.delta = nn.Parameter(d.to(shift.delta.device), requires_grad=shift.delta.requires_grad)
                continue
            if d.numel() != shift.delta.numel():
                raise ShiftFileError(f"{source}: {name}.delta has {d.numel()} values, this model's weight has "
                                     f"{shift.delta.numel()} singular values: another architecture")
            shift.delta.copy_(d)


def norm_convention(model: nn.Module) -> str:
    """The norm convention of a shifted model's norms: one of :data:`NORM_CONVENTIONS`, or "mixed"."""
    kinds = {shift.convention for shift in shifts_of(model).values() if isinstance(shift, NormShift)}
    return kinds.pop() if len(kinds) == 1 else ("none" if not kinds else "mixed")


def file_norm_convention(manifest: dict) -> str:
    """The norm convention a shift file's manifest states: no manifest is an svdiff-pytorch file ("public"); our
    files from before the convention was recorded as such were per channel; a mix of both counts as per channel."""
    if not manifest:
        return "public"
    kind = manifest.get("norm_convention", "per_channel")
    return kind if kind in NORM_CONVENTIONS else "per_channel"


@dataclass
class SpectralShifts(PretrainedFile):
    """A spectral-shift file's contents: ``"<module path>.delta"`` δs (svdiff-pytorch's layout, float32) and our
    manifest ({} for a public svdiff-pytorch file)."""

    FILE_NAME = SHIFTS_FILE  # what svdiff-pytorch looks for in a checkpoint folder
    WHAT = "shift file"

    tensors: dict[str, torch.Tensor]
    manifest: dict = field(default_factory=dict)
    path: str | None = None  # the file it was loaded from (named in messages)

    @classmethod
    def from_model(cls, model: nn.Module, *, base_hash: str | None = None,
                   extra: dict | None = None) -> "SpectralShifts":
        """The shifts of a shifted model (``base_hash``: the unshifted model's content hash, for the manifest)."""
        state = shift_state(model)
        norm_names = [n for n, s in shifts_of(model).items() if isinstance(s, NormShift)]
        manifest = {"base_model_hash": base_hash, "num_values": sum(v.numel() for v in state.values()),
                    "norm_convention": norm_convention(model), "norm_modules": len(norm_names),
                    "dtype": "float32", **(extra or {})}
        return cls(state, manifest)

    @property
    def convention(self) -> str:
        """The norm convention of the file (:func:`file_norm_convention`)."""
        return file_norm_convention(self.manifest)

    @classmethod
    def _read_pretrained(cls, path: Path) -> "SpectralShifts":
        """The δs as float32; NaN/Inf values are refused (they render black images)."""
        tensors, manifest, _ = read_with_manifest(path, None, cls.WHAT, ShiftFileError)
        tensors = {k: v.float() for k, v in tensors.items()}
        bad = [k for k in tensors if not k.endswith(".delta")]
        if bad:
            raise ShiftFileError(f"{path}: keys {bad[:3]} are not spectral shifts ('<module path>.delta')")
        require_finite(tensors, path)
        return cls(tensors, manifest, str(path))

    def _write_pretrained(self, path: Path, *, half: bool = False) -> Path:
        """The δs (``half``: as float16) with our manifest in the metadata."""
        require_finite(self.tensors, f"{path} (not written: the model's shifts)")
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.tensors.items()}
        if half:
            state = {k: v.half() for k, v in state.items()}
        sizes = {k[:-len(".delta")]: v.numel() for k, v in state.items()}
        written = ("format", "version", "created", "sizes")  # this write's own
        manifest = {**manifest_header(FORMAT), **{k: v for k, v in self.manifest.items() if k not in written}}
        manifest.setdefault("norm_convention", self.convention)  # a public file read here has no manifest
        manifest.update(num_values=sum(sizes.values()), dtype="float16" if half else "float32", sizes=sizes)
        return save_with_manifest(state, path, FORMAT, manifest)


def save_shifts(model: nn.Module, path: str | Path, *, base_hash: str | None = None, extra: dict | None = None,
                half: bool = False) -> Path:
    """Deprecated: ``SpectralShifts.from_model(model, ...).save_pretrained(path)``."""
    warn_deprecated("save_shifts(model, path)", "SpectralShifts.from_model(model, ...).save_pretrained(path)")
    return SpectralShifts.from_model(model, base_hash=base_hash, extra=extra).save_pretrained(path, half=half)


def shift_file_path(path: str | Path) -> Path:
    """A shift file, or a checkpoint folder holding ``spectral_shifts.safetensors`` (as svdiff-pytorch accepts)."""
    return pretrained_file(path, SHIFTS_FILE, SpectralShifts.WHAT)


def read_shifts(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Deprecated: ``SpectralShifts.from_pretrained(path)`` (its ``tensors`` and ``manifest``)."""
    warn_deprecated("read_shifts(path)", "SpectralShifts.from_pretrained(path) (.tensors, .manifest)")
    shifts = SpectralShifts.from_pretrained(path)
    return shifts.tensors, shifts.manifest


def norm_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<module path>.delta": γ} of the model's norm layers (their unshifted weights), named as in shift files:
    what converts one-value norm shifts to per-channel ones (:func:`mix_shifts`)."""
    prefix = _key_prefix(model)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, NORM_TYPES) and getattr(m, "weight", None) is not None:
            w = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            out[f"{prefix}{name}.delta"] = w.detach().float().cpu()
    return out


def _convention_conflicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, set[int]]:
    """{key: sizes} of the keys whose δ has different sizes in different states."""
    sizes: dict[str, set[int]] = {}
    for st in states:
        for k, v in st.items():
            sizes.setdefault(k, set()).add(v.numel())
    return {k: n for k, n in sizes.items() if len(n) > 1}


def mix_shifts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float], *,
               gammas: dict[str, torch.Tensor] | None = None, source: str = "the mix") -> dict[str, torch.Tensor]:
    """Σ wᵢ·δᵢ key by key (a key missing from a file counts as 0): adding, weighting and interpolating
    (α, 1 − α) shift files, which share the base model's SVD basis.

    A norm that one file shifts by one value (svdiff-pytorch's convention) and another per channel cannot be summed
    as it is: each weighted one-value δ is first turned into the per-channel change it makes
    (:func:`public_norm_change`, which needs the base model's norm weights ``gammas``, see :func:`norm_weights`);
    without ``gammas`` such a mix is refused."""
    if len(states) != len(weights) or not states:
        raise ValueError("need one weight per shift file")
    weighted = [{k: float(w) * v for k, v in st.items()} for st, w in zip(states, weights)]
    conflicts = _convention_conflicts(weighted)
    for k, sizes in conflicts.items():
        if len(sizes) != 2 or 1 not in sizes:
            raise ShiftFileError(f"{source}: {k} has {sorted(sizes)} values in different files: they were made for "
                                 "different models")
        if gammas is None:
            raise ShiftFileError(f"{source}: {k} is one value in one file (svdiff-pytorch's norm convention) and "
                                 f"{max(sizes)} per-channel values in another; give the base model (--model) so the "
                                 "one-value norm shifts are converted per channel before mixing")
        if k not in gammas or gammas[k].numel() != max(sizes):
            raise ShiftFileError(f"{source}: {k} names no norm of {max(sizes)} channels in the base model")
        for st in weighted:
            if k in st and st[k].numel() == 1:
                st[k] = public_norm_change(gammas[k], st[k])
    out: dict[str, torch.Tensor] = {}
    for st in weighted:
        for k, v in st.items():
            out[k] = out[k] + v if k in out else v
    require_finite(out, source)  # huge weights can overflow float32
    return out


def bake(model: nn.Module) -> nn.Module:
    """Replace every shifted weight by its current value (at the current scale): a plain model again."""
    for name, m in list(model.named_modules()):
        if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0],
                                                                    (SpectralShift, NormShift)):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


def apply_shift_files(model: nn.Module, files: Iterable[tuple[str, float]], use_cache: bool = True) -> nn.Module:
    """Shift ``model`` (in place) by Σ wᵢ·δᵢ of the given files (or checkpoint folders)."""
    files = list(files)
    states = [SpectralShifts.from_pretrained(path).tensors for path, _ in files]
    source = ", ".join(str(p) for p, _ in files)
    gammas = norm_weights(model)  # before shifting: the base γ, for norms whose conventions differ between files
    add_spectral_shifts(model, use_cache=use_cache)
    load_shift_state(model, mix_shifts(states, [w for _, w in files], gammas=gammas, source=source), source=source)
    return model
