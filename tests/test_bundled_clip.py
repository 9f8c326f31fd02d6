"""The bundled SynthFaces CLIP: it loads through the same path as a real ViT-B/32 and still recognises the
domains of held-out faces."""
import warnings

import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.clip_models import BUNDLED, load_clip
from tools.train_clip import evaluate_clip


@pytest.fixture(scope="module")
def clip():
    return load_clip("synthfaces")


def test_bundled_clip_is_the_clip_package_architecture(clip):
    import clip as clip_pkg
    assert isinstance(clip.model, clip_pkg.model.CLIP)
    assert clip.input_resolution == 64 and clip.context_length == 32
    assert BUNDLED["synthfaces"].stat().st_size <= 25 * 2 ** 20
    # The package's own loader reads the file too (a plain OpenAI-format state dict).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = clip_pkg.load(str(BUNDLED["synthfaces"]), device="cpu", jit=False)
    images = sf.render(sf.sample_params(2, seed=sf.SPLITS["eval"]), "photo")
    with torch.no_grad():
        ours = clip.model.encode_image(clip.preprocess(images))
        theirs = model.encode_image(clip.preprocess(images))
    torch.testing.assert_close(ours, theirs)


def test_bundled_clip_meets_its_accuracy_on_held_out_faces(clip):
    ev = evaluate_clip(clip, per_domain=16, size=64, attribute_domains=("photo",))
    assert ev["domain_accuracy"] >= 0.93, ev["per_domain"]
    # Attributes: far better than chance on average.
    chance = sum(v["chance"] for v in ev["attribute_retrieval"].values()) / len(ev["attribute_retrieval"])
    assert ev["attribute_accuracy_mean"] >= chance + 0.25
