"""rosinality/stylegan2-pytorch ``.pt`` files: converted official weights (``g_ema`` + ``latent_avg``) and
training snapshots (``g``, ``d``, ``g_ema``, ``args``, optimiser states). Loaded with ``weights_only=True``;
the ``argparse.Namespace`` of training snapshots is the only extra type allowed. The file records no hash;
weights that are broadcast views (a pickle can describe huge shapes over a few bytes), sizes beyond any real
StyleGAN2 and NaN/Inf values are refused before a network is built."""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch

from adapt_common.files import atomic_path, require_finite
from adapt_common.integrity import require_stored
from ..networks import Discriminator, Generator
from .architecture import (CheckpointError, discriminator_config_from_state_dict, generator_config_from_state_dict,
                           load_state_dict_strict)
from .checkpoint import StyleGANCheckpoint, finish_generator


def read_torch_file(path: Path) -> object:
    """``torch.load`` with ``weights_only=True`` and errors that say what is wrong with the file."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: it contains objects other than tensors and plain "
                              f"containers, which safe loading does not run ({str(e).splitlines()[0]})") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: could not read it as a PyTorch file; it is truncated or corrupt "
                              f"({str(e).splitlines()[0]})") from e


def _state_dict(obj, key, path):
    """``obj[key]`` as a state dict of stored, finite tensors (None when absent)."""
    sd = obj.get(key)
    if sd is None:
        return None
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise CheckpointError(f"{path}: entry {key!r} is not a state dict of tensors")
    _require_weights({f"{key}.{k}": v for k, v in sd.items()}, path)
    return sd


def _require_weights(tensors: dict, path) -> None:
    """Stored (not broadcast) tensors first, so the NaN scan allocates no more than the file holds."""
    require_stored(tensors, path, CheckpointError)
    require_finite(tensors, path)


def load(path: str | Path) -> StyleGANCheckpoint:
    path = Path(path)
    obj = read_torch_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict with 'g_ema', found a {type(obj).__name__}")
    if obj.get("model_type") == "original" and isinstance(obj.get("state_dict"), dict):
        # A StyleDomain / HyperDomainNet full fine-tune (`models_*.pt`, patch_key "original"): the trained copy's
        # state dict under "generator." names (the source copy, if any, under "generator_frozen." is ignored).
        sd = {k[len("generator."):]: v for k, v in obj["state_dict"].items()
              if isinstance(k, str) and k.startswith("generator.")}
        obj = {"g_ema": sd}
    if obj.get("model_type") in ("parametrization", "parameterization", "mapper"):
        raise CheckpointError(f"{path}: a StyleDomain / HyperDomainNet {obj['model_type']} file (patch_key "
                              f"{obj.get('patch_key')!r}), not a generator: apply it to its generator with "
                              "`generate --direction` (gan_adapt.directions.Direction.from_pretrained)")
    if "g_ema" not in obj:
        if "style.1.weight" in obj:  # a bare generator state dict
            obj = {"g_ema": obj}
        else:
            raise CheckpointError(f"{path}: not a rosinality StyleGAN2 checkpoint: no 'g_ema' entry "
                                  f"(top-level keys: {sorted(obj)[:8]})")
    meta: dict = {}
    # Every tensor is checked and every size bounded before any network is built.
    g_sd, g_train, d_sd = (_state_dict(obj, key, path) for key in ("g_ema", "g", "d"))
    cfg = generator_config_from_state_dict(g_sd, str(path))
    dcfg = discriminator_config_from_state_dict(d_sd, f"{path} (d)") if d_sd is not None else None
    latent_avg = obj.get("latent_avg")
    if latent_avg is not None and (not torch.is_tensor(latent_avg) or latent_avg.numel() != cfg.style_dim):
        raise CheckpointError(f"{path}: latent_avg is not {cfg.style_dim} values, the size of the generator's w")
    if latent_avg is not None:
        _require_weights({"latent_avg": latent_avg}, path)
    g_ema = Generator(config=cfg)
    load_state_dict_strict(g_ema, g_sd, f"{path} (g_ema)")
    finish_generator(g_ema, latent_avg, meta)
    g = None
    if g_train is not None:
        g = Generator(config=cfg)
        load_state_dict_strict(g, g_train, f"{path} (g)")
    d = None
    if d_sd is not None:
        d = Discriminator(config=dcfg)
        load_state_dict_strict(d, d_sd, f"{path} (d)")
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        meta["training_args"] = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
    if "ada_aug_p" in obj:
        meta["ada_aug_p"] = float(obj["ada_aug_p"])
    return StyleGANCheckpoint(g_ema=g_ema, d=d, g=g, source_format="rosinality", path=str(path), meta=meta)


def save(ckpt: StyleGANCheckpoint, path: str | Path) -> Path:
    """Write a rosinality-style file (``g_ema``, ``latent_avg`` and ``g``/``d`` when present)."""
    obj = {"g_ema": ckpt.g_ema.state_dict(), "latent_avg": ckpt.g_ema.latent_avg.detach().clone().cpu()}
    if ckpt.g is not None:
        obj["g"] = ckpt.g.state_dict()
    if ckpt.d is not None:
        obj["d"] = ckpt.d.state_dict()
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
