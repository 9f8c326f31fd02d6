"""Direction files: StyleDomain Δs and HyperDomainNet domain modulation, their algebra (mixing), files, the
official checkpoint import, transfer notes and refusals."""
import argparse
import warnings

import pytest
import torch

from conftest import TINY
from gan_adapt.adapter_files import TransferNote
from gan_adapt.directions import (Direction, DirectionFileError, DomainEdit, conv_layers, mix, official_conv_channels,
                                  parse_direction_arg)
from gan_adapt.networks import Generator
from gan_adapt.parameterizations import Parameterization


@pytest.fixture
def source(tiny_generator):
    return tiny_generator.requires_grad_(False)


def _z(n=3, seed=0):
    return torch.randn(n, TINY["style_dim"], generator=torch.Generator().manual_seed(seed))


def _trained(source, name, seed=0, scale=0.3):
    p = Parameterization(name, source)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q in p.trainable_parameters():
            q.copy_(scale * torch.randn(q.shape, generator=gen))
    return p


@pytest.mark.parametrize("name", ["direction", "stylespace", "dommod"])
def test_direction_renders_like_its_parameterization_and_alpha_zero_is_the_source(source, name, tmp_path):
    p = _trained(source, name)
    d = Direction.from_parameterization(p, domain="test")
    assert d.kind == {"direction": "s_delta", "stylespace": "s_delta", "dommod": "cin_mult"}[name]
    assert d.size == p.num_trainable() and d.with_torgb == (name == "stylespace")
    d.save_pretrained(tmp_path / "d.safetensors")
    again = Direction.from_pretrained(tmp_path / "d.safetensors").parameterization(source)  # continues as the same kind
    assert again.name == name and again.num_trainable() == p.num_trainable()
    z = _z()
    torch.testing.assert_close(DomainEdit(source, [(d, 1.0)]).generate(z), p.generator.generate(z),
                               rtol=1e-5, atol=1e-5)
    for alpha in (0.0, 0.4):
        p.set_strength(alpha)
        torch.testing.assert_close(DomainEdit(source, [(d, alpha)]).generate(z), p.generator.generate(z),
                                   rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(DomainEdit(source, [(d, 0.0)]).generate(z), source.generate(z), rtol=0, atol=0)
    assert (DomainEdit(source, [(d, 1.0)]).generate(z) - source.generate(z)).abs().max() > 1e-3


def test_domain_modulation_acts_after_demodulation(source):
    """A uniform scale of a conv's style is undone by demodulation; a uniform domain modulation is not (it
    multiplies the demodulated weight), which is what HyperDomainNet's released code does."""
    layer = conv_layers(source)[2]
    z = _z()
    scaled_style = source.generate(z, style_edit=lambda lay, s: 1.5 * s if lay.name == layer.name else s)
    torch.testing.assert_close(scaled_style, source.generate(z), rtol=1e-4, atol=1e-4)
    p = Parameterization("dommod", source)
    with torch.no_grad():
        p.generator.get_submodule(layer.name).conv.domain_modulation.params_in.fill_(0.5)
    assert (p.generator.generate(z) - source.generate(z)).abs().max() > 1e-2
    for impl in ("ref", "auto"):  # the textbook and the optimised paths agree with the modulation on
        torch.testing.assert_close(p.generator.set_impl(impl).generate(z), p.generator.set_impl("auto").generate(z),
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="cannot be merged"):
        p.merged_generator()


def test_mixing(source):
    a = Direction.from_parameterization(_trained(source, "direction", 1), domain="a")
    b = Direction.from_parameterization(_trained(source, "direction", 2), domain="b")
    m = Direction.from_parameterization(_trained(source, "dommod", 3, scale=0.2), domain="m")
    z = _z()
    torch.testing.assert_close(mix([a, b], [1, 0]).delta, a.delta)
    torch.testing.assert_close(DomainEdit(source, [(a, 1), (b, 0)]).generate(z), DomainEdit(source, [(a, 1)]).generate(z))
    ab = mix([a, b], [0.7, -0.4])
    torch.testing.assert_close(ab.delta, 0.7 * a.delta - 0.4 * b.delta)
    torch.testing.assert_close(DomainEdit(source, [(ab, 1)]).generate(z),
                               DomainEdit(source, [(a, 0.7), (b, -0.4)]).generate(z), rtol=1e-5, atol=1e-5)
    assert [x["domain"] for x in ab.meta["mixed"]] == ["a", "b"]
    # Directions of both kinds combine in one edit: the style offset and the weight multiplier together.
    both = DomainEdit(source, [(a, 1), (m, 1)]).generate(z)
    p = m.parameterization(source)
    expected = p.generator.generate(z, style_edit=DomainEdit(source, [(a, 1)]).style_edit)
    torch.testing.assert_close(both, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(DirectionFileError, match="different kinds"):
        a + m


def test_file_round_trip_dense_and_sparse(source, tmp_path):
    d = Direction.from_parameterization(_trained(source, "direction"), domain="sketch", prompt="a sketch")
    d.save_pretrained(tmp_path / "d.safetensors")
    back = Direction.from_pretrained(tmp_path / "d.safetensors")
    assert back.kind == d.kind and back.layers == d.layers and torch.equal(back.delta, d.delta)
    assert back.meta["domain"] == "sketch" and back.meta["base_generator"]["hash"] == d.meta["base_generator"]["hash"]
    assert (tmp_path / "d.safetensors.json").exists()
    s = d.sparse(0.2)
    assert int((s.delta != 0).sum()) == round(0.2 * d.size)
    kept = s.delta != 0
    assert d.delta.abs()[kept].min() >= d.delta.abs()[~kept].max()  # the largest |Δ| survive
    s.save_pretrained(tmp_path / "s.safetensors")
    assert torch.equal(Direction.from_pretrained(tmp_path / "s.safetensors").delta, s.delta)
    assert (tmp_path / "s.safetensors").stat().st_size < (tmp_path / "d.safetensors").stat().st_size
    # A direction continues training from its file.
    p = back.parameterization(source)
    z = _z()
    torch.testing.assert_close(p.generator.generate(z), DomainEdit(source, [(d, 1)]).generate(z), rtol=1e-5, atol=1e-5)


def test_refusals_and_transfer_note(source, tmp_path):
    d = Direction.from_parameterization(_trained(source, "direction"))
    other_arch = Generator(**{**TINY, "channel_max": 16})
    with pytest.raises(DirectionFileError, match="modulated layers of channels"):
        DomainEdit(other_arch, [(d, 1)])
    fine_tuned = Generator(**TINY)  # same architecture, other weights: allowed, with a note
    with pytest.warns(TransferNote, match="transfer"):
        DomainEdit(fine_tuned, [(d, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DomainEdit(source, [(d, 1)])  # its own base: silent
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DirectionFileError, match="corrupt"):
        Direction.from_pretrained(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        Direction.from_pretrained(tmp_path / "missing.safetensors")


def _official(patch_key, size=1024, shuffle=True):
    chans = official_conv_channels(size)
    gen = torch.Generator().manual_seed(0)
    shape = (lambda c: (1, c)) if patch_key == "s_delta" else (lambda c: (1, 1, c, 1, 1))
    heads = {f"heads.conv_{i}.params_in": torch.randn(shape(c), generator=gen) for i, c in enumerate(chans)}
    keys = sorted(heads) if shuffle else list(heads)  # lexicographic: conv_10 before conv_2
    return {"model_type": "parametrization", "patch_key": patch_key, "state_dict": {k: heads[k] for k in keys},
            "adaptive": False, "da_type": "td",
            "sg2_params": {"img_size": size, "latent_size": 512, "map_layers": 8, "channel_multiplier": 2,
                           "device": "cuda:0", "checkpoint_path": "pretrained/StyleGAN2/stylegan2-ffhq-config-f.pt"}}, heads


@pytest.mark.parametrize("patch_key", ["s_delta", "cin_mult"])
def test_official_checkpoint_import(tmp_path, patch_key):
    ckpt, heads = _official(patch_key)
    torch.save(ckpt, tmp_path / "models_300.pt")
    d = Direction.from_pretrained(tmp_path / "models_300.pt")
    assert d.kind == patch_key and d.size == 6048 and len(d.layers) == 17
    assert d.layers[0] == ("conv1", 512) and d.layers[-1] == ("convs.15", 32)
    vecs = d.vectors()
    torch.testing.assert_close(vecs["convs.9"], heads["heads.conv_10.params_in"].reshape(-1))  # numeric order
    with torch.device("meta"):
        g = Generator(1024, 512, 8, channel_multiplier=2)
    assert [c for _, c in d.layers] == [layer.channels for layer in conv_layers(g)]


def test_official_import_refusals(tmp_path):
    ckpt, _ = _official("s_delta")
    torch.save({**ckpt, "patch_key": "cfull_mult"}, tmp_path / "other.pt")
    with pytest.raises(DirectionFileError, match="patch_key 'cfull_mult'"):
        Direction.from_pretrained(tmp_path / "other.pt")
    torch.save({**ckpt, "sg2_params": {**ckpt["sg2_params"], "img_size": 512}}, tmp_path / "wrong_size.pt")
    with pytest.raises(DirectionFileError, match="do not match the 512px"):
        Direction.from_pretrained(tmp_path / "wrong_size.pt")
    # A pickled object other than tensors and plain values is refused, never unpickled.
    torch.save({**ckpt, "config": argparse.Namespace(a=1)}, tmp_path / "obj.pt")
    with pytest.raises(DirectionFileError, match="cannot be loaded safely"):
        Direction.from_pretrained(tmp_path / "obj.pt")


def test_parse_direction_arg():
    assert parse_direction_arg("runs/a.safetensors:0.5") == ("runs/a.safetensors", 0.5)
    assert parse_direction_arg("a.safetensors:-1") == ("a.safetensors", -1.0)
    assert parse_direction_arg("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_direction_arg("C:/dirs/a.safetensors") == ("C:/dirs/a.safetensors", 1.0)


def test_cli_generate_with_directions_and_direction_tools(source, tmp_path):
    import numpy as np

    from gan_adapt.cli import main
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
    from gan_adapt.seeds import z_from_seeds
    ckpt = save_checkpoint(StyleGANCheckpoint(g_ema=source), tmp_path / "g.safetensors")
    a = Direction.from_parameterization(_trained(source, "direction", 1), domain="a")
    a.meta["base_generator"]["hash"] = None  # as from another tool: applies with a transfer note
    a.save_pretrained(tmp_path / "a.safetensors")
    m = Direction.from_parameterization(_trained(source, "dommod", 2, scale=0.2), domain="m")
    m.save_pretrained(tmp_path / "m.safetensors")
    with pytest.warns(TransferNote, match="a.safetensors was trained on an unrecorded generator"):
        assert main(["generate", "--ckpt", str(ckpt), "--seeds", "0-1", "--outdir", str(tmp_path / "out"),
                     "--direction", f"{tmp_path / 'a.safetensors'}:0.5", "--direction",
                     str(tmp_path / "m.safetensors"), "--save-raw", str(tmp_path / "raw.npy")]) == 0
    z = z_from_seeds([0, 1], source.style_dim)
    expected = DomainEdit(source, [(a, 0.5), (m, 1.0)], check=False).generate(z)
    np.testing.assert_allclose(np.load(tmp_path / "raw.npy"), expected.numpy(), rtol=1e-4, atol=1e-5)

    assert main(["direction", "sparse", str(tmp_path / "a.safetensors"), "--keep", "0.1",
                 "--out", str(tmp_path / "a_sparse.safetensors")]) == 0
    assert Direction.from_pretrained(tmp_path / "a_sparse.safetensors").nonzero_fraction == pytest.approx(0.1, abs=0.01)
    b = Direction.from_parameterization(_trained(source, "direction", 3))
    b.save_pretrained(tmp_path / "b.safetensors")
    assert main(["direction", "mix", f"{tmp_path / 'a.safetensors'}:1", f"{tmp_path / 'b.safetensors'}:-0.5",
                 "--out", str(tmp_path / "ab.safetensors")]) == 0
    torch.testing.assert_close(Direction.from_pretrained(tmp_path / "ab.safetensors").delta, a.delta - 0.5 * b.delta)
    assert main(["direction", "mix", str(tmp_path / "a.safetensors"), str(tmp_path / "m.safetensors"),
                 "--out", str(tmp_path / "bad.safetensors")]) == 2  # different kinds: a clear error
    ckpt_official, _ = _official("s_delta", size=32)  # official layout for a 32 px config-f generator
    torch.save(ckpt_official, tmp_path / "models_250.pt")
    assert main(["direction", "import", str(tmp_path / "models_250.pt"), "--out", str(tmp_path / "o.safetensors")]) == 0
    assert Direction.from_pretrained(tmp_path / "o.safetensors").size == sum(official_conv_channels(32))
    assert main(["direction", "info", str(tmp_path / "o.safetensors")]) == 0


def test_file_sizes_at_1024(tmp_path):
    """StyleDomain's sizes: a dense 1024 direction is about 24 KB, its 20 % sparse form well under half."""
    chans = official_conv_channels(1024)
    names = ["conv1"] + [f"convs.{i}" for i in range(len(chans) - 1)]
    d = Direction("s_delta", list(zip(names, chans)), torch.randn(sum(chans)), {"domain": "x"})
    d.save_pretrained(tmp_path / "d.safetensors")
    d.sparse(0.2).save_pretrained(tmp_path / "s.safetensors")
    dense, sparse = (tmp_path / "d.safetensors").stat().st_size, (tmp_path / "s.safetensors").stat().st_size
    assert 24_192 < dense < 28_000 and sparse < 12_500, (dense, sparse)
    torch.testing.assert_close(Direction.from_pretrained(tmp_path / "s.safetensors").delta, d.sparse(0.2).delta)


def test_a_non_finite_direction_is_never_written(source, tmp_path):
    d = Direction.from_parameterization(_trained(source, "direction"))
    d.delta[3] = float("nan")
    with pytest.raises(DirectionFileError, match=r"bad\.safetensors not written: the direction has 1 NaN/infinite"):
        d.save_pretrained(tmp_path / "bad.safetensors")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="weight inf is not a finite number"):
        DomainEdit(source, [(Direction.from_parameterization(_trained(source, "direction")), float("inf"))])


def test_official_import_bounds_and_broadcast_heads(tmp_path):
    ckpt, _ = _official("s_delta", size=32)
    for sg2, message in [({"img_size": 48}, "img_size 48"), ({"img_size": 32, "channel_multiplier": -1}, "multiplier"),
                         ({"img_size": "big"}, "not an integer")]:
        torch.save({**ckpt, "sg2_params": sg2}, tmp_path / "bad.pt")
        with pytest.raises(DirectionFileError, match=message):
            Direction.from_pretrained(tmp_path / "bad.pt")
    # A head that is a stride-0 view claiming 2**40 values: its size is compared before anything is copied.
    heads = dict(ckpt["state_dict"])
    heads["heads.conv_0.params_in"] = torch.zeros(1).expand(2 ** 20, 2 ** 20)
    torch.save({**ckpt, "state_dict": heads}, tmp_path / "view.pt")
    with pytest.raises(DirectionFileError, match=r"head sizes \[1099511627776, "):
        Direction.from_pretrained(tmp_path / "view.pt")
