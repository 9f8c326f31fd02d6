"""The SynthFaces parameter vector: what every face is made of, and how faces are drawn at random.

Every face is a deterministic function of ``(stream seed, face index)``: column ``j`` of face ``i`` is a
uniform number ``u = hash(seed, i, j)`` (a counter-based 32-bit integer hash, no generator state), mapped to
the parameter by its inverse CDF. So ``sample_params(n, seed, offset)`` returns faces
``offset .. offset+n-1`` of stream ``seed``, independently of ``n`` and of any other call (prefix-stable),
and adding a parameter at the end of :data:`PARAM_SPEC` never changes the earlier ones.

Coordinates used by the renderer: the image is ``[-1, 1]^2`` with ``y`` pointing down; the face frame is the
image frame shifted by ``(shift_x, shift_y)``, rotated by ``tilt`` and divided by ``scale``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch

_MASK32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------------------
# Counter-based hashing (shared by the parameter sampler, deterministic noise and textures)
# ----------------------------------------------------------------------------------------------------------

def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32), without int64 overflow (products stay below 2^48)."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser ("lowbias32") on int64 tensors holding values in [0, 2^32)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mulmod32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mulmod32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_ints(*keys: torch.Tensor | int) -> torch.Tensor:
    """Hash broadcastable integer tensors (any int64 values, also negative or >= 2^32) to [0, 2^32)."""
    h = torch.tensor(0x9E3779B9, dtype=torch.int64)
    for k in keys:
        k = torch.as_tensor(k, dtype=torch.int64)
        lo, hi = k & _MASK32, (k >> 32) & _MASK32
        h = _mix32(h ^ lo)
        h = _mix32((h + 0x632BE5AB) ^ hi)
    return h


def hash_uniform(*keys: torch.Tensor | int) -> torch.Tensor:
    """Uniform float32 numbers in (0, 1), a pure function of the integer keys (broadcast together)."""
    return ((hash_ints(*keys).double() + 0.5) / 2.0 ** 32).float()


# ----------------------------------------------------------------------------------------------------------
# The parameter specification
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ``kind`` is "continuous" (``low..high``, ``dist`` "uniform" or "triangular" — the
    symmetric triangle on the range, peaked at its middle) or "categorical" (``categories`` with ``probs``)."""
    name: str
    kind: str
    doc: str
    low: float = 0.0
    high: float = 1.0
    dist: str = "uniform"
    categories: tuple[str, ...] = ()
    probs: tuple[float, ...] = ()

    def describe(self) -> str:
        if self.kind == "continuous":
            rng = f"{self.low:g}..{self.high:g} ({self.dist})"
        else:
            rng = ", ".join(f"{c} {p:.0%}" for c, p in zip(self.categories, self.probs))
        return f"{self.name:<15} {self.kind:<11} {rng}\n{'':<28}{self.doc}"


def _c(name, low, high, doc, dist="uniform"):
    return ParamSpec(name, "continuous", doc, low=low, high=high, dist=dist)


def _k(name, cats, probs, doc):
    assert abs(sum(probs) - 1) < 1e-6 and len(cats) == len(probs), name
    return ParamSpec(name, "categorical", doc, categories=tuple(cats), probs=tuple(probs))


HAIR_STYLES = ("short", "long", "bald", "afro", "bun", "mohawk")
HAIR_COLOURS = ("black", "brown", "blond", "red", "grey", "blue")
EYE_COLOURS = ("brown", "blue", "green")
GLASSES = ("none", "round", "square", "sunglasses")
HATS = ("none", "beanie", "tophat")
BEARDS = ("none", "moustache", "beard")
EARRINGS = ("none", "gold")

