"""SynthFaces: determinism, attributes, transforms on known pixels, dissimilar renderers, captions, data tools."""
import dataclasses
import importlib
import json
import math
import re

import pytest
import torch

from adapt_common import synthfaces as sf
from adapt_common.synthfaces import transforms as T
from adapt_common.synthfaces.colour import rgb_to_hsv

R = importlib.import_module("adapt_common.synthfaces.render")  # the module (``sf.render`` is the function)

SIMILAR = sf.domains_of_kind("similar")
DISTRACTOR = sf.domains_of_kind("distractor")
DISSIMILAR = sf.domains_of_kind("dissimilar")


def _upright(p, **kw):
    """Faces without pose variation (centred, upright, scale 1), plus overrides."""
    return p.replace(tilt=0.0, shift_x=0.0, shift_y=0.0, scale=1.0, **kw)


def _rows_of(y0, y1, size):
    """Pixel rows covering image y in [y0, y1] ([-1, 1], y down)."""
    return int(math.floor((y0 + 1) / 2 * size)), int(math.ceil((y1 + 1) / 2 * size))


# ---------------------------------------------------------------------------------------------- parameters

def test_param_spec_matches_faceparams():
    names = [f.name for f in dataclasses.fields(sf.FaceParams)]
    assert names[:len(sf.PARAM_SPEC)] == [s.name for s in sf.PARAM_SPEC]
    assert names[len(sf.PARAM_SPEC):] == ["stream", "index"]
    for s in sf.PARAM_SPEC:
        assert s.kind in ("continuous", "categorical") and s.doc
        if s.kind == "categorical":
            assert len(s.categories) == len(s.probs) and abs(sum(s.probs) - 1) < 1e-6
    assert len(sf.PARAM_SPEC[4].categories) >= 4  # hair styles


def test_sampling_is_prefix_stable_and_seed_deterministic():
    a = sf.sample_params(10, seed=3)
    b = sf.sample_params(2, seed=3, offset=3)
    assert a[3:5].to_dict() == b.to_dict()
    for f in dataclasses.fields(sf.FaceParams):
        assert torch.equal(getattr(a[3:5], f.name), getattr(b, f.name))
    assert sf.sample_params(10, seed=3).to_dict() == a.to_dict()
    c = sf.sample_params(10, seed=4)
    assert not torch.equal(a.smile, c.smile) and not torch.equal(a.skin_tone, c.skin_tone)
    assert len(a) == 10 and len(a[2]) == 1 and len(a[torch.tensor([0, 5, 7])]) == 3
    for s in sf.PARAM_SPEC:
        v = getattr(a, s.name)
        if s.kind == "continuous":
            assert v.dtype == torch.float32 and (v >= s.low).all() and (v <= s.high).all()
        else:
            assert v.dtype == torch.int64 and (v >= 0).all() and (v < len(s.categories)).all()


def test_sampling_distribution_roughly_matches_spec():
    p = sf.sample_params(4000, seed=0)
    for s in sf.PARAM_SPEC:
        if s.kind == "categorical":
            freq = torch.bincount(getattr(p, s.name), minlength=len(s.probs)).float() / len(p)
            assert torch.allclose(freq, torch.tensor(s.probs), atol=0.03), s.name
    assert abs(p.smile.mean().item()) < 0.05


# ---------------------------------------------------------------------------------------------- renderer

def test_render_deterministic_shape_range_and_batch_independent():
    p = sf.sample_params(12, seed=0)
    a = sf.render(p, size=64)
    assert a.shape == (12, 3, 64, 64) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, sf.render(p, size=64))
    assert torch.allclose(a[3:5], sf.render(p[3:5], size=64), atol=1e-5)  # independent of the batch
    assert torch.allclose(a[3:5], sf.render(sf.sample_params(2, seed=0, offset=3), size=64), atol=1e-5)
    b = sf.render(sf.sample_params(12, seed=1), size=64)
    assert (a - b).abs().mean() > 0.05
    assert (a[0] - a[1]).abs().mean() > 0.05  # faces differ from each other
    for size in (32, 128):
        assert sf.render(p[:2], size=size).shape == (2, 3, size, size)


