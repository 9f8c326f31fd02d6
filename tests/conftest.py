import os

# Small models run far faster single-threaded on the shared 2-core machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

#: A tiny generator config with every code path of the real one (5 resolutions, 2 mapping layers).
TINY = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=32)


def perturb_zero_inits(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised tensors (noise strengths, biases) values so bugs in them show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias") and "modulation" not in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return module


def tiny_sd_parts(**text_config):
    """A tiny Stable-Diffusion-layout model's parts, seeded: (UNet2DConditionModel, CLIPTextModel, AutoencoderKL),
    8 px latents of 16 px images, a 49,408-token text encoder (CLIP's vocabulary)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                                      **text_config))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=16)
    return unet, te, vae


def _tokenizer(folder):
    """A CLIPTokenizer with the clip package's own BPE (the vocabulary of SD's tokenizer), written as vocab.json and
    merges.txt: no download."""
    import json

    from clip.simple_tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer
    bpe = SimpleTokenizer()
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(bpe.encoder))
    merges = sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(k) for k, _ in merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         pad_token="<|endoftext|>")


@pytest.fixture
def sd_dir(tmp_path):
    """A tiny Stable-Diffusion-layout folder with a tokenizer and SD 1.x's scheduler (save_t2i: the parts as
    StableDiffusionPipeline.save_pretrained lays them out)."""
    from diffusers import DDPMScheduler

    from diffusion_adapt.text2image import T2IModel, save_t2i
    unet, te, vae = tiny_sd_parts(eos_token_id=49407)
    perturb_zero_inits(unet)  # a fresh UNet's output convs are zero: every prompt would give the same image
    tok = _tokenizer(tmp_path / "tok")
    # the scheduler as Stable Diffusion 1.x ships it: scaled-linear betas, steps_offset 1
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                          clip_sample=False)
    return save_t2i(T2IModel(unet=unet, text_encoder=te, scheduler=sched, vae=vae, tokenizer=tok), tmp_path / "sd")


@pytest.fixture
def tiny_generator():
    from gan_adapt.networks import Generator
    torch.manual_seed(0)
    g = perturb_zero_inits(Generator(**TINY))
    g.set_latent_avg(g.mean_latent(256, seed=0))
    return g.eval()


@pytest.fixture
def tiny_ckpt_clip(tmp_path, tiny_generator):
    """(the tiny generator saved as a checkpoint, a tiny random CLIP saved as a file): a one-shot world."""
    from adapt_common.clip_models import tiny_clip
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
    ckpt = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")
    clip_path = tmp_path / "clip.pt"
    torch.save(tiny_clip(0).model.state_dict(), clip_path)
    return ckpt, clip_path


@pytest.fixture(scope="session")
def rosinality_fixture():
    return torch.load(os.path.join(FIXTURES, "rosinality_tiny.pt"), weights_only=True)