#: Every parameter, in column order. Printed by ``python -m adapt_common.synthfaces info``.
PARAM_SPEC: tuple[ParamSpec, ...] = (
    # head
    _c("head_width", 0.85, 1.12, "head width factor (semi-axis 0.44 x this, face units)", "triangular"),
    _c("head_height", 0.92, 1.08, "head height factor (semi-axis 0.54 x this)", "triangular"),
    _c("jaw", 0.0, 1.0, "jaw roundness: 0 narrow pointed chin, 1 broad round jaw"),
    _c("skin_tone", 0.0, 1.0, "skin tone, light (0) to dark (1), interpolated on a 4-colour ramp"),
    # hair
    _k("hair_style", HAIR_STYLES, (0.22, 0.2, 0.1, 0.16, 0.16, 0.16), "hair style (drawn behind/over the head)"),
    _k("hair_colour", HAIR_COLOURS, (0.2, 0.2, 0.18, 0.15, 0.13, 0.14),
       "hair colour (also brows, beard; cat fur; robot paint)"),
    _c("hair_shade", 0.85, 1.1, "brightness multiplier of the hair colour"),
    _c("hair_length", 0.0, 1.0, "length / volume within the style (long: to the chin..shoulders; afro: size)"),
    # eyes and brows
    _c("eye_size", 0.85, 1.2, "eye size factor", "triangular"),
    _c("eye_spacing", 0.9, 1.12, "distance between the eyes (factor)", "triangular"),
    _k("eye_colour", EYE_COLOURS, (0.4, 0.3, 0.3), "iris colour (cat: iris colour; robot: LED colour)"),
    _c("gaze", -1.0, 1.0, "horizontal gaze: iris offset inside the eye (-1 left .. 1 right)", "triangular"),
    _c("brow_thickness", 0.6, 1.5, "eyebrow thickness factor"),
    _c("brow_angle", -1.0, 1.0, "eyebrow slant: -1 angry (inner ends down) .. 1 worried (inner ends up)", "triangular"),
    # mouth and nose
    _c("smile", -1.0, 1.0, "mouth curve: -1 frowning .. 1 smiling; buckets < -1/3 frowning, > 1/3 smiling"),
    _c("mouth_width", 0.8, 1.2, "mouth width factor"),
    _c("nose_size", 0.8, 1.25, "nose size factor"),
    # accessories
    _k("glasses", GLASSES, (0.46, 0.19, 0.19, 0.16), "glasses"),
    _k("hat", HATS, (0.72, 0.14, 0.14), "hat (covers the top of the hair)"),
    _c("hat_hue", 0.0, 1.0, "hue of the beanie (top hats are black with a coloured band)"),
    _k("beard", BEARDS, (0.72, 0.13, 0.15), "facial hair in the hair colour"),
    _k("earrings", EARRINGS, (0.75, 0.25), "gold hoop earrings"),
    # clothes and background
    _c("shirt_hue", 0.0, 1.0, "hue of the shirt"),
    _c("shirt_value", 0.3, 0.9, "brightness of the shirt"),
    _c("bg_hue", 0.0, 1.0, "background hue"),
    _c("bg_sat", 0.1, 0.5, "background saturation"),
    _c("bg_value", 0.5, 0.92, "background brightness"),
    _c("bg_gradient", -0.3, 0.3, "vertical background gradient (brightness change top to bottom)"),
    # pose
    _c("tilt", -14.0, 14.0, "head roll in degrees (clockwise positive)", "triangular"),
    _c("shift_x", -0.1, 0.1, "horizontal shift of the whole figure (image units; image is [-1, 1])"),
    _c("shift_y", -0.08, 0.08, "vertical shift of the whole figure (image units, down positive)"),
    _c("scale", 0.86, 1.06, "size of the whole figure", "triangular"),
)
SPEC_BY_NAME = {s.name: s for s in PARAM_SPEC}
PARAM_NAMES = tuple(s.name for s in PARAM_SPEC)
CONTINUOUS = tuple(s.name for s in PARAM_SPEC if s.kind == "continuous")
CATEGORICAL = tuple(s.name for s in PARAM_SPEC if s.kind == "categorical")


def describe_params() -> str:
    """A readable table of :data:`PARAM_SPEC` (the ``info`` command prints it)."""
    lines = [f"{len(PARAM_SPEC)} parameters per face ({len(CONTINUOUS)} continuous, {len(CATEGORICAL)} categorical);",
             "face i of stream s: column j = inverse CDF of hash(s, i, j) (prefix-stable, seed-deterministic)", ""]
    lines += [s.describe() for s in PARAM_SPEC]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# FaceParams
# ----------------------------------------------------------------------------------------------------------

