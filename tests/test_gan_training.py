"""The adversarial training engine: a run from scratch, exact resume, few-shot adaptation of a checkpoint
with a small parameterization, and two processes under torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapt_common.config import load_config
from adapt_common.loop import load_training_state
from gan_adapt.formats import StyleGANCheckpoint, load_checkpoint, save_checkpoint
from gan_adapt.training import engine
from gan_adapt.training.engine import GanTrainConfig, GanTrainer

ARCH = ["generator_args.size=32", "generator_args.style_dim=32", "generator_args.n_mlp=2",
        "generator_args.channel_base=256", "generator_args.channel_max=32"]
FAST = ["training.batch=4", "training.r1_every=2", "training.pl_weight=2", "training.pl_every=2", "exp.threads=1",
        "ada.enabled=true", "ada.interval=1", "ada.kimg=0.05", "ada.target=-1", "logging.log_every=1"]


def _cfg(run, *extra):
    return load_config(GanTrainConfig, [], ARCH + FAST + [f"exp.run_dir={run}", *extra])


def test_scratch_run_writes_samples_logs_and_checkpoint(tmp_path):
    cfg = _cfg(tmp_path / "run", "training.iters=4", "logging.sample_every=2", "logging.checkpoint_every=2")
    trainer = engine.train(cfg, quiet=True)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step000002.png", "step000004.png"]
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,elapsed_s,d_loss") and len(rows) == 5
    assert float(trainer.augment.p) > 0  # ADA raised p (target -1: always "overfitting")
    state = load_training_state(run / "checkpoint.pt")
    assert state["step"] == 4 and state["parameterization"] == "full"
    with pytest.raises(FileExistsError, match="--resume"):
        engine.train(cfg, quiet=True)


def test_resume_is_exact(tmp_path, monkeypatch):
    straight = engine.train(_cfg(tmp_path / "a", "training.iters=6", "logging.checkpoint_every=3"), quiet=True)
    cfg_b = _cfg(tmp_path / "b", "training.iters=6", "logging.checkpoint_every=3")
    real_step = GanTrainer.train_step

    def crash_after_4(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return real_step(self)
    monkeypatch.setattr(GanTrainer, "train_step", crash_after_4)
    with pytest.raises(KeyboardInterrupt):
        engine.train(cfg_b, quiet=True)
    monkeypatch.setattr(GanTrainer, "train_step", real_step)
    resumed = engine.train(cfg_b, resume=True, quiet=True)
    a, b = straight.state_dict(), resumed.state_dict()
    for part in ("trained", "ema", "d"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert float(straight.augment.p) == float(resumed.augment.p)


def test_few_shot_adaptation_of_a_checkpoint(tmp_path, tiny_generator):
    from gan_adapt.networks import Discriminator
    d = Discriminator(32, channel_base=256, channel_max=32)
    src = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator, d=d), tmp_path / "source.pt")
    cfg = load_config(GanTrainConfig, [], FAST + [
        f"exp.run_dir={tmp_path / 'run'}", f"base={src}", "data.source=synthfaces:cat@5",
        "training.parameterization=affine_light_plus", "training.block=16", "training.iters=3"])
    trainer = engine.train(cfg, quiet=True)
    assert trainer.param.num_trainable() < sum(p.numel() for p in tiny_generator.parameters()) / 5
    out = trainer.export_generator(tmp_path / "adapted.safetensors")
    adapted = load_checkpoint(out)
    assert adapted.meta["trained_with"] == "affine_light_plus" and adapted.d is not None
    z = torch.randn(2, 32)
    torch.testing.assert_close(adapted.g_ema.generate(z), trainer.ema.generator.generate(z), rtol=1e-5, atol=1e-5)
    # The EMA moved away from the source, and the source file is untouched.
    assert (adapted.g_ema.generate(z) - tiny_generator.generate(z)).abs().max() > 0
    torch.testing.assert_close(load_checkpoint(src).g_ema.generate(z), tiny_generator.generate(z))


@pytest.mark.timeout(300)
def test_two_processes_under_torchrun_stay_in_sync(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists(), f"{torchrun}: torch installs this script; the environment is broken"
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "tests/gan_ddp_worker.py",
                        *ARCH, *FAST, f"exp.run_dir={run}", "training.iters=3"],
                       cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    h0, h1 = (run / "rank0.txt").read_text(), (run / "rank1.txt").read_text()
    assert h0.startswith("2 ") and h0 == h1  # both processes hold the same weights after every averaged step
    assert load_training_state(run / "checkpoint.pt")["step"] == 3


SPECS = ("synthfaces:cat@5", "synthfaces:sketch")  # a fixed few-shot set, and faces rendered on the fly


def _real_batches(spec: str, run, batch: int, steps: int = 2) -> torch.Tensor:
    """The real images GanTrainer.train_step takes at each of its first steps, [steps, batch, 3, 32, 32]."""
    trainer = GanTrainer(_cfg(run, f"data.source={spec}", f"training.batch={batch}", "ada.enabled=false",
                              "exp.seed=3"), quiet=True)
    seen, draw = [], trainer.data.batch

    def recording(*args, **kwargs):
        seen.append(draw(*args, **kwargs))
        return seen[-1]
    trainer.data.batch = recording
    for _ in range(steps):
        trainer.train_step()
    return torch.stack(seen)


def _gloo_rank(rank: int, world: int, port: int, out: str) -> None:
    """One process of a gloo group (torch.multiprocessing): each spec's real batches as its trainer sees them."""
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for i, spec in enumerate(SPECS):
            torch.save(_real_batches(spec, Path(out) / "run", batch=2), Path(out) / f"{i}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_processes_see_the_global_batch_of_one(tmp_path):
    """Two processes with batch 2 each must together train on exactly the 4 images one process with batch 4 takes
    (rank r: images 2r, 2r+1 of them), never both on the same slice."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for i, spec in enumerate(SPECS):
        one = _real_batches(spec, tmp_path / "one", batch=4)
        r0, r1 = (torch.load(tmp_path / f"{i}_rank{r}.pt", weights_only=True) for r in (0, 1))
        assert not torch.equal(r0, r1), spec
        # the renderer's float rounding may depend on how many faces it draws at once (seen: 2e-6)
        torch.testing.assert_close(torch.cat([r0, r1], dim=1), one, rtol=0, atol=1e-4, msg=spec)


def test_distillation_from_the_renderer_lowers_its_error(tmp_path):
    cfg = _cfg(tmp_path / "distill", "training.iters=30", "training.train_d=false", "training.adversarial_weight=0",
               "training.distill_weight=1", "training.pl_weight=0", "ada.enabled=false", "training.lr_g=0.01",
               "training.batch=8")
    engine.train(cfg, quiet=True)
    rows = [r.split(",") for r in (tmp_path / "distill" / "log.csv").read_text().splitlines()]
    col = rows[0].index("distill_l1")
    first, last = float(rows[1][col]), sum(float(r[col]) for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    with pytest.raises(ValueError, match="distill_weight needs"):
        GanTrainer(_cfg(tmp_path / "x", "training.distill_weight=1", "data.source=synthfaces:cat@5"), quiet=True)


def test_end_of_run_report_on_a_folder(tmp_path):
    from PIL import Image
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (48, 48), (40 * i, 100, 200 - 30 * i)).save(folder / f"{i}.png")
    clip_path = tmp_path / "clip.pt"
    from adapt_common.clip_models import tiny_clip
    torch.save(tiny_clip(0).model.state_dict(), clip_path)
    cfg = _cfg(tmp_path / "run", f"data.source={folder}", "training.iters=2", "training.parameterization=affine",
               "evaluation.n=8", f"evaluation.clip={clip_path}", "evaluation.features=clip")
    engine.train(cfg, quiet=True)
    import json
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert report["fid"] >= 0 and "intra_cluster_diversity" in report and report["domain"]["name"] == "faces"
    assert (tmp_path / "run" / "eval" / "samples.png").exists()


def test_distillation_targets_depend_only_on_what_the_mapping_network_sees():
    z = torch.randn(3, 40)
    a = engine.synthfaces_targets(z, "photo", 32)
    torch.testing.assert_close(engine.synthfaces_targets(2.5 * z, "photo", 32), a)  # PixelNorm removes the scale
    assert not torch.equal(a[0], a[1])


def test_export_command_writes_what_the_run_checkpoint_holds(tmp_path, tiny_generator):
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.cli import main
    from gan_adapt.networks import Discriminator
    d = Discriminator(32, channel_base=256, channel_max=32)
    src = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator, d=d), tmp_path / "source.pt")
    run = tmp_path / "run"
    cfg = load_config(GanTrainConfig, [], FAST + [
        f"exp.run_dir={run}", f"base={src}", "data.source=synthfaces:cat@5",
        "training.parameterization=affine_plus", "training.block=16", "training.iters=2"])
    trainer = engine.train(cfg, quiet=True)
    assert main(["export", str(run), "--adapter", str(tmp_path / "a.safetensors"),
                 "--generator", str(tmp_path / "g.safetensors")]) == 0
    adapter = Adapter.from_pretrained(tmp_path / "a.safetensors")
    manifest, tensors = adapter.manifest, adapter.tensors
    ema = trainer.ema.trained_state_dict()
    assert set(tensors) == set(ema) and all(torch.equal(tensors[k], ema[k]) for k in ema)
    z = torch.randn(2, 32)
    torch.testing.assert_close(load_checkpoint(tmp_path / "g.safetensors").g_ema.generate(z),
                               trainer.ema.generator.generate(z), rtol=1e-5, atol=1e-5)
    assert main(["export", str(tmp_path)]) == 2  # not a run folder: a clear error, not a traceback


def test_mapping_lr_multiplier_only_touches_the_mapping_network(tmp_path):
    trainer = GanTrainer(_cfg(tmp_path / "m", "training.mapping_lr_mult=100", "training.adam_beta1=0.9"), quiet=True)
    groups = trainer.g_opt.param_groups
    mapping = {id(p) for p in trainer.param.generator.style.parameters()}
    assert [len(g["params"]) for g in groups] == [len(trainer.param.trainable_parameters()) - len(mapping), len(mapping)]
    assert all(id(p) in mapping for p in groups[1]["params"])
    assert groups[1]["lr"] == pytest.approx(100 * groups[0]["lr"]) and groups[0]["betas"][0] == 0.9


def test_lr_rampdown(tmp_path):
    trainer = GanTrainer(_cfg(tmp_path / "r", "training.iters=100", "training.lr_rampdown=0.5"), quiet=True)
    f = [trainer.lr_factor(s) for s in (0, 50, 75, 100)]
    assert f[0] == 1 and f[1] == 1 and f[2] == pytest.approx(0.5) and f[3] == pytest.approx(0)
    base = trainer.g_opt.param_groups[0]["lr"]
    trainer.step = 75
    trainer.train_step()
    assert trainer.g_opt.param_groups[0]["lr"] == pytest.approx(0.5 * base)
    assert GanTrainer(_cfg(tmp_path / "c", "training.iters=100"), quiet=True).lr_factor(99) == 1
