"""Checkpoint formats: rosinality .pt (converted and training snapshots), native safetensors, detection,
conversion, and clear errors for bad files."""
import argparse
import json

import pytest
import torch

from conftest import TINY, perturb_zero_inits
from gan_adapt.formats import (CheckpointError, StyleGANCheckpoint, convert, detect_format, load_checkpoint,
                               load_generator, save_checkpoint)
from gan_adapt.formats.architecture import generator_config_from_state_dict
from gan_adapt.networks import Discriminator, Generator


@pytest.fixture
def models():
    torch.manual_seed(0)
    g = perturb_zero_inits(Generator(**TINY))
    g.set_latent_avg(torch.randn(TINY["style_dim"]))
    d = perturb_zero_inits(Discriminator(32, channel_base=256, channel_max=32))
    return g.eval(), d


def _same_images(a: Generator, b: Generator, truncation: float = 0.7):
    z = torch.randn(2, TINY["style_dim"], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.generate(z, truncation=truncation), b.generate(z, truncation=truncation),
                               rtol=0, atol=0)


@pytest.mark.parametrize("ext,fmt", [(".pt", "rosinality"), (".safetensors", "native")])
def test_round_trip(tmp_path, models, ext, fmt):
    g, d = models
    path = save_checkpoint(StyleGANCheckpoint(g_ema=g, d=d, meta={"note": "x"}), tmp_path / f"m{ext}")
    assert detect_format(path) == fmt
    ck = load_checkpoint(path)
    assert ck.source_format == fmt and ck.meta["latent_avg_source"] == "file"
    assert ck.g_ema.config == g.config and ck.d.config == d.config
    torch.testing.assert_close(ck.g_ema.latent_avg, g.latent_avg)
    _same_images(ck.g_ema, g)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ck.d(x), d(x))
    assert not any(p.requires_grad for p in ck.g_ema.parameters())


def test_rosinality_training_snapshot_with_namespace_args(tmp_path, models):
    g, d = models
    g_train = perturb_zero_inits(Generator(**TINY), seed=7)
    opt = torch.optim.Adam(g_train.parameters())
    g_train.generate(torch.randn(1, 32)).mean().backward()
    opt.step()
    snap = {"g": g_train.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(), "g_optim": opt.state_dict(),
            "d_optim": torch.optim.Adam(d.parameters()).state_dict(),
            "args": argparse.Namespace(size=32, channel_multiplier=2, r1=10.0, augment=False), "ada_aug_p": 0.3}
    torch.save(snap, tmp_path / "snap.pt")
    ck = load_checkpoint(tmp_path / "snap.pt")
    assert ck.g is not None and ck.d is not None
    assert ck.meta["training_args"]["r1"] == 10.0 and ck.meta["ada_aug_p"] == pytest.approx(0.3)
    # No latent_avg in a snapshot: computed deterministically, so two loads agree.
    assert ck.meta["latent_avg_source"].startswith("computed")
    torch.testing.assert_close(ck.g_ema.latent_avg, load_generator(tmp_path / "snap.pt").latent_avg)
    torch.testing.assert_close(ck.g.state_dict()["style.1.weight"], g_train.state_dict()["style.1.weight"])


def test_bare_state_dict_and_converted_file(tmp_path, models):
    g, _ = models
    torch.save(g.state_dict(), tmp_path / "bare.pt")
    _same_images(load_generator(tmp_path / "bare.pt"), g, truncation=1.0)  # no latent_avg in a bare dict
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.latent_avg}, tmp_path / "conv.pt")
    torch.testing.assert_close(load_generator(tmp_path / "conv.pt").latent_avg, g.latent_avg)


def test_convert_between_formats_keeps_outputs(tmp_path, models):
    g, d = models
    save_checkpoint(StyleGANCheckpoint(g_ema=g, d=d), tmp_path / "a.pt")
    convert(tmp_path / "a.pt", tmp_path / "b.safetensors")
    convert(tmp_path / "b.safetensors", tmp_path / "c.pt")
    _same_images(load_generator(tmp_path / "c.pt"), g)
    with pytest.raises(CheckpointError, match="NVIDIA pickles"):
        convert(tmp_path / "a.pt", tmp_path / "x.pkl")
    with pytest.raises(CheckpointError, match="extension"):
        convert(tmp_path / "a.pt", tmp_path / "x.bin")


def test_config_inference_for_standard_channel_tables():
    for cm, base in [(2, 32768), (1, 16384)]:
        with torch.device("meta"):
            sd = Generator(256, 512, 8, channel_multiplier=cm).state_dict()
        cfg = generator_config_from_state_dict(sd)
        assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.channel_base, cfg.channel_max) == (256, 512, 8, base, 512)
    with torch.device("meta"):
        sd = Generator(64, 128, 2, channel_base=2048, channel_max=128).state_dict()
    cfg = generator_config_from_state_dict(sd)
    assert cfg.channels == {4: 128, 8: 128, 16: 128, 32: 64, 64: 32} and cfg.n_mlp == 2


def test_truncated_files_give_clear_errors(tmp_path, models):
    g, _ = models
    for ext in (".pt", ".safetensors"):
        path = save_checkpoint(StyleGANCheckpoint(g_ema=g), tmp_path / f"full{ext}")
        data = path.read_bytes()
        bad = tmp_path / f"truncated{ext}"
        bad.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value)


