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


def load_config(schema_cls: type[T], files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> T:
    """Schema defaults, then each YAML file in order, then ``key=value`` overrides; returns the dataclass."""
    schema = OmegaConf.structured(schema_cls)
    cfg = schema
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
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
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise _explain(e, schema, "config") from e


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
    kind = kinds[0]
    for f in files:
        if Path(f).is_file():
            kind = OmegaConf.select(OmegaConf.load(f), "exp.trainer", default=kind)
    for item in overrides:
        if item.startswith("exp.trainer="):
            kind = item.split("=", 1)[1]
    if kind not in kinds:
        raise ConfigError(f"exp.trainer={kind!r}: expected one of {', '.join(kinds)}")
    return kind
