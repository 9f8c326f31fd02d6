"""The shared training loop's hooks (adapt_common.loop.LoopHooks): on_step sees every step, should_stop ends a
run at the next step with a checkpoint that resumes exactly, and one progress callback replaces the tqdm bar."""
import torch

from adapt_common.config import load_config
from adapt_common.loop import LoopHooks, load_training_state
from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig


def _trainer(tiny_ckpt_clip, run, iters=6):
    ckpt, clip_path = tiny_ckpt_clip
    cfg = load_config(OneShotConfig, [], [f"base={ckpt}", f"loss.clip=[{clip_path}]", "target.text=a sketch",
                                          f"exp.run_dir={run}", "exp.threads=1", "training.batch=3",
                                          f"training.iters={iters}", "logging.log_every=1", "logging.sample_every=100",
                                          "logging.checkpoint_every=100", "logging.n_samples=2"])
    return ClipTrainer(cfg, quiet=True)


def test_on_step_sees_every_steps_stats(tiny_ckpt_clip, tmp_path, monkeypatch):
    trainer = _trainer(tiny_ckpt_clip, tmp_path / "run", iters=4)
    returned = []  # what train_step itself returned, recorded independently of the loop
    real = ClipTrainer.train_step

    def recording(self):
        stats = real(self)
        returned.append((self.step, dict(stats)))
        return stats
    monkeypatch.setattr(ClipTrainer, "train_step", recording)
    seen, reported = [], []
    hooks = LoopHooks(on_step=[lambda step, stats: seen.append((step, dict(stats)))],
                      progress=lambda step, total, stats: reported.append((step, total)))
    trainer.fit(hooks=hooks)
    assert [s for s, _ in returned] == [1, 2, 3, 4]
    assert seen == returned
    assert reported == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_should_stop_stops_at_the_next_step_and_resumes_exactly(tiny_ckpt_clip, tmp_path):
    straight = _trainer(tiny_ckpt_clip, tmp_path / "straight")
    straight.fit()
    stop = {"now": False}
    calls = []

    def on_step(step, stats):
        calls.append(step)
        stop["now"] = step == 2  # e.g. the app's Cancel pressed while step 2 was shown

    first = _trainer(tiny_ckpt_clip, tmp_path / "stopped")
    result = first.fit(hooks=LoopHooks(on_step=[on_step], should_stop=lambda: stop["now"]))
    assert calls == [1, 2] and first.step == 2 and first.stopped and result["stopped"]
    assert load_training_state(tmp_path / "stopped" / "checkpoint.pt")["step"] == 2  # checkpoint_every is 100
    assert not (tmp_path / "stopped" / "direction.safetensors").exists()
    resumed = _trainer(tiny_ckpt_clip, tmp_path / "stopped")
    resumed.fit(resume=True)
    assert resumed.step == 6 and not resumed.stopped
    a, b = straight.param.trained_state_dict(), resumed.param.trained_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "stopped" / "log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3", "4", "5", "6"]  # each step once


def test_the_default_progress_is_a_bar_and_a_callback_replaces_it(tiny_ckpt_clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOMAIN_ADAPT_PROGRESS", "1")
    trainer = _trainer(tiny_ckpt_clip, tmp_path / "bar", iters=2)
    trainer.quiet = False
    trainer.fit()
    assert "2/2" in capsys.readouterr().err  # tqdm's bar on stderr
    trainer = _trainer(tiny_ckpt_clip, tmp_path / "callback", iters=2)
    trainer.quiet = False
    trainer.fit(hooks=LoopHooks(progress=lambda step, total, stats: None))
    assert "2/2" not in capsys.readouterr().err