def test_other_architectures_and_unknown_formats(tmp_path, models):
    g, _ = models
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_checkpoint(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    # A classifier's weights: not a generator.
    torch.save({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match="no 'g_ema'"):
        load_checkpoint(tmp_path / "resnet.pt")
    torch.save({"g_ema": {"fc.weight": torch.zeros(10, 4)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a StyleGAN2 generator"):
        load_checkpoint(tmp_path / "other.pt")
    # A generator whose layers do not fit together (a tensor of the wrong shape, a missing key).
    sd = dict(g.state_dict())
    sd["convs.1.activate.bias"] = torch.zeros(7)
    torch.save({"g_ema": sd}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="another shape"):
        load_checkpoint(tmp_path / "wrong.pt")
    sd = dict(g.state_dict())
    del sd["convs.1.noise.weight"]
    torch.save({"g_ema": sd}, tmp_path / "missing_key.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "missing_key.pt")
    # Unsafe pickles are refused by weights_only loading.
    torch.save({"g_ema": g.state_dict(), "hook": print}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "unsafe.pt")


def test_native_file_of_another_kind_is_refused(tmp_path):
    from safetensors.torch import save_file
    save_file({"delta": torch.zeros(3)}, str(tmp_path / "direction.safetensors"),
              metadata={"format": "domain-adapt/direction"})
    with pytest.raises(CheckpointError, match="not a domain-adapt/stylegan2 checkpoint"):
        load_checkpoint(tmp_path / "direction.safetensors")
    save_file({"g_ema.x": torch.zeros(3)}, str(tmp_path / "v9.safetensors"),
              metadata={"format": "domain-adapt/stylegan2", "format_version": "9"})
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(tmp_path / "v9.safetensors")
    save_file({"g_ema.x": torch.zeros(3)}, str(tmp_path / "badcfg.safetensors"),
              metadata={"format": "domain-adapt/stylegan2", "format_version": "1",
                        "generator": json.dumps({"size": 48})})
    with pytest.raises(CheckpointError, match="invalid"):
        load_checkpoint(tmp_path / "badcfg.safetensors")


def test_atomic_save_leaves_old_file_on_failure(tmp_path, models, monkeypatch):
    g, _ = models
    path = save_checkpoint(StyleGANCheckpoint(g_ema=g), tmp_path / "m.pt")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(StyleGANCheckpoint(g_ema=g), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_native_detected_whatever_its_header_length(tmp_path, models):
    """Regression: a safetensors header length whose first byte is 0x80 (a pickle's first byte)."""
    g, _ = models
    ckpt = StyleGANCheckpoint(g_ema=g)
    for pad in range(0, 2048, 8):
        ckpt.meta = {"pad": "x" * pad}
        path = save_checkpoint(ckpt, tmp_path / "m.safetensors")
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("could not make a header length starting with 0x80")
    assert detect_format(path) == "native"
    _same_images(load_generator(path), g)


def test_official_styledomain_full_finetune_and_direction_files(tmp_path, models):
    """`models_*.pt` with model_type "original" is a generator (trained copy under "generator."); a direction file
    given where a generator is expected is refused with a pointer to --direction."""
    g, _ = models
    sd = {f"generator.{k}": v for k, v in g.state_dict().items()}
    sd.update({f"generator_frozen.{k}": torch.zeros_like(v) for k, v in g.state_dict().items()})
    torch.save({"model_type": "original", "state_dict": sd, "sg2_params": {"img_size": 32}}, tmp_path / "models_250.pt")
    _same_images(load_generator(tmp_path / "models_250.pt"), g, truncation=1.0)
    torch.save({"model_type": "parametrization", "patch_key": "s_delta",
                "state_dict": {"heads.conv_0.params_in": torch.zeros(1, 32)}}, tmp_path / "models_300.pt")
    with pytest.raises(CheckpointError, match="--direction"):
        load_generator(tmp_path / "models_300.pt")


@pytest.mark.parametrize("key", ["g_ema.style.1.weight", "g.convs.0.conv.weight", "d.convs.0.0.weight", "latent_avg"])
def test_native_hash_covers_every_tensor_and_verify_hash_false_accepts_edits(tmp_path, models, key):
    """A changed bit anywhere in the file (training generator, discriminator, truncation centre included) is
    refused naming the file; ``verify_hash=False`` loads a deliberately edited file with the edit."""
    g, d = models
    g_train = perturb_zero_inits(Generator(**TINY), seed=3)
    path = save_checkpoint(StyleGANCheckpoint(g_ema=g, g=g_train, d=d), tmp_path / "m.safetensors")
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    at = 8 + n + header[key]["data_offsets"][0]
    raw[at] ^= 1  # the lowest mantissa bit of the tensor's first float32 value
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=f"{path}: its tensors do not match the content hash it records"):
        load_checkpoint(path)
    ck = load_checkpoint(path, verify_hash=False)
    part, _, name = key.partition(".")
    edited = ck.g_ema.latent_avg if key == "latent_avg" else getattr(ck, part).state_dict()[name]
    original = g.latent_avg if key == "latent_avg" else {"g_ema": g, "g": g_train, "d": d}[part].state_dict()[name]
    assert (edited != original).sum() == 1 and edited.reshape(-1)[0] != original.reshape(-1)[0]
