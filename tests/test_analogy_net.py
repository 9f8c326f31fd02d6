"""The learned image analogy (adapt_common.analogy_net): its start as the pair's colour map, its resizing, its
file, its paired training styles and its trainer (resume)."""
import json

import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.analogy_net import AnalogyNet, AnalogyNetConfig, AnalogyNetFileError
from adapt_common.colour_map import ColourMap
from adapt_common.random_styles import paired_random_styles, random_styles

BUNDLED_G = "checkpoints/synthfaces_stylegan2.safetensors"
SMALL = AnalogyNetConfig(size=16, width=4, style_dim=8)


def _pair_and_faces(size=16, n=3):
    faces = sf.eval_set("photo", n + 1, size=size)[0]
    return faces[:1], sf.apply_domain(faces[:1], "sepia"), faces[1:]


def test_untrained_net_is_the_pairs_colour_map():
    """The residual's last layer starts at zero: before training, B' is the colour map fitted by least squares on
    the example pair, for one pair and for one pair per image, batch and bound alike."""
    torch.manual_seed(0)
    net = AnalogyNet(SMALL).eval()
    a, b, faces = _pair_and_faces()
    expected = ColourMap.fit(a, b)(faces)
    with torch.no_grad():
        torch.testing.assert_close(net(a, b, faces), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(net.bind(a, b)(faces), expected, atol=1e-6, rtol=0)
        pairs = net(a.expand(3, -1, -1, -1), b.expand(3, -1, -1, -1), faces)
        torch.testing.assert_close(pairs, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="one example pair or N"):
        net(a.expand(2, -1, -1, -1), b.expand(2, -1, -1, -1), faces)


def test_only_the_change_is_resized_back():
    """At a size above the net's, the output is the full-size colour map plus the net's change resized: a constant
    change (the last layer's bias) adds exactly that constant to every full-size pixel."""
    torch.manual_seed(0)
    net = AnalogyNet(SMALL).eval()
    a, b, faces = _pair_and_faces(size=32)
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
        out = net.bind(a, b)(faces)
    expected = (ColourMap.fit(a, b)(faces) + torch.tensor([0.1, -0.2, 0.05]).view(1, 3, 1, 1)).clamp(-1, 1)
    assert out.shape == faces.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_paired_styles_share_one_draw_per_pair():
    """Both faces of a pair get the draw random_styles gives the first face (the same generator state), so one face
    twice gives one image twice, and pairs differ from one another."""
    faces = sf.eval_set("photo", 8, size=32)[0]
    first, second = faces[:4], faces[4:]
    a, b = paired_random_styles(first, second, torch.Generator().manual_seed(3), p_identity=0.25)
    torch.testing.assert_close(a, random_styles(first, torch.Generator().manual_seed(3), p_identity=0.25))
    same_a, same_b = paired_random_styles(first, first, torch.Generator().manual_seed(3), p_identity=0.25)
    assert torch.equal(same_a, same_b)
    changed = [not torch.equal(x, y) for x, y in zip(b, second)]
    assert sum(changed) >= 2  # most pairs are styled (p_identity = 0.25)
    assert not torch.equal(a[0], a[1])


def test_file_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    net = AnalogyNet(SMALL).eval()
    with torch.no_grad():
        net.out.weight.normal_(0, 0.1)  # a net whose residual is not zero
    path = net.save_pretrained(tmp_path / "a.safetensors", steps=7)
    back = AnalogyNet.from_pretrained(path)
    a, b, faces = _pair_and_faces()
    with torch.no_grad():
        assert torch.equal(back(a, b, faces), net(a, b, faces))
        assert not torch.allclose(back(a, b, faces), ColourMap.fit(a, b)(faces), atol=1e-3)
    manifest = json.loads((tmp_path / "a.safetensors.json").read_text())
    assert manifest["analogy_net"]["size"] == 16 and manifest["steps"] == 7
    with pytest.raises(AnalogyNetFileError, match="not a domain-adapt/analogy-net"):
        AnalogyNet.from_pretrained("checkpoints/synthfaces_encoder.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(AnalogyNetFileError, match="truncated or corrupt"):
        AnalogyNet.from_pretrained(bad)


def test_trainer_resumes_exactly(tmp_path):
    """6 steps in one go equal 3 steps, a stop, and --resume to 6 (bank, paired style draws, optimiser and RNG
    restored), with the bundled encoder inverting the examples; the training loss is the L1 to the true T(B)."""
    from adapt_common.config import load_config
    from adapt_common.loop import LoopHooks
    from gan_adapt.training.analogy_net import AnalogyNetTrainConfig, AnalogyNetTrainer
    common = ["exp.trainer=analogy_net", f"base={BUNDLED_G}", "data.bank=32", "training.batch=4", "net.size=16",
              "net.width=4", "net.style_dim=8", "logging.sample_every=3", "logging.checkpoint_every=3",
              "logging.log_every=1", "logging.n_samples=2", "exp.threads=1"]

    def run(folder, stop_at=None, resume=False):
        cfg = load_config(AnalogyNetTrainConfig, [], [*common, f"exp.run_dir={folder}", "training.iters=6"])
        trainer = AnalogyNetTrainer(cfg, quiet=True)
        if stop_at is not None:
            trainer.hooks = LoopHooks(should_stop=lambda: trainer.step >= stop_at)
        trainer.fit(resume=resume)
        return trainer
    straight = run(tmp_path / "a")
    assert run(tmp_path / "b", stop_at=3).step == 3
    resumed = run(tmp_path / "b", resume=True)
    assert resumed.step == 6
    for (k, p), q in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(p, q), k
    assert (tmp_path / "a" / "analogy_net.safetensors").is_file() and (tmp_path / "a" / "samples").is_dir()
    # the examples: A's source is the encoder's inversion of A', and B' is B in A's style
    source, styled_a, b, styled_b = straight.examples(straight.bank[:2], straight.bank[2:4],
                                                      torch.Generator().manual_seed(0), p_identity=0.0)
    with torch.no_grad():
        torch.testing.assert_close(source, straight.g.generate(w=straight.encoder(styled_a)).clamp(-1, 1))
    again_a, again_b = paired_random_styles(straight.bank[:2], straight.bank[2:4], torch.Generator().manual_seed(0),
                                            p_identity=0.0)
    assert torch.equal(again_a, styled_a) and torch.equal(again_b, styled_b)
    with pytest.raises(ValueError, match="data.invert=false"):
        AnalogyNetTrainer(load_config(AnalogyNetTrainConfig, [], [*common, "encoder=''"]), quiet=True)


def test_oneshot_run_uses_the_learned_analogy(tmp_path, capsys):
    """analogy.net through the CLI, with the mirror view and no pull: the target is the mean of the net's answers for
    (G(E(ref)), ref) and (G(E(mirror)), mirror), computed here from the encoder and the net; an encoder file given
    as the net is refused with what is wrong."""
    from adapt_common.config import load_config
    from gan_adapt import cli as gan_cli
    from gan_adapt.encoder import StyleEncoder
    from gan_adapt.formats import load_generator
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    torch.manual_seed(0)
    net = AnalogyNet(AnalogyNetConfig(size=64, width=4, style_dim=8)).eval()
    with torch.no_grad():
        net.out.weight.normal_(0, 0.05)
    path = net.save_pretrained(tmp_path / "net.safetensors")
    args = ["--config", "configs/oneshot_encoder.yaml", "target.image=synthfaces:scanlines/1", "training.iters=2",
            f"analogy.net={path}", "analogy.mirror=true", "analogy.shrink=0", "evaluation.n=0", "exp.threads=1",
            "logging.n_samples=2"]
    assert gan_cli.main(["train", *args, f"exp.run_dir={tmp_path / 'run'}"]) == 0
    assert f"analogy: learned ({path})" in capsys.readouterr().out
    g = load_generator(BUNDLED_G).eval()
    enc = StyleEncoder.from_pretrained("checkpoints/synthfaces_encoder.safetensors")
    ref = sf.fewshot_image("scanlines", 1, size=g.size)
    tr = ClipTrainer(load_config(OneShotConfig, ["configs/oneshot_encoder.yaml"],
                                 [*args[2:], f"exp.run_dir={tmp_path / 'r1'}"]), quiet=True)
    with torch.no_grad():
        others = g.generate(torch.randn(4, g.style_dim, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
        views = [net(g.generate(w=enc(r)).clamp(-1, 1), r, others) for r in (ref, ref.flip(-1))]
        torch.testing.assert_close(tr.analogy(others), (views[0] + views[1]) / 2, atol=1e-5, rtol=0)
        assert float((views[0] - ColourMap.fit(g.generate(w=enc(ref)).clamp(-1, 1), ref)(others)).abs().mean()) > 1e-3
    assert gan_cli.main(["train", *args, "analogy.net=checkpoints/synthfaces_encoder.safetensors",
                         f"exp.run_dir={tmp_path / 'r2'}"]) == 2
    assert "not a domain-adapt/analogy-net" in capsys.readouterr().err


def test_bundled_net_beats_the_pairs_colour_map_on_styles_it_never_saw():
    """The bundled net (trained on random procedural styles only) against the colour map fitted on the same pair,
    (the style encoder's source face, the reference), on the SynthFaces validation styles: by ground truth on 32
    generated faces it is closer on average and on at least three of the five styles."""
    from gan_adapt.encoder import StyleEncoder
    from gan_adapt.formats import load_generator
    g = load_generator(BUNDLED_G).eval()
    enc = StyleEncoder.from_pretrained("checkpoints/synthfaces_encoder.safetensors")
    net = AnalogyNet.from_pretrained("checkpoints/synthfaces_analogy_net.safetensors")
    with torch.no_grad():
        faces = g.generate(torch.randn(32, g.style_dim, generator=torch.Generator().manual_seed(11))).clamp(-1, 1)
        mine, theirs = [], []
        for style in sf.styles_of_family("validation"):
            truth = sf.apply_domain(faces, style).clamp(-1, 1)
            ref = sf.fewshot_image(style, 0, size=g.size)
            face = g.generate(w=enc(ref)).clamp(-1, 1)
            mine.append(float((net(face, ref, faces) - truth).abs().mean()))
            theirs.append(float((ColourMap.fit(face, ref)(faces) - truth).abs().mean()))
    assert sum(mine) < 0.9 * sum(theirs), (mine, theirs)
    assert sum(m < t for m, t in zip(mine, theirs)) >= 3, (mine, theirs)
