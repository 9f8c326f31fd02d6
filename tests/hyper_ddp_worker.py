"""Run by tests/test_hyper.py under torchrun: trains a tiny hypernetwork, then each process writes the hash
of its mapper's parameters and buffers (they must agree: gradients are averaged, BatchNorm statistics
broadcast from rank 0)."""
import sys
from pathlib import Path

from adapt_common.config import load_config
from adapt_common.files import tensors_hash
from gan_adapt.training.hyper import HyperConfig, train

if __name__ == "__main__":
    trainer = train(load_config(HyperConfig, [], sys.argv[1:]), quiet=True)
    run = Path(trainer.cfg.exp.run_dir)
    (run / f"rank{trainer.rank}.txt").write_text(f"{trainer.world} {tensors_hash(trainer.mapper.state_dict())}")
