"""Shared pieces: configs, training checkpoints and logs, image I/O, content hashes, CLIP loading."""
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from PIL import Image

from adapt_common.config import ConfigError, describe, load_config, save_config
from adapt_common.files import tensors_hash
from adapt_common.image_io import ImageReadError, load_image, make_grid, save_image, to_uint8
from adapt_common.loop import CsvLogger, load_training_state, rng_state, save_training_state, set_rng_state


@dataclass
class Optim:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Cfg:
    name: str = "run"
    domains: list[str] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)


def test_config_merge_order_and_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("optim:\n  lr: 0.5\n  steps: 3\n")
    (tmp_path / "b.yaml").write_text("optim:\n  steps: 7\ndomains: [sketch, cat]\n")
    cfg = load_config(Cfg, [tmp_path / "a.yaml", tmp_path / "b.yaml"], ["optim.lr=0.25"])
    assert (cfg.optim.lr, cfg.optim.steps, cfg.domains) == (0.25, 7, ["sketch", "cat"])
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        load_config(Cfg, [], ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="bad value for 'optim.steps'"):
        load_config(Cfg, [], ["optim.steps=many"])
    (tmp_path / "bad.yaml").write_text("optimizer:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown config key 'optimizer'"):
        load_config(Cfg, [tmp_path / "bad.yaml"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(Cfg, [tmp_path / "missing.yaml"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Cfg, [tmp_path / "saved.yaml"]) == cfg
    assert "steps: 10" in describe(Cfg)


def test_training_state_round_trip_restores_rng(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    state = {"weights": torch.randn(3), "step": 12, "rng": rng_state()}
    save_training_state(tmp_path / "ck.pt", state)
    expected = (torch.rand(3), np.random.rand(2))
    loaded = load_training_state(tmp_path / "ck.pt")
    set_rng_state(loaded["rng"])
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(2), expected[1])
    assert loaded["step"] == 12


def test_csv_logger_resume_truncates_later_rows(tmp_path):
    log = CsvLogger(tmp_path / "log.csv")
    for s in range(1, 6):
        log.log(step=s, loss=1.0 / s)
    resumed = CsvLogger(tmp_path / "log.csv", resume_step=3)
    resumed.log(step=4, loss=0.5)
    rows = (tmp_path / "log.csv").read_text().strip().splitlines()
    assert rows[0] == "step,loss" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_image_io_round_trip_and_bad_files(tmp_path):
    img = torch.linspace(-1, 1, 3 * 8 * 8).reshape(1, 3, 8, 8)
    save_image(img, tmp_path / "a.png")
    back = load_image(tmp_path / "a.png")
    assert back.shape == (1, 3, 8, 8) and (back - img).abs().max() < 1 / 127
    Image.new("LA", (10, 6), (0, 0)).save(tmp_path / "alpha.png")  # fully transparent grey: white after compositing
    assert torch.allclose(load_image(tmp_path / "alpha.png", size=4), torch.ones(1, 3, 4, 4))
    Image.new("L", (20, 10), 128).save(tmp_path / "gray.jpg")
    assert load_image(tmp_path / "gray.jpg", size=5).shape == (1, 3, 5, 5)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageReadError, match="not a readable image"):
        load_image(tmp_path / "broken.png")
    assert make_grid(torch.zeros(5, 3, 4, 4), nrow=3, padding=1).shape == (3, 11, 16)
    assert to_uint8(torch.tensor([[[[-2.0]], [[0.0]], [[2.0]]]])).tolist() == [[[[0, 128, 255]]]]


def test_tensors_hash_is_content_based():
    a = {"x": torch.arange(4.0), "y": torch.ones(2)}
    assert tensors_hash(a) == tensors_hash(dict(reversed(list(a.items()))))
    assert tensors_hash(a) != tensors_hash({"x": torch.arange(4.0), "y": torch.ones(2) * 2})
    assert tensors_hash(a) != tensors_hash({"x": torch.arange(4.0).double(), "y": torch.ones(2)})
    # 0-dim tensors (BatchNorm's num_batches_tracked) hash by value too
    assert tensors_hash({"n": torch.tensor(3)}) != tensors_hash({"n": torch.tensor(4)})


def test_clip_loads_plain_and_torchscript_files_through_one_path(tmp_path):
    from adapt_common.clip_models import ClipLoadError, load_clip, tiny_clip
    ref = tiny_clip(0)
    ref.model.half().float()  # clip.model.build_model stores weights in float16, as OpenAI's files are
    images = torch.rand(2, 3, 48, 40) * 2 - 1
    texts = ["a pencil sketch of a face", "a photo of a cat"]
    torch.save(ref.model.state_dict(), tmp_path / "plain.pt")
    # OpenAI ships TorchScript archives; a traced copy of the model stands in for one.
    traced = torch.jit.trace(ref.model, (torch.zeros(1, 3, 32, 32), ref.tokenize(["a face"])), check_trace=False)
    torch.jit.save(traced, str(tmp_path / "jit.pt"))
    for name in ("plain.pt", "jit.pt"):
        m = load_clip(str(tmp_path / name))
        torch.testing.assert_close(m.encode_images(images), ref.encode_images(images), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.encode_texts(texts), ref.encode_texts(texts), rtol=1e-4, atol=1e-5)
        assert not any(p.requires_grad for p in m.parameters())
    emb = ref.encode_images(images)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2))
    x = images.clone().requires_grad_(True)
    ref.encode_images(x).sum().backward()
    assert x.grad.abs().sum() > 0  # the preprocessing is differentiable
    with pytest.raises(ClipLoadError, match="downloads are disabled"):
        load_clip("ViT-L/14@336px")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "plain.pt").read_bytes()[:1000])
    with pytest.raises(ClipLoadError, match="truncated or corrupt"):
        load_clip(str(tmp_path / "trunc.pt"))
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ClipLoadError, match="not an OpenAI-format CLIP"):
        load_clip(str(tmp_path / "other.pt"))


