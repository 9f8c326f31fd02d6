"""Parameterizations: exact trainable counts (StyleDomain's tables), identity at zero, the StyleSpace
offset equals a style edit, export / import of the trained tensors, merging, strength."""
import pytest
import torch

from conftest import TINY
from gan_adapt.networks import Generator
from gan_adapt.parameterizations import DIRECTION_KINDS, PARAMETERIZATIONS, SPECS, Parameterization, spec

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


# -- the spec of each parameterization ------------------------------------------------------------------------------
# The values the app and the study used before the specs existed (commit 79883b4), written out here as the contract
# the specs keep: experiments/study.py OneShotGrid.lr / .betas (beta default [0.9, 0.999]), FewShotGrid.lr_g /
# .overrides; app.py's Adapt tab: choices stylespace/direction/dommod, lr 0.02 for dommod and otherwise the lr of
# configs/oneshot_sketch_image.yaml (0.08) with the trainer's default betas [0.9, 0.999];
# parameterizations.DIRECTION_KINDS.
OLD_ONESHOT_LR = {"direction": 0.08, "stylespace": 0.08, "dommod": 0.02, "full": 0.002, "affine_plus": 0.002,
                  "affine": 0.002}
OLD_ONESHOT_BETAS = {"full": [0.0, 0.999], "affine_plus": [0.0, 0.999], "affine": [0.0, 0.999]}
OLD_DEFAULT_BETAS = [0.9, 0.999]
OLD_FEWSHOT_LR_G = {"full": 0.002, "affine_plus": 0.02, "affine_light_plus": 0.008, "stylespace": 0.02,
                    "mapping": 0.002, "affine": 0.02}
OLD_FEWSHOT_OVERRIDES = {"mapping": ["training.mapping_lr_mult=1.0"]}
OLD_DIRECTION_KINDS = {"direction": "s_delta", "stylespace": "s_delta", "dommod": "cin_mult"}


def test_every_parameterization_has_a_spec_with_the_values_used_before():
    assert list(SPECS) == list(PARAMETERIZATIONS) and all(SPECS[n].name == n for n in SPECS)
    for name, s in SPECS.items():
        assert s.trains and s.count and "\n" not in s.trains, name
        assert s.oneshot_lr == OLD_ONESHOT_LR.get(name), name
        assert list(s.oneshot_betas) == OLD_ONESHOT_BETAS.get(name, OLD_DEFAULT_BETAS), name
        assert s.fewshot_lr_g == OLD_FEWSHOT_LR_G.get(name), name
        assert list(s.fewshot_overrides) == OLD_FEWSHOT_OVERRIDES.get(name, []), name
        assert s.exports == OLD_DIRECTION_KINDS.get(name, "adapter") and s.exports_direction == (name in
                                                                                                 OLD_DIRECTION_KINDS)
    assert DIRECTION_KINDS == OLD_DIRECTION_KINDS
    with pytest.raises(ValueError, match="unknown parameterization 'lora'; choose one of full, mapping"):
        spec("lora")


def test_spec_counts_are_styledomains_and_the_exported_kind_is_what_a_direction_file_holds(source):
    """count_1024 is StyleDomain's table (COUNTS above); a spec that exports a direction gives a Direction of that
    kind, the others are refused as directions (their file is an adapter)."""
    from gan_adapt.directions import Direction
    assert [SPECS[n].count_1024 for n in PARAMETERIZATIONS] == COUNTS[(1024, 32768)]
    for name, s in SPECS.items():
        p = Parameterization(name, source, block=16)
        assert p.spec is s
        if s.exports_direction:
            assert Direction.from_parameterization(p).kind == s.exports
        else:
            with pytest.raises(ValueError, match="are directions"):
                Direction.from_parameterization(p)


def test_few_shot_lr_defaults_to_the_spec_and_an_explicit_value_wins(tiny_ckpt_clip, tmp_path):
    """An unset training.lr_g takes the parameterization's recorded few-shot rate; a config's value is kept."""
    from adapt_common.config import load_config
    from gan_adapt.parameterizations import SPECS
    from gan_adapt.training.engine import GanTrainConfig, GanTrainer
    ckpt, _ = tiny_ckpt_clip
    base = [f"base={ckpt}", "data.source=synthfaces:cat@5", f"exp.run_dir={tmp_path / 'r'}"]
    for name, expected in (("affine_plus", 0.02), ("affine_light_plus", 0.008), ("full", 0.002)):
        tr = GanTrainer(load_config(GanTrainConfig, [], base + [f"training.parameterization={name}",
                                                                "training.block=16"]), quiet=True)
        assert tr.g_opt.param_groups[0]["lr"] == pytest.approx(expected) == SPECS[name].fewshot_lr_g
    tr = GanTrainer(load_config(GanTrainConfig, [], base + ["training.parameterization=affine_plus",
                                                            "training.block=16", "training.lr_g=0.005"]), quiet=True)
    assert tr.g_opt.param_groups[0]["lr"] == pytest.approx(0.005)
    with pytest.raises(ValueError, match="set training.lr_g"):
        GanTrainer(load_config(GanTrainConfig, [], base + ["training.parameterization=dommod"]), quiet=True)
