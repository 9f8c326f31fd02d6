"""Diffusion side: SVDiff spectral shifts (exact at δ = 0, the public file layout both ways, mixing, scale,
baking), DomainStudio losses against hand computations, model folders, DDIM inversion, and short training runs
(lower loss, exact resume)."""
import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from safetensors.torch import save_file

from adapt_common.config import load_config
from diffusion_adapt import svdiff
from diffusion_adapt.losses import (HF_KERNEL, domainstudio_losses, haar_hf, pair_kl, pairwise_log_probs,
                                    predicted_x0)
from diffusion_adapt.models import ModelLoadError, load_model, new_scheduler, save_model
from diffusion_adapt.sampling import ddim_invert, ddim_sample, noise_from_seeds
from diffusion_adapt.training import DiffTrainConfig, DiffusionTrainer, train

UNET_TINY = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
                 norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"))


@pytest.fixture(autouse=True)
def svd_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAIN_ADAPT_SVD_CACHE", str(tmp_path / "svd"))


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return UNet2DModel(**UNET_TINY).eval()


@pytest.fixture
def model_dir(tmp_path, unet):
    return save_model(unet, new_scheduler(), tmp_path / "model")


def _out(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        return m(x, torch.tensor([10, 500])).sample


def _randomise(model, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in svdiff.shifts_of(model).values():
            s.delta.copy_(scale * torch.randn(s.delta.shape, generator=g))


# -- SVDiff ------------------------------------------------------------------------------------------------


def test_zero_shift_is_exactly_the_base_and_counts(unet):
    ref = _out(unet)
    shifts = svdiff.add_spectral_shifts(unet)
    assert torch.equal(_out(unet), ref)  # W + U·diag(0)·Vᵀ is W, bit for bit
    n2d, n1d = svdiff.num_shift_values(unet)
    assert (n2d, n1d) == (2782, 1280)  # the spec's measured counts for this tiny UNet (51 Conv/Linear, 21 norms)
    assert sum(p.numel() for p in unet.parameters() if p.requires_grad) == n2d + n1d
    assert "conv_in" in shifts and "down_blocks.0.resnets.0.norm1" in shifts


def test_shift_math_and_scale(unet):
    lin = unet.time_embedding.linear_1
    w = lin.weight.detach().clone()
    svdiff.add_spectral_shifts(unet)
    shift = svdiff.shifts_of(unet)["time_embedding.linear_1"]
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    d = torch.randn(s.shape, generator=torch.Generator().manual_seed(0)).double() * 0.1
    with torch.no_grad():
        shift.delta.copy_(d.float())
    expected = (u * torch.relu(s + d)) @ vh
    torch.testing.assert_close(lin.weight.double(), expected, rtol=1e-4, atol=1e-5)
    svdiff.set_scale(unet, 0.5)
    torch.testing.assert_close(lin.weight.double(), (u * torch.relu(s + 0.5 * d)) @ vh, rtol=1e-4, atol=1e-5)
    svdiff.set_scale(unet, 0.0)
    torch.testing.assert_close(lin.weight, w)


def test_public_layout_round_trip_mkshing_files_mixing_and_bake(unet, tmp_path):
    base = _out(unet)
    svdiff.add_spectral_shifts(unet)
    _randomise(unet)
    shifted = _out(unet)
    path = svdiff.save_shifts(unet, tmp_path / "spectral_shifts.safetensors", base_hash="abc")
    tensors, manifest = svdiff.read_shifts(path)
    assert "conv_in.delta" in tensors and "down_blocks.0.resnets.0.norm1.delta" in tensors
    assert not any("parametrizations" in k for k in tensors) and manifest["base_model_hash"] == "abc"
    torch.manual_seed(0)
    fresh = UNet2DModel(**UNET_TINY).eval()
    svdiff.apply_shift_files(fresh, [(str(path), 1.0)])
    torch.testing.assert_close(_out(fresh), shifted, rtol=0, atol=0)
    # Mixing with weights (1, 0) equals the single file; (0.5, 0.5) of a file and itself equals it too.
    other = {k: torch.randn_like(v) for k, v in tensors.items()}
    save_file(other, str(tmp_path / "other.safetensors"))
    torch.manual_seed(0)
    mixed = UNet2DModel(**UNET_TINY).eval()
    svdiff.apply_shift_files(mixed, [(str(path), 1.0), (str(tmp_path / "other.safetensors"), 0.0)])
    torch.testing.assert_close(_out(mixed), shifted, rtol=0, atol=0)
    # A file in mkshing's convention (one scalar per norm, no manifest) loads.
    mk = {k: (v[:1] if ".norm" in k or "conv_norm_out" in k else v) for k, v in tensors.items()}
    save_file(mk, str(tmp_path / "mk.safetensors"))
    torch.manual_seed(0)
    m2 = UNet2DModel(**UNET_TINY).eval()
    svdiff.apply_shift_files(m2, [(str(tmp_path / "mk.safetensors"), 1.0)])
    assert svdiff.shifts_of(m2)["conv_norm_out"].delta.numel() == 1
    # Baking gives a plain model with the same outputs.
    baked = svdiff.bake(unet)
    assert not any("parametrizations" in k for k in baked.state_dict())
    torch.testing.assert_close(_out(baked), shifted, rtol=1e-5, atol=1e-5)
    assert not torch.equal(shifted, base)


def test_shift_files_for_another_architecture_are_refused(unet, tmp_path):
    save_file({"nope.delta": torch.zeros(3)}, str(tmp_path / "a.safetensors"))
    with pytest.raises(svdiff.ShiftFileError, match="another architecture"):
        svdiff.apply_shift_files(unet, [(str(tmp_path / "a.safetensors"), 1.0)])
    save_file({"conv_in.delta": torch.zeros(7)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(svdiff.ShiftFileError, match="singular values"):
        svdiff.apply_shift_files(unet, [(str(tmp_path / "b.safetensors"), 1.0)])
    (tmp_path / "c.safetensors").write_bytes(b"junk")
    with pytest.raises(svdiff.ShiftFileError, match="corrupt"):
        svdiff.read_shifts(tmp_path / "c.safetensors")


def test_text_encoder_shifts():
    from transformers import CLIPTextConfig, CLIPTextModel
    te = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                                      bos_token_id=0, eos_token_id=2, pad_token_id=1)).eval()
    ids = torch.tensor([[0, 5, 6, 2]])
    ref = te(ids).last_hidden_state
    svdiff.add_spectral_shifts(te)
    assert torch.equal(te(ids).last_hidden_state, ref)
    state = svdiff.shift_state(te)
    assert "text_model.embeddings.token_embedding.delta" in state and "text_model.final_layer_norm.delta" in state
    state["text_model.final_layer_norm.delta"] = torch.full_like(state["text_model.final_layer_norm.delta"], 0.1)
    svdiff.load_shift_state(te, state)  # the public names (transformers 4's text_model.) load into transformers 5
    assert not torch.equal(te(ids).last_hidden_state, ref)


# -- DomainStudio losses ---------------------------------------------------------------------------------


def test_haar_hf_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    # LH + HL + HH of the orthonormal Haar transform at this 2x2 block: ½(-1 - 2 - 3 + 3·4) = 3
    assert torch.allclose(haar_hf(x), torch.tensor([[[[3.0]]]]))
    lh = torch.tensor([[-1.0, 1.0], [-1.0, 1.0]]) / 2
    hl = torch.tensor([[-1.0, -1.0], [1.0, 1.0]]) / 2
    hh = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) / 2
    assert torch.allclose(HF_KERNEL, lh + hl + hh)
    y = torch.randn(2, 3, 8, 8)
    assert haar_hf(y).shape == (2, 3, 4, 4) and torch.allclose(haar_hf(torch.ones(1, 3, 4, 4)), torch.zeros(1, 3, 2, 2))


def test_pair_kl_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]])

    def probs(y):
        y = F.normalize(y, dim=1)
        s = y @ y.t()
        rows = [[s[i, j] for j in range(3) if j != i] for i in range(3)]
        return torch.tensor([[torch.exp(v) / sum(torch.exp(u) for u in r) for v in r] for r in rows])
    p, q = probs(a), probs(b)
    expected = (p * (p.log() - q.log())).sum() / 6  # mean over the n(n-1) entries
    assert torch.allclose(pair_kl(a, b), expected, atol=1e-6)
    assert torch.allclose(pairwise_log_probs(a).exp(), p, atol=1e-6)
    assert pair_kl(a, a) == 0
    y = b.clone().requires_grad_(True)
    pair_kl(a.clone().requires_grad_(True), y).backward()
    assert y.grad.abs().sum() > 0


