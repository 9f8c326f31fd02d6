"""Infer a StyleGAN2 architecture from a rosinality-layout state dict, and check one against a model."""
from __future__ import annotations

import math
import re

import torch

from adapt_common.files import require_size
from ..networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, channel_table

# Bounds on the sizes a file may ask for, checked before anything is built with them: generous for any real
# StyleGAN2 (config-f 1024 px: 512 channels, style_dim 512, 8 mapping layers, ~30M generator parameters), small
# enough that a hostile file of a few KB cannot ask for unbounded memory.
MAX_SIZE = 4096
MAX_CHANNELS = 4096
MAX_STYLE_DIM = 4096
MAX_N_MLP = 32
MAX_BLUR_TAPS = 16
MAX_STDDEV = 64
#: A generator or discriminator larger than this many parameters (4 GiB of float32) is refused.
MAX_PARAMETERS = 2 ** 30
#: The most modulated layers a generator within MAX_SIZE has (21 convs + 11 toRGB at 4096 px), with room.
MAX_STYLE_LAYERS = 64


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, of another architecture, or of an unknown format."""


def _bounded(what: str, value, limit: int, source, minimum: int = 1) -> int:
    try:
        return require_size(what, value, limit, source, minimum)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def _bounded_size(what: str, value, source, minimum: int) -> int:
    size = _bounded(what, value, MAX_SIZE, source, minimum)
    if size & (size - 1):
        raise CheckpointError(f"{source}: {what} is {size}, not a power of two; the file is corrupt")
    return size


def _check_blur_kernel(kernel, source) -> None:
    if not isinstance(kernel, (list, tuple)):
        raise CheckpointError(f"{source}: blur_kernel is {kernel!r}, not a list of taps; the file is corrupt")
    _bounded("the number of blur_kernel taps", len(kernel), MAX_BLUR_TAPS, source)
    taps = [_bounded("a blur_kernel tap", k, 2 ** 16, source, minimum=0) for k in kernel]
    if sum(taps) == 0:
        raise CheckpointError(f"{source}: blur_kernel {taps} sums to 0 (it is normalised by its sum); the file "
                              "is corrupt")


def _check_parameter_count(model_cls, config, source) -> None:
    """Count the parameters of the model ``config`` describes on the meta device (which allocates nothing)."""
    with torch.device("meta"):
        n = sum(p.numel() for p in model_cls(config=config).parameters())
    if n > MAX_PARAMETERS:
        raise CheckpointError(f"{source}: its {model_cls.__name__} would have {n:,} parameters, more than the "
                              f"{MAX_PARAMETERS:,} this tool builds; the file is corrupt or hostile")


def check_generator_config(cfg: GeneratorConfig, source) -> GeneratorConfig:
    """Bound every size of an architecture read from a file, before a generator is built from it."""
    _bounded_size("the generator size (px)", cfg.size, source, minimum=4)
    _bounded("style_dim", cfg.style_dim, MAX_STYLE_DIM, source)
    _bounded("n_mlp (mapping layers)", cfg.n_mlp, MAX_N_MLP, source)
    _bounded("channel_max", cfg.channel_max, MAX_CHANNELS, source)
    _bounded("channel_base", cfg.channel_base, MAX_CHANNELS * MAX_SIZE, source)
    _check_blur_kernel(cfg.blur_kernel, source)
    for name in ("lr_mlp", "conv_clamp"):
        value = getattr(cfg, name)
        if value is None and name == "conv_clamp":
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise CheckpointError(f"{source}: {name} is {value!r}, not a positive finite number; the file is corrupt")
    _check_parameter_count(Generator, cfg, source)
    return cfg


def check_discriminator_config(cfg: DiscriminatorConfig, source) -> DiscriminatorConfig:
    """:func:`check_generator_config` for a discriminator."""
    _bounded_size("the discriminator size (px)", cfg.size, source, minimum=8)
    _bounded("channel_max", cfg.channel_max, MAX_CHANNELS, source)
    _bounded("channel_base", cfg.channel_base, MAX_CHANNELS * MAX_SIZE, source)
    _bounded("stddev_group", cfg.stddev_group, MAX_STDDEV, source)
    _bounded("stddev_feat", cfg.stddev_feat, MAX_STDDEV, source)
    _check_blur_kernel(cfg.blur_kernel, source)
    _check_parameter_count(Discriminator, cfg, source)
    return cfg


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
    n_mlp = _bounded("n_mlp (style.N.weight mapping layers)",
                     len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)]), MAX_N_MLP, what)
    style_dim = _bounded("style_dim (style.1.weight columns)", _dim(sd, "style.1.weight", 1, what), MAX_STYLE_DIM, what)
    n_rgb = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
    size = _size_from_layer_count("to_rgbs layers", n_rgb, what)
    per_res = {4: _bounded("channels at 4px", _dim(sd, "conv1.conv.weight", 1, what), MAX_CHANNELS, what)}
    for k in range(n_rgb):
        key = f"convs.{2 * k}.conv.weight"
        if key not in sd:
            raise CheckpointError(f"{what}: missing {key} for a {size}px generator")
        per_res[2 ** (k + 3)] = _bounded(f"channels at {2 ** (k + 3)}px", _dim(sd, key, 1, what), MAX_CHANNELS, what)
    base, cmax = _fit_channel_table(per_res, size, what)
    cfg = GeneratorConfig(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_base=base, channel_max=cmax)
    return check_generator_config(cfg, what)


def _size_from_layer_count(layers: str, count: int, what: str, minimum: int = 4) -> int:
    """The resolution ``2 ** (count + 2)`` of a network with ``count`` upsampling (or downsampling) blocks."""
    _bounded(f"the number of {layers}", count, 60, what, minimum=0)  # keeps 2 ** count a printable number
    return _bounded_size(f"the size (px) implied by its {count} {layers}", 2 ** (count + 2), what, minimum)


def _dim(sd: dict, key: str, axis: int, what: str) -> int:
    """``sd[key].shape[axis]``, or a CheckpointError naming the key."""
    t = sd[key]
    if not torch.is_tensor(t) or t.dim() <= axis:
        raise CheckpointError(f"{what}: {key} is not a tensor with at least {axis + 1} dimensions")
    return int(t.shape[axis])


def discriminator_config_from_state_dict(sd: dict[str, torch.Tensor], what: str = "checkpoint") -> DiscriminatorConfig:
    if "convs.0.0.weight" not in sd or "final_linear.1.weight" not in sd:
        raise CheckpointError(f"{what} is not a StyleGAN2 discriminator in rosinality layout "
                              "(no convs.0.0.weight / final_linear.1.weight)")
    n_blocks = len([k for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k)])
    size = _size_from_layer_count("residual blocks", n_blocks, what, minimum=8)
    per_res = {size: _bounded(f"channels at {size}px", _dim(sd, "convs.0.0.weight", 0, what), MAX_CHANNELS, what)}
    for i in range(1, n_blocks + 1):
        key = f"convs.{i}.conv2.1.weight"
        if key not in sd:
            raise CheckpointError(f"{what}: missing {key} for a {size}px discriminator")
        per_res[size // 2 ** i] = _bounded(f"channels at {size // 2 ** i}px", _dim(sd, key, 0, what), MAX_CHANNELS,
                                           what)
    base, cmax = _fit_channel_table(per_res, size, what)
    return check_discriminator_config(DiscriminatorConfig(size=size, channel_base=base, channel_max=cmax), what)


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the mismatches."""
    check_state_dict(model, sd, what)
    model.load_state_dict(sd, strict=True)


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Refuse ``sd`` unless it has exactly the keys and shapes of ``model``'s state dict (``model`` may be on
    the meta device: checking a file against an architecture before allocating it)."""
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

