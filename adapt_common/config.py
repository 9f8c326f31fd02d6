"""Configs for every training script: a dataclass schema, YAML files merged in order, ``key=value`` overrides.

    cfg = load_config(TrainConfig, ["configs/a.yaml", "configs/b.yaml"], ["optim.lr=0.01"])

Types are checked on merge and an unknown key is an error that names the key and suggests the closest one.
The resolved config is saved next to a run's outputs (:func:`save_config`) and read back on resume.

A schema may rename keys: its ``RENAMED_KEYS`` class attribute maps old dotted keys to new ones. An old key, in a
YAML file (a run folder's saved config.yaml too) or an override, is read as the new one with a
:class:`RenamedKeyWarning` that names the new key; the renames are kept for one release.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class RenamedKeyWarning(FutureWarning):
    """A config key under its old name: read as the new one for one release."""


def renamed_keys(schema_cls: type) -> dict[str, str]:
    """Old dotted key -> new dotted key of a schema (its ``RENAMED_KEYS``; none by default)."""
    return dict(getattr(schema_cls, "RENAMED_KEYS", {}))


_ABSENT = object()


def _pop_key(node: DictConfig, dotted: str):
    """Remove ``dotted`` from ``node`` and return its raw value (interpolations unresolved), or ``_ABSENT``.
    Sections the removal leaves empty go too: the schema may no longer have them (``generator_args`` of the
    one-shot trainer held only ``ckpt``)."""
    *path, last = dotted.split(".")
    parents = [node]  # parents[i + 1] is parents[i][path[i]]
    for part in path:
        child = parents[-1].get(part)
        if not isinstance(child, DictConfig):
            return _ABSENT
        parents.append(child)
    if last not in parents[-1]:
        return _ABSENT
    value = OmegaConf.to_container(parents[-1], resolve=False)[last]
    del parents[-1][last]
    for depth in range(len(path), 0, -1):
        if len(parents[depth]) > 0:
            break
        del parents[depth - 1][path[depth - 1]]
    return value


def apply_renames(node: DictConfig, renamed: dict[str, str], where: str) -> DictConfig:
    """``node`` (a YAML file's keys or one override) with each old key moved to its new name, warning for each."""
    for old, new in renamed.items():
        value = _pop_key(node, old)
        if value is _ABSENT:
            continue
        if OmegaConf.select(node, new, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
            raise ConfigError(f"{where}: both {old} (its old name) and {new} are set; keep only {new}")
        warnings.warn(f"{where}: config key {old!r} is now {new!r}; the old name is read as the new one for one "
                      f"release, write {new} instead", RenamedKeyWarning, stacklevel=3)
        OmegaConf.update(node, new, value, merge=False)
    return node


@contextlib.contextmanager
def plain_config_warnings():
    """For a command line: each renamed-key warning as one ``warning: ...`` line on stderr (not Python's
    file:line form), every time it happens."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", RenamedKeyWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, RenamedKeyWarning):
                print(f"warning: {message}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)
        warnings.showwarning = show
        yield


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
    renamed = renamed_keys(schema_cls)
    cfg = schema
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            cfg = OmegaConf.merge(cfg, apply_renames(read_yaml(path), renamed, str(path)))
        except OmegaConfBaseException as e:
            raise _explain(e, schema, str(path)) from e
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            cfg = OmegaConf.merge(cfg, apply_renames(OmegaConf.from_dotlist([item]), renamed, f"override {item!r}"))
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
        elif isinstance(value, int) and "minimum" in f.metadata:  # the schema's own bound
            if value < f.metadata["minimum"]:
                raise ConfigError(f"{key}={value}: give a whole number >= {f.metadata['minimum']}")
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


def yaml_value(value: Any) -> str:
    """A default as it is written in a YAML file or a ``key=value`` override (``''``, ``null``, ``[a, b]``)."""
    import yaml
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6, allow_unicode=True).strip()
    return text[:-len("...")].strip() if text.endswith("...") else text


class ConfigKey(NamedTuple):
    key: str  # dotted
    default: Any  # None for a section
    help: str  # the field's one-line meaning
    section: bool  # a section (its keys follow it)
    field: dataclasses.Field


def config_keys(cfg: Any, prefix: str = "") -> list[ConfigKey]:
    """Every key of a config instance (its values are the defaults), each section before its keys."""
    rows = []
    for f in dataclasses.fields(cfg):
        value, doc = getattr(cfg, f.name), (f.metadata or {}).get("help", "")
        if dataclasses.is_dataclass(value):
            rows.append(ConfigKey(f"{prefix}{f.name}", None, doc, True, f))
            rows += config_keys(value, f"{prefix}{f.name}.")
        else:
            rows.append(ConfigKey(f"{prefix}{f.name}", value, doc, False, f))
    return rows


def key_lines(rows: Sequence[ConfigKey], indent: str = "  ", width: int = 36, wrap: int = 118) -> list[str]:
    """``key: default   meaning`` lines, the meaning from column ``width`` and wrapped at ``wrap`` under itself; a
    section as ``[section] meaning``."""
    import textwrap
    lines = []
    for row in rows:
        if row.section:
            lines += textwrap.wrap(f"{indent}[{row.key}] {row.help}", wrap, subsequent_indent=indent + "    ")
            continue
        left = f"{indent}{row.key}: {yaml_value(row.default)}"
        text = (f"{left:<{width}} " if len(left) < width else f"{left}  ") + row.help
        lines += textwrap.wrap(text, wrap, subsequent_indent=" " * (width + 1), break_on_hyphens=False,
                               break_long_words=False) or [text]
    return lines


def describe(schema_cls: type) -> str:
    """Every key of a schema with its default and meaning, one per line (for ``--help``)."""
    return "\n".join(key_lines(config_keys(schema_cls())))


def trainer_kind(files, overrides, kinds: tuple[str, ...], elsewhere: dict[str, str] | None = None) -> str:
    """The ``exp.trainer`` a set of YAML files and ``key=value`` overrides name (the last wins; default
    ``kinds[0]``): how one ``train`` command picks among several trainers before their schemas are known.
    ``elsewhere``: trainer name -> the command that runs it, for the trainers this command does not."""
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
        if kind in (elsewhere or {}):
            raise ConfigError(f"{source}exp.trainer={kind!r} is run by `{elsewhere[kind]}`; this command runs "
                              f"{', '.join(kinds)}")
        raise ConfigError(f"{source}exp.trainer={kind!r}: this command runs {', '.join(kinds)}; is it the other "
                          "package's config or run folder (python -m gan_adapt / python -m diffusion_adapt)?")
    return kind