def test_hf_mse_by_hand_and_its_alpha_bar_weighting():
    # two 1-channel 2x2 images: hf is one number each, ½(-a - b - c + 3d)
    x0 = torch.zeros(2, 1, 2, 2)
    ada = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])  # hf = 3 and -1
    plain = domainstudio_losses(x0, ada, ada)["hf_mse"]
    assert torch.allclose(plain, torch.tensor((9.0 + 1.0) / 2))
    weighted = domainstudio_losses(x0, ada, ada, hf_mse_weight=torch.tensor([0.5, 0.1]))["hf_mse"]
    assert torch.allclose(weighted, torch.tensor((0.5 * 9.0 + 0.1 * 1.0) / 2))
    # ᾱ weighting turns the x̂₀ error into the noise error: ᾱ·|hf(x̂₀ − x₀)|² = (1−ᾱ)·|hf(ε̂ − ε)|², bounded at t≈999
    sched = new_scheduler()
    t = torch.tensor([999, 999])
    a = sched.alphas_cumprod[t]
    x0, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    x_t = sched.add_noise(x0, eps, t)
    eps_hat = eps + 0.1 * torch.randn_like(eps)
    x0_hat = predicted_x0(x_t, eps_hat, a)
    terms = domainstudio_losses(x0, x0_hat, x0_hat, hf_mse_weight=a)
    expected = ((1 - a) * haar_hf(eps_hat - eps).square().flatten(1).mean(1)).mean()
    torch.testing.assert_close(terms["hf_mse"], expected, rtol=1e-3, atol=1e-6)
    assert domainstudio_losses(x0, x0_hat, x0_hat)["hf_mse"] > 1000 * terms["hf_mse"]  # the plain term explodes


