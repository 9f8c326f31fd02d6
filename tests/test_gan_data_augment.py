"""Few-shot data loading (any size/mode, unreadable files skipped) and ADA augmentations."""
import math

import pytest
import torch
from PIL import Image

from gan_adapt.training.augment import AdaController, AugmentPipe
from adapt_common.datasets import ImageSource, load_image_folder

ALL_OFF = {k: 0.0 for k in ["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                            "contrast", "lumaflip", "hue", "saturation"]}


def test_folder_of_mixed_images(tmp_path):
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("L", (64, 64), 128).save(tmp_path / "b.jpg")
    Image.new("RGBA", (20, 20), (0, 0, 255, 255)).save(tmp_path / "c.png")
    (tmp_path / "d.png").write_bytes(b"garbage")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="1 unreadable and skipped"):
        images, report = load_image_folder(tmp_path, 32)
    assert images.shape == (3, 3, 32, 32) and report.used == 3 and report.converted == 2 and report.resized == 3
    assert torch.allclose(images[0, 0], torch.ones(32, 32)) and torch.allclose(images[0, 1], -torch.ones(32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images"):
        load_image_folder(tmp_path / "empty", 32)
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing", 32)


def test_image_source_batches_are_deterministic(tmp_path):
    src = ImageSource("synthfaces:cat@5", 32, quiet=True)
    assert len(src) == 5
    assert torch.equal(src.batch(3, 4), src.batch(3, 4)) and not torch.equal(src.batch(3, 4), src.batch(4, 4))
    stream = ImageSource("synthfaces:sketch", 32, quiet=True)
    a, b = stream.batch(0, 2, rank=0, world=2), stream.batch(0, 2, rank=1, world=2)
    assert a.shape == (2, 3, 32, 32) and not torch.equal(a, b)  # ranks see different faces
    with pytest.raises(ValueError, match="unknown SynthFaces domain"):
        ImageSource("synthfaces:oil", 32, quiet=True)


def test_augment_identity_at_zero_and_exact_blits():
    x = torch.randn(8, 3, 16, 16)
    assert torch.equal(AugmentPipe(0.0)(x), x)
    flip = AugmentPipe(1.0, **{**ALL_OFF, "xflip": 1.0})(x, torch.Generator().manual_seed(0))
    for i in range(8):  # each image is either itself or its mirror, exactly (pixel centres map to centres)
        assert torch.allclose(flip[i], x[i], atol=1e-5) or torch.allclose(flip[i], x[i].flip(-1), atol=1e-5)
    rot = AugmentPipe(1.0, **{**ALL_OFF, "rotate90": 1.0})(x, torch.Generator().manual_seed(1))
    for i in range(8):
        assert any(torch.allclose(rot[i], torch.rot90(x[i], k, (1, 2)), atol=1e-5) for k in range(4))


def test_colour_ops_keep_gray_gray_and_gradients_flow():
    gray = torch.full((4, 3, 8, 8), 0.3)
    out = AugmentPipe(1.0, **{**ALL_OFF, "hue": 1.0, "saturation": 1.0})(gray, torch.Generator().manual_seed(2))
    assert torch.allclose(out, gray, atol=1e-5)  # hue and saturation leave the gray axis alone
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    AugmentPipe(0.9)(x, torch.Generator().manual_seed(3)).square().sum().backward()
    assert x.grad.abs().sum() > 0


def test_ada_controller_moves_p_towards_the_target():
    pipe = AugmentPipe(0.0)
    ada = AdaController(pipe, target=0.6, interval=1, ada_kimg=1.0)
    ada.accumulate(torch.ones(8))  # D sure of every real: overfitting, p goes up
    ada.step(images_per_step=100, step=1)
    assert math.isclose(float(pipe.p), 0.1, rel_tol=1e-6) and ada.last_rt == 1.0
    ada.accumulate(-torch.ones(8))
    ada.step(100, 2)
    assert math.isclose(float(pipe.p), 0.0, abs_tol=1e-7)
    state = ada.state_dict()
    other = AdaController(AugmentPipe(0.5))
    other.load_state_dict(state)
    assert float(other.pipe.p) == float(pipe.p)
