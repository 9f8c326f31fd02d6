"""Stable-Diffusion-layout folders in every diffusion command (`sample --prompt`, `translate --prompt`, `shifts
merge`), on a tiny random pipeline saved as StableDiffusionPipeline.save_pretrained lays it out (UNet2DConditionModel,
CLIP text encoder, tokenizer, DDPM scheduler, VAE). Sampling is checked against diffusers' own StableDiffusionPipeline
with a DDIM scheduler of the same schedule; merging against sampling with the shift files applied on the fly."""
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from diffusion_adapt import svdiff
from diffusion_adapt.cli import main
from diffusion_adapt.models import new_scheduler

PROMPT = "a pencil sketch of a face"


@pytest.fixture(autouse=True)
def svd_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAIN_ADAPT_SVD_CACHE", str(tmp_path / "svd"))


def _diffusers_reference(folder, seeds, steps, guidance):
    """diffusers' StableDiffusionPipeline on the same folder's parts, DDIM with the project's schedule settings."""
    from diffusion_adapt.sampling import _schedule_args, noise_from_seeds
    from diffusion_adapt.text2image import load_t2i
    m = load_t2i(folder)
    pipe = StableDiffusionPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
                                   scheduler=DDIMScheduler(**_schedule_args(m.scheduler)), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    latents = noise_from_seeds(seeds, (4, 8, 8))
    out = pipe(prompt=[PROMPT] * len(seeds), latents=latents, num_inference_steps=steps, guidance_scale=guidance,
               output_type="pt", height=16, width=16).images  # [0, 1]
    return out.numpy() * 2 - 1


def test_sample_with_a_prompt_matches_diffusers_pipeline(sd_dir, tmp_path):
    raw = tmp_path / "x.npy"
    assert main(["sample", "--model", str(sd_dir), "--prompt", PROMPT, "--seeds", "0-1", "--steps", "4",
                 "--guidance", "3", "--outdir", str(tmp_path / "s"), "--save-raw", str(raw)]) == 0
    ours = np.load(raw)
    ref = _diffusers_reference(sd_dir, [0, 1], 4, 3.0)
    assert ours.shape == ref.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(ours, np.clip(ref, -1, 1), atol=2e-5)
    assert (tmp_path / "s" / "grid.png").is_file()
    # another prompt gives other images (the prompt reaches the UNet)
    assert main(["sample", "--model", str(sd_dir), "--prompt", "a photo of a cat", "--seeds", "0-1", "--steps", "4",
                 "--outdir", str(tmp_path / "c"), "--save-raw", str(tmp_path / "c.npy")]) == 0
    assert np.abs(np.load(tmp_path / "c.npy") - ours).max() > 1e-3


def _shift_files(sd_dir, tmp_path):
    """Random spectral shifts of the folder's UNet and text encoder, as the text-to-image trainer writes them."""
    from diffusion_adapt.models import model_hash
    from diffusion_adapt.text2image import load_t2i
    m = load_t2i(sd_dir)
    out = []
    gen = torch.Generator().manual_seed(1)
    for module, name in ((m.unet, "shifts.safetensors"), (m.text_encoder, "shifts_te.safetensors")):
        base = model_hash(module)
        svdiff.add_spectral_shifts(module, use_cache=False)
        with torch.no_grad():
            for n, p in module.named_parameters():
                if n.endswith(".delta"):
                    p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        out.append(svdiff.SpectralShifts.from_model(module, base_hash=base).save_pretrained(tmp_path / name))
    return out


def test_merge_bakes_the_shifts_into_a_folder_that_samples_as_the_shifted_model(sd_dir, tmp_path):
    unet_file, te_file = _shift_files(sd_dir, tmp_path)
    args = ["--prompt", PROMPT, "--seeds", "0-1", "--steps", "3"]
    assert main(["sample", "--model", str(sd_dir), "--shifts", str(unet_file), "--text-encoder-shifts", str(te_file),
                 *args, "--outdir", str(tmp_path / "a"), "--save-raw", str(tmp_path / "a.npy")]) == 0
    assert main(["shifts", "merge", str(unet_file), "--text-encoder-shifts", str(te_file), "--model", str(sd_dir),
                 "--out", str(tmp_path / "merged")]) == 0
    assert main(["sample", "--model", str(tmp_path / "merged"), *args, "--outdir", str(tmp_path / "b"),
                 "--save-raw", str(tmp_path / "b.npy")]) == 0
    assert main(["sample", "--model", str(sd_dir), *args, "--outdir", str(tmp_path / "p"),
                 "--save-raw", str(tmp_path / "plain.npy")]) == 0
    shifted, merged, plain = (np.load(tmp_path / f) for f in ("a.npy", "b.npy", "plain.npy"))
    np.testing.assert_allclose(merged, shifted, atol=1e-4)
    assert np.abs(shifted - plain).max() > 1e-2  # the shifts change the images
    # diffusers loads the merged folder's parts as they are
    assert UNet2DConditionModel.from_pretrained(tmp_path / "merged", subfolder="unet").config.cross_attention_dim == 32


