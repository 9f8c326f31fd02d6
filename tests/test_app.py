"""The app's callbacks (plain functions; the UI itself is driven in a browser by the app issue's tests)."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import app
from gan_adapt.directions import Direction
from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
from gan_adapt.networks import Generator
from gan_adapt.parameterizations import Parameterization
from conftest import TINY


@pytest.fixture
def world(tmp_path, tiny_generator):
    ckpt = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")
    lib_dir = tmp_path / "dirs"
    lib_dir.mkdir()
    for i, name in enumerate(["sketch", "popart"]):
        p = Parameterization("stylespace", tiny_generator)
        with torch.no_grad():
            for q in p.trainable_parameters():
                q.copy_(0.5 * torch.randn(q.shape, generator=torch.Generator().manual_seed(i)))
        Direction.from_parameterization(p, domain=name).save(lib_dir / f"{name}.safetensors")
    (lib_dir / "notes.safetensors").write_bytes(b"not a direction")  # skipped, not an error
    return str(ckpt), app.Library([lib_dir], bundled=False), tmp_path


def test_render_grid_and_errors(world):
    ckpt, _, tmp_path = world
    grid = app.render(ckpt, "0-5", 0.7)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3 and grid.shape[1] > grid.shape[0]
    np.testing.assert_array_equal(grid, app.render(ckpt, "0-5", 0.7))
    assert not np.array_equal(grid, app.render(ckpt, "0-5", 0.0))
    with pytest.raises(ValueError, match="no such file"):
        app.render(str(tmp_path / "missing.pt"), "0", 1.0)
    with pytest.raises(ValueError, match="at most"):
        app.render(ckpt, "0-99", 1.0)
    with pytest.raises(ValueError, match="path of a generator"):
        app.render("  ", "0", 1.0)


def test_mixing_follows_the_weights(world):
    ckpt, lib, tmp_path = world
    assert set(lib.names()) == {"sketch", "popart"}
    plain = app.render(ckpt, "0-3", 1.0)
    zero = app.mix_render(ckpt, lib, ["sketch", "popart"], [0.0, 0.0], "0-3", 1.0)
    np.testing.assert_array_equal(plain, zero)
    one = app.mix_render(ckpt, lib, ["sketch", ""], [0.8, 0.5], "0-3", 1.0)
    both = app.mix_render(ckpt, lib, ["sketch", "popart"], [0.8, -0.5], "0-3", 1.0)
    assert not np.array_equal(one, plain) and not np.array_equal(both, one)
    # A direction for another architecture gets a message, and the app goes on.
    other = Generator(**{**TINY, "channel_max": 16})
    p = Parameterization("direction", other)
    Direction.from_parameterization(p).save(tmp_path / "other.safetensors")
    name = lib.add_file(str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="does not fit"):
        app.mix_render(ckpt, lib, [name], [1.0], "0", 1.0)
    np.testing.assert_array_equal(app.render(ckpt, "0-3", 1.0), plain)
    with pytest.raises(ValueError, match="not a direction file"):
        lib.add_file(str(tmp_path / "dirs" / "notes.safetensors"))
    with pytest.raises(ValueError, match="no such folder"):
        lib.add_folder(tmp_path / "nope")


def test_uploads_are_checked(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="not an image"):
        app.check_upload(str(tmp_path / "x.txt"))
    Image.new("RGB", (5000, 10)).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match="largest side"):
        app.check_upload(str(tmp_path / "wide.png"))
    with pytest.raises(ValueError, match="upload an image"):
        app.check_upload(None)
    Image.new("LA", (40, 30)).save(tmp_path / "gray.png")
    assert app.check_upload(str(tmp_path / "gray.png")).endswith("gray.png")


def test_morph_files(world):
    ckpt, lib, tmp_path = world
    strip, gif, mp4 = app.morph_files(ckpt, lib, [app.SOURCE, "sketch", "popart"], 0.8, 3, "0-1", str(tmp_path / "m"))
    assert Image.open(gif).n_frames == 2 * (5 - 1)  # 5 frames, played forward and back
    assert Image.open(strip).size[0] > Image.open(strip).size[1] and (tmp_path / "m" / "morph.mp4").stat().st_size
    with pytest.raises(ValueError, match="at least two"):
        app.morph_files(ckpt, lib, ["sketch"], 0.8, 3, "0")


def test_adapt_from_an_upload_with_progress_and_cancel(world):
    from adapt_common.clip_models import tiny_clip
    from gan_adapt.directions import load_direction
    ckpt, _, tmp_path = world
    clip_path = tmp_path / "clip.pt"
    torch.save(tiny_clip(0).model.state_dict(), clip_path)
    Image.new("RGBA", (50, 70), (250, 250, 250, 255)).save(tmp_path / "ref.png")
    steps = list(app.adapt(ckpt, str(tmp_path / "ref.png"), "", "stylespace", 4, every=2,
                           run_dir=str(tmp_path / "run"), clip=str(clip_path)))
    assert steps[0][0].startswith("training stylespace")
    assert [s[1] is not None for s in steps] == [False, True, True, True]
    d = load_direction(steps[-1][2])
    assert d.with_torgb and d.meta["reference_hash"]
    cancel = threading.Event()
    gen = app.adapt(ckpt, None, "a sepia photo of a face", "direction", 50, every=1, cancel=cancel,
                    run_dir=str(tmp_path / "run2"), clip=str(clip_path))
    next(gen)
    next(gen)
    cancel.set()
    assert next(gen)[0].startswith("cancelled at step 1")
    with pytest.raises(ValueError, match="either a reference image or a prompt"):
        next(app.adapt(ckpt, str(tmp_path / "ref.png"), "a sketch", "direction", 5))
    with pytest.raises(ValueError, match="upload a reference image or type"):
        next(app.adapt(ckpt, None, "  ", "direction", 5))


def test_photo_in_domains(world):
    ckpt, lib, tmp_path = world
    Image.new("RGB", (64, 48), (120, 80, 60)).save(tmp_path / "me.jpg")
    grid = app.photo_in_domains(ckpt, lib, str(tmp_path / "me.jpg"), ["sketch", "popart"], 0.8, steps=10)
    assert grid.shape[1] == 5 * 34 + 2  # photo, reconstruction, sketch, popart, mix
    with pytest.raises(ValueError, match="not an image"):
        app.photo_in_domains(ckpt, lib, str(tmp_path / "dirs" / "notes.safetensors"), [], 0.8, steps=10)


def test_diffusion_samples(tmp_path):
    from diffusers import UNet2DModel

    from diffusion_adapt import svdiff
    from diffusion_adapt.models import new_scheduler, save_model
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
                       norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    folder = save_model(unet, new_scheduler(), tmp_path / "ddpm")
    plain = app.diffusion_samples(str(folder), [], [], "0-1", 2)
    svdiff.add_spectral_shifts(unet)
    with torch.no_grad():
        for s in svdiff.shifts_of(unet).values():
            s.delta.fill_(0.5)
    f = svdiff.save_shifts(unet, tmp_path / "s.safetensors")
    shifted = app.diffusion_samples(str(folder), [str(f)], [1.0], "0-1", 2)
    assert plain.shape == shifted.shape and not np.array_equal(plain, shifted)
    np.testing.assert_array_equal(app.diffusion_samples(str(folder), [str(f)], [0.0], "0-1", 2), plain)
    with pytest.raises(ValueError, match="not a model folder"):
        app.diffusion_samples(str(tmp_path / "none"), [], [], "0", 2)

    # Translation: the strip is input, plain reconstruction, translation; a zero scale translates to the
    # reconstruction itself, a real shift to something else.
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    strip = app.diffusion_translate(str(folder), str(tmp_path / "x.png"), [str(f)], [1.0], 3)
    assert strip.shape == (36, 104, 3)  # three 32 px images with 2 px padding
    third = strip.shape[1] // 3
    same = app.diffusion_translate(str(folder), str(tmp_path / "x.png"), [str(f)], [0.0], 3)
    np.testing.assert_array_equal(same[:, third:2 * third], same[:, 2 * third:3 * third])
    assert not np.array_equal(strip[:, 2 * third:], same[:, 2 * third:])
    with pytest.raises(ValueError, match="at least one shift file"):
        app.diffusion_translate(str(folder), str(tmp_path / "x.png"), [], [], 3)
    with pytest.raises(ValueError, match="not an image"):
        app.diffusion_translate(str(folder), str(f), [str(f)], [1.0], 3)


def test_parse_scales():
    assert app.parse_scales("", 2, 0.7) == [0.7, 0.7]
    assert app.parse_scales("1, -0.5", 2, 0.7) == [1.0, -0.5]
    with pytest.raises(ValueError, match="one per file"):
        app.parse_scales("1", 2, 0.7)
    with pytest.raises(ValueError, match="numbers separated by commas"):
        app.parse_scales("big", 1, 0.7)


@pytest.mark.timeout(240)
def test_launched_app_through_gradio_client(world):
    """The Mix and Morph endpoints of a launched app, called through gradio_client, as a remote user would."""
    from gradio_client import Client
    ckpt, lib, tmp_path = world
    demo = app.build_app(ckpt, [str(tmp_path / "dirs")])
    app.launch(demo, server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        slots = ["sketch", "popart"] + [""] * (app.SLOTS - 2)
        plain = client.predict(ckpt, "0-3", 1.0, *slots, *([0.0] * app.SLOTS), api_name="/mix")
        mixed = client.predict(ckpt, "0-3", 1.0, *slots, 0.8, -0.4, *([0.0] * (app.SLOTS - 2)), api_name="/mix")
        a, b = np.asarray(Image.open(plain)), np.asarray(Image.open(mixed))
        assert a.shape == b.shape and not np.array_equal(a, b)
        np.testing.assert_array_equal(a, app.render(ckpt, "0-3", 1.0))
        with pytest.raises(Exception, match="no such file"):
            client.predict(str(tmp_path / "nope.pt"), "0", 1.0, *slots, *([0.0] * app.SLOTS), api_name="/mix")
        strip, gif, mp4 = client.predict(ckpt, [app.SOURCE, "sketch"], 0.8, 3, "0-1", api_name="/morph")
        assert Image.open(gif).n_frames == 4
    finally:
        demo.close()
