"""The optimised one-shot step (issue 21, item 3) trains what the step as first written trains: the fast ViT forward
against the clip package's (bit for bit; within rounding with the class-token-only last block), the optimised
trainer against the reference one over several steps (bit for bit; within rounding with training.fast_math), one
optimised step's gradient against a plain computation written out here, the channels-last switch leaving nothing
behind, and the benchmark's smoke run."""
import json

import pytest
import torch
import torch.nn.functional as F

from adapt_common.clip_models import tiny_clip, vit_cls_features, vit_fast_path_applies
from adapt_common.config import load_config
from adapt_common.loop import rng_state, set_rng_state
from gan_adapt.training.clip_guided import ClipTrainer, OneShotConfig, channels_last_input


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("kw,size", [(dict(width=128, layers=3, patch=8), 32), (dict(), 48)])
def test_fast_vit_forward_equals_the_package_one(kw, size):
    """Embeddings and input gradients of the fast forward against clip's own, for a 2-head 3-block ViT at its
    resolution and a 1-block one behind a resize."""
    clip = tiny_clip(1, **kw)
    assert vit_fast_path_applies(clip.model.visual)
    x = (torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    weights = torch.randn(3, clip.embed_dim, generator=torch.Generator().manual_seed(1))
    embs, grads = [], []
    for kw in (dict(), dict(fast=True), dict(cls_only_last=True)):
        emb = clip.encode_images(x, **kw)
        embs.append(emb)
        grads.append(torch.autograd.grad((emb * weights).sum(), x)[0])
    assert torch.equal(embs[1], embs[0]) and torch.equal(grads[1], grads[0])
    assert _rel(embs[2], embs[0]) < 1e-5 and _rel(grads[2], grads[0]) < 1e-5
    pre = clip.preprocess(x.detach())
    with torch.no_grad():
        assert torch.equal(vit_cls_features(clip.model.visual, pre), clip.model.encode_image(pre))


def test_fast_path_falls_back_where_it_does_not_apply():
    clip = tiny_clip(2)
    clip.model.visual.transformer.resblocks[0].attn_mask = torch.zeros(5, 5)  # a masked block: not ours to run
    assert not vit_fast_path_applies(clip.model.visual)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(clip.encode_images(x, fast=True), clip.encode_images(x))


def _cfg(tiny_ckpt_clip, run, *extra):
    ckpt, clip_path = tiny_ckpt_clip
    return load_config(OneShotConfig, [], [f"base={ckpt}", f"loss.clip=[{clip_path}]", f"exp.run_dir={run}",
                                           "exp.threads=1", "training.batch=3", "target.image=synthfaces:sketch",
                                           "target.source_mean_n=8", "training.warmup_iters=2", *extra])


@pytest.mark.parametrize("name,lr,fast_math", [("stylespace", 0.08, False), ("direction", 0.08, False),
                                               ("dommod", 0.02, False), ("full", 0.002, False),
                                               ("stylespace", 0.08, True), ("full", 0.002, True)])
def test_optimised_trainer_trains_what_the_reference_trains(tiny_ckpt_clip, tmp_path, name, lr, fast_math):
    """Six steps of each path from the same seed (style mixing on half the steps): the optimised step's trained
    tensors and losses equal the reference step's bit for bit; with training.fast_math they agree within 1e-4
    relative. ``full`` trains the mapping, so its adapted generator maps z itself (the unshared branch), and its
    trained constant input stays in its layout."""
    extra = [f"training.parameterization={name}", f"training.lr={lr}", "training.mixing=0.5"]
    ref = ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "ref", *extra), quiet=True, optimised=False)
    ref_stream = rng_state()
    new = ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "new", *extra, f"training.fast_math={fast_math}"), quiet=True)
    assert not ref.guide.fast and not ref.fast_math and new.guide.fast and new.fast_math == fast_math
    assert new._adapted_maps_like_source() == (name != "full")
    new_stream = rng_state()
    torch.testing.assert_close(new.directions[0], ref.directions[0], rtol=0 if not fast_math else 1e-5,
                               atol=0 if not fast_math else 1e-6)
    for _ in range(6):
        set_rng_state(ref_stream)
        a = ref.train_step()
        ref_stream = rng_state()
        set_rng_state(new_stream)
        b = new.train_step()
        new_stream = rng_state()
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == a[k] if not fast_math else b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    assert torch.equal(ref_stream["torch"], new_stream["torch"])  # the same draws
    before = torch.cat([p.detach().flatten() for p in ref.param.trainable_parameters()])
    after = torch.cat([p.detach().flatten() for p in new.param.trainable_parameters()])
    base = ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "base", *extra), quiet=True, optimised=False)
    start = torch.cat([p.detach().flatten() for p in base.param.trainable_parameters()])
    assert (before - start).norm() > 0
    if fast_math:
        assert float((after - before).norm() / (before - start).norm()) < 1e-4
    else:
        assert torch.equal(after, before)
    assert new.source.input.input.is_contiguous() and new.param.generator.input.input.is_contiguous()