def test_atomic_files_get_the_usual_mode(tmp_path):
    import os
    import stat

    from adapt_common.files import atomic_path
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o644


def test_nada_direction_loss_uses_the_change_of_embedding():
    """1 − cos(E(G_B) − E(G_A), Δ) on hand-made unit embeddings, where the change and the adapted embedding itself
    point different ways: a loss on E(G_B) alone gives other numbers."""
    import math

    from adapt_common.clip_guidance import ClipGuide
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # E(G_A)
    b = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.6, 0.8]])  # E(G_B)
    along = torch.tensor([-1.0, 1.0, 0.0])  # exactly the first sample's change b - a
    # by hand: sample 1: b - a = (-1, 1, 0), cos with Δ is 1; sample 2: b - a = (0, 0.6, -0.2), cos 0.6 / (√2 √0.4)
    cos2 = 0.6 / (math.sqrt(2) * math.sqrt(0.4))
    assert float(ClipGuide.direction_loss([b], [a], [along])) == pytest.approx((0 + (1 - cos2)) / 2, abs=1e-6)
    # Δ = e2: the adapted embedding of sample 1 lies exactly on it (loss 0 for E(G_B) alone), the change does not
    e2 = torch.tensor([0.0, 1.0, 0.0])
    cos1, cos2 = 1 / math.sqrt(2), 0.6 / math.sqrt(0.4)
    expected = ((1 - cos1) + (1 - cos2)) / 2
    assert float(ClipGuide.direction_loss([b[:1]], [a[:1]], [e2])) == pytest.approx(1 - cos1, abs=1e-6)
    assert float(ClipGuide.direction_loss([b], [a], [e2])) == pytest.approx(expected, abs=1e-6)
    # summed over CLIP models, each with its own direction
    assert float(ClipGuide.direction_loss([b, b], [a, a], [e2, along])) == pytest.approx(
        expected + (1 - 0.6 / (math.sqrt(2) * math.sqrt(0.4))) / 2, abs=1e-6)