@dataclass
class FaceParams:
    """A batch of faces: one [N] tensor per parameter (float32 for continuous, int64 category indices for
    categorical), plus ``stream`` and ``index`` ([N] int64): where each face comes from. They seed the
    per-face randomness of captions and of the noisy/tinted distractor domains, so those are functions of
    the face, not of the batch it is rendered in."""
    head_width: torch.Tensor
    head_height: torch.Tensor
    jaw: torch.Tensor
    skin_tone: torch.Tensor
    hair_style: torch.Tensor
    hair_colour: torch.Tensor
    hair_shade: torch.Tensor
    hair_length: torch.Tensor
    eye_size: torch.Tensor
    eye_spacing: torch.Tensor
    eye_colour: torch.Tensor
    gaze: torch.Tensor
    brow_thickness: torch.Tensor
    brow_angle: torch.Tensor
    smile: torch.Tensor
    mouth_width: torch.Tensor
    nose_size: torch.Tensor
    glasses: torch.Tensor
    hat: torch.Tensor
    hat_hue: torch.Tensor
    beard: torch.Tensor
    earrings: torch.Tensor
    shirt_hue: torch.Tensor
    shirt_value: torch.Tensor
    bg_hue: torch.Tensor
    bg_sat: torch.Tensor
    bg_value: torch.Tensor
    bg_gradient: torch.Tensor
    tilt: torch.Tensor
    shift_x: torch.Tensor
    shift_y: torch.Tensor
    scale: torch.Tensor
    stream: torch.Tensor
    index: torch.Tensor

    def __post_init__(self):
        n = len(self.index)
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(v)
            dtype = torch.float32 if f.name in CONTINUOUS else torch.int64
            v = v.to(dtype)
            if v.ndim == 0:
                v = v.expand(n).clone()
            if v.shape != (n,):
                raise ValueError(f"FaceParams.{f.name}: shape {tuple(v.shape)}, expected ({n},)")
            setattr(self, f.name, v)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item) -> "FaceParams":
        if isinstance(item, int):
            item = slice(item, item + 1 if item != -1 else None)
        return FaceParams(**{f.name: getattr(self, f.name)[item] for f in fields(self)})

    def replace(self, **changes) -> "FaceParams":
        """A copy with some fields replaced (scalars and category names are broadcast to all faces)."""
        out = {f.name: getattr(self, f.name).clone() for f in fields(self)}
        for k, v in changes.items():
            if k not in out:
                raise KeyError(f"unknown parameter {k!r}")
            if isinstance(v, str):
                v = SPEC_BY_NAME[k].categories.index(v)
            out[k] = torch.as_tensor(v).to(out[k].dtype).expand(len(self)).clone()
        return FaceParams(**out)

    def to_dict(self, names: bool = True) -> dict[str, list]:
        """Plain Python lists per field (categorical fields as category names unless ``names=False``)."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if names and f.name in CATEGORICAL:
                cats = SPEC_BY_NAME[f.name].categories
                d[f.name] = [cats[i] for i in v.tolist()]
            elif f.name in CONTINUOUS:
                d[f.name] = [round(x, 6) for x in v.tolist()]
            else:
                d[f.name] = v.tolist()
        return d

    def row(self, i: int) -> dict:
        """One face as a flat dict (JSON-friendly, category names)."""
        return {k: v[0] for k, v in self[i].to_dict().items()}

    @staticmethod
    def cat(parts: Sequence["FaceParams"]) -> "FaceParams":
        return FaceParams(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(FaceParams)})


def _inverse_cdf(spec: ParamSpec, u: torch.Tensor) -> torch.Tensor:
    if spec.kind == "categorical":
        edges = torch.tensor(list(itertools.accumulate(spec.probs))[:-1], dtype=torch.float32)
        return torch.bucketize(u, edges, right=True)
    if spec.dist == "uniform":
        t = u
    elif spec.dist == "triangular":  # symmetric triangle on [0, 1]
        t = torch.where(u < 0.5, torch.sqrt(u / 2), 1 - torch.sqrt((1 - u) / 2))
    else:
        raise ValueError(spec.dist)
    return spec.low + (spec.high - spec.low) * t


def sample_params(n: int, seed: int = 0, offset: int = 0) -> FaceParams:
    """Faces ``offset .. offset+n-1`` of stream ``seed``; face ``i`` depends on ``(seed, i)`` only."""
    if n < 0 or offset < 0:
        raise ValueError("n and offset must be >= 0")
    idx = torch.arange(offset, offset + n, dtype=torch.int64)
    cols = torch.arange(len(PARAM_SPEC), dtype=torch.int64)
    u = hash_uniform(int(seed), idx[:, None], cols[None, :])  # [n, D]
    return params_from_uniform(u, stream=int(seed), index=idx)


def params_from_uniform(u: torch.Tensor, stream: int = 0, index: torch.Tensor | None = None) -> FaceParams:
    """Faces from uniforms ``u`` [N, len(PARAM_SPEC)] in [0, 1), one column per parameter (inverse CDFs).

    ``sample_params`` is this applied to hashed uniforms; a generator can be distilled from the renderer by
    feeding it the uniforms of its own latent (e.g. the normal CDF of the first coordinates of z).
    """
    if u.ndim != 2 or u.shape[1] != len(PARAM_SPEC):
        raise ValueError(f"expected uniforms of shape [N, {len(PARAM_SPEC)}], got {tuple(u.shape)}")
    n = u.shape[0]
    u = u.float().clamp(0.0, 1.0 - 1e-7)
    values = {s.name: _inverse_cdf(s, u[:, j].contiguous()) for j, s in enumerate(PARAM_SPEC)}
    index = torch.arange(n, dtype=torch.int64) if index is None else index
    return FaceParams(**values, stream=torch.full((n,), int(stream), dtype=torch.int64), index=index)


def bucket_smile(smile: torch.Tensor) -> torch.Tensor:
    """0 smiling, 1 neutral, 2 frowning (the order of ``ATTRIBUTE_VALUES['smile']``)."""
    return torch.where(smile > 1 / 3, 0, torch.where(smile < -1 / 3, 2, 1)).long()


def deg2rad(x):
    return x * (math.pi / 180)
