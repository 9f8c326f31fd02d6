"""The image analogy of one-shot training (adapt_common.analogy): fitted on one pair of SynthFaces faces, it carries a
known style to other faces (scored against the style's own transform, not against the analogy); before its net
trains it is the least-squares colour map exactly; the held-out half picks no training for a pair with nothing to
learn beyond colour; the one-shot trainer's loss.analogy_l1 pulls the generator towards T̂(G_A(w)); and an ensemble
of analogies is their mean pulled towards the unchanged face by the Wiener factor of their agreement."""
import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.analogy import AnalogyEnsemble, ImageAnalogy, shrinkage
from adapt_common.colour_map import ColourMap


def _faces(n, offset=0):
    return sf.eval_set("photo", n, size=32, offset=offset)[0].clamp(-1, 1)


def _error(a, b):
    return float(((a.clamp(-1, 1) - b.clamp(-1, 1)).abs() / 2).mean())


@pytest.mark.parametrize("style,closed", [("sepia", 0.25), ("sketch", 0.5)])
def test_one_pair_carries_the_style_to_other_faces(style, closed):
    """sepia (a recolouring with a vignette: position matters) and sketch (edges: no colour map can do it): the
    analogy fitted on face 0 alone reproduces the true style of 16 other faces far better than leaving them, and at
    least as well as the colour map fitted on the same pair (measured: sepia closes 0.36 of the gap, sketch 0.60,
    where the colour map closes -0.05 and 0.49)."""
    pair = _faces(1)
    others = _faces(16, offset=100)
    analogy, info = ImageAnalogy.fit(pair, sf.apply_domain(pair, style), steps=400, seed=0)
    truth = sf.apply_domain(others, style)
    with torch.no_grad():
        e_analogy = _error(analogy(others), truth)
    e_identity = _error(others, truth)
    e_cmap = _error(ColourMap.fit(pair, sf.apply_domain(pair, style))(others), truth)
    assert e_analogy < (1 - closed) * e_identity, (e_analogy, e_identity)
    assert e_analogy <= e_cmap + 1e-4, (e_analogy, e_cmap)
    assert info.holdout_best <= info.holdout_colour_map < info.holdout_identity