def test_glasses_change_only_the_eye_region():
    p = _upright(sf.sample_params(6, seed=5), glasses="none", hat="none")
    a = sf.render(p, size=64)
    b = sf.render(p.replace(glasses="sunglasses"), size=64)
    changed = (a - b).abs().amax(1) > 1e-3  # [N, H, W]
    assert changed.flatten(1).sum(1).min() > 20  # every face gets visibly darker lenses
    # eyes are at y = HEAD_Y - 0.02 (face units = image units at scale 1); lenses reach +-0.1, temples less
    r0, r1 = _rows_of(R.HEAD_Y - 0.02 - 0.14, R.HEAD_Y - 0.02 + 0.14, 64)
    outside = changed.clone()
    outside[:, r0:r1] = False
    assert not outside.any()
    # the lenses are dark: the eye region gets darker on average
    assert b[:, :, r0:r1].mean() < a[:, :, r0:r1].mean() - 0.05


def test_hair_colour_changes_hair_pixels():
    p = _upright(sf.sample_params(6, seed=6), hair_style="short", hair_colour="black", hat="none", beard="none",
                 glasses="none")
    a = sf.render(p, size=64)
    b = sf.render(p.replace(hair_colour="blond"), size=64)
    changed = (a - b).abs().amax(1) > 1e-3
    top = _rows_of(R.HEAD_Y - 0.62, R.HEAD_Y - 0.25, 64)
    bottom = _rows_of(0.6, 1.0, 64)
    assert changed[:, top[0]:top[1]].float().mean() > 0.2  # the hair cap
    assert not changed[:, bottom[0]:].any()  # shirt untouched
    assert not changed[:, :, :4].any() and not changed[:, :, -4:].any()  # background at the sides
    assert b[:, :, top[0]:top[1]].mean() > a[:, :, top[0]:top[1]].mean() + 0.2  # blond is lighter


def test_smile_changes_the_mouth():
    p = _upright(sf.sample_params(4, seed=7), beard="none")
    a = sf.render(p.replace(smile=1.0), size=64)
    b = sf.render(p.replace(smile=-1.0), size=64)
    changed = (a - b).abs().amax(1) > 1e-3
    r0, r1 = _rows_of(R.HEAD_Y + 0.12, R.HEAD_Y + 0.42, 64)  # the mouth
    assert changed[:, r0:r1].flatten(1).sum(1).min() > 10
    r0, r1 = _rows_of(R.HEAD_Y - 0.05, R.HEAD_Y + 0.45, 64)  # mouth and cheeks (a smile blushes)
    outside = changed.clone()
    outside[:, r0:r1] = False
    assert not outside.any()


def _centroid_x(images, background):
    fg = ((images - background).abs().amax(1) > 0.02).float()  # [N, H, W]
    xs = torch.arange(images.shape[-1]).float()
    return (fg.sum(1) * xs).sum(1) / fg.sum((1, 2))


@pytest.mark.parametrize("domain", ["photo"] + DISSIMILAR)
def test_pose_shift_moves_the_figure(domain):
    p = sf.sample_params(4, seed=8).replace(tilt=0.0, hat="none")
    left, right = p.replace(shift_x=-0.1), p.replace(shift_x=0.1)
    bg = R.render_background(p, size=64)
    cl = _centroid_x(sf.render_domain(left, domain, 64), bg)
    cr = _centroid_x(sf.render_domain(right, domain, 64), bg)
    assert torch.allclose(cr - cl, torch.full_like(cl, 0.2 * 32), atol=1.5)  # 0.2 image units = 6.4 px


@pytest.mark.parametrize("domain", DISSIMILAR)
def test_dissimilar_differs_from_photo_but_keeps_pose(domain):
    p = sf.sample_params(6, seed=9)
    photo = sf.render(p, size=64)
    other = sf.render_domain(p, domain, 64)
    assert other.shape == photo.shape and other.min() >= -1 and other.max() <= 1
    assert (other - photo).abs().mean() > 0.08
    bg = R.render_background(p, size=64)
    assert torch.allclose(_centroid_x(other, bg), _centroid_x(photo, bg), atol=3.0)
    # same background (the counterpart shares everything but the subject)
    assert torch.allclose(other[:, :, :3, :3], photo[:, :, :3, :3], atol=1e-5)


