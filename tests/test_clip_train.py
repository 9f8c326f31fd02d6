"""The small-CLIP trainer: deterministic batches, soft-target contrastive loss, exact resume."""
import pytest
import torch

from tools import train_clip as ct
from adapt_common.config import load_config

TINY = ["model.embed_dim=32", "model.image_resolution=32", "model.vision_layers=1", "model.vision_width=64",
        "model.vision_patch_size=16", "model.transformer_width=64", "model.transformer_layers=1",
        "data.size=32", "data.batch=8", "data.domains=[photo,sketch,cat]", "optim.steps=4", "optim.warmup=2",
        "logging.eval_every=100", "logging.eval_per_domain=2", "logging.checkpoint_every=2", "exp.threads=1"]


def _cfg(tmp_path, name):
    return load_config(ct.ClipTrainConfig, [], TINY + [f"exp.run_dir={tmp_path / name}",
                                                       f"output={tmp_path / name / 'clip.pt'}"])


def test_batches_are_a_function_of_the_step(tmp_path):
    cfg = _cfg(tmp_path, "a")
    doms = ct.training_domains(cfg.data)
    a, ta = ct.make_batch(3, cfg, doms)
    b, tb = ct.make_batch(3, cfg, doms)
    c, _ = ct.make_batch(4, cfg, doms)
    assert torch.equal(a, b) and ta == tb and not torch.equal(a, c)
    assert a.shape == (8, 3, 32, 32) and all(ta)
    with pytest.raises(ValueError, match="unknown SynthFaces domains"):
        ct.training_domains(ct.DataConfig(domains=["photo", "oil painting"]))


def test_identical_captions_are_positives():
    emb = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    # Two identical captions: swapping their images must not change the loss (neither is a negative).
    loss = ct.contrastive_loss(emb, emb, ["a", "a", "b"], torch.tensor(10.0))
    swapped = ct.contrastive_loss(emb[[1, 0, 2]], emb, ["a", "a", "b"], torch.tensor(10.0))
    assert torch.allclose(loss, swapped)
    assert not torch.allclose(loss, ct.contrastive_loss(emb[[2, 1, 0]], emb, ["a", "a", "b"], torch.tensor(10.0)))


def test_resume_continues_exactly(tmp_path, monkeypatch):
    straight = _cfg(tmp_path, "straight")
    ct.train(straight)
    interrupted = _cfg(tmp_path, "interrupted")
    real = ct.make_batch

    def crash_at_3(step, cfg, domains):
        if step == 3:
            raise KeyboardInterrupt
        return real(step, cfg, domains)
    monkeypatch.setattr(ct, "make_batch", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        ct.train(interrupted)
    monkeypatch.setattr(ct, "make_batch", real)
    with pytest.raises(FileExistsError, match="--resume"):
        ct.train(interrupted)
    ct.train(interrupted, resume=True)
    a = torch.load(tmp_path / "straight" / "clip.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "clip.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (tmp_path / "interrupted" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["4"]  # no duplicated rows after the resume


def test_a_stop_through_the_loops_hooks_resumes_exactly(tmp_path):
    """tools.train_clip runs on the shared loop: should_stop ends it with a checkpoint and no exported CLIP, and
    --resume finishes it to the uninterrupted run's file."""
    from adapt_common.loop import LoopHooks
    ct.train(_cfg(tmp_path, "straight"))
    cfg = _cfg(tmp_path, "stopped")
    seen = []
    result = ct.train(cfg, hooks=LoopHooks(on_step=[lambda step, stats: seen.append(step)],
                                           should_stop=lambda: len(seen) == 3))
    assert result["steps"] == 3 and seen == [1, 2, 3] and not (tmp_path / "stopped" / "clip.pt").exists()
    from adapt_common.loop import load_training_state
    assert load_training_state(tmp_path / "stopped" / "checkpoint.pt")["step"] == 3  # checkpoint_every is 2
    ct.train(cfg, resume=True)
    a = torch.load(tmp_path / "straight" / "clip.pt", weights_only=True)
    b = torch.load(tmp_path / "stopped" / "clip.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
