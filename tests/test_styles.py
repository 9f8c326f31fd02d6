"""The evaluation protocol's style families: held-out validation and test styles with exact ground truth."""
import pytest
import torch

from adapt_common import synthfaces as sf


@pytest.fixture(scope="module")
def faces():
    return sf.render_domain(sf.split_params("eval", 12), "photo", size=64)


def test_families_are_disjoint_and_the_test_family_spans_every_kind():
    train, val, test = (set(sf.styles_of_family(f)) for f in sf.FAMILIES)
    assert not (train & test) and not (val & test) and not (train & val)
    assert len(test) >= 8
    assert {sf.STYLE_KIND[n] for n in test} == set(sf.STYLE_KINDS)
    assert {sf.STYLE_KIND[n] for n in val} == set(sf.STYLE_KINDS)
    # held-out styles are not SynthFaces training domains: the bundled CLIP never saw them
    assert not (set(sf.HELDOUT_STYLES) & set(sf.DOMAINS))
    assert train == {n for n, d in sf.DOMAINS.items() if d.kind == "similar"}
    assert all(sf.family_of(n) == "test" for n in test) and sf.family_of("sketch") == "train"


def _gap(a, b):
    return float((a - b).abs().mean() / 2)


def test_no_test_style_renders_like_a_train_or_validation_style(faces):
    """Names could differ while the transforms alias each other; compare what they draw."""
    others = sf.styles_of_family("train") + sf.styles_of_family("validation")
    out = {n: sf.apply_domain(faces, n).clamp(-1, 1) for n in others + sf.styles_of_family("test")}
    for t in sf.styles_of_family("test"):
        assert _gap(out[t], faces) > 0.03, f"{t} hardly changes the photo"
        nearest = min(others, key=lambda o: _gap(out[t], out[o]))
        assert _gap(out[t], out[nearest]) > 0.04, f"test style {t} draws like {nearest}"
    test = sf.styles_of_family("test")
    for i, a in enumerate(test):
        for b in test[i + 1:]:
            assert _gap(out[a], out[b]) > 0.03, f"{a} and {b} are the same style"


@pytest.mark.parametrize("name", list(sf.HELDOUT_STYLES))
def test_a_held_out_style_is_a_deterministic_per_image_function(name, faces):
    batch = sf.apply_domain(faces, name)
    again = sf.apply_domain(faces, name)
    alone = torch.cat([sf.apply_domain(faces[i:i + 1], name) for i in range(3)])
    assert torch.equal(batch, again)
    assert torch.allclose(batch[:3], alone, atol=1e-4), "an image's style must not depend on the rest of the batch"
    assert batch.shape == faces.shape and batch.min() >= -1 - 1e-6 and batch.max() <= 1 + 1e-6
    # a held-out style is a similar domain everywhere a domain name is taken
    params = sf.split_params("eval", 2)
    rendered = sf.render_domain(params, name, size=64)
    assert torch.allclose(rendered, sf.apply_domain(sf.render_domain(params, "photo", 64), name).clamp(-1, 1))
    assert sf.captions(params, name)[0] != sf.captions(params, "photo")[0]
    assert sf.domain_prompt(name) == sf.HELDOUT_STYLES[name].phrases[0].format("a face")


def test_styles_look_alike_across_sizes():
    """Lengths are in 64-px units: the 128 px style, shrunk, is close to the 64 px style of the shrunk photo."""
    p = sf.split_params("eval", 4)
    big = sf.render_domain(p, "photo", size=128)
    small = torch.nn.functional.interpolate(big, size=64, mode="area")
    for name in sf.HELDOUT_STYLES:
        a = torch.nn.functional.interpolate(sf.apply_domain(big, name).clamp(-1, 1), size=64, mode="area")
        b = sf.apply_domain(small, name).clamp(-1, 1)
        # much closer to each other than to the photo (dithers and dots differ pixel by pixel, so compare blurred)
        blur = torch.nn.functional.avg_pool2d
        assert _gap(blur(a, 4), blur(b, 4)) < 0.5 * _gap(blur(b, 4), blur(small, 4)) + 0.02, name


def test_held_out_styles_are_taken_as_data_specs_and_evaluation_domains():
    from adapt_common.datasets import ImageSource
    from adapt_common.metrics.evaluate import synthfaces_domain
    src = ImageSource("synthfaces:mosaic@3", 64, quiet=True)
    p, _ = sf.fewshot_set("photo", 3, size=64)
    assert torch.allclose(src.images, sf.apply_domain(p, "mosaic").clamp(-1, 1), atol=1e-6)
    dom = synthfaces_domain("ink")
    assert dom.kind == "similar" and torch.equal(dom.transform(p), sf.apply_domain(p, "ink").clamp(-1, 1))
    with pytest.raises(ValueError, match="held-out styles"):
        ImageSource("synthfaces:no_such_style", 64, quiet=True)
