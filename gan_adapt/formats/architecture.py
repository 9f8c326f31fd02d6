"""Infer a StyleGAN2 architecture from a rosinality-layout state dict, and check one against a model."""
from __future__ import annotations

import re

import torch

from ..networks import DiscriminatorConfig, GeneratorConfig, channel_table


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, of another architecture, or of an unknown format."""


def _fit_channel_table(per_res: dict[int, int], size: int, what: str) -> tuple[int, int]:
    """(channel_base, channel_max) reproducing ``per_res`` with ``min(base // res, max)``.

    Prefers rosinality's config-f (32768) and paper256 (16384) bases when they fit, so converted files
    keep the familiar numbers.
    """
    channel_max = max(per_res.values())
    candidates = [32768, 16384]
    for res, ch in per_res.items():
        if ch < channel_max:
            candidates.append(ch * res)
    candidates.append(channel_max * size)
    for base in candidates:
        if channel_table(size, base, channel_max) == per_res:
            return base, channel_max
    raise CheckpointError(f"{what}: the channel counts per resolution {per_res} do not follow StyleGAN2's "
                          "min(channel_base // res, channel_max) rule")


def generator_config_from_state_dict(sd: dict[str, torch.Tensor], what: str = "checkpoint") -> GeneratorConfig:
    """Architecture of a rosinality-layout generator state dict (raises CheckpointError if it is not one)."""
    required = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        sample = ", ".join(sorted(sd)[:6])
        raise CheckpointError(f"{what} is not a StyleGAN2 generator in rosinality layout: missing {missing} "
                              f"(its keys start with: {sample} ...)")
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    style_dim = sd["style.1.weight"].shape[1]
    n_rgb = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
    size = 2 ** (n_rgb + 2)
    per_res = {4: int(sd["conv1.conv.weight"].shape[1])}
    for k in range(n_rgb):
        key = f"convs.{2 * k}.conv.weight"
        if key not in sd:
            raise CheckpointError(f"{what}: missing {key} for a {size}px generator")
        per_res[2 ** (k + 3)] = int(sd[key].shape[1])
    base, cmax = _fit_channel_table(per_res, size, what)
    return GeneratorConfig(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_base=base, channel_max=cmax)


def discriminator_config_from_state_dict(sd: dict[str, torch.Tensor], what: str = "checkpoint") -> DiscriminatorConfig:
    if "convs.0.0.weight" not in sd or "final_linear.1.weight" not in sd:
        raise CheckpointError(f"{what} is not a StyleGAN2 discriminator in rosinality layout "
                              "(no convs.0.0.weight / final_linear.1.weight)")
    n_blocks = len([k for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k)])
    size = 2 ** (n_blocks + 2)
    per_res = {size: int(sd["convs.0.0.weight"].shape[0])}
    for i in range(1, n_blocks + 1):
        per_res[size // 2 ** i] = int(sd[f"convs.{i}.conv2.1.weight"].shape[0])
    base, cmax = _fit_channel_table(per_res, size, what)
    return DiscriminatorConfig(size=size, channel_base=base, channel_max=cmax)


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(sd) & set(own)) if sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:4])}"
                         f"{' ...' if len(unexpected) > 4 else ''})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape ({'; '.join(wrong[:3])})")
        raise CheckpointError(f"{what} does not match the {type(model).__name__} architecture: " + ", ".join(parts))
    model.load_state_dict(sd, strict=True)