def test_untrained_analogy_is_the_colour_map_and_state_round_trips():
    pair = _faces(1)
    target = sf.apply_domain(pair, "thermal")
    analogy, info = ImageAnalogy.fit(pair, target, steps=0)
    assert info.steps == 0
    others = _faces(4, offset=50)
    with torch.no_grad():
        torch.testing.assert_close(analogy(others), ColourMap.fit(pair, target)(others), atol=1e-5, rtol=0)
    trained, _ = ImageAnalogy.fit(pair, target, steps=50, check_every=5, coordinates=False)
    copy = ImageAnalogy(coordinates=False)
    copy.load_state_dict(trained.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(copy(others), trained(others))


def test_a_pure_recolouring_needs_no_net_and_bad_pairs_are_refused():
    """A pair that differs by an exact recolouring (inverted, channels swapped): the colour map does it, and the
    net, whose training is chosen on the held-out half, adds no damage on other faces."""
    pair = _faces(1)
    recolour = lambda x: (1 - (x + 1) / 2).flip(1) * 2 - 1  # noqa: E731 (inverted, channels swapped)
    analogy, info = ImageAnalogy.fit(pair, recolour(pair), steps=200)
    others = _faces(8, offset=10)
    truth = recolour(others)
    e_cmap = _error(ColourMap.fit(pair, recolour(pair))(others), truth)
    with torch.no_grad():
        e_analogy = _error(analogy(others), truth)
    assert e_cmap < 0.1 * _error(others, truth)
    assert e_analogy < 1.1 * e_cmap, (e_analogy, e_cmap)
    with pytest.raises(ValueError, match="one RGB pair"):
        ImageAnalogy.fit(_faces(2), _faces(2))
    with pytest.raises(ValueError, match="one RGB pair"):
        ImageAnalogy.fit(pair, _faces(1)[:, :, :16])


def test_the_analogy_term_trains_towards_its_pseudo_targets(tiny_ckpt_clip, tmp_path):
    """loss.analogy_l1 alone (CLIP weights 0): the run writes analogy.png, keeps T̂ in its checkpoint, and the
    trained direction renders fresh latents closer to T̂(G_A(w)) (T̂ rebuilt from the checkpoint) than the source
    does; a text target is refused."""
    from adapt_common.config import load_config
    from adapt_common.loop import load_training_state
    from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig
    ckpt, clip = tiny_ckpt_clip
    run = tmp_path / "a"
    base = [f"base={ckpt}", f"loss.clip=[{clip}]", f"exp.run_dir={run}", "exp.threads=1",
            "training.parameterization=stylespace", "loss.clip_direction=0", "loss.indomain=0", "loss.analogy_l1=1",
            "training.iters=30", "training.lr=0.05", "training.warmup_iters=0", "target.image=synthfaces:thermal",
            "target.source_mean_n=4", "target.invert_steps=10", "target.invert_space=w",
            "target.invert_prompt_weight=0.2", "analogy.steps=20", "logging.n_samples=3", "evaluation.n=0"]
    tr = ClipTrainer(load_config(OneShotConfig, [], base), quiet=True)
    assert torch.equal(tr.w_ref[0, 0], tr.w_ref[0, -1])  # inverted in W
    tr.fit()
    assert (run / "analogy.png").is_file() and (run / "direction.safetensors").is_file()
    state = load_training_state(run / "checkpoint.pt")
    analogy = ImageAnalogy(degree=tr.cfg.analogy.degree, width=tr.cfg.analogy.width, depth=tr.cfg.analogy.depth)
    analogy.load_state_dict(state["analogy"])
    z = torch.randn(16, tr.source.style_dim, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        a = tr.source.generate(z)
        pseudo = analogy(a)
        assert _error(tr.param.generator.generate(z), pseudo) < 0.8 * _error(a, pseudo)
    with pytest.raises(ValueError, match="need an image target"):
        ClipTrainer(load_config(OneShotConfig, [], base[:-8] + ["target.text=a sketch of a face"]), quiet=True)


def _offset_analogy(pair, offset):
    """An analogy that adds ``offset`` to every channel (its colour map fitted on an exact shift; no net)."""
    return ImageAnalogy.fit(pair, pair + offset, steps=0)[0]


def test_shrinkage_is_the_wiener_factor_of_the_views_agreement():
    """Two analogies that shift every pixel by 0.2 and 0.4 (on the [-1, 1] scale; faces kept off the clamp): their
    mean shifts by 0.3, a change of 0.15 on the 0..1 scale, and they disagree by 0.1 there; with k = 2 the strength
    is 0.15² / (0.15² + 2 · 0.1²) = 0.529, and the ensemble adds 0.529 · 0.3 to a face. Identical views keep the
    whole change; views that change nothing give strength 0, not a division by zero."""
    pair = _faces(1) * 0.5
    probe = _faces(8, offset=30) * 0.5
    views = [_offset_analogy(pair, 0.2), _offset_analogy(pair, 0.4)]
    s = shrinkage(views, probe, k=2.0)
    assert s.signal == pytest.approx(0.15, abs=2e-3) and s.disagreement == pytest.approx(0.1, abs=2e-3)
    assert s.strength == pytest.approx(0.0225 / (0.0225 + 0.02), abs=2e-2)
    ensemble = AnalogyEnsemble(views, strength=s.strength)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(probe), probe + s.strength * 0.3, atol=3e-3, rtol=0)
    assert shrinkage([views[0], _offset_analogy(pair, 0.2)], probe, k=5.0).strength == pytest.approx(1.0, abs=1e-6)
    assert shrinkage([_offset_analogy(pair, 0.0)] * 2, probe, k=2.0).strength == 0.0
    assert shrinkage(views, probe, k=0.0).strength == 1.0
    with pytest.raises(ValueError, match="at least two"):
        shrinkage(views[:1], probe, k=1.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        AnalogyEnsemble(views, strength=1.5)
    copy = AnalogyEnsemble([ImageAnalogy(), ImageAnalogy()])
    copy.load_state_dict(ensemble.state_dict())  # the strength travels with the state
    assert float(copy.strength) == pytest.approx(s.strength)
