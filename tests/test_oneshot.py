"""One-shot CLIP-guided training: the losses, a short run that lowers its loss, exact resume, text and image
targets, the direction file it writes, and config dispatch in `python -m gan_adapt train`."""
import pytest
import torch
import torch.nn.functional as F

from adapt_common.clip_guidance import ClipGuide
from adapt_common.config import load_config
from adapt_common.loop import load_training_state
from gan_adapt.directions import Direction, DomainEdit
from gan_adapt.training import clip_guided
from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig


def _cfg(tiny_ckpt_clip, run, *extra):
    ckpt, clip_path = tiny_ckpt_clip
    return load_config(OneShotConfig, [], [f"base={ckpt}", f"loss.clip=[{clip_path}]",
                                           f"exp.run_dir={run}", "exp.threads=1", "training.batch=3",
                                           "logging.log_every=1", "logging.sample_every=5", "logging.n_samples=3",
                                           *extra])


def test_losses():
    a = F.normalize(torch.randn(4, 8), dim=-1)
    d = F.normalize(torch.randn(8), dim=0)
    assert ClipGuide.indomain_loss([a], [a]) == 0
    b = F.normalize(a + 2 * d, dim=-1)  # moved along d: the direction loss is below 1 - 0 (orthogonal)
    assert ClipGuide.direction_loss([b], [a], [d]) < ClipGuide.direction_loss([b], [a], [-d])
    collapsed = d.expand(4, 8)
    assert ClipGuide.indomain_loss([collapsed], [a]) > 0.01  # a collapsed batch breaks the pairwise geometry
    # Two models: the losses add up.
    assert torch.isclose(ClipGuide.direction_loss([b, b], [a, a], [d, d]), 2 * ClipGuide.direction_loss([b], [a], [d]))
    # At the first step the adapted generator equals the source (b − a = 0): the gradient must stay finite
    # and moderate, or Adam's second moment is flooded and training stalls.
    x = torch.zeros(3, 8, requires_grad=True)
    ClipGuide.direction_loss([x], [torch.zeros(3, 8)], [d]).backward()
    assert 0 < x.grad.abs().max() < 100
    dirs = torch.stack([d, d, -d, -d])
    assert ClipGuide.tt_direction_loss([b], [dirs], torch.zeros(4, dtype=torch.long)) == 0  # no pair differs
    # Pairs of different targets: lower when the samples differ along their directions' difference.
    along = F.normalize(a + torch.stack([d, d, -d, -d]), dim=-1)
    targets = torch.tensor([0, 0, 1, 1])
    assert ClipGuide.tt_direction_loss([along], [dirs], targets) < ClipGuide.tt_direction_loss([a], [dirs], targets)


def test_text_guided_run_lowers_its_loss_and_writes_a_direction(tiny_ckpt_clip, tmp_path):
    cfg = _cfg(tiny_ckpt_clip, tmp_path / "run", "target.text=a pencil sketch of a face", "target.domain=sketch",
               "training.iters=20", "training.mixing=0", "loss.indomain=0.1")
    trainer = clip_guided.train(cfg, quiet=True)
    rows = [r.split(",") for r in (tmp_path / "run" / "log.csv").read_text().splitlines()]
    col = rows[0].index("direction")
    first = sum(float(r[col]) for r in rows[1:4]) / 3
    last = sum(float(r[col]) for r in rows[-3:]) / 3
    assert last < first - 0.02, (first, last)
    d = Direction.from_pretrained(tmp_path / "run" / "direction.safetensors")
    assert d.kind == "s_delta" and d.meta["prompt"] == "a pencil sketch of a face" and d.meta["domain"] == "sketch"
    assert d.size == trainer.param.num_trainable()
    z = torch.randn(2, trainer.source.style_dim)
    torch.testing.assert_close(DomainEdit(trainer.source, [(d, 1.0)]).generate(z), trainer.param.generator.generate(z),
                               rtol=1e-5, atol=1e-5)
    assert (tmp_path / "run" / "before_after.png").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [f"step0000{i:02d}.png"
                                                                                for i in (5, 10, 15, 20)]


def test_resume_is_exact(tiny_ckpt_clip, tmp_path, monkeypatch):
    extra = ["target.image=synthfaces:sketch", "training.iters=6", "logging.checkpoint_every=3",
             "training.parameterization=dommod", "target.source_mean_n=8", "training.lr=0.02"]
    straight = clip_guided.train(_cfg(tiny_ckpt_clip, tmp_path / "a", *extra), quiet=True)
    real = ClipTrainer.train_step

    def crash_after_4(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return real(self)
    monkeypatch.setattr(ClipTrainer, "train_step", crash_after_4)
    with pytest.raises(KeyboardInterrupt):
        clip_guided.train(_cfg(tiny_ckpt_clip, tmp_path / "b", *extra), quiet=True)
    monkeypatch.setattr(ClipTrainer, "train_step", real)
    assert load_training_state(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    resumed = clip_guided.train(_cfg(tiny_ckpt_clip, tmp_path / "b", *extra), resume=True, quiet=True)
    a, b = straight.param.trained_state_dict(), resumed.param.trained_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and any(a[k].abs().sum() > 0 for k in a)
    d = Direction.from_pretrained(tmp_path / "b" / "direction.safetensors")
    assert d.kind == "cin_mult" and len(d.meta["reference_hash"]) == 16


def test_bad_configs(tiny_ckpt_clip, tmp_path):
    with pytest.raises(ValueError, match="exactly one of target.text"):
        ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "x"), quiet=True)
    with pytest.raises(ValueError, match="exactly one of target.text"):
        ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "x", "target.text=a", "target.image=b.png"), quiet=True)
    with pytest.raises(Exception, match="nope"):
        _cfg(tiny_ckpt_clip, tmp_path / "x", "training.nope=1")


