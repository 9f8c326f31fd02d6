"""Small files holding only what an adaptation trained (a direction, offsets, affine layers) + a manifest.

A file is safetensors (the trained tensors, by their names in the parameterization) whose metadata holds a
JSON manifest: the parameterization and its options, every tensor's shape, the base generator's content hash
and architecture, the domain, and whatever the trainer adds (training config, metrics). The same manifest
is also written beside it as ``<file>.json`` for people to read.

Loading checks the base generator: the same generator loads silently; another generator of the same
architecture (a model fine-tuned from the same source) loads with a note, which is StyleDomain's transfer
property; a generator of another architecture is refused with a message saying what differs. It also checks the
file itself: its tensors against the ``content_hash`` the manifest records (files written before it existed
have none), no NaN/Inf values, and a low-rank ``rank`` no larger than the generator's style size.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from adapt_common.files import read_with_manifest, require_finite, require_size, save_with_manifest, tensors_hash
from adapt_common.integrity import verify_content_hash
from .networks import Generator
from .parameterizations import Parameterization

FORMAT = "domain-adapt/parameterization"
VERSION = "1"


class AdapterFileError(ValueError):
    """An adapter file that cannot be used with the given generator."""


class TransferNote(UserWarning):
    """An adapter trained on another generator of the same architecture was applied (a transfer)."""


def architecture(g: Generator) -> dict:
    """The generator's architecture as recorded in adapter and direction manifests (what shapes depend on)."""
    cfg = g.config.to_dict()
    cfg.pop("conv_clamp", None)  # not part of the parameter shapes
    return cfg


def save_adapter(param: Parameterization, path: str | Path, *, source_hash: str | None = None, domain: str = "",
                 extra: dict | None = None) -> Path:
    """Write the trained tensors of ``param`` and the manifest (``source_hash``: the base generator's
    content hash, computed from ``param``'s source weights when not given)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in param.trained_state_dict().items()}
    manifest = {
        "format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "parameterization": param.name, "block": param.block, "rank": param.rank,
        "num_parameters": sum(t.numel() for t in tensors.values()),
        "shapes": {k: list(t.shape) for k, t in tensors.items()},
        "base_generator": {"hash": source_hash or param.source_hash, "architecture": architecture(param.generator)},
        "domain": domain, **(extra or {}),
        "content_hash": tensors_hash(tensors),
    }
    return save_with_manifest(tensors, path, FORMAT, manifest)


def read_adapter(path: str | Path, *, verify_hash: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """(manifest, tensors) of an adapter file, checked against its content hash (unless ``verify_hash=False``)
    and for NaN/Inf values."""
    tensors, manifest, meta = read_with_manifest(path, FORMAT, "adapter file", AdapterFileError)
    if "manifest" not in meta:
        raise AdapterFileError(f"{path}: its manifest is missing")
    verify_content_hash(tensors, manifest.get("content_hash"), path, verify_hash=verify_hash, error=AdapterFileError)
    require_finite(tensors, path)
    return manifest, tensors


def load_adapter(path: str | Path, generator: Generator, *, verify_hash: bool = True) -> Parameterization:
    """A :class:`Parameterization` of ``generator`` carrying the file's trained tensors."""
    manifest, tensors = read_adapter(path, verify_hash=verify_hash)
    base = manifest.get("base_generator", {})
    arch = architecture(generator)
    if base.get("architecture") != arch:
        diff = {k: (base.get("architecture", {}).get(k), v) for k, v in arch.items()
                if base.get("architecture", {}).get(k) != v}
        raise AdapterFileError(f"{path} was trained for another generator architecture and cannot be applied "
                               f"here: (file, this generator) differ in {diff}")
    this_hash = tensors_hash(generator.state_dict())
    if base.get("hash") != this_hash:
        warnings.warn(TransferNote(f"{path} was trained on generator {base.get('hash')}; applying it to "
                                   f"{this_hash}, a generator of the same architecture (a transfer)"))
    try:
        # rank sizes the low-rank factors allocated below; one larger than the style size adds nothing
        rank = require_size("rank", manifest.get("rank", 5), generator.style_dim, path, minimum=1)
        param = Parameterization(manifest.get("parameterization"), generator, block=manifest.get("block", 64),
                                 rank=rank)
    except (ValueError, TypeError) as e:  # an unknown parameterization, a block the generator lacks
        raise AdapterFileError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from e
    try:
        param.load_trained_state_dict(tensors)
    except ValueError as e:
        raise AdapterFileError(f"{path}: {e}") from e
    param.manifest = manifest
    return param
