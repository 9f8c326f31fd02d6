"""The trainers, in one place: for each ``exp.trainer`` name its config class, train function, the files its run
folder holds and exports, and what it is for. ``python -m gan_adapt train/export`` and ``python -m diffusion_adapt
train/export`` (and their ``--help``) go through this table instead of naming trainers themselves.

Modules are named as ``"module:attribute"`` strings and imported only when used, so that the table costs no import
of torch or diffusers.
"""
from __future__ import annotations

import dataclasses
import importlib
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Export:
    """A file a run folder's latest checkpoint can be exported as (``export RUN --<option> PATH``)."""

    option: str  # the export command's option (without --)
    method: str  # the trainer's method: method(path) writes the file and returns its path (or paths)
    help: str  # what the file is


@dataclass(frozen=True)
class TrainerSpec:
    name: str  # the exp.trainer value
    command: str  # the command that runs it
    summary: str  # what it is for, in one line
    config: str  # "module:ConfigClass"
    train: str  # "module:function": function(cfg, resume=False) -> the trainer, its results written
    results: str  # what the run folder holds when training ends
    trainer: str = ""  # "module:TrainerClass" (built from a run's config.yaml for an export)
    exports: tuple[Export, ...] = ()

    def config_class(self) -> type:
        return _resolve(self.config)

    def train_function(self) -> Callable:
        return _resolve(self.train)

    def trainer_class(self) -> type:
        return _resolve(self.trainer)

    def export(self, option: str) -> Export | None:
        return next((e for e in self.exports if e.option == option), None)


def _resolve(dotted: str) -> Any:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


GAN = "python -m gan_adapt train"
DIFFUSION = "python -m diffusion_adapt train"

_DIRECTION = Export("direction", "export_direction", "a direction kind's vector (direction, stylespace, dommod) as a "
                                                     "direction file (apply with generate --direction)")
_ADAPTER = Export("adapter", "export_adapter", "only the trained tensors, with a manifest naming the base generator")
_GENERATOR = Export("generator", "export_generator", "the adapted generator (the EMA of an adversarial run, with its "
                                                     "discriminator), offsets merged (.pt or .safetensors)")

#: exp.trainer -> its spec, the default trainer of each command first.
TRAINERS: dict[str, TrainerSpec] = {s.name: s for s in (
    TrainerSpec(
        "adversarial", GAN,
        "adversarial StyleGAN2 training: pretraining (from scratch or by distillation) and few-shot adaptation with "
        "any parameterization",
        "gan_adapt.training.engine:GanTrainConfig", "gan_adapt.training.engine:train_and_export",
        "adapter.safetensors (EMA), direction.safetensors for a direction kind, samples/, log.csv, checkpoint.pt, "
        "eval/ with evaluation.n > 0",
        "gan_adapt.training.engine:GanTrainer",
        (_ADAPTER, _DIRECTION, _GENERATOR)),
    TrainerSpec(
        "clip", GAN,
        "one-shot CLIP-guided adaptation to a prompt (StyleGAN-NADA) or one reference image (DiFa/MTG)",
        "gan_adapt.training.clip_guided:OneShotConfig", "gan_adapt.training.clip_guided:train",
        "direction.safetensors (direction kinds) or adapter.safetensors, before_after.png, samples/, log.csv, "
        "checkpoint.pt, eval/ with evaluation.n > 0",
        "gan_adapt.training.clip_guided:ClipTrainer", (_DIRECTION, _ADAPTER, _GENERATOR)),
    TrainerSpec(
        "hyper", GAN,
        "HyperDomainNet: one hypernetwork, trained from text, that gives any prompt's domain modulation",
        "gan_adapt.training.hyper:HyperConfig", "gan_adapt.training.hyper:train",
        "hypernet.safetensors (turn prompts into direction files with `python -m gan_adapt hyper`), samples/, "
        "log.csv, checkpoint.pt, eval.json with evaluation.n > 0",
        "gan_adapt.training.hyper:HyperTrainer",
        (Export("hypernet", "export", "the hypernetwork (use it with `python -m gan_adapt hyper`)"),)),
    TrainerSpec(
        "encoder", GAN,
        "a style-invariant encoder: image -> the W latent of its source face under any style (one-shot "
        "inversion that keeps the style out of the pair)",
        "gan_adapt.training.encoder:EncoderTrainConfig", "gan_adapt.training.encoder:train",
        "encoder.safetensors (use it with target.invert_encoder of one-shot runs), samples/, log.csv, "
        "checkpoint.pt, eval.json with evaluation.n > 0",
        "gan_adapt.training.encoder:EncoderTrainer",
        (Export("encoder", "export", "the encoder (target.invert_encoder of one-shot runs)"),)),
    TrainerSpec(
        "analogy_net", GAN,
        "a learned image analogy: from one (source face, styled image) pair, the same style on any face; trained on "
        "random procedural styles (the one-shot guide's analogy.net)",
        "gan_adapt.training.analogy_net:AnalogyNetTrainConfig", "gan_adapt.training.analogy_net:train",
        "analogy_net.safetensors (use it with analogy.net of one-shot runs), samples/, log.csv, checkpoint.pt, "
        "eval.json with evaluation.n > 0",
        "gan_adapt.training.analogy_net:AnalogyNetTrainer",
        (Export("analogy_net", "export", "the analogy net (analogy.net of one-shot runs)"),)),
    TrainerSpec(
        "ddpm", DIFFUSION,
        "unconditional diffusion: pretraining, and few-shot adaptation (full or SVDiff) with DomainStudio's losses",
        "diffusion_adapt.ddpm_trainer:DiffTrainConfig", "diffusion_adapt.ddpm_trainer:train",
        "model/ (full) or spectral_shifts.safetensors (svdiff), both of the EMA; samples/, log.csv, checkpoint.pt, "
        "eval/ with evaluation.n > 0",
        "diffusion_adapt.ddpm_trainer:DiffusionTrainer",
        (Export("out", "export", "the EMA model folder (full) or spectral_shifts.safetensors (svdiff); default: in "
                                 "the run folder"),)),
    TrainerSpec(
        "t2i", DIFFUSION,
        "text-to-image adaptation (Stable Diffusion layout): DreamBooth prior preservation, SVDiff or full, "
        "DomainStudio's text-to-image losses",
        "diffusion_adapt.text2image:T2IConfig", "diffusion_adapt.text2image:train",
        "spectral_shifts.safetensors (+ spectral_shifts_te.safetensors with the text encoder) or model/ (full); "
        "class_images.pt, samples/, log.csv, checkpoint.pt",
        "diffusion_adapt.text2image:T2ITrainer",
        (Export("out", "export", "spectral_shifts.safetensors (+ its _te file) or the model folder (full); "
                                 "default: in the run folder"),)),
    TrainerSpec(
        "clip_model", "python -m tools.train_clip",
        "the small SynthFaces CLIP, trained contrastively from nothing",
        "tools.train_clip:ClipTrainConfig", "tools.train_clip:train",
        "the CLIP at `output` with its model card; log.csv and checkpoint.pt in the run folder"),
)}