def test_predicted_x0_inverts_the_forward_process():
    sched = new_scheduler()
    x0, eps, t = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.tensor([0, 400, 999])
    x_t = sched.add_noise(x0, eps, t)
    torch.testing.assert_close(predicted_x0(x_t, eps, sched.alphas_cumprod[t]), x0, rtol=1e-3, atol=1e-3)


# -- models, sampling ------------------------------------------------------------------------------------


def test_model_folders(model_dir, unet, tmp_path):
    from diffusers import DDPMPipeline
    back, sched = load_model(model_dir)
    torch.testing.assert_close(_out(back), _out(unet), rtol=0, atol=0)
    assert DDPMPipeline.from_pretrained(model_dir).unet.config.sample_size == 32  # diffusers reads it too
    unet.save_pretrained(tmp_path / "bare")
    assert load_model(tmp_path / "bare")[0].config.sample_size == 32
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_model(tmp_path / "missing")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="expected a model folder"):
        load_model(tmp_path / "file.bin")


def test_ddim_inversion_round_trip(unet):
    """With a model whose ε is a smooth function of x (here ε = 0: the ODE is a pure rescaling), inverting a DDIM
    sample gives back its noise: sampling and inversion walk the same timesteps in opposite directions."""
    sched = new_scheduler()
    noise = noise_from_seeds([0, 1], (3, 32, 32))
    assert torch.equal(noise, noise_from_seeds([0, 1], (3, 32, 32)))
    img = ddim_sample(unet, sched, noise, steps=20)
    assert img.shape == (2, 3, 32, 32) and img.abs().max() <= 1
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
    x0 = ddim_sample(unet, sched, noise, steps=20, clamp=False)
    back = ddim_invert(unet, sched, x0, steps=20)
    torch.testing.assert_close(back, noise, rtol=1e-3, atol=1e-3)


# -- training --------------------------------------------------------------------------------------------


def _cfg(run, model_dir, *extra):
    return load_config(DiffTrainConfig, [], [f"model.pretrained={model_dir}", f"exp.run_dir={run}", "exp.threads=1",
                                            "data.source=synthfaces:sketch@5", "training.batch=4",
                                            "logging.log_every=1", "logging.sample_every=1000",
                                            "logging.n_samples=2", "logging.sample_steps=3", *extra])


