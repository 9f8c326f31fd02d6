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

Files load with ``Adapter.from_pretrained(path)`` (``path``: the file, or a folder such as a run folder holding
``adapter.safetensors``) and become a trainable view of a generator with ``.parameterization(generator)``; a
trained parameterization is written with ``Adapter.from_parameterization(param, ...).save_pretrained(path)``.
``save_adapter``, ``read_adapter`` and ``load_adapter`` are the old names, kept for one release.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapt_common.files import PretrainedFile, manifest_header, read_checked, require_size, save_with_manifest, \
    tensors_hash, warn_deprecated
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


@dataclass
class Adapter(PretrainedFile):
    """An adapter file's contents: the trained tensors of a parameterization (by their names in it) and the
    manifest (the parameterization and its options, the base generator, the domain, what the trainer added)."""

    FILE_NAME = "adapter.safetensors"  # what a run folder holds
    WHAT = "adapter file"

    tensors: dict[str, torch.Tensor]
    manifest: dict = field(default_factory=dict)
    path: str | None = None  # the file it was loaded from (named in messages)

    @classmethod
    def from_parameterization(cls, param: Parameterization, *, source_hash: str | None = None, domain: str = "",
                              extra: dict | None = None) -> "Adapter":
        """What ``param`` trained (``source_hash``: the base generator's content hash, computed from ``param``'s
        source weights when not given)."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in param.trained_state_dict().items()}
        manifest = {
            "parameterization": param.name, "block": param.block, "rank": param.rank,
            "num_parameters": sum(t.numel() for t in tensors.values()),
            "shapes": {k: list(t.shape) for k, t in tensors.items()},
            "base_generator": {"hash": source_hash or param.source_hash,
                               "architecture": architecture(param.generator)},
            "domain": domain, **(extra or {}),
        }
        return cls(tensors, manifest)

    @classmethod
    def _read_pretrained(cls, path: Path, *, verify_hash: bool = True) -> "Adapter":
        """An adapter file, checked against its content hash (unless ``verify_hash=False``) and for NaN/Inf."""
        tensors, manifest, meta = read_checked(path, FORMAT, cls.WHAT, AdapterFileError, verify_hash=verify_hash)
        if "manifest" not in meta:
            raise AdapterFileError(f"{path}: its manifest is missing")
        return cls(tensors, manifest, str(path))

    def _write_pretrained(self, path: Path) -> Path:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        written = ("format", "version", "created", "content_hash")  # this write's own
        manifest = {**manifest_header(FORMAT, VERSION), **{k: v for k, v in self.manifest.items() if k not in written},
                    "content_hash": tensors_hash(tensors)}
        return save_with_manifest(tensors, path, FORMAT, manifest)

    def parameterization(self, generator: Generator) -> Parameterization:
        """A :class:`Parameterization` of ``generator`` carrying the trained tensors (its ``manifest`` attribute is
        this file's). Refused for another architecture; a note (:class:`TransferNote`) for another generator of the
        same architecture."""
        source, manifest = self.path or "this adapter", self.manifest
        base = manifest.get("base_generator", {})
        arch = architecture(generator)
        if base.get("architecture") != arch:
            diff = {k: (base.get("architecture", {}).get(k), v) for k, v in arch.items()
                    if base.get("architecture", {}).get(k) != v}
            raise AdapterFileError(f"{source} was trained for another generator architecture and cannot be applied "
                                   f"here: (file, this generator) differ in {diff}")
        this_hash = tensors_hash(generator.state_dict())
        if base.get("hash") != this_hash:
            warnings.warn(TransferNote(f"{source} was trained on generator {base.get('hash')}; applying it to "
                                       f"{this_hash}, a generator of the same architecture (a transfer)"))
        try:
            # rank sizes the low-rank factors allocated below; one larger than the style size adds nothing
            rank = require_size("rank", manifest.get("rank", 5), generator.style_dim, source, minimum=1)
            param = Parameterization(manifest.get("parameterization"), generator, block=manifest.get("block", 64),
                                     rank=rank)
        except (ValueError, TypeError) as e:  # an unknown parameterization, a block the generator lacks
            raise AdapterFileError(str(e) if str(e).startswith(str(source)) else f"{source}: {e}") from e
        try:
            param.load_trained_state_dict(self.tensors)
        except ValueError as e:
            raise AdapterFileError(f"{source}: {e}") from e
        param.manifest = manifest
        return param


# -- the old names, kept for one release ----------------------------------------------------------------------------


def save_adapter(param: Parameterization, path: str | Path, *, source_hash: str | None = None, domain: str = "",
                 extra: dict | None = None) -> Path:
    """Deprecated: ``Adapter.from_parameterization(param, ...).save_pretrained(path)``."""
    warn_deprecated("save_adapter(param, path)", "Adapter.from_parameterization(param, ...).save_pretrained(path)")
    return Adapter.from_parameterization(param, source_hash=source_hash, domain=domain,
                                         extra=extra).save_pretrained(path)


def read_adapter(path: str | Path, *, verify_hash: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """Deprecated: ``Adapter.from_pretrained(path)`` (its ``manifest`` and ``tensors``)."""
    warn_deprecated("read_adapter(path)", "Adapter.from_pretrained(path) (.manifest, .tensors)")
    adapter = Adapter.from_pretrained(path, verify_hash=verify_hash)
    return adapter.manifest, adapter.tensors


def load_adapter(path: str | Path, generator: Generator, *, verify_hash: bool = True) -> Parameterization:
    """Deprecated: ``Adapter.from_pretrained(path).parameterization(generator)``."""
    warn_deprecated("load_adapter(path, generator)", "Adapter.from_pretrained(path).parameterization(generator)")
    return Adapter.from_pretrained(path, verify_hash=verify_hash).parameterization(generator)
