"""Parameterizations: exact trainable counts (StyleDomain's tables), identity at zero, the StyleSpace
offset equals a style edit, export / import of the trained tensors, merging, strength."""
import pytest
import torch

from conftest import TINY
from gan_adapt.networks import Generator
from gan_adapt.parameterizations import PARAMETERIZATIONS, Parameterization

# (size, channel_base): counts for full, mapping, syntconv, affine, stylespace, direction, dommod, affine_plus,
# affine_light_plus
COUNTS = {
    (1024, 32768): [30_370_060, 2_101_248, 23_598_476, 4_662_144, 9_088, 6_048, 6_048, 5_187_968, 637_824],
    (512, 32768): [30_276_583, 2_101_248, 23_570_663, 4_596_480, 8_960, 5_952, 5_952, 5_122_304, 629_504],
    (256, 16384): [24_767_458, 2_101_248, 18_849_506, 3_808_512, 7_424, 4_928, 4_928, 4_005_888, 285_696],  # paper256
}


@pytest.mark.parametrize("size,base", list(COUNTS))
def test_trainable_counts_match_styledomain(size, base):
    with torch.device("meta"):
        g = Generator(size, 512, 8, channel_base=base)
    assert [Parameterization(n, g).num_trainable() for n in PARAMETERIZATIONS] == COUNTS[(size, base)]


def test_direction_sizes_at_256_config_f():
    with torch.device("meta"):
        g = Generator(256, 512, 8, channel_multiplier=2)
    assert [Parameterization(n, g).num_trainable() for n in ("direction", "dommod", "stylespace")] == [5760, 5760,
                                                                                                    8704]


@pytest.fixture
def source(tiny_generator):
    return tiny_generator.requires_grad_(False)


def _z():
    return torch.randn(3, TINY["style_dim"], generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", PARAMETERIZATIONS)
def test_starts_as_the_source_and_trains_only_its_parameters(source, name):
    p = Parameterization(name, source, block=16)
    z = _z()
    torch.testing.assert_close(p.generator.generate(z), source.generate(z), rtol=0, atol=1e-6)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    opt = torch.optim.SGD(p.trainable_parameters(), lr=0.1)
    p.generator.generate(z).square().mean().backward()
    grads = [q.grad for q in p.trainable_parameters()]
    assert all(gr is not None for gr in grads) and sum(gr.abs().sum() for gr in grads) > 0
    opt.step()
    assert (p.generator.generate(z) - source.generate(z)).abs().max() > 1e-5
    for k, v in source.state_dict().items():  # the source is never touched
        assert torch.equal(v, before[k]), k
    trainable = {id(q) for q in p.trainable_parameters()}
    assert all(not q.requires_grad for q in p.generator.parameters() if id(q) not in trainable)


def test_stylespace_offset_is_a_style_edit(source):
    p = Parameterization("stylespace", source)
    gen = torch.Generator().manual_seed(1)
    deltas = {}
    with torch.no_grad():
        for layer in source.style_layers():
            d = 0.3 * torch.randn(layer.channels, generator=gen)
            deltas[layer.name] = d
            p.generator.get_submodule(layer.name).conv.modulation.parametrizations.bias[0].offset.copy_(d)
    z = _z()
    expected = source.generate(z, style_edit=lambda layer, s: s + 0.5 * deltas[layer.name])
    p.set_strength(0.5)
    torch.testing.assert_close(p.generator.generate(z), expected, rtol=1e-5, atol=1e-5)
    p.set_strength(0.0)
    torch.testing.assert_close(p.generator.generate(z), source.generate(z), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["affine_plus", "affine_light_plus", "stylespace", "direction", "mapping"])
def test_export_import_and_merge(source, name):
    p = Parameterization(name, source, block=16)
    with torch.no_grad():
        for q in p.trainable_parameters():
            q.add_(0.05 * torch.randn_like(q))
    z = _z()
    adapted = p.generator.generate(z)
    trained = p.trained_state_dict()
    assert sum(t.numel() for t in trained.values()) == p.num_trainable()
    fresh = Parameterization(name, source, block=16)
    fresh.load_trained_state_dict(trained)
    torch.testing.assert_close(fresh.generator.generate(z), adapted)
    merged = p.merged_generator()
    assert type(merged) is Generator and set(merged.state_dict()) == set(source.state_dict())
    torch.testing.assert_close(merged.generate(z), adapted, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.generator.generate(z), adapted)  # merging leaves the parameterization intact
    with pytest.raises(ValueError, match="do not fit"):
        fresh.load_trained_state_dict({"nope": torch.zeros(1)})


def test_bad_arguments():
    g = Generator(**TINY)
    with pytest.raises(ValueError, match="unknown parameterization"):
        Parameterization("lora", g)
    with pytest.raises(ValueError, match="no block at 64px"):
        Parameterization("affine_plus", g, block=64)