# ---------------------------------------------------------------------------------------------- domains

def test_registry():
    kinds = [d.kind for d in sf.DOMAINS.values()]
    assert kinds.count("source") == 1 and sf.DOMAINS["photo"].kind == "source"
    assert len(SIMILAR) >= 8 and len(DISSIMILAR) >= 2 and len(DISTRACTOR) >= 4
    for name in ["sketch", "popart", "pixelart", "negative", "sepia", "watercolor", "zombie", "cartoon"]:
        assert sf.DOMAINS[name].kind == "similar"
    for name in ["cat", "robot"]:
        assert sf.DOMAINS[name].kind == "dissimilar"
    for name, d in sf.DOMAINS.items():
        assert d.name == name and d.description and d.phrases
        assert (d.transform is None) == (d.kind == "dissimilar")
    with pytest.raises(KeyError):
        sf.render_domain(sf.sample_params(1), "nope")


def test_every_domain_renders_and_is_deterministic():
    p = sf.sample_params(3, seed=2)
    photo = sf.render(p, size=32)
    for name in sf.DOMAINS:
        x = sf.render_domain(p, name, size=32)
        assert x.shape == (3, 3, 32, 32), name
        assert x.min() >= -1 and x.max() <= 1, name
        assert torch.equal(x, sf.render_domain(p, name, size=32)), name
        if name != "photo":
            assert (x - photo).abs().mean() > 0.01, name


def _flat(value, size=64, n=1):
    return torch.full((n, 3, size, size), float(value))


@pytest.mark.parametrize("name", SIMILAR + DISTRACTOR)
@pytest.mark.parametrize("size,batch", [(32, 1), (64, 3), (128, 1), (40, 2)])
def test_transforms_keep_shape_and_range(name, size, batch):
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    y = sf.apply_domain(x, name)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min() >= -1 and y.max() <= 1
    assert torch.equal(y, sf.apply_domain(x, name))


@pytest.mark.parametrize("name", ["sketch", "popart", "sepia", "watercolor", "zombie", "cartoon", "thermal",
                                  "pixelart"])
def test_transforms_are_differentiable(name):
    x = (sf.render(sf.sample_params(1, seed=3), size=32) * 0.9).requires_grad_(True)
    y = sf.apply_domain(x, name)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    (y * w).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_negative():
    white = _flat(1.0)
    assert torch.equal(sf.apply_domain(white, "negative"), _flat(-1.0))
    x = sf.render(sf.sample_params(2), size=32)
    assert torch.equal(sf.apply_domain(sf.apply_domain(x, "negative"), "negative"), x)


def test_sepia_is_warm_on_gray():
    gray = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    y = sf.apply_domain(gray, "sepia")
    r, g, b = y[0]
    assert (r >= g).all() and (g >= b).all()
    assert (r - b).mean() > 0.1
    # vignette: corners darker than the centre for a flat input
    f = sf.apply_domain(_flat(0.0), "sepia")[0, 0]
    assert f[0, 0] < f[32, 32] - 0.1


def test_pixelart_is_constant_within_blocks():
    x = sf.render(sf.sample_params(2, seed=4), size=64)
    y = sf.apply_domain(x, "pixelart")
    blocks = y.view(2, 3, 16, 4, 16, 4)
    assert (blocks.amax((3, 5)) == blocks.amin((3, 5))).all()
    assert len(torch.unique(y)) <= 5
    y128 = sf.apply_domain(sf.render(sf.sample_params(1, seed=4), size=128), "pixelart").view(1, 3, 16, 8, 16, 8)
    assert (y128.amax((3, 5)) == y128.amin((3, 5))).all()


@pytest.mark.parametrize("value", [-1.0, -0.3, 0.2, 1.0])
def test_sketch_of_a_flat_image_is_white_paper(value):
    y = (sf.apply_domain(_flat(value), "sketch") + 1) / 2
    assert y.min() > 0.9


