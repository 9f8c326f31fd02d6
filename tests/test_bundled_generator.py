"""The bundled SynthFaces StyleGAN2: its file, its faces (the renderer's, not an average face), a smooth latent
space, and a discriminator that tells SynthFaces photos from other domains (the start of few-shot training)."""
from pathlib import Path

import pytest
import torch

from adapt_common import synthfaces as sf
from gan_adapt.formats import load_checkpoint
from tools.stylegan2_model_card import interpolation
from gan_adapt.training.engine import synthfaces_targets

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "synthfaces_stylegan2.safetensors"  # committed


@pytest.fixture(scope="module")
def ckpt():
    return load_checkpoint(BUNDLED)


def test_file_and_architecture(ckpt):
    assert BUNDLED.stat().st_size <= 25 * 2 ** 20
    g = ckpt.g_ema
    assert g.size == 64 and g.style_dim >= len(sf.PARAM_SPEC) and ckpt.d is not None
    assert g.latent_avg_known


def test_faces_follow_the_renderer(ckpt):
    """G(z) is near the rendered face of z's own parameters: much nearer than the average face is (what a
    generator that ignores z would produce) and than another z's face is."""
    g = ckpt.g_ema
    z = torch.randn(64, g.style_dim, generator=torch.Generator().manual_seed(2024))
    with torch.no_grad():
        out = g.generate(z)
    target = synthfaces_targets(z, "photo", g.size)
    err = (out - target).abs().mean()
    mean_face = (target - target.mean(0, keepdim=True)).abs().mean()
    shuffled = (out - target.roll(1, 0)).abs().mean()
    assert err < 0.8 * mean_face and err < 0.7 * shuffled, (float(err), float(mean_face), float(shuffled))


def test_latent_space_interpolates_smoothly(ckpt):
    _, ratio = interpolation(ckpt.g_ema, rows=4, steps=10)
    assert ratio < 2.5  # no jump between consecutive frames much larger than the average step


def test_discriminator_prefers_real_photos_to_other_domains(ckpt):
    d = ckpt.d.eval()
    params = sf.split_params("eval", 64)
    with torch.no_grad():
        real = d(sf.render_domain(params, "photo", 64)).mean()
        cats = d(sf.render_domain(params, "cat", 64)).mean()
        noise = d(torch.rand(64, 3, 64, 64) * 2 - 1).mean()
    assert real > cats and real > noise, (float(real), float(cats), float(noise))
