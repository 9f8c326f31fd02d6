"""Configs for every training script: a dataclass schema, YAML files merged in order, ``key=value`` overrides.

    cfg = load_config(TrainConfig, ["configs/a.yaml", "configs/b.yaml"], ["optim.lr=0.01"])

Types are checked on merge and an unknown key is an error that names the key and suggests the closest one.
The resolved config is saved next to a run's outputs (:func:`save_config`) and read back on resume.
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def _keys(schema) -> list[str]:
    out = []

    def walk(node, prefix):
        for k in node:
            v = node[k] if not OmegaConf.is_missing(node, k) else None
            path = f"{prefix}{k}"
            out.append(path)
            if isinstance(v, DictConfig):
                walk(v, path + ".")
    walk(schema, "")
    return out


def _explain(e: OmegaConfBaseException, schema, where: str) -> ConfigError:
    key = getattr(e, "full_key", None) or ""
    msg = str(e).splitlines()[0]
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and key:
        close = difflib.get_close_matches(key, _keys(schema), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"{where}: unknown config key {key!r}{hint}")
    if isinstance(e, ValidationError):
        return ConfigError(f"{where}: bad value for {key!r}: {msg}")
    return ConfigError(f"{where}: {msg}")


def read_yaml(path: Path):
    """A YAML file as an OmegaConf mapping, or a ConfigError that names the file and the line."""
    import yaml
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({problem}{where}); fix the file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give a YAML config") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: a YAML config is a mapping of keys (`training:` sections and such), this file "
                          "holds a list")
    return loaded


def load_config(schema_cls: type[T], files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> T:
    """Schema defaults, then each YAML file in order, then ``key=value`` overrides; returns the dataclass."""
    schema = OmegaConf.structured(schema_cls)
    cfg = schema
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            cfg = OmegaConf.merge(cfg, read_yaml(path))
        except OmegaConfBaseException as e:
            raise _explain(e, schema, str(path)) from e
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise _explain(e, schema, f"override {item!r}") from e
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise _explain(e, schema, "config") from e
    check_values(obj)
    return obj


#: Integer keys (by their last name) that count, size or pace something: 0 or less is never meant (a cadence of 0
#: divides by zero mid-run). ``threads`` is checked where it is applied (``training.set_threads``): unset follows
#: OMP_NUM_THREADS.
POSITIVE_INT_KEYS = frozenset({
    "batch", "interval", "n_samples", "sample_steps", "steps", "ddim_steps", "size", "sample_size", "style_dim",
    "n_mlp", "channel_base", "channel_max", "block", "rank", "width", "depth", "per_domain", "jobs", "milestones",
    "source_mean_n", "layers_per_block", "norm_num_groups", "attention_head_dim", "embed_dim", "image_resolution",
    "vision_layers", "vision_width", "vision_patch_size", "context_length", "transformer_width",
    "transformer_layers", "eval_per_domain"})


def _positive_required(name: str) -> bool:
    return name in POSITIVE_INT_KEYS or name.endswith("_every")


def check_values(cfg: Any, prefix: str = "") -> None:
    """Refuse values no run can mean, naming the key: counts, sizes and cadences below 1, other counts below 0
    (seeds may be anything), and a device this machine does not have."""
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, key + ".")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if _positive_required(f.name) and value < 1:
                raise ConfigError(f"{key}={value}: give a whole number >= 1 (it is a count, a size or a cadence "
                                  "in steps)")
            if value < 0 and "seed" not in f.name:
                raise ConfigError(f"{key}={value}: give a whole number >= 0")
        elif f.name == "device" and isinstance(value, str):
            check_device(value, key)


def check_device(device: str | None, key: str = "device") -> None:
    """Refuse a torch device this machine cannot use (``cuda`` without a GPU, a GPU index beyond the last, a
    misspelt name), with what to use instead, before anything is built on it."""
    if not device:
        return
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}={device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key}={device!r}, but this machine has no usable CUDA GPU "
                              "(torch.cuda.is_available() is False); use cpu")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{key}={device!r}, but this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")


def save_config(cfg: Any, path: str | Path) -> Path:
    from .files import atomic_path
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return path


def to_dict(cfg: Any) -> dict:
    # cfg is a loaded (already resolved) config: its strings are final values, so a "${...}" in one (a prompt) is
    # text, not an interpolation to resolve again
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False)


def describe(schema_cls: type) -> str:
    """The schema as YAML with defaults (for ``--help``; OmegaConf has no help of its own)."""
    lines = [OmegaConf.to_yaml(OmegaConf.structured(schema_cls)).rstrip()]
    docs = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            doc = f.metadata.get("help") if f.metadata else None
            if doc:
                docs.append(f"  {prefix}{f.name}: {doc}")
            if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
                walk(f.type, f"{prefix}{f.name}.")
    walk(schema_cls, "")
    if docs:
        lines += ["", "keys:"] + docs
    return "\n".join(lines)


def trainer_kind(files, overrides, kinds: tuple[str, ...]) -> str:
    """The ``exp.trainer`` a set of YAML files and ``key=value`` overrides name (the last wins; default
    ``kinds[0]``): how one ``train`` command picks among several trainers before their schemas are known."""
    kind, where = kinds[0], "default"
    for f in files:
        if Path(f).is_file():
            found = OmegaConf.select(read_yaml(Path(f)), "exp.trainer", default=None)
            if found is not None:
                kind, where = found, str(f)
    for item in overrides:
        if item.startswith("exp.trainer="):
            kind, where = item.split("=", 1)[1], "override"
    if kind not in kinds:
        source = f"{where}: " if where not in ("default", "override") else ""
        raise ConfigError(f"{source}exp.trainer={kind!r}: this command runs {', '.join(kinds)}; is it the other "
                          "package's config or run folder (python -m gan_adapt / python -m diffusion_adapt)?")
    return kind
