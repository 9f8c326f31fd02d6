"""The colour-map baseline: a least-squares polynomial recolouring fitted on one pair of images."""
import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.colour_map import ColourMap


def _faces(n, offset=0):
    return sf.render_domain(sf.split_params("eval", n, offset), "photo", size=32)


def test_recovers_a_known_polynomial_recolouring_and_applies_it_to_other_images():
    """A cubic map written out by hand (not through the class) is found from one pair and carries over."""
    def truth(x):
        u = (x + 1) / 2
        r, g, b = u.unbind(1)
        out = torch.stack([0.1 + 0.5 * g * g + 0.3 * r * b, 0.9 - 0.6 * r + 0.2 * g ** 3, 0.2 + 0.7 * b * r], 1)
        return out.clamp(0, 1) * 2 - 1
    one = _faces(1)
    cmap = ColourMap.fit(one, truth(one), degree=3, ridge=0)
    others = _faces(6, offset=10)
    assert (cmap(others) - truth(others)).abs().max() < 2e-3


def test_identity_pair_gives_identity_and_style_pair_helps_only_colour_styles():
    x = _faces(1)
    assert (ColourMap.fit(x, x)(_faces(4, 5)) - _faces(4, 5)).abs().max() < 2e-2
    held = _faces(8, 20)
    # a negative is a recolouring: a fitted map comes close; an ink drawing is not: the map stays far from it
    for name, good in (("negative", True), ("ink", False)):
        cmap = ColourMap.fit(x, sf.apply_domain(x, name).clamp(-1, 1))
        truth = sf.apply_domain(held, name).clamp(-1, 1)
        gap = 1 - float((cmap(held) - truth).abs().mean() / (held - truth).abs().mean())
        assert (gap > 0.85) if good else (gap < 0.3), (name, gap)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        ColourMap.fit(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="degree"):
        ColourMap.fit(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), degree=9)
