"""Morphing: keyframes are hit exactly, direction weights and generator weights interpolate linearly, and the
frames are written as a strip, a GIF and an MP4 that read back with the right frame count."""
import pytest
import torch

from conftest import TINY
from gan_adapt.directions import Direction, DomainEdit
from gan_adapt.morphing import Keyframe, lerp_generators, morph, save_gif, save_mp4, save_strip
from gan_adapt.networks import Generator
from gan_adapt.parameterizations import Parameterization


def _direction(g, name, seed, scale=0.4):
    p = Parameterization(name, g)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q in p.trainable_parameters():
            q.copy_(scale * torch.randn(q.shape, generator=gen))
    return Direction.from_parameterization(p)


@pytest.fixture
def world(tiny_generator):
    g_a = tiny_generator.requires_grad_(False)
    g_b = Parameterization("affine_plus", g_a, block=16)  # a "fine-tuned" generator of the same source
    with torch.no_grad():
        for q in g_b.trainable_parameters():
            q.add_(0.1 * torch.randn(q.shape, generator=torch.Generator().manual_seed(5)))
    return g_a, g_b.merged_generator(), _direction(g_a, "direction", 1), _direction(g_a, "dommod", 2, 0.2)


def test_lerp_generators(world):
    g_a, g_b, _, _ = world
    z = torch.randn(2, TINY["style_dim"])
    torch.testing.assert_close(lerp_generators(g_a, g_b, 0).generate(z), g_a.generate(z))
    torch.testing.assert_close(lerp_generators(g_a, g_b, 1).generate(z), g_b.generate(z))
    mid = lerp_generators(g_a, g_b, 0.5)
    k = "convs.1.conv.weight"
    torch.testing.assert_close(mid.state_dict()[k], (g_a.state_dict()[k] + g_b.state_dict()[k]) / 2)
    with pytest.raises(ValueError, match="same architecture"):
        lerp_generators(g_a, Generator(**{**TINY, "channel_max": 16}), 0.5)


def test_morph_path_and_files(world, tmp_path):
    import imageio.v2 as imageio
    g_a, g_b, d1, m2 = world
    z = torch.randn(2, TINY["style_dim"], generator=torch.Generator().manual_seed(0))
    keys = [Keyframe(g_a), Keyframe(g_a, [(d1, 0.8)]), Keyframe(g_b, [(d1, 0.8)]), Keyframe(g_b, [(m2, 1.0)])]
    with pytest.warns(UserWarning, match="transfer"):  # d1 applied to g_b: a transfer, noted once
        frames = morph(keys, z, steps=5)
    assert frames.shape == (3 * 4 + 1, 2, 3, 32, 32)
    torch.testing.assert_close(frames[0], g_a.generate(z))
    torch.testing.assert_close(frames[4], DomainEdit(g_a, [(d1, 0.8)]).generate(z))
    torch.testing.assert_close(frames[2], DomainEdit(g_a, [(d1, 0.4)]).generate(z))  # half-way up the ramp
    mid = lerp_generators(g_a, g_b, 0.5)
    torch.testing.assert_close(frames[6], DomainEdit(mid, [(d1, 0.8)], check=False).generate(z))
    torch.testing.assert_close(frames[10], DomainEdit(g_b, [(d1, 0.4), (m2, 0.5)], check=False).generate(z))
    torch.testing.assert_close(frames[-1], DomainEdit(g_b, [(m2, 1.0)], check=False).generate(z))

    save_strip(frames, tmp_path / "strip.png")
    save_gif(frames, tmp_path / "m.gif", boomerang=False)
    save_mp4(frames, tmp_path / "m.mp4", boomerang=False)
    from PIL import Image
    strip = Image.open(tmp_path / "strip.png")
    assert strip.size[0] > 13 * 32 and strip.size[1] > 2 * 32
    gif = Image.open(tmp_path / "m.gif")
    assert gif.n_frames == 13 and gif.size == (64, 32)
    video = imageio.mimread(str(tmp_path / "m.mp4"), format="FFMPEG")
    assert len(video) == 13 and video[0].shape[:2] == (32, 64)
    with pytest.raises(ValueError, match="two keyframes"):
        morph(keys[:1], z)


