"""The config keys every trainer shares, defined once, and the helpers that give every key its one-line meaning.

Each trainer's config (the seven in :mod:`adapt_common.trainers`) is built from these pieces:

``base``
    The one key for the model a run starts from: the StyleGAN2 checkpoint a GAN run adapts, the diffusion model
    folder a DDPM or text-to-image run fine-tunes; empty for a run that builds a new model (pretraining from the
    architecture keys, the small CLIP). It replaces three names of one concept (``generator_args.ckpt``,
    ``model.pretrained``, ``training.pretrained``). Why ``base``: it is what the result's files call the model
    they apply to (a direction's ``base_generator``, a shift file's ``base_hash``), it fits a checkpoint file and a
    model folder alike (``ckpt`` does not), and a fresh start is no "pretrained" model. It stands at the top level
    because it belongs to no section: not to the run's bookkeeping (``exp``) and not to an architecture.
``exp`` (:class:`ExpSection`)
    The run itself: trainer, name, seed, run folder, threads, device.
``logging`` (:class:`LoggingSection`; :class:`CadenceSection` for a trainer without sample grids)
    Cadences of the log, the sample grids and the checkpoints.
``evaluation`` (:class:`EvaluationSection`)
    The end-of-run report, for the trainers that write one.

A trainer gives a shared key another default through the section's default instance
(``exp: ExpSection = section(ExpSection, "...", trainer="clip", name="oneshot")``) and adds keys by subclassing
(``DiffLogging(LoggingSection)`` adds ``sample_steps``); it never copies a shared field, so a shared key cannot
drift from one trainer to the next (tests/test_configs.py checks every registered trainer for this).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any


def setting(default: Any, help: str, minimum: int | None = None) -> Any:
    """A config key: its default and its one-line meaning (``train --help`` prints both). ``minimum``: the least
    whole number the key takes, where the check by name (``adapt_common.config.check_values``) would be wrong for
    it (a count named ``steps`` where 0 means something)."""
    meta = {"help": help} if minimum is None else {"help": help, "minimum": minimum}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str, **defaults: Any) -> Any:
    """A config section of type ``cls``, with the defaults this trainer gives some of its keys."""
    return dataclasses.field(default_factory=lambda: cls(**copy.deepcopy(defaults)), metadata={"help": help})


BASE_HELP = ("the model the run starts from: a StyleGAN2 checkpoint (rosinality .pt, NVIDIA .pkl, native "
             ".safetensors) or a diffusion model folder; empty: a new model from the architecture keys")


def base_setting(default: str = "") -> Any:
    """The ``base`` key (see the module docstring), with this trainer's default."""
    return setting(default, BASE_HELP)


@dataclass
class ExpSection:
    """``exp``: the run."""

    trainer: str = setting("", "the trainer this config is for (the `train` commands pick the trainer by it)")
    name: str = setting("run", "the run's name, shown on the progress bar")
    seed: int = setting(0, "seeds every random draw of the run (initialisation, data order, latents)")
    run_dir: str = setting("runs/run", "the run folder: config.yaml, checkpoint.pt (what --resume continues), "
                                       "log.csv and what the trainer writes")
    threads: int | None = setting(None, "torch CPU threads; unset (null): as OMP_NUM_THREADS makes them")
    device: str = setting("cpu", "torch device: cpu, cuda or cuda:N")


@dataclass
class CadenceSection:
    """``logging`` of a trainer without sample grids: the log and checkpoint cadences."""

    log_every: int = setting(10, "a row of log.csv every this many steps (and at the last)")
    checkpoint_every: int = setting(100, "checkpoint.pt rewritten every this many steps (and at the last)")


@dataclass
class LoggingSection(CadenceSection):
    """``logging``: the cadences, and the sample grids written as training goes."""

    sample_every: int = setting(100, "a sample grid samples/stepNNNNNN.png every this many steps (and at the last)")
    n_samples: int = setting(8, "images per sample grid (the same latents or noise every time)")
    sample_seed: int = setting(12345, "seed of the sample grids' latents or noise")
    tensorboard: bool = setting(False, "also write the logged values to <run_dir>/tensorboard")


@dataclass
class EvaluationSection:
    """``evaluation``: the report written when training ends."""

    n: int = setting(0, "images generated per evaluated domain for the end-of-run report (0: no report)")
    clip: str = setting("synthfaces_judge", "the CLIP that judges the report: a bundled name (synthfaces_judge, "
                                            "a second small CLIP that guides nothing; synthfaces; ViT-B/32) or a path")
    features: str = setting("auto", "FID/KID features: auto (Inception-v3 if its weights are local, else CLIP), "
                                    "inception or clip")


#: The shared section classes by the name they take in every config (``logging`` may be either of its two).
SHARED_SECTIONS: dict[str, tuple[type, ...]] = {"exp": (ExpSection,), "logging": (CadenceSection, LoggingSection),
                                                "evaluation": (EvaluationSection,)}


def shared_part(cfg: Any, name: str) -> type | None:
    """The shared class that defines section ``name`` of a config instance (the most derived one it is an
    instance of); None for a section of the trainer's own."""
    value = getattr(cfg, name, None)
    found = [c for c in SHARED_SECTIONS.get(name, ()) if isinstance(value, c)]
    return max(found, key=lambda c: len(c.__mro__)) if found else None


def shared_keys(cfg: Any) -> dict[str, Any]:
    """The shared keys of a config instance (``base`` and those the shared sections define; not the keys a
    trainer's subclass adds), each with its shared default."""
    out = {"base": ""} if any(f.name == "base" for f in dataclasses.fields(cfg)) else {}
    for name in SHARED_SECTIONS:
        cls = shared_part(cfg, name)
        if cls is not None:
            default = cls()
            out.update({f"{name}.{f.name}": getattr(default, f.name) for f in dataclasses.fields(cls)})
    return out
