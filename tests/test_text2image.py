"""Text-to-image adaptation on a tiny latent pipeline (UNet2DConditionModel + CLIP text encoder + VAE): prompts
without a saved tokenizer, CFG sampling, SVDiff on UNet and text encoder with prior preservation and the
DomainStudio terms, the public two-file export, exact resume and the train dispatch."""
import pytest
import torch

from adapt_common.config import load_config
from conftest import tiny_sd_parts
from diffusion_adapt import svdiff
from diffusion_adapt.models import ModelLoadError, new_scheduler
from diffusion_adapt.text2image import T2IConfig, T2IModel, T2ITrainer, load_t2i, save_t2i, t2i_sample, train


@pytest.fixture(autouse=True)
def svd_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAIN_ADAPT_SVD_CACHE", str(tmp_path / "svd"))


@pytest.fixture
def pipe_dir(tmp_path):
    unet, te, vae = tiny_sd_parts()
    return save_t2i(T2IModel(unet=unet, text_encoder=te, scheduler=new_scheduler(), vae=vae), tmp_path / "sd_tiny")


def test_load_prompts_and_sample(pipe_dir, tmp_path):
    m = load_t2i(pipe_dir)
    emb = m.encode_prompts(["a photo of a face", "a sketch"])
    assert emb.shape == (2, 77, 32) and not torch.equal(emb[0], emb[1])
    img = t2i_sample(m, ["a photo of a face"] * 2, torch.randn(2, 4, 8, 8), steps=2)
    assert img.shape == (2, 3, 16, 16) and img.abs().max() <= 1
    with pytest.raises(ModelLoadError, match="not a text-to-image model folder"):
        load_t2i(tmp_path)


def _cfg(pipe_dir, run, *extra):
    return load_config(T2IConfig, [], [f"base={pipe_dir}", f"exp.run_dir={run}", "exp.threads=1",
                                       "data.source=synthfaces:sketch@5", "data.num_class_images=4",
                                       "logging.sample_steps=2", "logging.n_samples=2", "logging.log_every=1",
                                       "logging.sample_every=1000", "training.batch=2", *extra])


def test_svdiff_with_prior_and_domainstudio_resumes_exactly_and_exports(pipe_dir, tmp_path, monkeypatch):
    extra = ["training.iters=4", "logging.checkpoint_every=2", "training.train_text_encoder=true",
             "loss.pair=100", "loss.hf_pair=100", "loss.hf_mse=0.1"]
    straight = train(_cfg(pipe_dir, tmp_path / "a", *extra), quiet=True)
    header = (tmp_path / "a" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"instance", "prior", "pair", "hf_pair", "hf_mse"} <= set(header)
    for name in ("spectral_shifts.safetensors", "spectral_shifts_te.safetensors"):
        manifest = svdiff.SpectralShifts.from_pretrained(tmp_path / "a" / name).manifest
        assert manifest["instance_prompt"] == "a sks sketch of a face"
    te_keys = svdiff.SpectralShifts.from_pretrained(tmp_path / "a" / "spectral_shifts_te.safetensors").tensors
    assert any(k.startswith("text_model.encoder.layers.0") for k in te_keys)  # the public text-encoder names
    real = T2ITrainer.train_step

    def crash(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return real(self)
    monkeypatch.setattr(T2ITrainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(pipe_dir, tmp_path / "b", *extra), quiet=True)
    monkeypatch.setattr(T2ITrainer, "train_step", real)
    resumed = train(_cfg(pipe_dir, tmp_path / "b", *extra), resume=True, quiet=True)
    assert all(torch.equal(a, b) for a, b in zip(straight.params, resumed.params))
    assert any(p.abs().sum() > 0 for p in resumed.params)


def test_train_command_dispatch(pipe_dir, tmp_path):
    from diffusion_adapt.cli import main, trainer_kind
    cfg = tmp_path / "t2i.yaml"
    cfg.write_text(f"exp:\n  trainer: t2i\nbase: {pipe_dir}\ntraining:\n  parameterization: full\n"
                   "  iters: 1\n")
    assert trainer_kind([str(cfg)], []) == "t2i" and trainer_kind([], []) == "ddpm"
    assert main(["train", "--config", str(cfg), f"exp.run_dir={tmp_path / 'r'}", "data.source=synthfaces:sketch@5",
                 "data.num_class_images=2", "logging.sample_steps=2", "logging.n_samples=1", "exp.threads=1",
                 "training.batch=1"]) == 0
    assert load_t2i(tmp_path / "r" / "model").unet is not None


def test_samplers_report_each_ddim_step_and_the_callback_changes_no_pixel(sd_dir):
    """t2i_sample (with and without guidance), t2i_invert and t2i_decode call ``callback(i, n)`` once after each of
    the n DDIM steps, i = 0 .. n-1 (diffusion_adapt.sampling's convention), and give the same tensors bit for bit
    with and without a callback."""
    from diffusion_adapt.sampling import noise_from_seeds
    from diffusion_adapt.text2image import t2i_decode, t2i_invert
    m = load_t2i(sd_dir)
    noise = noise_from_seeds([0, 1], (4, 8, 8))
    steps = 3
    expected = [(i, steps) for i in range(steps)]

    def run(fn, *args, **kwargs):
        calls = []
        out = fn(*args, steps=steps, callback=lambda i, n: calls.append((i, n)), **kwargs)
        assert calls == expected, (fn.__name__, calls)
        assert torch.equal(out, fn(*args, steps=steps, **kwargs)), fn.__name__
        return out
    for guidance in (3.0, 1.0):
        run(t2i_sample, m, ["a photo of a face"] * 2, noise, guidance=guidance)
    latents = run(t2i_invert, m, run(t2i_sample, m, ["a sketch"] * 2, noise), "a sketch")
    run(t2i_decode, m, latents, "a sketch")
    run(t2i_decode, m, latents, "a sketch", guidance=2.0)