def test_sketch_is_gray_on_paper():
    y = sf.apply_domain(sf.render(sf.sample_params(2, seed=1), size=64), "sketch")
    assert ((y + 1) / 2).mean() > 0.65  # mostly paper
    r, g, b = y.unbind(1)
    assert (r >= g - 1e-6).all() and (g >= b - 1e-6).all()  # off-white paper tone times a gray


def test_popart_posterises():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = sf.apply_domain(x, "popart")
    for c in range(3):
        assert len(torch.unique(y[:, c])) <= 3
    assert len(torch.unique(T.popart(x, levels=4)[:, 0])) <= 4


def test_grayscale_and_other_distractors():
    x = sf.render(sf.sample_params(2, seed=2), size=32)
    g = sf.apply_domain(x, "grayscale")
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])
    w = sf.apply_domain(x, "washed")
    assert w.std() < x.std()
    s = sf.apply_domain(x, "saturated")
    assert (s.amax(1) - s.amin(1)).mean() > (x.amax(1) - x.amin(1)).mean()
    bl = sf.apply_domain(x, "blurry")
    assert (bl[..., 1:] - bl[..., :-1]).abs().mean() < (x[..., 1:] - x[..., :-1]).abs().mean()


def test_noise_and_tint_are_deterministic_per_seed():
    x = sf.render(sf.sample_params(2, seed=2), size=32)
    seeds = torch.tensor([5, 6])
    a = sf.apply_domain(x, "noisy", seeds)
    assert torch.equal(a, sf.apply_domain(x, "noisy", seeds))
    assert torch.equal(a[1:], sf.apply_domain(x[1:], "noisy", seeds[1:]))  # per image, not per batch
    assert not torch.equal(a, sf.apply_domain(x, "noisy", torch.tensor([7, 8])))
    assert 0.03 < (a - x).std() < 0.3
    # render_domain seeds by face: a face looks the same in any batch
    p = sf.sample_params(4, seed=0)
    for name in ("noisy", "tinted"):
        full = sf.render_domain(p, name, 32)
        assert torch.allclose(full[2:], sf.render_domain(p[2:], name, 32), atol=1e-5)
    tints = set(T.tint_names(torch.arange(64)))
    assert tints == set(T.TINTS)


def _hue_deg(rgb01):
    h, s, v = rgb_to_hsv(torch.tensor(rgb01).view(1, 3, 1, 1))
    return h.item() * 360


def test_zombie_turns_skin_green_and_leaves_blue_alone():
    skin = torch.tensor([0.92, 0.72, 0.57])
    blue = torch.tensor([0.2, 0.35, 0.9])
    gray = torch.tensor([0.5, 0.5, 0.5])
    x = torch.stack([skin, blue, gray]).view(3, 3, 1, 1).expand(3, 3, 8, 8) * 2 - 1
    y = (sf.apply_domain(x, "zombie")[:, :, 4, 4] + 1) / 2
    h_in, h_out = _hue_deg(skin.tolist()), _hue_deg(y[0].tolist())
    assert h_in < 40 and 70 < h_out < 160  # orange -> green
    assert y[0, 1] > y[0, 0]  # green channel now above red
    assert torch.allclose(y[1], blue, atol=2e-3)
    assert torch.allclose(y[2], gray, atol=2e-3)
    # on a rendered face, the skin region gets greener
    p = _upright(sf.sample_params(3, seed=1), skin_tone=0.2)
    photo = sf.render(p, size=64)
    z = sf.apply_domain(photo, "zombie")
    c = slice(28, 36)
    assert (z[:, 1, c, c] - z[:, 0, c, c]).mean() > (photo[:, 1, c, c] - photo[:, 0, c, c]).mean() + 0.1


def test_cartoon_quantises_and_outlines():
    x = sf.render(sf.sample_params(2, seed=3), size=64)
    y = sf.apply_domain(x, "cartoon")
    lum = (y + 1) / 2
    assert (lum.amax(1) < 0.12).float().mean() > 0.02  # dark outlines
    assert (lum.amax(1) < 0.12).float().mean() < 0.35
    flat = sf.apply_domain(_flat(0.3), "cartoon")
    assert torch.allclose(flat, flat[..., :1, :1].expand_as(flat))  # no outline on a flat image


