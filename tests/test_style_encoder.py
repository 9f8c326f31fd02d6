"""The style-invariant encoder: its random-style training data, its file, its trainer (resume), and the bundled
encoder's inversions checked against SynthFaces' true source faces."""
import json

import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.random_styles import KINDS, _OPS, random_styles
from gan_adapt.encoder import EncoderConfig, EncoderFileError, StyleEncoder

BUNDLED_G = "checkpoints/synthfaces_stylegan2.safetensors"
BUNDLED_E = "checkpoints/synthfaces_encoder.safetensors"


def faces(n=6):
    return sf.eval_set("photo", n, size=32)[0]


def test_random_styles_are_per_image_seeded_and_in_range():
    x = faces(6)
    twins = torch.cat([x[:1], x[:1]])  # one face twice: each copy gets a style of its own
    a = random_styles(twins, torch.Generator().manual_seed(3), p_identity=0.0)
    assert not torch.allclose(a[0], a[1])
    b1 = random_styles(x, torch.Generator().manual_seed(7))
    b2 = random_styles(x, torch.Generator().manual_seed(7))
    c = random_styles(x, torch.Generator().manual_seed(8))
    assert torch.equal(b1, b2) and not torch.allclose(b1, c)
    assert b1.shape == x.shape and b1.min() >= -1 and b1.max() <= 1
    assert torch.equal(random_styles(x, torch.Generator().manual_seed(0), p_identity=1.0), x.clamp(-1, 1))
    with pytest.raises(ValueError, match="RGB images"):
        random_styles(x[:, :1])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_changes_the_image(kind):
    """Each kind of operation, over several draws, moves a face by a visible amount (a kind that silently returned
    its input would train an encoder on unstyled faces)."""
    u = (faces(1) + 1) / 2
    moved = [float((_OPS[kind](u, torch.Generator().manual_seed(s)) - u).abs().mean()) for s in range(8)]
    assert sum(m > 0.01 for m in moved) >= 6, moved


def _g():
    from gan_adapt.formats import load_generator
    return load_generator(BUNDLED_G).eval().requires_grad_(False)