def test_translate_with_prompts_round_trips_and_the_target_prompt_matters(sd_dir, tmp_path):
    """Inverting and decoding with the same model and prompt (no guidance) gives the VAE's own reconstruction back
    (computed here with diffusers' VAE: decode(mean of encode)); another target prompt gives another image.

    The UNet's output is scaled by 0.02 first: a random UNet's ε is the score of no density and its DDIM ODE does not
    run back (mean error 0.29 at any step count; 3e-7 with ε = 0); a small ε keeps it near that exact case while
    the prompt still matters."""
    from PIL import Image
    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet")
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.02)
        unet.conv_out.bias.mul_(0.02)
    unet.save_pretrained(sd_dir / "unet")

    from adapt_common import synthfaces as sf
    from adapt_common.image_io import load_image
    img = ((sf.eval_set("photo", 1, size=16)[0][0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "face.png")
    common = ["--model", str(sd_dir), "--images", str(tmp_path / "face.png"), "--steps", "40", "--prompt", PROMPT]
    assert main(["translate", *common, "--out", str(tmp_path / "t.png"), "--save-raw", str(tmp_path / "t.npy")]) == 0
    vae = AutoencoderKL.from_pretrained(sd_dir, subfolder="vae")
    x = load_image(tmp_path / "face.png", size=16)
    with torch.no_grad():
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1).numpy()
    out = np.load(tmp_path / "t.npy")
    assert np.abs(out - recon).mean() < 0.02, np.abs(out - recon).mean()
    assert main(["translate", *common, "--target-prompt", "a photo of a robot", "--out", str(tmp_path / "r.png"),
                 "--save-raw", str(tmp_path / "r.npy")]) == 0
    assert np.abs(np.load(tmp_path / "r.npy") - out).mean() > 10 * np.abs(out - recon).mean()


def test_prompts_and_models_of_the_wrong_kind_are_refused(sd_dir, tmp_path, capsys):
    from diffusion_adapt.models import new_unet, save_model, UNetArch
    assert main(["sample", "--model", str(sd_dir), "--seeds", "0", "--outdir", str(tmp_path / "x")]) == 2
    assert "text-to-image (Stable Diffusion layout) model: give --prompt" in capsys.readouterr().err
    arch = UNetArch(sample_size=8, block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4,
                    down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"])
    plain = save_model(new_unet(arch), new_scheduler(), tmp_path / "ddpm")
    assert main(["sample", "--model", str(plain), "--prompt", PROMPT, "--seeds", "0",
                 "--outdir", str(tmp_path / "y")]) == 2
    assert "unconditional model" in capsys.readouterr().err


def _sd_copy(sd_dir, tmp_path, name):
    import shutil
    return Path(shutil.copytree(sd_dir, tmp_path / name))


def test_a_folder_whose_parts_are_of_another_architecture_is_refused(sd_dir, tmp_path, capsys):
    """An SD-layout folder whose unet/ is an unconditional UNet2DModel (saved with save_pretrained) used to load into
    a UNet2DConditionModel with the unused weights only warned about and the rest random (then a traceback, or
    samples of a partly random model): every command that takes the folder (sample with and without --prompt, translate --prompt, shifts merge) refuses it with one line naming the
    class found and the class expected, exit 2, and writes nothing. So does a text encoder of another architecture."""
    import json

    from diffusion_adapt.models import new_unet, UNetArch
    arch = UNetArch(sample_size=8, block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4,
                    down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"])
    other = _sd_copy(sd_dir, tmp_path, "other")
    new_unet(arch).save_pretrained(other / "unet")  # replaces the UNet2DConditionModel's config and weights
    assert json.loads((other / "unet" / "config.json").read_text())["_class_name"] == "UNet2DModel"
    from PIL import Image
    Image.new("RGB", (16, 16), (200, 100, 50)).save(tmp_path / "face.png")
    unet_file, te_file = _shift_files(sd_dir, tmp_path)
    commands = {
        "sample --prompt": ["sample", "--model", str(other), "--prompt", PROMPT, "--seeds", "0", "--steps", "2",
                            "--outdir", str(tmp_path / "s")],
        "sample": ["sample", "--model", str(other), "--seeds", "0", "--steps", "2", "--outdir", str(tmp_path / "s")],
        "translate --prompt": ["translate", "--model", str(other), "--prompt", PROMPT, "--images",
                               str(tmp_path / "face.png"), "--steps", "2", "--out", str(tmp_path / "t.png")],
        "shifts merge": ["shifts", "merge", str(unet_file), "--text-encoder-shifts", str(te_file), "--model",
                         str(other), "--out", str(tmp_path / "merged")],
    }
    capsys.readouterr()  # the shift files' making loaded models
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), (name, err)
        assert f"{other}: unet/ holds a UNet2DModel, not the UNet2DConditionModel" in err, (name, err)
        assert "another architecture" in err and "StableDiffusionPipeline.save_pretrained folder" in err, err
        assert "without a prompt from its own folder" in err, err  # what to do with an unconditional UNet
        assert "Traceback" not in err
    assert not any((tmp_path / p).exists() for p in ("s", "t.png", "merged"))

    te = _sd_copy(sd_dir, tmp_path, "te")
    config = json.loads((te / "text_encoder" / "config.json").read_text())
    (te / "text_encoder" / "config.json").write_text(json.dumps({**config, "architectures": ["T5EncoderModel"]}))
    assert main(commands["sample --prompt"][:2] + [str(te)] + commands["sample --prompt"][3:]) == 2
    assert "text_encoder/ holds a T5EncoderModel, not the CLIPTextModel" in capsys.readouterr().err
    (te / "text_encoder" / "config.json").write_text(json.dumps({**config, "architectures": None,
                                                                 "model_type": "t5"}))
    assert main(commands["sample --prompt"][:2] + [str(te)] + commands["sample --prompt"][3:]) == 2
    assert "text_encoder/ holds a t5 model, not the CLIPTextModel" in capsys.readouterr().err