def test_watercolor_has_paper_margins_and_is_size_consistent():
    x = sf.render(sf.sample_params(1, seed=3), size=64)
    y = (sf.apply_domain(x, "watercolor") + 1) / 2
    assert y[0, :, 0, :].min() > 0.85 and y[0, :, :, 0].min() > 0.85  # white paper border
    small = sf.apply_domain(sf.render(sf.sample_params(1, seed=3), size=32), "watercolor")
    big = torch.nn.functional.avg_pool2d(sf.apply_domain(x, "watercolor"), 2)
    assert (small - big).abs().mean() < 0.1  # the same picture at another size


# ---------------------------------------------------------------------------------------------- captions

def test_domain_prompts():
    assert sf.domain_prompt("sketch") == "a pencil sketch of a face"
    assert sf.domain_prompt("photo") == "a photo of a face"
    assert sf.domain_prompt("cat") == "a photo of a cat"
    prompts = [sf.domain_prompt(d) for d in sf.DOMAINS]
    assert len(set(prompts)) == len(prompts)
    assert sf.attribute_prompt("glasses", "round", "sketch") == "a pencil sketch of a face with round glasses"
    assert sf.attribute_prompt("smile", "smiling") == "a photo of a smiling face"
    for d in sf.DOMAINS:
        for a, values in sf.ATTRIBUTE_VALUES.items():
            ps = [sf.attribute_prompt(a, v, d) for v in values]
            assert len(set(ps)) == len(ps), (d, a)


def test_attributes_labels():
    p = sf.sample_params(50, seed=1)
    attrs = sf.attributes(p)
    assert set(attrs) == set(sf.ATTRIBUTE_VALUES)
    for a, v in attrs.items():
        assert v.shape == (50,) and v.dtype == torch.int64
        assert (v >= 0).all() and (v < len(sf.ATTRIBUTE_VALUES[a])).all()
    smile = attrs["smile"]
    assert (p.smile[smile == 0] > 1 / 3).all() and (p.smile[smile == 2] < -1 / 3).all()


@pytest.mark.parametrize("domain", ["photo", "sketch", "tinted", "cat", "robot", "zombie"])
def test_captions_contain_the_attribute_words_of_their_face(domain):
    p = sf.sample_params(80, seed=0)
    rows = p.to_dict()
    smile_words = sf.ATTRIBUTE_VALUES["smile"]
    buckets = sf.bucket_smile(p.smile).tolist()
    seen_hair = 0
    for seed in range(3):
        caps = sf.captions(p, domain, seed=seed)
        assert caps == sf.captions(p, domain, seed=seed)
        assert caps[5:9] == sf.captions(p[5:9], domain, seed=seed)  # per face, not per batch
        for i, c in enumerate(caps):
            d = sf.DOMAINS[domain]
            assert any(c.startswith(ph.split("{")[0]) for ph in d.phrases), c
            for w in smile_words:
                if re.search(rf"\b{w}\b", c):
                    assert w == smile_words[buckets[i]], c
            for g, word in [("round", "round glasses"), ("square", "square glasses"), ("sunglasses", "sunglasses")]:
                if word in c:
                    assert rows["glasses"][i] == g, c
            if domain != "cat":
                for m in re.finditer(r"(\w+) (?:hair|afro|mohawk)\b", c):
                    if m.group(1) in sf.ATTRIBUTE_VALUES["hair_colour"]:
                        seen_hair += 1
                        assert m.group(1) == rows["hair_colour"][i], c
            if domain in ("photo", "sketch", "tinted", "zombie"):
                for m in re.finditer(r"(\w+) eyes\b", c):
                    assert m.group(1) == rows["eye_colour"][i], c
            if "top hat" in c:
                assert rows["hat"][i] == "tophat"
            if "beanie" in c:
                assert rows["hat"][i] == "beanie"
    if domain in ("photo", "sketch"):
        assert seen_hair > 20
    caps = sf.captions(p, domain)
    assert len(set(caps)) > 40  # varied
    assert caps != sf.captions(p, domain, seed=1)