def test_encoder_file_round_trip_and_refusals(tmp_path):
    g = _g()
    torch.manual_seed(0)
    enc = StyleEncoder.for_generator(g, n_stats=500).eval()
    w = g.get_latent(torch.randn(500, g.style_dim, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(enc.w_avg, w.mean(0), atol=1e-5) and torch.allclose(enc.w_std, w.std(0), atol=1e-5)
    path = enc.save_pretrained(tmp_path / "e.safetensors", base_generator={"hash": "not-this-one"})
    back = StyleEncoder.from_pretrained(tmp_path / "e.safetensors")
    x = faces(2)
    assert torch.equal(back(x), enc(x))
    assert json.loads((tmp_path / "e.safetensors.json").read_text())["encoder"]["style_dim"] == g.style_dim
    with pytest.warns(UserWarning, match="not on this one"):
        back.invert(g, x[:1])
    # a generator of another W size is refused with what to do
    other = StyleEncoder(EncoderConfig(style_dim=32, input_size=32))
    with pytest.raises(EncoderFileError, match="Train an encoder"):
        other.invert(g, x[:1])
    # a direction file (another kind) and a truncated file
    with pytest.raises(EncoderFileError, match="not a domain-adapt/style-encoder"):
        StyleEncoder.from_pretrained("checkpoints/directions/sketch.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(EncoderFileError, match="truncated or corrupt"):
        StyleEncoder.from_pretrained(bad)


def test_trainer_resumes_exactly(tmp_path):
    """8 steps in one go equal 4 steps, a stop, and --resume to 8 (bank, style draws, optimiser and RNG restored)."""
    from adapt_common.config import load_config
    from adapt_common.loop import LoopHooks
    from gan_adapt.training.encoder import EncoderTrainConfig, EncoderTrainer
    common = ["exp.trainer=encoder", f"base={BUNDLED_G}", "data.bank=64", "training.batch=8", "encoder.input_size=32",
              "encoder.width=8", "encoder.max_width=32", "logging.sample_every=4", "logging.checkpoint_every=4",
              "logging.log_every=2"]

    def run(folder, stop_at=None, resume=False):
        cfg = load_config(EncoderTrainConfig, [], [*common, f"exp.run_dir={folder}", "training.iters=8"])
        trainer = EncoderTrainer(cfg, quiet=True)
        if stop_at is not None:  # as the app's stop button or a killed job: a checkpoint, then --resume
            trainer.hooks = LoopHooks(should_stop=lambda: trainer.step >= stop_at)
        trainer.fit(resume=resume)
        return trainer
    straight = run(tmp_path / "a")
    assert run(tmp_path / "b", stop_at=4).step == 4
    resumed = run(tmp_path / "b", resume=True)
    assert resumed.step == 8
    for (k, p), q in zip(straight.encoder.state_dict().items(), resumed.encoder.state_dict().values()):
        assert torch.equal(p, q), k
    assert (tmp_path / "a" / "encoder.safetensors").is_file() and (tmp_path / "a" / "samples").is_dir()


def test_bundled_encoder_finds_the_true_source_face():
    """On SynthFaces faces in the validation styles (none of which the encoder trained on), the encoder's source
    face G(E(styled)) is closer to the true unstyled face, rendered by SynthFaces, than the average face is, and
    closer, over the styles, than the optimisation inversion's reconstruction (which wears the style; on dither,
    whose dots average to the source's tones, it is the closer one)."""
    from gan_adapt.inversion import invert
    g = _g()
    enc = StyleEncoder.from_pretrained(BUNDLED_E)
    n = 16
    truth, _ = sf.eval_set("photo", n, size=g.size)
    avg = g.generate(w=enc.w_avg[None]).clamp(-1, 1)

    def l1(a, b):
        return float((a.clamp(-1, 1) - b).abs().mean() / 2)
    baseline = sum(l1(avg, truth[i:i + 1]) for i in range(n)) / n
    pooled, first_two, optimised = [], [], []
    for style in sf.styles_of_family("validation"):
        styled, _ = sf.eval_set(style, n, size=g.size)
        with torch.no_grad():
            faces = g.generate(w=enc(styled))
        mine = [l1(faces[i:i + 1], truth[i:i + 1]) for i in range(n)]
        assert sum(mine) / n < baseline, (style, sum(mine) / n, baseline)
        pooled.append(sum(mine) / n)
        first_two.append(sum(mine[:2]) / 2)
        optimised.append(sum(l1(invert(g, styled[i:i + 1], steps=40).image, truth[i:i + 1]) for i in range(2)) / 2)
    assert sum(pooled) / len(pooled) < 0.85 * baseline, (pooled, baseline)
    # over the styles, further from the truth: the optimisation's reconstruction, which wears the style
    assert sum(first_two) < sum(optimised), (first_two, optimised)
    # the one-image path agrees with the batch
    torch.testing.assert_close(enc.invert(g, styled[:1]).image, faces[:1], atol=1e-5, rtol=0)


def test_oneshot_run_inverts_the_reference_with_the_encoder(tmp_path, capsys):
    """configs/oneshot_encoder.yaml through the CLI: the pair the analogy is fitted on is (G(E(reference)),
    reference), computed here independently; analogy.steps=0 and one view (no mirror image) make T̂ the colour map
    of that pair; the encoder with the source-domain prompt term is refused with what to do."""
    from adapt_common.colour_map import ColourMap
    from adapt_common.config import load_config
    from gan_adapt import cli as gan_cli
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    args = ["--config", "configs/oneshot_encoder.yaml", f"exp.run_dir={tmp_path / 'run'}",
            "target.image=synthfaces:chalkboard/1", "training.iters=2", "analogy.steps=0", "analogy.net=''",
            "analogy.mirror=false",
            "analogy.shrink=0", "evaluation.n=0",
            "exp.threads=1", "logging.n_samples=2"]
    assert gan_cli.main(["train", *args]) == 0
    assert (tmp_path / "run" / "analogy.png").is_file() and (tmp_path / "run" / "direction.safetensors").is_file()
    cfg = load_config(OneShotConfig, ["configs/oneshot_encoder.yaml"],
                      [a for a in args[2:]] + [f"exp.run_dir={tmp_path / 'run2'}"])
    tr = ClipTrainer(cfg, quiet=True)
    g, enc = _g(), StyleEncoder.from_pretrained(BUNDLED_E)
    ref = sf.fewshot_set("chalkboard", 2, size=g.size)[0][1:2]
    with torch.no_grad():
        face = g.generate(w=enc(ref)).clamp(-1, 1)
        torch.testing.assert_close(tr.inverted, face, atol=1e-5, rtol=0)
        others = g.generate(torch.randn(4, g.style_dim, generator=torch.Generator().manual_seed(5)))
        torch.testing.assert_close(tr.analogy(others), ColourMap.fit(face, ref)(others).clamp(-1, 1), atol=1e-4,
                                   rtol=0)
    assert tr.analogy_fit.steps == 0
    assert gan_cli.main(["train", *args, f"exp.run_dir={tmp_path / 'run3'}", "target.invert_prompt_weight=0.2"]) == 2
    assert "target.invert_prompt_weight=0" in capsys.readouterr().err


def test_oneshot_run_averages_the_mirror_image_and_shrinks(tmp_path, capsys):
    """analogy.mirror + analogy.shrink through the CLI, with analogy.steps=0 (each view's analogy is then its colour
    map): the target is x + s · (mean of the colour maps of (G(E(ref)), ref) and (G(E(mirror)), mirror) − x), with
    s the Wiener factor of the two maps' change and disagreement on 16 source faces, all computed here from the
    encoder and the colour map alone; the strength is logged, saved in the checkpoint and restored at --resume;
    shrink without mirror is refused with what to do."""
    from adapt_common.colour_map import ColourMap
    from adapt_common.config import load_config
    from adapt_common.loop import load_training_state
    from gan_adapt import cli as gan_cli
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    args = ["--config", "configs/oneshot_encoder.yaml", f"exp.run_dir={tmp_path / 'run'}",
            "target.image=synthfaces:scanlines/1", "training.iters=2", "analogy.steps=0", "analogy.net=''",
            "analogy.mirror=true",
            "analogy.shrink=2", "evaluation.n=0", "exp.threads=1", "logging.n_samples=2", "exp.seed=3"]
    assert gan_cli.main(["train", *args]) == 0
    assert "strength" in capsys.readouterr().out
    g, enc = _g(), StyleEncoder.from_pretrained(BUNDLED_E)
    ref = sf.fewshot_set("scanlines", 2, size=g.size)[0][1:2]
    with torch.no_grad():
        maps = [ColourMap.fit(g.generate(w=enc(r)).clamp(-1, 1), r) for r in (ref, ref.flip(-1))]
        z = torch.randn(16, g.style_dim, generator=torch.Generator().manual_seed(3))
        probe = g.generate(z).clamp(-1, 1)
        views = torch.stack([m(probe).clamp(-1, 1) for m in maps])
        signal = float((views.mean(0) - probe).abs().mean() / 2)
        disagreement = float((views[0] - views[1]).abs().mean() / 2)
        strength = signal ** 2 / (signal ** 2 + 2 * disagreement ** 2)
        assert 0.05 < strength < 0.95  # a case where the pull matters
        state = load_training_state(tmp_path / "run" / "checkpoint.pt")
        assert float(state["analogy"]["strength"]) == pytest.approx(strength, abs=2e-3)
        cfg = load_config(OneShotConfig, ["configs/oneshot_encoder.yaml"], args[2:])
        tr = ClipTrainer(cfg, quiet=True)
        tr.load_state_dict(state)
        others = g.generate(torch.randn(4, g.style_dim, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
        mean = torch.stack([m(others).clamp(-1, 1) for m in maps]).mean(0)
        torch.testing.assert_close(tr.analogy(others), (others + strength * (mean - others)).clamp(-1, 1),
                                   atol=2e-3, rtol=0)
    assert gan_cli.main(["train", *args[:-3], "analogy.mirror=false", f"exp.run_dir={tmp_path / 'r2'}"]) == 2
    assert "analogy.mirror=true" in capsys.readouterr().err


def test_oneshot_run_with_more_reference_images(tmp_path, capsys):
    """target.more_images through the CLI, with analogy.steps=0 and no mirror or pull: the target is the mean of the
    colour maps of (G(E(image)), image) over the three images, computed here from the encoder and the colour map
    alone; the direction file names every image and its hash is of the set; more images without the analogy, or
    without an image target, are refused with what to do."""
    from adapt_common.colour_map import ColourMap
    from adapt_common.config import load_config
    from gan_adapt import cli as gan_cli
    from gan_adapt.directions import Direction
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    more = "target.more_images=[synthfaces:scanlines/2,synthfaces:scanlines/3]"
    args = ["--config", "configs/oneshot_encoder.yaml", "target.image=synthfaces:scanlines/1", "training.iters=2",
            "analogy.steps=0", "analogy.net=''",
            "analogy.mirror=false", "analogy.shrink=0", "evaluation.n=0", "exp.threads=1",
            "logging.n_samples=2"]
    assert gan_cli.main(["train", *args, more, f"exp.run_dir={tmp_path / 'run'}"]) == 0
    meta = Direction.from_pretrained(tmp_path / "run" / "direction.safetensors").meta
    assert meta["more_references"] == ["synthfaces:scanlines/2", "synthfaces:scanlines/3"]
    g, enc = _g(), StyleEncoder.from_pretrained(BUNDLED_E)
    images = sf.fewshot_set("scanlines", 4, size=g.size)[0][1:4]
    cfg = load_config(OneShotConfig, ["configs/oneshot_encoder.yaml"], [*args[2:], more])
    tr = ClipTrainer(cfg, quiet=True)
    one = ClipTrainer(load_config(OneShotConfig, ["configs/oneshot_encoder.yaml"], args[2:]), quiet=True)
    assert meta["reference_hash"] == tr.reference_hash != one.reference_hash
    with torch.no_grad():
        maps = [ColourMap.fit(g.generate(w=enc(images[i:i + 1])).clamp(-1, 1), images[i:i + 1]) for i in range(3)]
        others = g.generate(torch.randn(4, g.style_dim, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
        mean = torch.stack([m(others).clamp(-1, 1) for m in maps]).mean(0)
        torch.testing.assert_close(tr.analogy(others), mean, atol=1e-4, rtol=0)
        assert float((one.analogy(others) - mean).abs().max()) > 1e-2  # one image alone is another target
    capsys.readouterr()
    assert gan_cli.main(["train", *args, more, "loss.analogy_l1=0", "loss.clip_direction=1",
                         f"exp.run_dir={tmp_path / 'r2'}"]) == 2
    assert "loss.analogy_l1 > 0" in capsys.readouterr().err
