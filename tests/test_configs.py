"""Configs: every shipped file validates against its trainer's schema (a typo is an error, not a silent default) and
uses the current key names; every trainer builds its config from the shared sections without copying them; every
key has a one-line meaning; old key names are read as the new ones with a warning naming the new key."""
import dataclasses
import re
import warnings
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from adapt_common.config import ConfigError, RenamedKeyWarning, load_config, renamed_keys, to_dict
from adapt_common.config_sections import (BASE_HELP, CadenceSection, EvaluationSection, ExpSection, LoggingSection,
                                          SHARED_SECTIONS)
from adapt_common.trainers import TRAINERS
from gan_adapt.cli import trainer_kind

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PREFIX_TRAINER = {"clip_": "clip_model", "pretrain_": "adversarial", "fewshot_": "adversarial", "oneshot_": "clip",
                  "hyper_": "hyper", "ddpm_": "ddpm", "encoder_": "encoder",
                  "analogy_net_": "analogy_net"}
SPECS = list(TRAINERS.values())


def _spec_of(path: Path):
    name = next((t for prefix, t in PREFIX_TRAINER.items() if path.name.startswith(prefix)), None)
    assert name is not None, f"{path.name}: no trainer known for this config name"
    return TRAINERS[name]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_validates_with_current_keys(path):
    spec = _spec_of(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenamedKeyWarning)  # a shipped config uses no old key name
        cfg = load_config(spec.config_class(), [path])
    assert cfg.exp.trainer == spec.name
    if spec.command == "python -m gan_adapt train":  # `python -m gan_adapt train` picks this config's trainer
        assert trainer_kind([str(path)], []) == spec.name


# -- one definition of the shared keys -------------------------------------------------------------------------

#: Keys only the shared sections may define: a section of a trainer's own that has one copies a shared key.
SHARED_ONLY = {"run_dir", "threads", "device", "log_every", "checkpoint_every", "sample_every", "n_samples",
               "sample_seed", "tensorboard"}


def _dataclass_types(cls, seen=None):
    """Every dataclass type reachable from ``cls`` through its fields' default values."""
    seen = seen if seen is not None else {}
    seen[cls] = True
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value) and type(value) not in seen:
            _dataclass_types(type(value), seen)
    return list(seen)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_trainer_shares_the_section_definitions(spec):
    cls = spec.config_class()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    cfg = cls()
    # exp and base in every trainer, from the one definition
    assert fields["exp"].type in ("ExpSection", ExpSection) and type(cfg.exp) is ExpSection
    assert fields["base"].metadata["help"] == BASE_HELP and isinstance(cfg.base, str)
    assert cfg.exp.trainer == spec.name
    # logging (all) and evaluation (where there is one): the shared class or a subclass that only adds keys
    assert isinstance(cfg.logging, CadenceSection)
    if spec.name != "clip_model":  # the only trainer without sample grids
        assert isinstance(cfg.logging, LoggingSection)
    if "evaluation" in fields:
        assert isinstance(cfg.evaluation, EvaluationSection)
    for name, shared in (("exp", ExpSection), ("logging", LoggingSection), ("logging", CadenceSection),
                         ("evaluation", EvaluationSection)):
        section = getattr(cfg, name, None)
        if isinstance(section, shared):
            mine = {f.name: f for f in dataclasses.fields(type(section))}
            for f in dataclasses.fields(shared):  # inherited, not redefined: the very same field object
                assert mine[f.name] is f, f"{spec.name}: {name}.{f.name} is redefined in {type(section).__name__}"
    # no other section of the trainer holds a key only the shared sections may define
    shared_classes = {c for classes in SHARED_SECTIONS.values() for c in classes}
    for sub in _dataclass_types(cls):
        own = {f.name for f in dataclasses.fields(sub)}
        for base in shared_classes:
            if issubclass(sub, base):
                own -= {f.name for f in dataclasses.fields(base)}
        assert not own & SHARED_ONLY, f"{spec.name}: {sub.__name__} copies shared keys {own & SHARED_ONLY}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_key_has_a_one_line_meaning(spec):
    for sub in _dataclass_types(spec.config_class()):
        for f in dataclasses.fields(sub):
            text = (f.metadata or {}).get("help", "")
            assert text and "\n" not in text, f"{spec.name}: {sub.__name__}.{f.name} has no one-line help"


# -- old key names -----------------------------------------------------------------------------------------------

#: A value to give each renamed key (by its new name), of the key's type and unlike its default.
SAMPLE = {"base": "some/base.safetensors", "loss.clip_direction": 0.25, "exp.name": "renamed", "exp.seed": 7,
          "exp.threads": 3, "exp.run_dir": "runs/renamed"}
RENAMES = [(spec, old, new) for spec in SPECS for old, new in renamed_keys(spec.config_class()).items()]


def test_the_renames_are_the_ones_announced():
    assert {(s.name, old, new) for s, old, new in RENAMES} == {
        (t, "generator_args.ckpt", "base") for t in ("adversarial", "clip", "hyper")} | {
        ("clip", "loss.direction", "loss.clip_direction"), ("hyper", "loss.direction", "loss.clip_direction"),
        ("ddpm", "model.pretrained", "base"), ("t2i", "training.pretrained", "base"),
        ("clip_model", "exp_name", "exp.name"), ("clip_model", "seed", "exp.seed"),
        ("clip_model", "threads", "exp.threads"), ("clip_model", "logging.run_dir", "exp.run_dir")}


def _nested(dotted: str, value) -> dict:
    out = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