def test_tinted_captions_name_the_tint():
    p = sf.sample_params(200, seed=0)
    caps = sf.captions(p, "tinted")
    tints = T.tint_names(sf.face_seeds(p))
    named = [(c, t) for c, t in zip(caps, tints) if any(f"{n}-tinted" in c or f"{n} t" in c for n in T.TINTS)]
    assert len(named) > 50
    for c, t in named:
        assert t in c


# ---------------------------------------------------------------------------------------------- data tools

def test_fewshot_sets_are_fixed_and_nested():
    x10, p10 = sf.fewshot_set("cat", 10, size=32)
    x5, p5 = sf.fewshot_set("cat", 5, size=32)
    x1, p1 = sf.fewshot_set("cat", 1, size=32)
    assert x10.shape == (10, 3, 32, 32)
    assert torch.allclose(x10[:5], x5, atol=1e-5) and torch.allclose(x5[:1], x1, atol=1e-5)
    assert p10[:5].to_dict() == p5.to_dict()
    assert torch.equal(sf.fewshot_set("cat", 5, size=32)[0], x5)
    xs, ps = sf.fewshot_set("sketch", 5, size=32)
    assert ps.to_dict() == p5.to_dict()  # the same faces in every domain
    e, pe = sf.eval_set("photo", 4, size=32)
    assert e.shape == (4, 3, 32, 32) and (pe.stream == sf.SPLITS["eval"]).all()
    assert not torch.equal(pe.smile, p10.smile[:4])


def test_export_folder(tmp_path):
    out = sf.export_folder("sketch", 5, tmp_path / "sk", size=32, split="eval")
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5
    lines = (out / "metadata.jsonl").read_text().strip().split("\n")
    assert len(lines) == 5
    rows = [json.loads(line) for line in lines]
    assert [r["file_name"] for r in rows] == [p.name for p in pngs]
    assert rows[0]["domain"] == "sketch" and rows[0]["split"] == "eval"
    assert rows[0]["params"]["hair_style"] in sf.ATTRIBUTE_VALUES["hair_style"]
    assert "sketch" in rows[0]["caption"] or "drawing" in rows[0]["caption"]
    from adapt_common.image_io import load_image
    img = load_image(pngs[2])
    ref = sf.eval_set("sketch", 3, size=32)[0][2:3]
    assert (img - ref).abs().max() < 2 / 255 + 1e-6


def test_cli_preview_info_fewshot(tmp_path, capsys):
    from adapt_common.synthfaces.__main__ import main
    out = tmp_path / "grid.png"
    assert main(["preview", "--out", str(out), "--faces", "2", "--size", "32"]) == 0
    from PIL import Image
    with Image.open(out) as im:
        w, h = im.size
    n = len(sf.DOMAINS)
    assert h == n * 34 + 2 and w > 2 * 34
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for name in list(sf.DOMAINS) + [s.name for s in sf.PARAM_SPEC]:
        assert name in text
    assert main(["fewshot", "--domain", "cat", "--shots", "1", "--out", str(tmp_path / "fs"), "--size", "32"]) == 0
    assert len(list((tmp_path / "fs").glob("*.png"))) == 1
    with pytest.raises(SystemExit):
        main(["export", "--domain", "nope", "--n", "1", "--out", str(tmp_path / "x")])


def test_params_from_uniform_is_what_sample_params_uses():
    from adapt_common.synthfaces.params import hash_uniform
    idx = torch.arange(3, 7)
    u = hash_uniform(5, idx[:, None], torch.arange(len(sf.PARAM_SPEC))[None, :])
    a, b = sf.params_from_uniform(u, stream=5, index=idx), sf.sample_params(4, seed=5, offset=3)
    assert torch.equal(sf.render(a), sf.render(b))
    with pytest.raises(ValueError, match="uniforms of shape"):
        sf.params_from_uniform(torch.rand(2, 3))
