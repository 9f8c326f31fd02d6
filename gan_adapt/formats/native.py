"""The project's own format: one safetensors file with the architecture as JSON in its metadata.

Tensors are named ``g_ema.<key>``, ``g.<key>``, ``d.<key>`` and ``latent_avg``. Safe to load (no code),
memory-mappable, and readable by any safetensors tool.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from adapt_common.files import atomic_path, tensors_hash
from ..networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from .architecture import CheckpointError, load_state_dict_strict
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


def load(path: str | Path) -> StyleGANCheckpoint:
    path = Path(path)
    metadata = read_metadata(path)
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: a safetensors file but not a {FORMAT_NAME} checkpoint "
                              f"(metadata format={metadata.get('format')!r}); direction files and other "
                              "safetensors go through their own loaders")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {metadata.get('format_version')!r} is not supported "
                              f"(this version reads {FORMAT_VERSION})")
    try:
        gcfg = GeneratorConfig(**json.loads(metadata["generator"]))
        dcfg = DiscriminatorConfig(**json.loads(metadata["discriminator"])) if metadata.get("discriminator") else None
        meta = json.loads(metadata.get("meta") or "{}")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the architecture in its metadata is invalid ({e})") from e
    groups: dict[str, dict[str, torch.Tensor]] = {"g_ema": {}, "g": {}, "d": {}}
    latent_avg = None
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key == "latent_avg":
                    latent_avg = f.get_tensor(key)
                    continue
                prefix, _, name = key.partition(".")
                if prefix not in groups:
                    raise CheckpointError(f"{path}: unexpected tensor {key!r}")
                groups[prefix][name] = f.get_tensor(key)
    except SafetensorError as e:
        raise CheckpointError(f"{path}: could not read its tensors; the file is truncated or corrupt ({e})") from e
    g_ema = Generator(config=gcfg)
    load_state_dict_strict(g_ema, groups["g_ema"], f"{path} (g_ema)")
    finish_generator(g_ema, latent_avg, meta)
    g = None
    if groups["g"]:
        g = Generator(config=gcfg)
        load_state_dict_strict(g, groups["g"], f"{path} (g)")
    d = None
    if groups["d"]:
        if dcfg is None:
            raise CheckpointError(f"{path}: has discriminator tensors but no discriminator architecture")
        d = Discriminator(config=dcfg)
        load_state_dict_strict(d, groups["d"], f"{path} (d)")
    return StyleGANCheckpoint(g_ema=g_ema, d=d, g=g, source_format="native", path=str(path), meta=meta)
