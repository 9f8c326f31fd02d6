"""Diffusion side: SVDiff spectral shifts (exact at δ = 0, the public file layout both ways, mixing, scale,
baking), DomainStudio losses against hand computations, model folders, DDIM inversion, and short training runs
(lower loss, exact resume)."""
import copy
import json
from pathlib import Path

import numpy as np
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
from diffusion_adapt.ddpm_trainer import DiffTrainConfig, DiffusionTrainer, train

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


def _random_norm_weights(model, seed=3):
    """Norm weights other than 1 (initial γ = 1 hides rounding and convention bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, svdiff.NORM_TYPES):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
    return model


@pytest.mark.parametrize("norms,n1d", [("public", 21), ("per_channel", 1280)])
def test_zero_shift_is_exactly_the_base_and_counts(unet, norms, n1d):
    _random_norm_weights(unet)
    ref = _out(unet)
    shifts = svdiff.add_spectral_shifts(unet, norms=norms)
    assert torch.equal(_out(unet), ref)  # W + U·diag(0)·Vᵀ is W, and γ·(‖γ‖/‖γ‖) is γ, bit for bit
    n2d, got_n1d = svdiff.num_shift_values(unet)
    # the spec's measured counts for this tiny UNet (51 Conv/Linear; 21 norms of 1,280 channels in all)
    assert (n2d, got_n1d) == (2782, n1d)
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
    path = svdiff.SpectralShifts.from_model(unet, base_hash="abc").save_pretrained(
        tmp_path / "spectral_shifts.safetensors")
    read = svdiff.SpectralShifts.from_pretrained(path)
    tensors, manifest = read.tensors, read.manifest
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
    # One value per norm by default (svdiff-pytorch's convention), said so in the manifest; a per-channel file
    # (training.norm_shifts=per_channel) loads with its own convention.
    assert tensors["conv_norm_out.delta"].numel() == 1 and manifest["norm_convention"] == "public"
    torch.manual_seed(0)
    pc = UNet2DModel(**UNET_TINY).eval()
    svdiff.add_spectral_shifts(pc, norms="per_channel")
    _randomise(pc)
    pc_file = svdiff.SpectralShifts.from_model(pc).save_pretrained(tmp_path / "pc.safetensors")
    assert svdiff.SpectralShifts.from_pretrained(pc_file).manifest["norm_convention"] == "per_channel"
    torch.manual_seed(0)
    m2 = UNet2DModel(**UNET_TINY).eval()
    svdiff.apply_shift_files(m2, [(str(pc_file), 1.0)])
    assert svdiff.shifts_of(m2)["conv_norm_out"].delta.numel() == 32
    torch.testing.assert_close(_out(m2), _out(pc), rtol=0, atol=0)
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
        svdiff.SpectralShifts.from_pretrained(tmp_path / "c.safetensors")


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


def test_relu_clamps_singular_values_driven_below_zero(unet):
    """σ + δ < 0 must give 0, not a negative singular value (a sign-flipped direction): half the δs are −2σ."""
    lin = unet.time_embedding.linear_2
    w = lin.weight.detach().clone()
    svdiff.add_spectral_shifts(unet)
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    d = torch.where(torch.arange(len(s)) % 2 == 0, -2 * s, 0.1 * s)
    with torch.no_grad():
        svdiff.shifts_of(unet)["time_embedding.linear_2"].delta.copy_(d.float())
    by_hand = (u * torch.relu(s + d)) @ vh
    without_relu = (u * (s + d)) @ vh
    torch.testing.assert_close(lin.weight.double(), by_hand, rtol=1e-4, atol=1e-5)
    assert (lin.weight.double() - without_relu).abs().max() > 100 * 1e-5  # the ReLU is what makes the difference
    # the same for svdiff-pytorch's one-value norm shift: γ as a 1 x C matrix, its one singular value ‖γ‖
    norm = unet.get_submodule("down_blocks.0.resnets.0.norm1")
    g = norm.parametrizations.weight.original.detach().double()
    ug, sg, vg = torch.linalg.svd(g.unsqueeze(0), full_matrices=False)
    for dn in (-0.3 * sg[0], -2 * sg[0]):
        with torch.no_grad():
            svdiff.shifts_of(unet)["down_blocks.0.resnets.0.norm1"].delta.fill_(float(dn))
        torch.testing.assert_close(norm.weight.double(), ((ug * torch.relu(sg + dn)) @ vg).squeeze(0),
                                   rtol=1e-5, atol=1e-6)
    assert torch.equal(norm.weight, torch.zeros_like(norm.weight))


def _save_shifted(base, path, norms, seed, norm_deltas=None):
    m = copy.deepcopy(base)
    svdiff.add_spectral_shifts(m, norms=norms)
    _randomise(m, seed=seed)
    with torch.no_grad():
        for name, d in (norm_deltas or {}).items():
            svdiff.shifts_of(m)[name].delta.fill_(d)
    return svdiff.SpectralShifts.from_model(m).save_pretrained(path)


def _shifted_by_hand(base, files, weights):
    """A plain copy of ``base`` with every weight computed here: U·diag(ReLU(σ + Σ wᵢδᵢ))·Vᵀ from torch.linalg.svd,
    norms γ·ReLU(‖γ‖ + wδ)/‖γ‖ for a one-value δ and γ + wδ for a per-channel δ, the changes added up."""
    out = copy.deepcopy(base)
    states = [svdiff.SpectralShifts.from_pretrained(f).tensors for f in files]
    with torch.no_grad():
        for name, m in out.named_modules():
            key = f"{name}.delta"
            if not any(key in st for st in states):
                continue
            w = m.weight.detach().double()
            if isinstance(m, svdiff.NORM_TYPES):
                new = w.clone()
                for st, wt in zip(states, weights):
                    d = st[key].double()
                    new += w * (torch.relu(w.norm() + wt * d[0]) - w.norm()) / w.norm() if d.numel() == 1 else wt * d
            else:
                u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
                total = sum(wt * st[key].double() for st, wt in zip(states, weights))
                new = ((u * torch.relu(s + total)) @ vh).reshape(w.shape)
            m.weight.copy_(new.float())
    return out


def test_mixing_a_public_file_with_a_per_channel_file(unet, tmp_path, capsys):
    """svdiff-pytorch's one value per norm and a per-channel δ are different quantities: the mix turns the weighted
    one-value shift into the per-channel change it makes (here one norm's is driven through the ReLU to 0)."""
    from diffusion_adapt.cli import main
    _random_norm_weights(unet)
    pub = _save_shifted(unet, tmp_path / "pub.safetensors", "public", 1,
                        {"conv_norm_out": -1.5, "down_blocks.0.resnets.0.norm2": -30.0, "mid_block.resnets.0.norm1": 2})
    per = _save_shifted(unet, tmp_path / "per.safetensors", "per_channel", 2)
    weights = (0.7, 0.5)
    expected = _out(_shifted_by_hand(unet, [pub, per], weights))
    mixed = svdiff.apply_shift_files(copy.deepcopy(unet), [(str(pub), 0.7), (str(per), 0.5)])
    torch.testing.assert_close(_out(mixed), expected, rtol=1e-4, atol=1e-4)
    # Each file alone is what it is, too (the one-value norms through the ReLU, as svdiff-pytorch computes them).
    for f, w in ((pub, 0.7), (per, 0.5)):
        alone = svdiff.apply_shift_files(copy.deepcopy(unet), [(str(f), w)])
        torch.testing.assert_close(_out(alone), _out(_shifted_by_hand(unet, [f], [w])), rtol=1e-4, atol=1e-4)
    # The CLI refuses to mix them without the base model's norms, and with them writes the same mix.
    model_dir = save_model(unet, new_scheduler(), tmp_path / "base")
    out = tmp_path / "mix.safetensors"
    assert main(["shifts", "mix", f"{pub}:0.7", f"{per}:0.5", "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err and not out.exists()
    assert main(["shifts", "mix", f"{pub}:0.7", f"{per}:0.5", "--model", str(model_dir), "--out", str(out)]) == 0
    assert svdiff.SpectralShifts.from_pretrained(out).manifest["norm_convention"] == "per_channel"
    from_file = svdiff.apply_shift_files(copy.deepcopy(unet), [(str(out), 1.0)])
    torch.testing.assert_close(_out(from_file), expected, rtol=1e-4, atol=1e-4)


def test_non_finite_shift_files_are_refused(unet, tmp_path, capsys):
    """A NaN shift gives black images without any other sign: refused on load, naming the file and tensor; a mix
    or merge that would write NaN/Inf writes nothing."""
    from adapt_common.files import NonFiniteTensorError
    from diffusion_adapt.cli import main
    model_dir = save_model(unet, new_scheduler(), tmp_path / "base")
    svdiff.add_spectral_shifts(unet)
    state = svdiff.shift_state(unet)
    state["conv_in.delta"][0] = 10.0
    save_file(state, str(tmp_path / "big.safetensors"))
    state["mid_block.resnets.0.conv1.delta"][2] = float("nan")
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    with pytest.raises(NonFiniteTensorError, match=r"bad\.safetensors.*mid_block\.resnets\.0\.conv1\.delta"):
        svdiff.SpectralShifts.from_pretrained(bad)
    assert main(["sample", "--model", str(model_dir), "--shifts", str(bad), "--seeds", "0", "--steps", "2",
                 "--outdir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "bad.safetensors" in err and "mid_block.resnets.0.conv1.delta" in err and "Traceback" not in err
    assert not (tmp_path / "s" / "grid.png").exists()
    for argv in (["mix", str(bad)], ["merge", str(bad), "--model", str(model_dir)],
                 ["mix", f"{tmp_path / 'big.safetensors'}:1e38"],  # 10 x 1e38 overflows float32
                 ["merge", f"{tmp_path / 'big.safetensors'}:1e38", "--model", str(model_dir)]):
        out = tmp_path / "out"
        assert main(["shifts", *argv, "--out", str(out)]) == 2, argv
        assert "NaN/infinite" in capsys.readouterr().err and not out.exists(), argv


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


class GaussianEps(torch.nn.Module):
    """The exact ε-predictor of data N(0, v·I): ε(x, t) = a_t·x with a_t = √(1−ᾱ_t)/(v·ᾱ_t + 1 − ᾱ_t). Linear in x, so
    every DDIM step multiplies x by a number and the whole ODE has a closed form."""

    def __init__(self, v, alphas_cumprod):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # where the sampler finds the device
        self.a = np.sqrt(1 - alphas_cumprod) / (v * alphas_cumprod + 1 - alphas_cumprod)

    def forward(self, x, t):
        from types import SimpleNamespace
        return SimpleNamespace(sample=float(self.a[int(t)]) * x)


def _linear_schedule():
    """ᾱ of the linear β schedule (1e-4 .. 0.02, 1000 steps), computed here in float64."""
    return np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))


def _ddim_factors(a, abar, steps):
    """(decoding, inversion) factors of the DDIM ODE of ε = a_t·x on the time grid the README states: leading
    spacing t = 0, k, ..., 1000 − k (k = 1000 // steps), ε always evaluated at the step's upper time t, and
    set_alpha_to_one=False (below t = 0 the level is ᾱ₀ itself). A step from level ᾱ_from to ᾱ_to:
    x -> √ᾱ_to·(x − √(1−ᾱ_from)·ε)/√ᾱ_from + √(1−ᾱ_to)·ε."""
    k = 1000 // steps

    def step(a_t, frm, to):
        return np.sqrt(to) * (1 - np.sqrt(1 - frm) * a_t) / np.sqrt(frm) + np.sqrt(1 - to) * a_t
    decode = invert = 1.0
    for t in range(0, 1000, k):
        lower = abar[t - k] if t >= k else abar[0]
        decode *= step(a[t], abar[t], lower)
        invert *= step(a[t], lower, abar[t])
    return decode, invert


def test_ddib_inverts_with_the_source_and_decodes_with_the_target():
    """Source and target are the exact ε-models of N(0, 1) and N(0, 0.25): DDIB maps x to ≈ x/2 (the ODE between
    the two Gaussians; exactly so in continuous time), and the discrete result is the product of per-step factors
    computed here. Decoding with the source (or inverting with the target) gives ≈ x instead."""
    from diffusion_adapt.sampling import translate
    abar = _linear_schedule()
    source, target = GaussianEps(1.0, abar), GaussianEps(0.25, abar)
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for steps in (50, 20, 1000):
        dec_t, _ = _ddim_factors(target.a, abar, steps)
        dec_s, inv_s = _ddim_factors(source.a, abar, steps)
        out = translate(source, target, new_scheduler(), x, steps)
        torch.testing.assert_close(out, (dec_t * inv_s * x).float(), rtol=1e-4, atol=1e-5)  # 0.489·x at 50 steps
        back = translate(source, source, new_scheduler(), x, steps)  # the same model both ways: a reconstruction
        torch.testing.assert_close(back, (dec_s * inv_s * x).float(), rtol=1e-4, atol=1e-5)  # 0.998·x at 50 steps
    # at 1000 steps, near the continuous ODE: x/2 and x
    torch.testing.assert_close(out, 0.5 * x, rtol=2e-3, atol=1e-4)
    torch.testing.assert_close(back, x, rtol=2e-3, atol=1e-4)


def _psnr(a, b):
    """PSNR in dB of images in [-1, 1], one per image."""
    mse = ((np.asarray(a, np.float64) - np.asarray(b, np.float64)) / 2) ** 2
    return 10 * np.log10(1 / mse.reshape(len(mse), -1).mean(1))


def test_cli_translate_with_the_source_model_reconstructs_held_out_faces(tmp_path):
    """Decoding a DDIM inversion with the model that made it gives the image back: 8 held-out SynthFaces photos
    through the bundled DDPM, no shifts, 50 steps (measured: 23.9-35.3 dB, mean 32.6; decoding with per-step x̂₀
    clipping, as plain sampling does, gave 12.7-20.9 dB, mean 16.2)."""
    from adapt_common import synthfaces as sf
    from adapt_common.image_io import load_image, save_image
    from diffusion_adapt.cli import main
    bundled = Path(__file__).resolve().parents[1] / "checkpoints" / "synthfaces_ddpm"
    faces, _ = sf.eval_set("photo", 8, size=32)
    paths = [str(save_image(f, tmp_path / f"face{i}.png")) for i, f in enumerate(faces)]
    assert main(["translate", "--model", str(bundled), "--images", *paths, "--out", str(tmp_path / "t.png"),
                 "--save-raw", str(tmp_path / "t.npy")]) == 0
    inputs = torch.cat([load_image(p) for p in paths]).numpy()
    psnr = _psnr(np.load(tmp_path / "t.npy"), inputs)
    assert psnr.min() > 21 and psnr.mean() > 29, psnr.round(1)



def test_app_plain_reconstruction_gives_the_face_back(tmp_path):
    """The app's Diffusion tab shows input, plain reconstruction and translation: the reconstruction decodes the
    inversion with the model that made it, so it is the face again (the two held-out faces of the CLI test above
    measured 32.6 and 23.9 dB; 15.4 and 16.3 with per-step clipping)."""
    import app
    from adapt_common import synthfaces as sf
    from adapt_common.image_io import save_image
    bundled = Path(__file__).resolve().parents[1] / "checkpoints" / "synthfaces_ddpm"
    unet, _ = load_model(bundled)
    svdiff.add_spectral_shifts(unet)
    # the tab needs a target; this one is the source
    zero = svdiff.SpectralShifts.from_model(unet).save_pretrained(tmp_path / "zero.safetensors")
    faces, _ = sf.eval_set("photo", 2, size=32)
    for i, face in enumerate(faces):
        strip = app.diffusion_translate(str(bundled), str(save_image(face, tmp_path / f"{i}.png")), [str(zero)],
                                        [1.0], 50)
        shown, recon, translated = (strip[2:34, 2 + 34 * k:34 + 34 * k].astype(np.float64) / 127.5 - 1 for k in range(3))
        assert _psnr(recon[None], shown[None])[0] > 21
        # a zero shift renders W again through its SVD (U diag(s) Vᵀ): equal up to float round-off, which can flip
        # an 8-bit level of a few pixels depending on the machine's LAPACK
        diff = np.abs(recon - translated)
        assert diff.max() <= 1.01 / 127.5 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())

# -- training --------------------------------------------------------------------------------------------


def _cfg(run, model_dir, *extra):
    return load_config(DiffTrainConfig, [], [f"base={model_dir}", f"exp.run_dir={run}", "exp.threads=1",
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
    a = svdiff.SpectralShifts.from_pretrained(tmp_path / "a" / "spectral_shifts.safetensors").tensors
    b = svdiff.SpectralShifts.from_pretrained(tmp_path / "exported.safetensors").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["export", str(tmp_path / "nothing")]) == 2


def test_cli_sample_shifts_and_translate(model_dir, tmp_path, unet):
    import numpy as np
    from PIL import Image

    from diffusion_adapt.cli import main
    svdiff.add_spectral_shifts(unet)
    _randomise(unet)
    f = svdiff.SpectralShifts.from_model(unet).save_pretrained(tmp_path / "s.safetensors")
    assert main(["sample", "--model", str(model_dir), "--seeds", "0-1", "--steps", "3", "--outdir",
                 str(tmp_path / "plain"), "--save-raw", str(tmp_path / "plain.npy")]) == 0
    assert main(["sample", "--model", str(model_dir), "--shifts", f"{f}:1", "--seeds", "0-1", "--steps", "3",
                 "--outdir", str(tmp_path / "shifted"), "--save-raw", str(tmp_path / "shifted.npy")]) == 0
    assert not np.allclose(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "shifted.npy"))
    assert main(["sample", "--model", str(model_dir), "--shifts", f"{f}:0", "--seeds", "0-1", "--steps", "3",
                 "--outdir", str(tmp_path / "zero"), "--save-raw", str(tmp_path / "zero.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "zero.npy"), np.load(tmp_path / "plain.npy"), atol=1e-6)
    assert main(["shifts", "mix", f"{f}:0.5", f"{f}:0.5", "--out", str(tmp_path / "m.safetensors")]) == 0
    torch.testing.assert_close(svdiff.SpectralShifts.from_pretrained(tmp_path / "m.safetensors").tensors,
                               svdiff.SpectralShifts.from_pretrained(f).tensors)
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


def test_shifts_accept_a_checkpoint_folder(model_dir, tmp_path, unet, capsys):
    """As svdiff-pytorch does, a folder stands for the spectral_shifts.safetensors inside it."""
    from diffusion_adapt.cli import main
    svdiff.add_spectral_shifts(unet)
    _randomise(unet)
    ckpt = tmp_path / "run" / "checkpoint-500"
    svdiff.SpectralShifts.from_model(unet).save_pretrained(ckpt / "spectral_shifts.safetensors")
    outs = {}
    for name, given in (("file", ckpt / "spectral_shifts.safetensors"), ("folder", ckpt)):
        assert main(["sample", "--model", str(model_dir), "--shifts", f"{given}:0.8", "--seeds", "0-1", "--steps", "3",
                     "--outdir", str(tmp_path / name), "--save-raw", str(tmp_path / f"{name}.npy")]) == 0
        outs[name] = np.load(tmp_path / f"{name}.npy")
    assert main(["sample", "--model", str(model_dir), "--seeds", "0-1", "--steps", "3", "--outdir",
                 str(tmp_path / "plain"), "--save-raw", str(tmp_path / "plain.npy")]) == 0
    assert np.array_equal(outs["file"], outs["folder"]) and not np.allclose(outs["folder"], np.load(tmp_path / "plain.npy"))
    assert main(["translate", "--model", str(model_dir), "--shifts", str(ckpt), "--images", str(tmp_path / "file" /
                 "seed0000.png"), "--steps", "3", "--out", str(tmp_path / "t.png")]) == 0
    assert main(["shifts", "info", str(ckpt)]) == 0 and '"norm_convention": "public"' in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["sample", "--model", str(model_dir), "--shifts", str(tmp_path / "empty"), "--outdir",
                 str(tmp_path / "x")]) == 2
    assert "without spectral_shifts.safetensors" in capsys.readouterr().err


def test_resuming_a_run_of_the_other_norm_convention_is_named(model_dir, tmp_path):
    per = DiffusionTrainer(_cfg(tmp_path / "r", model_dir, "training.parameterization=svdiff",
                                "training.norm_shifts=per_channel"), quiet=True)
    public = DiffusionTrainer(_cfg(tmp_path / "r", model_dir, "training.parameterization=svdiff"), quiet=True)
    with pytest.raises(ValueError, match="training.norm_shifts"):
        public.load_state_dict(per.state_dict())
    with pytest.raises(ValueError, match="training.norm_shifts='channel'"):
        DiffusionTrainer(_cfg(tmp_path / "r", model_dir, "training.parameterization=svdiff",
                              "training.norm_shifts=channel"), quiet=True)
