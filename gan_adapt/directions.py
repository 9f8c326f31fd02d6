"""Domain directions: StyleDomain's Δs and HyperDomainNet's domain modulation d as small portable files.

Both are one vector per modulated 3x3 conv, in generation order (``conv1``, ``convs.0`` ... ``convs.15`` at
1024 px: 17 vectors, 6,048 numbers); a Δs may also cover the toRGB layers (the ``stylespace`` parameterization,
DissimilarDomains' variant: 9,088 at 1024). They differ in where they act:

- ``s_delta`` (StyleDomain direction): added to the style vector before modulation, ``s' = s + α·Δs``;
- ``cin_mult`` (HyperDomainNet domain modulation): multiplies the demodulated conv weight per input channel,
  ``W'' = demod(W·s) · (1 + α·d)``.

They are not interchangeable, so every :class:`Direction` carries its kind, and a weighted set of directions
(:class:`DomainEdit`) adds the Δs of the first kind and the α·d of the second.

File format (``.safetensors``): a float32 tensor ``delta`` [N] (or, for a sparse direction, ``indices`` int32
and ``values`` float32 with ``size`` in the manifest) and a JSON manifest in the metadata (also written beside the
file as ``<file>.json``): kind, per-layer names and channels, the base generator's content hash and
architecture, domain, prompt or reference hash, training config, metrics, recommended strength, and the file's
own ``content_hash`` (checked on load; files written before it existed have none). Loading refuses NaN/Inf
values and bounds every size the file gives before allocating; saving refuses a non-finite direction.

Files load with ``Direction.from_pretrained(path)`` and are written with ``direction.save_pretrained(path)``
(``path``: the file, or a folder such as a run folder holding ``direction.safetensors``). The official StyleDomain
/ HyperDomainNet checkpoints (``models_*.pt``, ``td_*.pt``, ``im2im_*.pt`` with ``patch_key`` ``s_delta`` or
``cin_mult``) load through it too, with safe loading. ``load_direction`` and ``Direction.save`` are the old names,
kept for one release.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from adapt_common.files import PretrainedFile, check_tensors, manifest_header, read_with_manifest, require_finite, \
    require_size, save_with_manifest, split_weight, tensors_hash, warn_deprecated
from .adapter_files import TransferNote, architecture
from .formats.architecture import MAX_CHANNELS, MAX_SIZE, MAX_STYLE_LAYERS
from .networks import Generator, StyleLayer
from .parameterizations import DIRECTION_KINDS, Parameterization

FORMAT = "domain-adapt/direction"
VERSION = "1"
KINDS = ("s_delta", "cin_mult")
KIND_PARAMETERIZATION = {"s_delta": "direction", "cin_mult": "dommod"}  # stylespace when toRGB layers are in


class DirectionFileError(ValueError):
    """A direction file that cannot be read, or that does not fit the generator it is applied to."""


def conv_layers(g: Generator) -> list[StyleLayer]:
    """The modulated 3x3 convs of ``g`` in generation order: the layers a direction has one vector for."""
    return [layer for layer in g.style_layers() if layer.kind == "conv"]


@dataclass
class Direction(PretrainedFile):
    """One domain direction: ``delta`` [N] split over ``layers`` [(conv name, channels)]."""

    FILE_NAME = "direction.safetensors"  # what a run folder holds
    WHAT = "direction file"

    kind: str
    layers: list[tuple[str, int]]
    delta: torch.Tensor
    meta: dict = field(default_factory=dict)
    path: str | None = None  # the file it was loaded from (named in messages)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DirectionFileError(f"unknown direction kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        self.layers = [(str(n), int(c)) for n, c in self.layers]
        self.delta = self.delta.detach().reshape(-1).float().cpu()
        if self.delta.numel() != self.size:
            raise DirectionFileError(f"the direction has {self.delta.numel()} values, its layers need {self.size}")

    # -- shape -----------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return sum(c for _, c in self.layers)

    @property
    def channels(self) -> list[int]:
        return [c for _, c in self.layers]

    def vectors(self) -> dict[str, torch.Tensor]:
        """{conv layer name: its [C] vector}."""
        return dict(zip([n for n, _ in self.layers], self.delta.split(self.channels)))

    @property
    def nonzero_fraction(self) -> float:
        return float((self.delta != 0).float().mean())

    # -- algebra (mixing) ----------------------------------------------------------------------------------

    def _check_same(self, other: "Direction") -> None:
        if other.kind != self.kind or other.channels != self.channels:
            raise DirectionFileError(f"cannot add a {other.kind} direction over {other.channels} channels to a "
                                     f"{self.kind} direction over {self.channels}: use a DomainEdit to combine "
                                     "directions of different kinds")

    def __mul__(self, a: float) -> "Direction":
        return Direction(self.kind, self.layers, self.delta * float(a), {**self.meta, "derived": "scaled"})

    __rmul__ = __mul__

    def __neg__(self) -> "Direction":
        return self * -1.0

    def __add__(self, other: "Direction") -> "Direction":
        self._check_same(other)
        return Direction(self.kind, self.layers, self.delta + other.delta, {**self.meta, "derived": "sum"})

    def __sub__(self, other: "Direction") -> "Direction":
        return self + (-other)

    def sparse(self, keep: float = 0.2) -> "Direction":
        """StyleDomain's sparse direction: keep the ``keep`` fraction of largest |Δ| and zero the rest (ties at
        the threshold are broken by position, so exactly ``round(keep·N)`` survive)."""
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        n_keep = max(1, round(keep * self.size))
        idx = self.delta.abs().argsort(descending=True, stable=True)[:n_keep]
        out = torch.zeros_like(self.delta)
        out[idx] = self.delta[idx]
        return Direction(self.kind, self.layers, out, {**self.meta, "sparse_keep": keep})

    # -- fitting a generator ---------------------------------------------------------------------------------

    @property
    def with_torgb(self) -> bool:
        return any(name.startswith("to_rgb") for name, _ in self.layers)

    def check_fits(self, g: Generator) -> None:
        """Refuse a generator whose layers differ; note (warn) a transfer to another generator of the same
        layout (StyleDomain's transfer property)."""
        source = self.path or "this direction"
        mine = [(layer.name, layer.channels) for layer in g.style_layers()
                if layer.kind == "conv" or (self.with_torgb and self.kind == "s_delta")]
        if mine != self.layers:
            raise DirectionFileError(
                f"{source} was made for a generator with {len(self.layers)} modulated layers of channels "
                f"{self.channels} ({self.size} values); this generator ({g.size}px) has {len(mine)} with "
                f"{[c for _, c in mine]} ({sum(c for _, c in mine)}). Use a direction trained for this "
                "architecture.")
        base = self.meta.get("base_generator", {}).get("hash")
        this = tensors_hash(g.state_dict())
        if base != this:
            what = f"generator {base}" if base else "an unrecorded generator"
            warnings.warn(TransferNote(f"{source} was trained on {what}; applying it to {this}, a generator of the "
                                       "same architecture (a transfer)"), stacklevel=3)

    # -- parameterizations ---------------------------------------------------------------------------------

    @classmethod
    def from_parameterization(cls, param: Parameterization, **meta) -> "Direction":
        """The trained vector of a ``direction``, ``stylespace`` (Δs with toRGB) or ``dommod`` parameterization."""
        if param.name not in DIRECTION_KINDS:
            raise ValueError(f"only {', '.join(DIRECTION_KINDS)} parameterizations are directions, "
                             f"not {param.name!r}")
        g = param.generator
        chosen = g.style_layers() if param.name == "stylespace" else conv_layers(g)
        vecs = [_trained_vector(g, layer.name, param.name) for layer in chosen]
        layers = [(layer.name, layer.channels) for layer in chosen]
        meta = {"base_generator": {"hash": param.source_hash, "architecture": architecture(g)}, **meta}
        return cls(DIRECTION_KINDS[param.name], layers, torch.cat(vecs), meta)

    def parameterization(self, g: Generator) -> Parameterization:
        """A trainable parameterization of ``g`` holding this direction (to continue training it)."""
        self.check_fits(g)
        name = "stylespace" if self.with_torgb else KIND_PARAMETERIZATION[self.kind]
        param = Parameterization(name, g)
        with torch.no_grad():
            for name, vec in self.vectors().items():
                _trained_vector(param.generator, name, param.name).copy_(vec)
        return param

    # -- files -----------------------------------------------------------------------------------------------

    def save(self, path: str | Path, *, sparse: bool | None = None) -> Path:
        """Deprecated: :meth:`save_pretrained`."""
        warn_deprecated("Direction.save(path)", "Direction.save_pretrained(path)")
        return self.save_pretrained(path, sparse=sparse)

    @classmethod
    def _read_pretrained(cls, path: Path, *, verify_hash: bool = True) -> "Direction":
        return _read_direction(path, verify_hash=verify_hash)

    def _write_pretrained(self, path: Path, *, sparse: bool | None = None) -> Path:
        """Write the direction (``sparse``: as indices + values; default when under half the values are set).
        A direction with NaN/Inf values (a diverged run, a mix whose weights overflow) is refused, nothing written."""
        bad = int((~torch.isfinite(self.delta)).sum())
        if bad:
            raise DirectionFileError(f"{path} not written: the direction has {bad} NaN/infinite value(s) of "
                                     f"{self.size} ({self.meta.get('derived') or 'as trained'}); check its inputs, "
                                     "and use smaller weights if a mix overflowed")
        if sparse is None:
            sparse = self.nonzero_fraction < 0.5
        if sparse:
            idx = self.delta.nonzero().reshape(-1)
            tensors = {"indices": idx.to(torch.int32).contiguous(), "values": self.delta[idx].contiguous()}
        else:
            tensors = {"delta": self.delta.contiguous()}
        manifest = {**manifest_header(FORMAT, VERSION), "kind": self.kind, "size": self.size,
                    "nonzero": int((self.delta != 0).sum()),
                    "layers": [{"name": n, "channels": c} for n, c in self.layers], **self.meta,
                    "content_hash": tensors_hash(tensors)}
        return save_with_manifest(tensors, path, FORMAT, manifest)


def _trained_vector(g: Generator, layer: str, param_name: str) -> torch.Tensor:
    conv = g.get_submodule(layer).conv
    if param_name in ("direction", "stylespace"):
        return conv.modulation.parametrizations.bias[0].offset
    return conv.domain_modulation.params_in


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_direction(path: str | Path, *, verify_hash: bool = True) -> Direction:
    """Deprecated: :meth:`Direction.from_pretrained`."""
    warn_deprecated("load_direction(path)", "Direction.from_pretrained(path)")
    return Direction.from_pretrained(path, verify_hash=verify_hash)


def _read_direction(path: Path, *, verify_hash: bool = True) -> Direction:
    """A direction from our ``.safetensors`` files or an official StyleDomain / HyperDomainNet ``.pt``
    (``verify_hash=False``: accept a file whose tensors differ from its recorded content hash)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such direction file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":  # a torch zip checkpoint
        return _load_official(path)
    try:
        tensors, manifest, meta = read_with_manifest(path, None, "direction file", DirectionFileError)
    except DirectionFileError:
        if head[:1] == b"\x80":  # a legacy (non-zip) torch checkpoint
            return _load_official(path)
        raise
    if meta.get("format") != FORMAT:
        hint = " (an adapter file: load it with gan_adapt.adapter_files.Adapter.from_pretrained)" \
            if meta.get("format") == "domain-adapt/parameterization" else ""
        raise DirectionFileError(f"{path}: a safetensors file, but not a {FORMAT} file (format "
                                 f"{meta.get('format')!r}){hint}")
    check_tensors(tensors, manifest, path, DirectionFileError, verify_hash=verify_hash)
    layers = _manifest_layers(manifest, path)
    size = sum(c for _, c in layers)
    if "delta" in tensors:
        delta = tensors["delta"]
    elif {"indices", "values"} <= set(tensors):
        delta = _densify(tensors["indices"], tensors["values"], manifest.get("size"), size, path)
    else:
        raise DirectionFileError(f"{path}: holds {sorted(tensors)}, expected 'delta' or 'indices' + 'values'")
    keep = ("format", "version", "kind", "size", "nonzero", "layers", "content_hash")
    return Direction(manifest.get("kind"), layers, delta, {k: v for k, v in manifest.items() if k not in keep},
                     str(path))


def _manifest_layers(manifest: dict, path: Path) -> list[tuple[str, int]]:
    """[(name, channels)] of the manifest, each count bounded by what a StyleGAN2 generator can have."""
    try:
        layers = [(str(entry["name"]), entry["channels"]) for entry in manifest["layers"]]
    except (KeyError, ValueError, TypeError) as e:
        raise DirectionFileError(f"{path}: its manifest is missing or malformed ({e})") from e
    try:
        require_size("the number of layers", len(layers), MAX_STYLE_LAYERS, path, minimum=1)
        return [(name, require_size(f"the channels of layer {name!r}", c, MAX_CHANNELS, path, minimum=1))
                for name, c in layers]
    except ValueError as e:
        raise DirectionFileError(str(e)) from None


def _densify(indices: torch.Tensor, values: torch.Tensor, recorded, size: int, path: Path) -> torch.Tensor:
    """The dense [size] vector of a sparse direction; its size is the one its (bounded) layers add up to."""
    if recorded != size:
        raise DirectionFileError(f"{path}: its manifest gives size {recorded!r}, its layers add up to {size}; "
                                 "the file is corrupt")
    if indices.dim() != 1 or values.shape != indices.shape or indices.is_floating_point():
        raise DirectionFileError(f"{path}: 'indices' {tuple(indices.shape)} and 'values' {tuple(values.shape)} "
                                 "must be 1-D and of one length, the indices integers; the file is corrupt")
    idx = indices.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise DirectionFileError(f"{path}: sparse indices reach {int(idx.min())}..{int(idx.max())}, outside a "
                                 f"direction of {size} values; the file is corrupt")
    delta = torch.zeros(size)
    delta[idx] = values.float()
    return delta


_HEAD = re.compile(r"^heads\.conv_(\d{1,4})\.params_in$")


def _official_architecture(sg2, path: Path) -> tuple[int, float]:
    """(img_size, channel_multiplier) of official ``sg2_params``, bounded before a generator is described."""
    if not isinstance(sg2, dict):
        raise DirectionFileError(f"{path}: sg2_params is a {type(sg2).__name__}, not a dict; the file is corrupt")
    try:
        size = require_size("sg2_params img_size", sg2.get("img_size", 1024), MAX_SIZE, path, minimum=4)
    except ValueError as e:
        raise DirectionFileError(str(e)) from None
    multiplier = sg2.get("channel_multiplier", 2)
    if size & (size - 1) or not isinstance(multiplier, (int, float)) or not 0 < multiplier <= 64:
        raise DirectionFileError(f"{path}: sg2_params img_size {size} / channel_multiplier {multiplier!r} do not "
                                 "describe a StyleGAN2 generator (a power-of-two size; a multiplier in (0, 64])")
    return size, float(multiplier)


def official_conv_channels(img_size: int, channel_multiplier: float = 2) -> list[int]:
    """c_in of the 17 (at 1024) convs of the rosinality generator the official code builds."""
    with torch.device("meta"):
        g = Generator(img_size, 512, 1, channel_multiplier=channel_multiplier)
    return [layer.channels for layer in conv_layers(g)]


def _load_official(path: Path) -> Direction:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise DirectionFileError(
            f"{path}: a torch checkpoint that cannot be loaded safely (weights_only=True: {e}). Official "
            "StyleDomain / HyperDomainNet direction files hold only tensors and plain values; this one holds "
            "other objects, so it is not loaded (no arbitrary code is executed)") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise DirectionFileError(f"{path}: not a StyleDomain / HyperDomainNet checkpoint (no 'state_dict'); "
                                 "for generators use gan_adapt.formats.load_checkpoint")
    patch_key = ckpt.get("patch_key")
    model_type = ckpt.get("model_type", "parametrization")
    if model_type not in ("parametrization", "parameterization") or patch_key not in KINDS:
        raise DirectionFileError(f"{path}: a {model_type!r} checkpoint with patch_key {patch_key!r}; only direction "
                                 f"checkpoints (patch_key in {KINDS}) can be imported as directions")
    heads = {}
    for k, v in ckpt["state_dict"].items():
        m = _HEAD.match(k) if isinstance(k, str) else None
        if m and torch.is_tensor(v):
            heads[int(m.group(1))] = v
    if not heads or sorted(heads) != list(range(len(heads))):
        raise DirectionFileError(f"{path}: expected heads.conv_0..N.params_in tensors, found {sorted(heads)}")
    sg2 = ckpt.get("sg2_params") or {}
    size, multiplier = _official_architecture(sg2, path)
    expected = official_conv_channels(size, multiplier)
    got = [heads[i].numel() for i in range(len(heads))]  # numeric order: conv_10 after conv_9
    if got != expected:  # compared before any head is copied: a broadcast view may claim any size
        raise DirectionFileError(f"{path}: head sizes {got} do not match the {size}px config-f generator named by "
                                 f"its sg2_params ({expected})")
    vecs = [heads[i].reshape(-1).float() for i in range(len(heads))]
    require_finite({f"heads.conv_{i}.params_in": v for i, v in enumerate(vecs)}, path)
    names = ["conv1"] + [f"convs.{i}" for i in range(len(vecs) - 1)]
    meta = {"imported_from": str(path.name), "official": {"da_type": ckpt.get("da_type"), "sg2_params": sg2},
            "base_generator": {"hash": None, "architecture": {"size": size}}}
    if "style_latents" in ckpt:
        meta["has_style_latents"] = True
    return Direction(patch_key, list(zip(names, got)), torch.cat(vecs).float(), meta, str(path))


# ----------------------------------------------------------------------------------------------------------
# Applying weighted sets of directions


class DomainEdit:
    """A weighted set of directions applied to a generator: Σ wᵢ·Δsᵢ added to the conv styles and
    1 + Σ wⱼ·dⱼ multiplying the demodulated conv weights. Any weights, negative included."""

    def __init__(self, g: Generator, directions: Iterable[tuple[Direction, float]] = (), *, check: bool = True):
        self.g = g
        self.s_delta: dict[str, torch.Tensor] = {}
        self.cin_mult: dict[str, torch.Tensor] = {}
        device = next(g.parameters()).device
        for d, weight in directions:
            if not math.isfinite(float(weight)):
                raise ValueError(f"{d.path or 'a direction'}: weight {weight!r} is not a finite number")
            if check:
                d.check_fits(g)
            target = self.s_delta if d.kind == "s_delta" else self.cin_mult
            for name, vec in d.vectors().items():
                vec = float(weight) * vec.to(device)
                target[name] = target[name] + vec if name in target else vec
        self._layers = g.style_layers()

    def style_edit(self, layer: StyleLayer, s: torch.Tensor) -> torch.Tensor:
        delta = self.s_delta.get(layer.name)
        return s if delta is None else s + delta.to(s.dtype)

    def weight_mults(self) -> list[torch.Tensor | None] | None:
        if not self.cin_mult:
            return None
        return [1 + self.cin_mult[layer.name] if layer.name in self.cin_mult else None for layer in self._layers]

    def generate(self, z: torch.Tensor | None = None, *, w: torch.Tensor | None = None, truncation: float = 1.0,
                 noise_mode: str = "const") -> torch.Tensor:
        return self.g.generate(z, w=w, truncation=truncation, noise_mode=noise_mode,
                               style_edit=self.style_edit if self.s_delta else None, weight_mults=self.weight_mults())


def mix(directions: Sequence[Direction], weights: Sequence[float]) -> Direction:
    """Σ wᵢ·dᵢ of directions of one kind as a new direction (StyleDomain's mixability)."""
    if len(directions) != len(weights) or not directions:
        raise ValueError(f"need one weight per direction, got {len(directions)} directions, {len(weights)} weights")
    out = directions[0] * weights[0]
    for d, a in zip(directions[1:], weights[1:]):
        out = out + d * a
    out.meta = {"derived": "mix", "base_generator": directions[0].meta.get("base_generator", {}),
                "mixed": [{"domain": d.meta.get("domain", ""), "weight": float(a)}
                          for d, a in zip(directions, weights)]}
    return out


def parse_direction_arg(text: str) -> tuple[str, float]:
    """``FILE[:weight]`` (as given to ``generate --direction``) -> (path, weight)."""
    return split_weight(text)
