"""Inversion: an image the generator made is found again (W+ and W), faster than chance, and the CLI writes
the latent that re-renders the reconstruction."""
import numpy as np
import pytest
import torch

from conftest import TINY
from gan_adapt.inversion import invert


def test_inversion_recovers_a_generated_image(tiny_generator):
    g = tiny_generator
    g.set_latent_avg(g.mean_latent(512, seed=0))
    with torch.no_grad():
        target = g.generate(torch.randn(1, TINY["style_dim"], generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        start = float(((g.generate(w=g.latent_avg[None]) - target) ** 2).mean())
    stops = []
    res = invert(g, target, steps=80, lr=0.05, callback=lambda step, loss: stops.append(step) or step == 59)
    assert len(res.losses) == 60 and stops[-1] == 59  # the callback stopped it
    assert res.mse < 0.5 * start, (res.mse, start)
    assert res.w.shape == (1, g.n_latent, TINY["style_dim"])
    torch.testing.assert_close(g.generate(w=res.w), res.image)
    w_only = invert(g, target, space="w", steps=30)
    assert torch.equal(w_only.w[0, 0], w_only.w[0, -1])  # one w for every layer
    with pytest.raises(ValueError, match="one RGB image"):
        invert(g, torch.zeros(2, 3, 8, 8))


def test_invert_cli(tiny_generator, tmp_path):
    from PIL import Image

    from gan_adapt.cli import main
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
    ckpt = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")
    Image.fromarray((np.random.default_rng(0).random((50, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    assert main(["invert", "--ckpt", str(ckpt), "--image", str(tmp_path / "x.png"), "--steps", "5",
                 "--out", str(tmp_path / "inv")]) == 0
    w = np.load(tmp_path / "inv" / "latent.npy")
    assert w.shape == (1, tiny_generator.n_latent, TINY["style_dim"])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["invert", "--ckpt", str(ckpt), "--image", str(tmp_path / "bad.png"), "--out", str(tmp_path / "b")]) == 2


def test_a_source_domain_inversion_returns_a_face_the_clip_reads_as_a_photo():
    """A thermal reference inverted into the bundled generator: the plain inversion reproduces the thermal look
    (the bundled CLIP gives "a photo of a face" ~0 probability among the domain prompts; measured 0.000), the
    source-domain inversion returns a face read as a photo (measured 0.99). The probability is computed here from
    the CLIP's own embeddings."""
    from adapt_common import synthfaces as sf
    from adapt_common.clip_models import load_clip
    from gan_adapt.formats import load_generator
    from gan_adapt.training.clip_guided import CONTRAST_PROMPTS, DEFAULT_SOURCE
    g = load_generator(DEFAULT_SOURCE).eval().requires_grad_(False)
    clip = load_clip("synthfaces")
    ref = sf.fewshot_set("thermal", 1, size=g.size)[0]
    texts = clip.encode_texts(["a photo of a face", *CONTRAST_PROMPTS])

    def p_photo(image):
        with torch.no_grad():
            return float((100 * clip.encode_images(image) @ texts.t()).softmax(-1)[0, 0])
    plain = invert(g, ref, space="w", steps=60, clip=clip, clip_weight=0)
    photo = invert(g, ref, space="w", steps=60, clip=clip, source_prompt="a photo of a face",
                   contrast_prompts=list(CONTRAST_PROMPTS), prompt_weight=0.2)
    assert p_photo(plain.image) < 0.1 and p_photo(photo.image) > 0.8, (p_photo(plain.image), p_photo(photo.image))
    assert plain.mse < photo.mse  # the constraint gives up pixel fidelity to the style, as intended
    with pytest.raises(ValueError, match="contrast_prompts"):
        invert(g, ref, steps=1, clip=clip, source_prompt="a photo of a face")
    with pytest.raises(ValueError, match="needs a CLIP"):
        invert(g, ref, steps=1, source_prompt="a photo of a face", contrast_prompts=["a sketch"])
