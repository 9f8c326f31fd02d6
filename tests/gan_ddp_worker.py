"""Run by tests/test_gan_training.py under torchrun: trains a tiny config, then each process writes the
hash of its trained tensors (they must agree: gradients are averaged across processes)."""
import sys
from pathlib import Path

from adapt_common.config import load_config
from adapt_common.files import tensors_hash
from gan_adapt.training.engine import GanTrainConfig, train

if __name__ == "__main__":
    trainer = train(load_config(GanTrainConfig, [], sys.argv[1:]), quiet=True)
    run = Path(trainer.cfg.exp.run_dir)
    (run / f"rank{trainer.rank}.txt").write_text(
        f"{trainer.world} {tensors_hash(trainer.param.trained_state_dict())} {tensors_hash(trainer.d.state_dict())}")