def test_train_command_dispatches_on_exp_trainer(tiny_ckpt_clip, tmp_path):
    from gan_adapt.cli import main, trainer_kind
    cfg = tmp_path / "one.yaml"
    cfg.write_text("exp:\n  trainer: clip\ntarget:\n  text: a sepia photo of a face\ntraining:\n  iters: 2\n")
    assert trainer_kind([str(cfg)], []) == "clip" and trainer_kind([], []) == "adversarial"
    ckpt, clip_path = tiny_ckpt_clip
    assert main(["train", "--config", str(cfg), f"base={ckpt}", f"loss.clip=[{clip_path}]",
                 f"exp.run_dir={tmp_path / 'run'}", "training.batch=2", "exp.threads=1"]) == 0
    assert Direction.from_pretrained(tmp_path / "run" / "direction.safetensors").meta["steps"] == 2
    assert main(["export", str(tmp_path / "run"), "--direction", str(tmp_path / "again.safetensors")]) == 0
    assert torch.equal(Direction.from_pretrained(tmp_path / "again.safetensors").delta,
                       Direction.from_pretrained(tmp_path / "run" / "direction.safetensors").delta)
    assert main(["train", "--config", str(cfg), "exp.trainer=gan"]) == 2


def test_reference_image_from_a_file_of_any_size_and_mode(tmp_path):
    from PIL import Image
    Image.new("RGBA", (90, 50), (200, 30, 30, 128)).save(tmp_path / "ref.png")
    img, digest = clip_guided.reference_image(str(tmp_path / "ref.png"), 32)
    assert img.shape == (1, 3, 32, 32) and len(digest) == 16
    same, digest2 = clip_guided.reference_image("synthfaces:sketch/0", 32)
    assert same.shape == (1, 3, 32, 32) and digest2 != digest
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(Exception, match="bad.png"):
        clip_guided.reference_image(str(tmp_path / "bad.png"), 32)


def test_mtg_reference_terms(tiny_ckpt_clip, tmp_path):
    cfg = _cfg(tiny_ckpt_clip, tmp_path / "mtg", "target.image=synthfaces:sketch", "target.source_mean_n=8",
               "target.invert_steps=5", "training.iters=3", "loss.clip_ref=30", "loss.rec_l2=10", "loss.clip_within=0.5")
    tr = ClipTrainer(cfg, quiet=True)
    assert tr.w_ref.shape[1] == tr.source.n_latent
    stats = tr.train_step()
    assert {"clip_ref", "rec_l2", "clip_within", "direction"} <= set(stats)
    assert stats["loss"] > 30 * stats["clip_ref"]
    with pytest.raises(ValueError, match="need an image target"):
        ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "x", "target.text=a sketch", "loss.clip_ref=1"), quiet=True)


def test_one_shot_lr_and_betas_default_to_the_spec(tiny_ckpt_clip, tmp_path):
    """Unset training.lr / training.betas take the parameterization's recorded one-shot values; set ones win."""
    from adapt_common.config import load_config
    from gan_adapt.parameterizations import SPECS
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    ckpt, clip = tiny_ckpt_clip
    base = [f"base={ckpt}", f"loss.clip=[{clip}]", "target.text=a sketch of a face", f"exp.run_dir={tmp_path}",
            "training.block=16"]
    for name in ("stylespace", "dommod", "full"):
        tr = ClipTrainer(load_config(OneShotConfig, [], base + [f"training.parameterization={name}"]), quiet=True)
        group = tr.opt.param_groups[0]
        assert tr.lr_at(10 ** 6) == SPECS[name].oneshot_lr and group["betas"] == SPECS[name].oneshot_betas
    tr = ClipTrainer(load_config(OneShotConfig, [], base + ["training.parameterization=full", "training.lr=0.01",
                                                            "training.betas=[0.5,0.9]"]), quiet=True)
    assert tr.lr_at(10 ** 6) == 0.01 and tr.opt.param_groups[0]["betas"] == (0.5, 0.9)
    with pytest.raises(ValueError, match="set training.lr"):
        ClipTrainer(load_config(OneShotConfig, [], base + ["training.parameterization=mapping"]), quiet=True)


def test_the_oracle_term_trains_towards_the_true_style(tiny_ckpt_clip, tmp_path):
    """loss.truth_l1 alone (CLIP weights 0) moves the generator towards T(G_A(w)); the error is measured by hand on
    fresh latents; a target without a ground truth is refused."""
    from adapt_common import synthfaces as sf
    ckpt, clip = tiny_ckpt_clip
    base = [f"base={ckpt}", f"loss.clip=[{clip}]", f"exp.run_dir={tmp_path / 'o'}", "training.parameterization=stylespace",
            "loss.clip_direction=0", "loss.indomain=0", "loss.truth_l1=1", "training.iters=40", "training.lr=0.05",
            "training.warmup_iters=0", "target.text=a negative photo of a face", "target.domain=negative"]
    tr = ClipTrainer(load_config(OneShotConfig, [], base), quiet=True)
    z = torch.randn(16, tr.source.style_dim, generator=torch.Generator().manual_seed(7))

    def error():
        with torch.no_grad():
            a = tr.source.generate(z)
            return float((tr.param.generator.generate(z).clamp(-1, 1) - sf.apply_domain(a, "negative").clamp(-1, 1))
                         .abs().mean())
    before = error()
    tr.start(False)
    tr.loop(40, resume=True)
    assert error() < 0.8 * before
    with pytest.raises(ValueError, match="truth_l1 needs a SynthFaces style"):
        ClipTrainer(load_config(OneShotConfig, [], base[:-1] + ["target.domain=my_style"]), quiet=True)
