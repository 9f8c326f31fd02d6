"""Diffusion models on ``diffusers``: building, loading and saving local model folders.

A model folder is what ``DDPMPipeline.save_pretrained`` writes (``model_index.json``, ``unet/``,
``scheduler/``); a bare ``UNet2DModel.save_pretrained`` folder (``config.json`` + weights) loads too, with a
default DDPM scheduler. Loading never touches the network unless the user names a hub id and has one
(``HF_HUB_OFFLINE=1`` is the project default).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from adapt_common.files import tensors_hash


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded, with what is wrong and what to do."""


@dataclass
class UNetArch:
    """The unconditional UNet of a new model (``UNet2DModel`` constructor arguments)."""

    sample_size: int = field(default=32, metadata={"help": "image size in pixels"})
    block_out_channels: list = field(default_factory=lambda: [64, 128, 128],
                                     metadata={"help": "channels of each resolution level"})
    layers_per_block: int = field(default=2, metadata={"help": "ResNet layers per level"})
    down_block_types: list = field(default_factory=lambda: ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
                                   metadata={"help": "diffusers block of each level on the way down"})
    up_block_types: list = field(default_factory=lambda: ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
                                 metadata={"help": "diffusers block of each level on the way up"})
    norm_num_groups: int = field(default=16, metadata={"help": "groups of the GroupNorms"})
    attention_head_dim: int = field(default=32, metadata={"help": "channels per attention head"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in the ResNet layers"})


def new_unet(arch: UNetArch, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=arch.sample_size, in_channels=3, out_channels=3,
                       block_out_channels=tuple(arch.block_out_channels), layers_per_block=arch.layers_per_block,
                       down_block_types=tuple(arch.down_block_types), up_block_types=tuple(arch.up_block_types),
                       norm_num_groups=arch.norm_num_groups, attention_head_dim=arch.attention_head_dim,
                       dropout=arch.dropout)


def new_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """ε-prediction, linear β schedule, fixed-small variance; no x0 clipping (DomainStudio needs raw x̂₀)."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear",
                         variance_type="fixed_small", clip_sample=False, prediction_type="epsilon")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet2DModel, DDPMScheduler]:
    """(unet, DDPM scheduler) from a pipeline folder or a bare UNet folder."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such model folder (a DDPMPipeline.save_pretrained folder, or a "
                             "UNet2DModel.save_pretrained folder)")
    if not p.is_dir():
        raise ModelLoadError(f"{p}: expected a model folder, got a file; diffusers models are folders with "
                             "model_index.json (pipeline) or config.json (bare UNet)")
    try:
        if (p / "model_index.json").exists() or (p / "unet").is_dir():
            unet = UNet2DModel.from_pretrained(p, subfolder="unet", local_files_only=True)
            sched_dir = p / "scheduler"
            scheduler = DDPMScheduler.from_pretrained(p, subfolder="scheduler", local_files_only=True) \
                if sched_dir.is_dir() else new_scheduler()
        elif (p / "config.json").exists():
            config = json.loads((p / "config.json").read_text())
            if config.get("_class_name") not in (None, "UNet2DModel"):
                raise ModelLoadError(f"{p}: holds a {config.get('_class_name')}, not an unconditional UNet2DModel")
            unet = UNet2DModel.from_pretrained(p, local_files_only=True)
            scheduler = new_scheduler()
        else:
            raise ModelLoadError(f"{p}: neither model_index.json nor config.json: not a diffusers model folder")
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{p}: could not load the model ({str(e).splitlines()[0]}); the folder is incomplete "
                             "or of another architecture") from e
    return unet.to(device).eval(), scheduler


def save_model(unet: UNet2DModel, scheduler: DDPMScheduler, path: str | Path) -> Path:
    """A DDPMPipeline folder (loads with ``DDPMPipeline.from_pretrained(path)`` and with :func:`load_model`)."""
    from diffusers import DDPMPipeline
    path = Path(path)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path, safe_serialization=True)
    return path


def model_hash(unet: torch.nn.Module) -> str:
    """Content hash of the weights (names a shift file's base model)."""
    return tensors_hash({k: v for k, v in unet.state_dict().items() if "parametrizations" not in k})