@pytest.mark.parametrize("spec,old,new", RENAMES, ids=lambda x: getattr(x, "name", x))
def test_an_old_key_gives_the_new_keys_value_with_a_warning(spec, old, new, tmp_path):
    cls, value = spec.config_class(), SAMPLE[new]
    expected = load_config(cls, [], [f"{new}={value}"])
    assert OmegaConf.select(OmegaConf.structured(expected), new) == value != OmegaConf.select(
        OmegaConf.structured(cls()), new)
    with pytest.warns(RenamedKeyWarning, match=rf"'{re.escape(old)}' is now '{re.escape(new)}'"):
        assert load_config(cls, [], [f"{old}={value}"]) == expected
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(_nested(old, value)))
    with pytest.warns(RenamedKeyWarning, match=rf"old.yaml: config key '{re.escape(old)}' is now '{re.escape(new)}'"):
        assert load_config(cls, [tmp_path / "old.yaml"]) == expected
    both = OmegaConf.to_container(OmegaConf.merge(_nested(old, value), _nested(new, value)))
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(both))
    with pytest.raises(ConfigError, match=rf"both {re.escape(old)} \(its old name\) and {re.escape(new)} are set"):
        load_config(cls, [tmp_path / "both.yaml"])


def test_unknown_keys_still_error():
    from gan_adapt.training.clip_guided import OneShotConfig
    with pytest.raises(ConfigError, match=r"unknown config key 'loss.directoin'"):
        load_config(OneShotConfig, [], ["loss.directoin=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'generator_args"):  # the rename is per trainer
        from diffusion_adapt.ddpm_trainer import DiffTrainConfig
        load_config(DiffTrainConfig, [], ["generator_args.ckpt=x"])


#: The saved config.yaml of a run started before the renames (the second SynthFaces generator's distillation, as
#: written then): resumed with this code, every value must be what it was.
OLD_RUN_CONFIG = """\
exp:
  trainer: adversarial
  name: synthfaces_v2_distill
  seed: 0
  run_dir: runs/pretrain_v2_distill
  threads: 1
  device: cpu
generator_args:
  ckpt: ''
  size: 64
  style_dim: 128
  n_mlp: 4
  channel_base: 4096
  channel_max: 128
data:
  source: synthfaces:photo
training:
  parameterization: full
  block: 64
  rank: 5
  iters: 60000
  batch: 16
  lr_g: 0.002
  lr_d: 0.002
  r1_gamma: 10.0
  r1_every: 16
  pl_weight: 0.0
  pl_every: 4
  mixing: 0.0
  adversarial_weight: 0.0
  distill_weight: 1.0
  distill_edge_weight: 1.0
  ema_kimg: 10.0
  train_d: false
  mapping_lr_mult: 100.0
  adam_beta1: 0.9
  lr_rampdown: 0.25
ada:
  enabled: false
  target: 0.6
  interval: 4
  kimg: 500.0
  p_init: 0.0
logging:
  log_every: 50
  sample_every: 1000
  checkpoint_every: 250
  n_samples: 16
  sample_seed: 12345
  tensorboard: false
evaluation:
  'n': 0
  clip: synthfaces
  features: auto
"""


def test_a_saved_config_of_the_old_layout_keeps_every_value(tmp_path):
    from gan_adapt.training.engine import GanTrainConfig
    (tmp_path / "config.yaml").write_text(OLD_RUN_CONFIG)
    with pytest.warns(RenamedKeyWarning, match="'generator_args.ckpt' is now 'base'"):
        cfg = to_dict(load_config(GanTrainConfig, [tmp_path / "config.yaml"]))
    old = yaml.safe_load(OLD_RUN_CONFIG)
    old["base"] = old["generator_args"].pop("ckpt")
    assert cfg == old  # the same keys (renamed) with the same values, none added or lost


def test_every_trainer_judges_with_a_clip_that_guides_nothing_by_default():
    # the hypernetwork's judge used to follow its first guide (loss.clip[0]); a guide grades itself by its own loss
    from adapt_common.clip_models import DEFAULT_JUDGE, same_clip
    from gan_adapt.training.clip_guided import OneShotConfig
    from gan_adapt.training.hyper import HyperConfig
    for cls in (HyperConfig, OneShotConfig):
        cfg = load_config(cls)
        assert cfg.evaluation.clip == DEFAULT_JUDGE
        assert not any(same_clip(cfg.evaluation.clip, g) for g in cfg.loss.clip)
    assert load_config(HyperConfig, [], ["loss.clip=[a.pt,b.pt]"]).evaluation.clip == DEFAULT_JUDGE
    assert load_config(HyperConfig, [], ["loss.clip=[a.pt]", "evaluation.clip=c.pt"]).evaluation.clip == "c.pt"


def test_shared_keys_a_trainer_cannot_honour_are_refused(tmp_path):
    from gan_adapt.training.hyper import HyperConfig, HyperTrainer
    from tools.train_clip import ClipTrainConfig, train
    for override, message in (("base=some.pt", "trains from nothing; leave base empty"),
                              ("exp.device=meta", "trains on the CPU"),
                              ("exp.trainer=adversarial", "a config of another trainer")):
        with pytest.raises(ValueError, match=message):
            train(load_config(ClipTrainConfig, [], [override, f"exp.run_dir={tmp_path / 'c'}"]))
    assert not (tmp_path / "c").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="evaluation.features='clip': the hypernetwork's report"):
        HyperTrainer(load_config(HyperConfig, [], ["evaluation.features=clip", f"exp.run_dir={tmp_path / 'h'}",
                                                   "domains.train=[a sketch,a painting]"]), quiet=True)
