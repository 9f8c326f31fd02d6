"""The bundled direction library (checkpoints/directions, the app's default library): every file belongs to the
bundled generator (no transfer note), α = 0 is the source exactly, and the sketch direction moves images towards
the ground-truth sketch transform."""
import warnings
from pathlib import Path

import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.metrics.domain import domain_error
from gan_adapt.directions import Direction, DomainEdit, TransferNote
from gan_adapt.formats import load_generator

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "checkpoints" / "directions"
FILES = sorted(LIBRARY.glob("*.safetensors"))


@pytest.fixture(scope="module")
def g():
    return load_generator(ROOT / "checkpoints" / "synthfaces_stylegan2.safetensors").eval()


def test_library_is_small_and_covers_five_domains():
    import app
    assert {f.stem for f in FILES} >= {"sketch", "sepia", "negative", "popart", "pixelart"}
    assert set(app.Library().names()) == {f.stem for f in FILES}  # the app's default library
    assert app.Library(bundled=False).names() == []
    assert all(f.stat().st_size < 16 * 1024 for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_direction_belongs_to_the_bundled_generator(g, path):
    d = Direction.from_pretrained(path)
    assert d.meta["domain"] == path.stem
    z = torch.randn(2, g.style_dim, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferNote)  # same generator: no transfer note
        with torch.no_grad():
            zero = DomainEdit(g, [(d, 0.0)]).generate(z)
            one = DomainEdit(g, [(d, 1.0)]).generate(z)
            src = g.generate(z)
    assert torch.equal(zero, src)
    # a real change, not an empty file: the recipe's pull keeps as little as 0.06 of a style its two views disagree
    # on (pixel art: a mean change of 0.013 on the -1..1 scale), so the floor is well above zero but below that
    assert (one - src).abs().mean() > 0.005


def test_sketch_direction_closes_the_gap(g):
    z = torch.randn(32, g.style_dim, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        src = g.generate(z)
        out = DomainEdit(g, [(Direction.from_pretrained(LIBRARY / "sketch.safetensors"), 1.0)]).generate(z)
    err = domain_error(out, src, lambda x: sf.apply_domain(x, "sketch").clamp(-1, 1))
    assert err["gap_closed"]["pixel_l1"] > 0.3, err["gap_closed"]
