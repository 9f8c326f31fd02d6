"""The project's own format: one safetensors file with the architecture as JSON in its metadata.

Tensors are named ``g_ema.<key>``, ``g.<key>``, ``d.<key>`` and ``latent_avg``. Safe to load (no code),
memory-mappable, and readable by any safetensors tool.

The metadata records content hashes (:func:`adapt_common.files.tensors_hash`): ``generator_hash`` of the g_ema
state dict (also what adapter and direction files name their base generator by) and ``content_hash`` of every
tensor in the file (files written before it existed have only the first). Loading checks them, refuses NaN/Inf
weights, and bounds the architecture in the metadata before building anything from it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from adapt_common.files import atomic_path, require_finite, tensors_hash
from adapt_common.integrity import verify_content_hash
from ..networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from .architecture import (CheckpointError, check_discriminator_config, check_generator_config, check_state_dict,
                           load_state_dict_strict)
from .checkpoint import StyleGANCheckpoint, finish_generator

FORMAT_NAME = "domain-adapt/stylegan2"
FORMAT_VERSION = "1"


def _prefixed(prefix: str, sd: dict) -> dict:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in sd.items()}


def save(ckpt: StyleGANCheckpoint, path: str | Path) -> Path:
    tensors = _prefixed("g_ema", ckpt.g_ema.state_dict())
    tensors["latent_avg"] = ckpt.g_ema.latent_avg.detach().cpu().clone()
    if ckpt.g is not None:
        tensors.update(_prefixed("g", ckpt.g.state_dict()))
    if ckpt.d is not None:
        tensors.update(_prefixed("d", ckpt.d.state_dict()))
    meta = {k: v for k, v in ckpt.meta.items() if k != "latent_avg_source"}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "generator": json.dumps(ckpt.g_ema.config.to_dict()),
        "discriminator": json.dumps(ckpt.d.config.to_dict()) if ckpt.d is not None else "",
        "generator_hash": tensors_hash(ckpt.g_ema.state_dict()),
        "content_hash": tensors_hash(tensors),
        "meta": json.dumps(meta, default=str),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_metadata(path: str | Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file; it is truncated or corrupt ({e})") from e


def load(path: str | Path, *, verify_hash: bool = True) -> StyleGANCheckpoint:
    """Read a native checkpoint (``verify_hash=False``: accept tensors that differ from the recorded hashes, for
    files edited on purpose; the ``--no-verify-hash`` command-line flag does the same for a whole command)."""
    path = Path(path)
    metadata = read_metadata(path)
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: a safetensors file but not a {FORMAT_NAME} checkpoint "
                              f"(metadata format={metadata.get('format')!r}); direction files and other "
                              "safetensors go through their own loaders")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {metadata.get('format_version')!r} is not supported "
                              f"(this version reads {FORMAT_VERSION})")
    gcfg, dcfg, meta = _architecture(metadata, path)
    tensors = _read_tensors(path)
    if "content_hash" in metadata:
        verify_content_hash(tensors, metadata["content_hash"], path, verify_hash=verify_hash, error=CheckpointError)
    require_finite(tensors, path)
    groups = _grouped(tensors, path)
    if "content_hash" not in metadata:  # written before content_hash existed: g_ema's hash is all there is
        verify_content_hash(groups["g_ema"], metadata.get("generator_hash"), path, verify_hash=verify_hash,
                            what="generator hash (of g_ema)", error=CheckpointError)
    latent_avg = tensors.get("latent_avg")
    if latent_avg is not None and latent_avg.numel() != gcfg.style_dim:
        raise CheckpointError(f"{path}: latent_avg has {latent_avg.numel()} values, the generator's w has "
                              f"{gcfg.style_dim}")
    _check_shapes(groups, gcfg, dcfg, path)
    g_ema = Generator(config=gcfg)
    load_state_dict_strict(g_ema, groups["g_ema"], f"{path} (g_ema)")
    finish_generator(g_ema, latent_avg, meta)
    g = None
    if groups["g"]:
        g = Generator(config=gcfg)
        load_state_dict_strict(g, groups["g"], f"{path} (g)")
    d = None
    if groups["d"]:
        d = Discriminator(config=dcfg)
        load_state_dict_strict(d, groups["d"], f"{path} (d)")
    return StyleGANCheckpoint(g_ema=g_ema, d=d, g=g, source_format="native", path=str(path), meta=meta)


def _architecture(metadata: dict, path: Path) -> tuple[GeneratorConfig, DiscriminatorConfig | None, dict]:
    """The generator and discriminator configs of the metadata, every size bounded, and its ``meta``."""
    try:
        gcfg = GeneratorConfig(**json.loads(metadata["generator"]))
        dcfg = DiscriminatorConfig(**json.loads(metadata["discriminator"])) if metadata.get("discriminator") else None
        meta = json.loads(metadata.get("meta") or "{}")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the architecture in its metadata is invalid ({e})") from e
    check_generator_config(gcfg, path)
    if dcfg is not None:
        check_discriminator_config(dcfg, path)
    return gcfg, dcfg, meta if isinstance(meta, dict) else {}


def _grouped(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{"g_ema" | "g" | "d": state dict} of the file's prefixed tensor names (``latent_avg`` is in none)."""
    groups: dict[str, dict[str, torch.Tensor]] = {"g_ema": {}, "g": {}, "d": {}}
    for key, t in tensors.items():
        if key == "latent_avg":
            continue
        prefix, _, name = key.partition(".")
        if prefix not in groups:
            raise CheckpointError(f"{path}: unexpected tensor {key!r}")
        groups[prefix][name] = t
    return groups


def _check_shapes(groups: dict, gcfg: GeneratorConfig, dcfg: DiscriminatorConfig | None, path: Path) -> None:
    """The file's tensors must have the shapes of the architecture its metadata gives, checked on the meta
    device before anything is allocated: a few KB of metadata cannot then ask for more memory than the file holds."""
    if groups["d"] and dcfg is None:
        raise CheckpointError(f"{path}: has discriminator tensors but no discriminator architecture")
    for name, cls, cfg in (("g_ema", Generator, gcfg), ("g", Generator, gcfg), ("d", Discriminator, dcfg)):
        if groups[name] or name == "g_ema":
            with torch.device("meta"):
                check_state_dict(cls(config=cfg), groups[name], f"{path} ({name})")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(f"{path}: could not read its tensors; the file is truncated or corrupt ({e})") from e