def test_morph_cli(world, tmp_path):
    from gan_adapt.cli import main
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
    from gan_adapt.seeds import z_from_seeds
    g_a, g_b, d1, _ = world
    a = save_checkpoint(StyleGANCheckpoint(g_ema=g_a), tmp_path / "a.safetensors")
    b = save_checkpoint(StyleGANCheckpoint(g_ema=g_b), tmp_path / "b.safetensors")
    d1.save_pretrained(tmp_path / "d1.safetensors")
    with pytest.warns(UserWarning, match="transfer"):
        assert main(["morph", "--ckpt", str(a), "--key", "", "--key", f"{tmp_path / 'd1.safetensors'}:0.8",
                     "--key", f"g={b},{tmp_path / 'd1.safetensors'}:0.8", "--steps", "3", "--seeds", "0-1",
                     "--out", str(tmp_path / "out")]) == 0
    frames = torch.load(tmp_path / "out" / "frames.pt", weights_only=True).float()
    assert frames.shape == (5, 2, 3, 32, 32)
    z = z_from_seeds([0, 1], TINY["style_dim"])
    torch.testing.assert_close(frames[-1], DomainEdit(g_b, [(d1, 0.8)], check=False).generate(z), atol=2e-3, rtol=0)
    assert all((tmp_path / "out" / f).stat().st_size > 0 for f in ("strip.png", "morph.gif", "morph.mp4"))
    assert main(["morph", "--key", f"{tmp_path / 'd1.safetensors'}", "--key", "", "--out", str(tmp_path / "x")]) == 2


def test_compare_grid(world, tmp_path):
    from PIL import Image

    from gan_adapt.cli import main
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
    g_a, g_b, d1, _ = world
    a = save_checkpoint(StyleGANCheckpoint(g_ema=g_a), tmp_path / "a.safetensors")
    d1.save_pretrained(tmp_path / "d1.safetensors")
    out = tmp_path / "grid.png"
    assert main(["compare", "--ckpt", str(a), "--row", "", "--row", f"{tmp_path / 'd1.safetensors'}:0.5",
                 "--real", "synthfaces:cat@5", "--seeds", "0-2", "--out", str(out)]) == 0
    w, h = Image.open(out).size
    assert (w, h) == (3 * 34 + 2, 3 * 34 + 2)  # 3 seeds x (real, base, direction) rows of 32 px, 2 px padding


def test_keys_apply_each_adapter_to_the_checkpoint_not_to_another_adapter(world, tmp_path):
    """Compare rows are independent (an empty row is the plain base even after an adapter row); morph keys carry
    the previous key's generator, but an adapter always merges into the checkpoint, never into another adapter."""
    from gan_adapt.adapter_files import Adapter
    from gan_adapt.cli import _keyframes
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
    g_a, _, d1, _ = world
    a = save_checkpoint(StyleGANCheckpoint(g_ema=g_a), tmp_path / "a.safetensors")
    adapters = []
    for seed in (7, 8):
        p = Parameterization("affine_light_plus", g_a, block=16)
        with torch.no_grad():
            for q in p.trainable_parameters():
                q.add_(0.1 * torch.randn(q.shape, generator=torch.Generator().manual_seed(seed)))
        adapters.append((Adapter.from_parameterization(p).save_pretrained(tmp_path / f"ad{seed}.safetensors"),
                         p.merged_generator()))
    d1.save_pretrained(tmp_path / "d1.safetensors")
    z = torch.randn(2, TINY["style_dim"], generator=torch.Generator().manual_seed(0))
    (f1, m1), (f2, m2) = adapters
    rows = _keyframes([f"a={f1}", f"a={f2}", "", f"{tmp_path / 'd1.safetensors'}"], str(a), "cpu", carry=False)
    for key, want in zip(rows, (m1, m2, g_a, g_a)):
        torch.testing.assert_close(key.generator.generate(z), want.generate(z))
    keys = _keyframes([f"a={f1}", f"{tmp_path / 'd1.safetensors'}", f"a={f2}"], str(a), "cpu")
    for key, want in zip(keys, (m1, m1, m2)):  # the direction key stays on adapter 1's generator
        torch.testing.assert_close(key.generator.generate(z), want.generate(z))


def test_morph_callback_counts_frames_and_changes_nothing(world):
    """``callback(done, total)`` is called once per frame, in order, ending at total = F; the frames are the same
    as without a callback."""
    g_a, g_b, d1, m2 = world
    z = torch.randn(2, TINY["style_dim"], generator=torch.Generator().manual_seed(3))
    keys = [Keyframe(g_a), Keyframe(g_a, [(d1, 0.8)]), Keyframe(g_a, [(d1, 0.8), (m2, 0.5)])]
    calls = []
    with_cb = morph(keys, z, steps=4, callback=lambda done, total: calls.append((done, total)) or True)
    plain = morph(keys, z, steps=4)
    assert with_cb.shape[0] == 7
    assert calls == [(i, 7) for i in range(1, 8)]
    torch.testing.assert_close(with_cb, plain, rtol=0, atol=0)