@pytest.mark.parametrize("recipe", ["truth", "encoder"])
def test_a_recipe_without_clip_losses_skips_clip_and_trains_the_same(tiny_ckpt_clip, tiny_generator, tmp_path,
                                                                     monkeypatch, recipe):
    """Pixel losses only (the oracle's truth_l1; the encoder recipe's analogy_l1 after an encoder inversion): the
    optimised step never runs CLIP on the batch, nor G_B on the inverted reference that no term reads, and still
    trains the reference step's tensors bit for bit."""
    from gan_adapt.encoder import StyleEncoder
    extra = ["training.parameterization=stylespace", "training.lr=0.08", "loss.clip_direction=0", "loss.indomain=0"]
    if recipe == "truth":
        extra += ["loss.truth_l1=1", "target.domain=sketch"]
    else:
        enc = StyleEncoder.for_generator(tiny_generator, n_stats=200).save_pretrained(tmp_path / "enc.safetensors")
        extra += ["loss.analogy_l1=1", f"target.invert_encoder={enc}", "target.invert_prompt_weight=0",
                  "analogy.steps=0"]
    ref = ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "ref", *extra), quiet=True, optimised=False)
    ref_stream = rng_state()
    new = ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "new", *extra), quiet=True)
    new_stream = rng_state()
    assert not new.losses_read_embeddings()
    calls = {"n": 0}
    encode = type(new.guide).encode_images

    def counting(self, *a, **kw):
        calls["n"] += 1
        return encode(self, *a, **kw)
    monkeypatch.setattr(type(new.guide), "encode_images", counting)
    renders = {"n": 0}
    generate = type(new.param.generator).generate

    def counting_generate(self, *a, **kw):
        renders["n"] += 1
        return generate(self, *a, **kw)
    monkeypatch.setattr(type(new.param.generator), "generate", counting_generate)
    assert (new.w_ref is not None) == (recipe == "encoder")
    for _ in range(3):
        set_rng_state(ref_stream)
        n0, r0 = calls["n"], renders["n"]
        a = ref.train_step()
        assert calls["n"] > n0  # the step as first written embeds both batches
        assert renders["n"] - r0 == (recipe == "encoder")  # ... and renders G_B(w_ref) when there is an inversion
        ref_stream = rng_state()
        set_rng_state(new_stream)
        n0, r0 = calls["n"], renders["n"]
        b = new.train_step()
        assert calls["n"] == n0 and renders["n"] == r0  # the optimised one does neither
        new_stream = rng_state()
        assert a == b and a["truth_l1" if recipe == "truth" else "analogy_l1"] > 0
    after = torch.cat([p.detach().flatten() for p in new.param.trainable_parameters()])
    before = torch.cat([p.detach().flatten() for p in ref.param.trainable_parameters()])
    assert torch.equal(after, before) and float(after.abs().sum()) > 0


@pytest.mark.parametrize("fast_math", [False, True])
def test_one_optimised_step_has_the_gradient_of_a_plain_computation(tiny_ckpt_clip, tmp_path, fast_math):
    """The gradient one optimised step applies, against the demo's losses written out here on images from each
    generator's own forward and embeddings from clip's own encode_image."""
    tr = ClipTrainer(_cfg(tiny_ckpt_clip, tmp_path / "run", "training.parameterization=stylespace",
                          "training.mixing=1.0", "loss.indomain=0.5", "loss.clip_direction=1.0",
                          f"training.fast_math={fast_math}"), quiet=True)
    for _ in range(2):  # off zero, so that G_B differs from G_A
        tr.train_step()
    params = tr.param.trainable_parameters()
    stream = rng_state()
    batch, dim = tr.cfg.training.batch, tr.source.style_dim
    assert torch.rand(()) < 1.0  # the mixing draw
    z = list(torch.randn(2, batch, dim).unbind(0))
    inject = int(torch.randint(1, tr.source.n_latent, ()))
    clip = tr.guide.clips[0]

    def embed(images):
        return F.normalize(clip.model.encode_image(clip.preprocess(images)), dim=-1)
    with torch.no_grad():
        a = embed(tr.source(z, inject_index=inject, randomize_noise=False)[0])
    b = embed(tr.param.generator(z, inject_index=inject, randomize_noise=False)[0])
    d = F.normalize(tr.directions[0], dim=-1)
    diff = b - a
    direction = (1 - (diff @ d) / diff.norm(dim=-1).clamp_min(0.02)).mean()
    i, j = torch.triu_indices(batch, batch, 1)
    indomain = ((a @ a.t() - b @ b.t())[i, j] ** 2).mean()
    want = torch.autograd.grad(1.0 * direction + 0.5 * indomain, params)
    set_rng_state(stream)
    tr.train_step()
    got = [p.grad for p in params]
    got, want = torch.cat([g.flatten() for g in got]), torch.cat([g.flatten() for g in want])
    assert _rel(got, want) < (1e-4 if fast_math else 1e-6)


def test_channels_last_input_is_undone_and_leaves_a_trained_input_alone(tiny_generator):
    g = tiny_generator.requires_grad_(False)
    p = g.input.input
    ptr = p.data_ptr()
    z = torch.randn(2, g.style_dim)
    with torch.no_grad():
        plain = g.generate(z)
        with channels_last_input(g):
            assert p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            fast = g.generate(z)
    assert p.data_ptr() == ptr and p.is_contiguous()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    p.requires_grad_(True)
    with channels_last_input(g):
        assert p.data_ptr() == ptr
    with pytest.raises(KeyError):
        with channels_last_input(g.requires_grad_(False)):
            raise KeyError("restored on the way out")
    assert p.data_ptr() == ptr


def test_benchmark_smoke(tmp_path, capsys):
    from benchmarks import oneshot_speed
    out = tmp_path / "speed.json"
    assert oneshot_speed.main(["--steps", "2", "--chunk", "1", "--profile-steps", "1", "--json", str(out),
                               "--set", "target.source_mean_n=4", "training.batch=2"]) == 0
    res = json.loads(out.read_text())
    assert res["steps"] == 2 and set(res["paths"]) == {"reference", "optimised", "fast_math"}
    assert res["paths"]["optimised"]["direction_rel_diff"] == 0
    assert res["paths"]["fast_math"]["direction_rel_diff"] < 1e-3
    assert set(res["profile"]["optimised"]) == set(oneshot_speed.PARTS)
    assert "fast_math: steps" in capsys.readouterr().out
