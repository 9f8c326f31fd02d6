"""Every shipped config validates against its pipeline's schema (a typo is an error, not a silent default)."""
from pathlib import Path

import pytest

from tools.train_clip import ClipTrainConfig
from adapt_common.config import load_config
from gan_adapt.cli import trainer_kind
from gan_adapt.training.clip_guided import OneShotConfig
from gan_adapt.training.engine import GanTrainConfig
from diffusion_adapt.training import DiffTrainConfig
from gan_adapt.training.hyper import HyperConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {"clip_": ClipTrainConfig, "pretrain_": GanTrainConfig, "fewshot_": GanTrainConfig,
           "oneshot_": OneShotConfig, "hyper_": HyperConfig, "ddpm_": DiffTrainConfig}
TRAINER = {GanTrainConfig: "adversarial", OneShotConfig: "clip", HyperConfig: "hyper"}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_validates(path):
    schema = next((s for prefix, s in SCHEMAS.items() if path.name.startswith(prefix)), None)
    assert schema is not None, f"{path.name}: no schema known for this config name"
    load_config(schema, [path])
    if schema in TRAINER:  # `python -m gan_adapt train` picks the trainer this schema belongs to
        assert trainer_kind([str(path)], []) == TRAINER[schema]