def trainers_of(command: str) -> list[TrainerSpec]:
    """The trainers ``command`` runs, its default first."""
    return [s for s in TRAINERS.values() if s.command == command]


def trainer_for(files: Sequence[str | Path], overrides: Sequence[str], command: str) -> TrainerSpec:
    """The spec of the ``exp.trainer`` that YAML files and overrides name (the last wins; default: the
    command's first trainer); another command's trainer is refused with a pointer to it."""
    from .config import trainer_kind
    elsewhere = {s.name: s.command for s in TRAINERS.values() if s.command != command}
    return TRAINERS[trainer_kind(files, overrides, tuple(s.name for s in trainers_of(command)), elsewhere)]


def run_trainer(run: Path, command: str) -> TrainerSpec:
    """The spec of the trainer that wrote a run folder (its config.yaml names it)."""
    return trainer_for([str(run / "config.yaml")], [], command)


def load_run(spec: TrainerSpec, run: Path) -> Any:
    """The trainer of a run folder at its latest checkpoint, built from the folder's config.yaml (keys under their
    old names are read with a warning), for exports."""
    from .config import load_config
    from .loop import load_training_state
    cfg = load_config(spec.config_class(), [run / "config.yaml"], [f"exp.run_dir={run}"])
    trainer = spec.trainer_class()(cfg, quiet=True)
    trainer.load_state_dict(load_training_state(run / "checkpoint.pt"))
    return trainer


# -- --help ----------------------------------------------------------------------------------------------------

KEY_WIDTH = 36  # the column where a key's meaning starts


def _wrap(lines: list[str], width: int, hang: int) -> list[str]:
    out = []
    for line in lines:
        out += textwrap.wrap(line, width, subsequent_indent=" " * hang, break_on_hyphens=False,
                             break_long_words=False) or [""]
    return out


def config_help(command: str, width: int = 118) -> str:
    """Every trainer of ``command`` with each config key's default and meaning: the keys all of them share once,
    then per trainer what it is for, what its run folder holds, the shared keys it gives other defaults and its
    own keys."""
    from .config import config_keys, key_lines, yaml_value
    from .config_sections import SHARED_SECTIONS, shared_keys

    specs = trainers_of(command)
    configs = {s.name: s.config_class()() for s in specs}
    shown: dict = {}  # the shared keys with the default trainer's values (or the first trainer's that has them)
    for cfg in configs.values():
        values = {r.key: r for r in config_keys(cfg)}
        shown.update({k: values[k] for k in shared_keys(cfg) if k not in shown})
    prose = [f"config keys: YAML files (--config, merged in order), then key=value overrides; an unknown key is an "
             f"error. exp.trainer picks the trainer: {', '.join(s.name for s in specs)} (default {specs[0].name}).",
             "", f"keys every trainer shares (defaults as {specs[0].name} has them; the others list theirs):"]
    lines = _wrap(prose, width, 2) + key_lines(list(shown.values()), width=KEY_WIDTH, wrap=width)
    for spec in specs:
        cfg = configs[spec.name]
        mine = shared_keys(cfg)
        rows = config_keys(cfg)
        differs = [f"{r.key}={yaml_value(r.default)}" for r in rows
                   if r.key in mine and r.default != shown[r.key].default]
        sections = [name for name in SHARED_SECTIONS if hasattr(cfg, name)]
        about = [f"{spec.name}: {spec.summary}", f"  run folder: {spec.results}"]
        if spec.exports:
            about.append("  export RUN: " + ", ".join(f"--{e.option}" for e in spec.exports))
        about.append(f"  shared: base, {', '.join(sections)}" + (f"; its defaults: {', '.join(differs)}" if differs
                                                                   else ""))
        own = [r for r in rows if r.key not in mine and not (r.section and r.key in SHARED_SECTIONS
                                                                  and not _adds_keys(cfg, r.key))]
        lines += [""] + _wrap(about, width, 4) + key_lines(own, width=KEY_WIDTH, wrap=width)
    return "\n".join(lines)


def _adds_keys(cfg: Any, section: str) -> bool:
    """Whether the trainer's class of a shared section adds keys of its own."""
    from .config_sections import shared_part
    return len(dataclasses.fields(getattr(cfg, section))) > len(dataclasses.fields(shared_part(cfg, section)))
