"""One syntax for SynthFaces data specs, read by one parser (issue 19): ``synthfaces:<domain>[@<shots>][/<index>]``
for training data (adapt_common.datasets.ImageSource: the GAN and diffusion trainers, ``compare --real``) and for a
one-shot reference image (gan_adapt.training.clip_guided.reference_image); the forms the configs use keep their
meaning; malformed specs get an error saying what is wrong and how to write it."""
import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.datasets import DataSpec, DataSpecError, ImageSource, parse_data_spec
from gan_adapt.training.clip_guided import reference_image


@pytest.mark.parametrize("text,expected", [
    ("synthfaces:cat", DataSpec("synthfaces", "cat")),
    ("synthfaces:cat@10", DataSpec("synthfaces", "cat", shots=10)),
    ("synthfaces:sepia/3", DataSpec("synthfaces", "sepia", index=3)),
    ("synthfaces:sepia@10/3", DataSpec("synthfaces", "sepia", shots=10, index=3)),
    ("synthfaces:halftone@5", DataSpec("synthfaces", "halftone", shots=5)),  # a held-out style
    ("runs/my faces", DataSpec("path", path="runs/my faces")),
    ("./synthfaces:cat", DataSpec("path", path="./synthfaces:cat")),  # a folder of that name
    ("C:/data/cat@10", DataSpec("path", path="C:/data/cat@10")),
])
def test_every_form_parses_and_writes_back(text, expected):
    spec = parse_data_spec(text)
    assert spec == expected
    assert str(spec) == text and parse_data_spec(str(spec)) == spec


@pytest.mark.parametrize("text,message", [
    ("synthfaces:", r"no domain; write synthfaces:<domain>\[@<shots>\]\[/<index>\]"),
    ("synthfaces:@10", "no domain"),
    ("synthfaces:cat@", r"shots '' is not a positive integer"),
    ("synthfaces:cat@0", r"shots '0' is not a positive integer"),
    ("synthfaces:cat@ten", r"shots 'ten' is not a positive integer"),
    ("synthfaces:cat/", r"index '' is not an integer >= 0"),
    ("synthfaces:cat/-1", r"index '-1' is not an integer >= 0"),
    ("synthfaces:cat/3@10", r"not a SynthFaces data spec; .*shots before the index"),
    ("synthfaces:cat/1/2", "not a SynthFaces data spec"),
    ("synthfaces:cat@5/5", r"index 5 is outside the 5-shot set \(0..4\)"),
    ("synthfaces:oil", r"unknown SynthFaces domain 'oil' in 'synthfaces:oil'; known: .*held-out styles: .*halftone"),
])
def test_malformed_specs_are_named_with_the_fix(text, message):
    with pytest.raises(DataSpecError, match=message) as caught:
        parse_data_spec(text)
    assert repr(text) in str(caught.value) and isinstance(caught.value, ValueError)


def test_training_data_means_what_it_meant_and_takes_the_index_form():
    """ImageSource: a bare domain streams fresh faces, @shots is the fixed few-shot set (as before); the new
    /<index> is that one image. Checked against SynthFaces rendered directly."""
    ten, _ = sf.fewshot_set("cat", 10, size=32)
    assert ImageSource("synthfaces:cat", 32, quiet=True).images is None
    assert torch.equal(ImageSource("synthfaces:cat@10", 32, quiet=True).images, ten)
    for text in ("synthfaces:cat/3", "synthfaces:cat@10/3"):
        one = ImageSource(text, 32, quiet=True)
        assert one.domain == "cat" and len(one) == 1, text
        torch.testing.assert_close(one.images, ten[3:4], rtol=0, atol=1e-6)  # a batch of 4 or 10: round-off
        assert torch.equal(one.batch(5, 2), one.images.expand(2, -1, -1, -1))  # every draw is that image
    with pytest.raises(ValueError, match=r"shots 'x' is not a positive integer; write synthfaces:<domain>"):
        ImageSource("synthfaces:cat@x", 32, quiet=True)


def test_a_reference_image_is_read_with_the_same_syntax():
    """reference_image: synthfaces:<domain> is the first few-shot face and /<index> that face, rendered as before
    (bit for bit); @<shots>/<index> is accepted too and names the same face (the sets are prefixes of one stream;
    rendered in a batch of another size, the pixels may differ by float round-off)."""
    first, _ = sf.fewshot_set("sepia", 1, size=32)
    four, _ = sf.fewshot_set("sepia", 4, size=32)
    assert torch.equal(reference_image("synthfaces:sepia", 32)[0], first)
    assert torch.equal(reference_image("synthfaces:sepia/3", 32)[0], four[3:4])
    for text in ("synthfaces:sepia@5/3", "synthfaces:sepia@10/3"):
        torch.testing.assert_close(reference_image(text, 32)[0], four[3:4], rtol=0, atol=1e-6)
    held_out, _ = sf.fewshot_set("halftone", 1, size=32)
    assert torch.equal(reference_image("synthfaces:halftone", 32)[0], held_out)
    with pytest.raises(ValueError, match=r"index 7 is outside the 5-shot set"):
        reference_image("synthfaces:sepia@5/7", 32)
    import warnings
    with warnings.catch_warnings():  # one face by its index is not a non-standard shots setting: no warning
        warnings.simplefilter("error")
        assert torch.equal(reference_image("synthfaces:sepia/3", 32)[0], four[3:4])
    with pytest.warns(UserWarning, match="4 shots"):  # a shots setting of one's own still warns
        reference_image("synthfaces:sepia@4/3", 32)


def test_the_target_domain_comes_from_the_parsed_spec():
    from adapt_common.config import load_config
    from gan_adapt.training.clip_guided import OneShotConfig, target_domain
    for text in ("synthfaces:sepia", "synthfaces:sepia/3", "synthfaces:sepia@10/3", "synthfaces:sepia@10"):
        assert target_domain(load_config(OneShotConfig, [], [f"target.image={text}"]).target) == "sepia", text
    with pytest.raises(ValueError, match="unknown SynthFaces domain 'sepai'"):
        target_domain(load_config(OneShotConfig, [], ["target.image=synthfaces:sepai/3"]).target)


def test_a_malformed_spec_at_the_command_line_is_one_error_line(tmp_path, tiny_generator, capsys):
    from gan_adapt.cli import main
    from gan_adapt.formats import StyleGANCheckpoint, save_checkpoint
    ckpt = save_checkpoint(StyleGANCheckpoint(g_ema=tiny_generator), tmp_path / "g.safetensors")
    capsys.readouterr()
    rc = main(["compare", "--ckpt", str(ckpt), "--row", "", "--real", "synthfaces:cat/3@10", "--seeds", "0",
               "--out", str(tmp_path / "grid.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "'synthfaces:cat/3@10': not a SynthFaces data spec" in err and "Traceback" not in err
    assert main(["compare", "--ckpt", str(ckpt), "--row", "", "--real", "synthfaces:cat@10/3", "--seeds", "0",
                 "--out", str(tmp_path / "grid.png")]) == 0