def _fixed_loss(trainer, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = trainer.data.images[:4]
    t = torch.randint(0, 1000, (4,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        return float(F.mse_loss(trainer.unet(trainer.scheduler.add_noise(x0, eps, t), t).sample, eps))


@pytest.mark.parametrize("name,lr", [("full", "training.lr=0.001"), ("svdiff", "training.lr_shift=0.01")])
def test_short_run_lowers_the_loss(model_dir, tmp_path, name, lr):
    tr = DiffusionTrainer(_cfg(tmp_path / name, model_dir, f"training.parameterization={name}", lr,
                               "training.iters=25", "training.ema_decay=0"), quiet=True)
    before = sum(_fixed_loss(tr, s) for s in range(4))
    tr.fit()
    after = sum(_fixed_loss(tr, s) for s in range(4))
    assert after < 0.9 * before, (before, after)
    out = tmp_path / name / ("spectral_shifts.safetensors" if name == "svdiff" else "model")
    assert out.exists()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_domainstudio_run_resumes_exactly(model_dir, tmp_path, monkeypatch, device):
    # On a GPU the checkpoint (loaded on the CPU) must come back to the device, and the GPU's own RNG with it.
    extra = ["training.parameterization=svdiff", "training.iters=6", "logging.checkpoint_every=3",
             "loss.pair=4", "loss.hf_pair=4", "loss.hf_mse=0.001", f"exp.device={device}"]
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    straight = train(_cfg(tmp_path / "a", model_dir, *extra), quiet=True)
    rows = (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[:6] == ["step", "elapsed_s", "mse", "pair", "hf_pair", "hf_mse"]
    real = DiffusionTrainer.train_step

    def crash(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return real(self)
    monkeypatch.setattr(DiffusionTrainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path / "b", model_dir, *extra), quiet=True)
    monkeypatch.setattr(DiffusionTrainer, "train_step", real)
    resumed = train(_cfg(tmp_path / "b", model_dir, *extra), resume=True, quiet=True)
    assert all(torch.equal(a, b) for a, b in zip(straight.params, resumed.params))
    assert all(torch.equal(a, b) for a, b in zip(straight.ema, resumed.ema))
    manifest = json.loads((tmp_path / "a" / "spectral_shifts.safetensors.json").read_text())
    assert manifest["base_model_hash"] == straight.base_hash
    # `export` rebuilds the result from a run folder's checkpoint alone: the same EMA shifts as the finished run.
    from diffusion_adapt.cli import main
    assert main(["export", str(tmp_path / "b"), "--out", str(tmp_path / "exported.safetensors")]) == 0
    a, b = svdiff.read_shifts(tmp_path / "a" / "spectral_shifts.safetensors")[0], svdiff.read_shifts(
        tmp_path / "exported.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["export", str(tmp_path / "nothing")]) == 2


def test_cli_sample_shifts_and_translate(model_dir, tmp_path, unet):
    import numpy as np
    from PIL import Image

    from diffusion_adapt.cli import main
    svdiff.add_spectral_shifts(unet)
    _randomise(unet)
    f = svdiff.save_shifts(unet, tmp_path / "s.safetensors")
    assert main(["sample", "--model", str(model_dir), "--seeds", "0-1", "--steps", "3", "--outdir",
                 str(tmp_path / "plain"), "--save-raw", str(tmp_path / "plain.npy")]) == 0
    assert main(["sample", "--model", str(model_dir), "--shifts", f"{f}:1", "--seeds", "0-1", "--steps", "3",
                 "--outdir", str(tmp_path / "shifted"), "--save-raw", str(tmp_path / "shifted.npy")]) == 0
    assert not np.allclose(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "shifted.npy"))
    assert main(["sample", "--model", str(model_dir), "--shifts", f"{f}:0", "--seeds", "0-1", "--steps", "3",
                 "--outdir", str(tmp_path / "zero"), "--save-raw", str(tmp_path / "zero.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "zero.npy"), np.load(tmp_path / "plain.npy"), atol=1e-6)
    assert main(["shifts", "mix", f"{f}:0.5", f"{f}:0.5", "--out", str(tmp_path / "m.safetensors")]) == 0
    torch.testing.assert_close(svdiff.read_shifts(tmp_path / "m.safetensors")[0], svdiff.read_shifts(f)[0])
    assert main(["shifts", "merge", str(f), "--model", str(model_dir), "--out", str(tmp_path / "merged")]) == 0
    merged, _ = load_model(tmp_path / "merged")
    torch.testing.assert_close(_out(merged), _out(unet), rtol=1e-5, atol=1e-5)
    Image.new("RGB", (40, 40), (200, 100, 50)).save(tmp_path / "in.png")
    assert main(["translate", "--model", str(model_dir), "--shifts", str(f), "--images", str(tmp_path / "in.png"),
                 "--steps", "3", "--out", str(tmp_path / "tr.png")]) == 0
    assert main(["sample", "--model", str(tmp_path / "nope"), "--outdir", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("override,message", [("loss.hf_mse_weighting=snr", "choose 'none' or 'alpha_bar'"),
                                              ("training.parameterization=lora", "choose one of"),
                                              ("loss.pair=4", "batch >= 2")])
def test_bad_training_settings_are_named(model_dir, tmp_path, override, message):
    extra = [override] + (["training.batch=1"] if override == "loss.pair=4" else [])
    with pytest.raises(ValueError, match=message):
        DiffusionTrainer(_cfg(tmp_path / "bad", model_dir, *extra), quiet=True)
