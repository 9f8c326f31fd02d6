"""Ground truth for dissimilar SynthFaces domains (cat, robot): the renderer's image of the face z encodes."""
import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.clip_models import tiny_clip
from adapt_common.metrics import evaluate
from gan_adapt.seeds import z_from_seeds

N = 8


def _make_batch(seeds):
    return z_from_seeds(list(seeds), 128)


def _photo(z):
    return sf.render_from_z(z, "photo", 32)


def _cat(z):
    return sf.render_from_z(z, "cat", 32)


def _run(target, source, tmp_path, name="cat"):
    return evaluate(target, name, sample_source=source, make_batch=_make_batch, n=N, batch=4, clip=tiny_clip(0),
                    features="clip", kid_subsets=2, seed=5, quiet=True, baselines=False)


def test_cat_error_is_measured_against_the_cat_renderer_of_z(tmp_path):
    z = _make_batch(range(5, 5 + N))
    truth, photo = _cat(z), _photo(z)
    # (the renderer's float results depend slightly on the batch, flipping a few edge pixels: not exactly 0)
    perfect = _run(_cat, _photo, tmp_path)["domain_error"]
    assert perfect["pixel_l1"] < 1e-3 and perfect["gap_closed"]["pixel_l1"] > 0.99
    # by hand: a target halfway between the photo and the cat; the baseline is the photo itself
    half = _run(lambda z: 0.5 * (_cat(z) + _photo(z)), _photo, tmp_path)["domain_error"]
    assert half["identity_baseline"]["pixel_l1"] == pytest.approx(float((photo - truth).abs().mean() / 2), abs=2e-3)
    assert half["pixel_l1"] == pytest.approx(float((0.5 * (truth + photo) - truth).abs().mean() / 2), abs=2e-3)
    assert half["gap_closed"]["pixel_l1"] == pytest.approx(0.5, abs=0.01)
    assert "renderer" in half["truth"]
    # robot is another renderer: the same target is not the robot truth
    robot = _run(_cat, _photo, tmp_path, "robot")["domain_error"]
    assert robot["pixel_l1"] > 0.05


def test_no_truth_when_the_source_does_not_draw_its_latents(tmp_path):
    """An unrelated source generator: its latents have no known cat, so nothing is claimed."""
    def unrelated(z):
        g = torch.Generator().manual_seed(int(z[0, 0].abs() * 1000))
        return torch.rand(z.shape[0], 3, 32, 32, generator=g) * 2 - 1
    rep = _run(_cat, unrelated, tmp_path)
    assert rep["domain_error"] is None and "does not draw" in rep["domain_error_skipped"]


def test_the_bundled_generator_draws_the_faces_its_latents_encode():
    from gan_adapt.formats import load_generator
    from adapt_common.metrics.evaluate import LATENT_TRUTH_MAX_SOURCE_ERROR
    g = load_generator("checkpoints/synthfaces_stylegan2.safetensors")
    z = _make_batch(range(16))
    with torch.no_grad():
        err = float((g.generate(z) - sf.render_from_z(z, "photo", g.size)).abs().mean() / 2)
    assert err < LATENT_TRUTH_MAX_SOURCE_ERROR
