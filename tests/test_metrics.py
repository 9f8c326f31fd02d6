"""adapt_common.metrics: FID/KID, intra-cluster diversity, CLIP scores, SynthFaces domain metrics, evaluate."""
import importlib
import json
import urllib.request

import numpy as np
import pytest
import torch

from adapt_common.metrics import (ClipFeatures, EvalDomain, FeatureCosineDistance, InceptionFeatures,
                                  InceptionWeightsMissing, LpipsDistance, LpipsWeightsMissing, clip_diversity,
                                  clip_quality, domain_accuracy, domain_error, evaluate, feature_extractor, fid,
                                  frechet_distance, intra_cluster_lpips, kid)
from adapt_common.metrics.diversity import distance_metric
from adapt_common.metrics.features import ALEXNET_FILE, INCEPTION_FILE


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty $TORCH_HOME, and any download attempt fails the test."""
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_download(*a, **k):
        raise AssertionError(f"attempted a download: {a} {k}")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    return home / "hub" / "checkpoints"


class PixelFeatures:
    """A stand-in extractor: the flattened pixels."""
    name = "pixels"

    def __call__(self, images):
        return images.flatten(1).double().numpy()


# ---------------------------------------------------------------------------------------------------------
# FID / KID

def test_frechet_distance_closed_form():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance(np.zeros(1), np.eye(1) * 4, np.full(1, 3.0), np.eye(1) * 9) == pytest.approx(10.0)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    rng = np.random.RandomState(0)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.randn(6), rng.randn(6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-6)
    # singular covariances (fewer samples than dimensions) give a finite, non-negative value
    a, b = rng.randn(10, 32), rng.randn(10, 32)
    assert 0 <= fid(a, b) < np.inf


def test_fid_zero_for_itself_and_monotone_in_shift():
    rng = np.random.RandomState(1)
    a = rng.randn(400, 16)
    assert abs(fid(a, a)) < 1e-8
    b = rng.randn(400, 16)
    values = [fid(a, b + s) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(values, values[1:]))
    assert values[-1] == pytest.approx(16 * 4, rel=0.1)


def test_kid_near_zero_for_same_distribution_positive_otherwise():
    rng = np.random.RandomState(2)
    a, b = rng.randn(300, 16), rng.randn(300, 16)
    same = kid(a, b, subsets=20, subset_size=100, seed=0)
    diff = kid(a, b * 1.5 + 0.5, subsets=20, subset_size=100, seed=0)
    assert abs(same["mean"]) < 0.02 and same["subset_size"] == 100
    assert diff["mean"] > 0.2 and diff["mean"] > 10 * abs(same["mean"])
    assert kid(a, b, subsets=20, subset_size=100, seed=0) == same  # seeded
    assert kid(a[:50], b, subsets=3, subset_size=1000)["subset_size"] == 25  # half the smaller set


def _covariance_pair(rng, d):
    """Two full symmetric positive-definite matrices with eigenvalues 0.01 .. 100, the second's in reverse order
    along random axes: far from commuting, so (S1 S2)^½ is far from S1^½ S2^½."""
    ev = np.geomspace(0.01, 100, d)
    q1, _ = np.linalg.qr(rng.randn(d, d))
    q2, _ = np.linalg.qr(rng.randn(d, d))
    return (q1 * ev) @ q1.T, (q2 * ev[::-1]) @ q2.T


def test_frechet_distance_with_full_covariances_against_scipy_sqrtm():
    """Non-diagonal covariances that do not commute: Tr((S1 S2)^½) differs from Tr(S1^½ S2^½) here, so a cross
    term taken as the product of the two square roots (right only when they commute) shows."""
    from scipy import linalg
    rng = np.random.RandomState(7)
    for d in (2, 5, 12):
        s1, s2 = _covariance_pair(rng, d)
        mu1, mu2 = rng.randn(d), rng.randn(d)
        assert not np.allclose(s1 @ s2, s2 @ s1)
        cross = np.trace(linalg.sqrtm(s1 @ s2)).real
        # the fallback route's identity: (S1 S2)^½ has the eigenvalues of S1^½ S2 S1^½, whose root scipy takes too
        r1 = linalg.sqrtm(s1).real
        assert cross == pytest.approx(np.trace(linalg.sqrtm(r1 @ s2 @ r1).real), rel=1e-8)
        wrong = np.trace(r1 @ linalg.sqrtm(s2).real)
        assert abs(cross - wrong) > 0.05 * abs(cross)  # the two really differ for these matrices
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8, abs=1e-10)
    # and through fid() on samples: the covariances are np.cov's (unbiased), the means the sample means
    a, b = rng.randn(300, 6) @ rng.randn(6, 6), rng.randn(250, 6) @ rng.randn(6, 6) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert fid(a, b) == pytest.approx(expected, rel=1e-8)


def _mmd2_unbiased_cubic(x, y):
    """The unbiased MMD² estimator with k(x, y) = (x·y/d + 1)³, written out pair by pair."""
    d = x.shape[1]

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1) ** 3
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(u, v) for u in x for v in y) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_against_the_closed_form_unbiased_mmd():
    """Each subset's estimate is unbiased for the whole sets' U-statistic (every pair is equally likely to be
    drawn), so the mean over many subsets must meet the closed form within a few standard errors; a degree-2
    kernel (or a biased estimator) lands far outside."""
    rng = np.random.RandomState(1)
    x, y = rng.randn(8, 3) * 1.5, rng.randn(8, 3) + 1.5
    exact = _mmd2_unbiased_cubic(x, y)
    r = kid(x, y, subsets=4000, subset_size=4, seed=1)
    assert r["subset_size"] == 4 and r["subsets"] == 4000
    stderr = r["std"] / np.sqrt(r["subsets"])
    assert abs(r["mean"] - exact) < 4 * stderr, (r["mean"], exact, stderr)
    # the bar is tight enough to tell kernels apart: the quadratic kernel's value is many standard errors away
    d = x.shape[1]
    quad = lambda u, v: (u @ v.T / d + 1) ** 2  # noqa: E731
    kxx, kyy, kxy = quad(x, x), quad(y, y), quad(x, y)
    exact2 = (kxx.sum() - np.trace(kxx)) / 56 + (kyy.sum() - np.trace(kyy)) / 56 - 2 * kxy.mean()
    assert abs(exact2 - exact) > 20 * stderr


def test_kid_spread_is_real_for_a_few_hundred_samples():
    """With n <= subset_size, subsets as large as the set would all be the set itself: a '±' of exactly 0."""
    rng = np.random.RandomState(4)
    a, b = rng.randn(200, 8), rng.randn(200, 8) + 0.3
    r = kid(a, b, subsets=50, seed=0)  # the default subset_size (1000) is larger than the sets
    assert r["subset_size"] < 200
    assert r["std"] > 0.01 * abs(r["mean"]) and r["std"] > 0


# ---------------------------------------------------------------------------------------------------------
# Intra-cluster diversity

def _train_and_generated():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    copies = train[1:2].repeat(12, 1, 1, 1)
    varied = (train.repeat(3, 1, 1, 1) + 0.5 * torch.randn(12, 3, 32, 32, generator=g)).clamp(-1, 1)
    return train, copies, varied


def test_intra_cluster_zero_for_copies_larger_for_varied(no_weights):
    train, copies, varied = _train_and_generated()
    r0 = intra_cluster_lpips(copies, train, metric="auto", features=PixelFeatures())
    assert r0["metric"] == "cosine:pixels" and r0["value"] == pytest.approx(0, abs=1e-9)
    assert r0["n_clusters_used"] == 1 and r0["cluster_sizes"] == [0, 12, 0, 0]
    r1 = intra_cluster_lpips(varied, train, metric="features", features=PixelFeatures())
    assert r1["value"] > 0.05 and r1["n_clusters_used"] >= 2


def test_lpips_never_downloads(no_weights):
    train, copies, varied = _train_and_generated()
    with pytest.raises(LpipsWeightsMissing, match=ALEXNET_FILE):
        distance_metric("lpips")
    with pytest.raises(ValueError, match="no feature extractor"):
        distance_metric("auto")
    assert isinstance(distance_metric("auto", PixelFeatures()), FeatureCosineDistance)
    # with a (random) AlexNet file where torchvision caches it, the real LPIPS is built from it, offline
    from torchvision.models import alexnet
    trunk = {k: v for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save(trunk, no_weights / ALEXNET_FILE)  # LPIPS reads only the conv trunk of the 233 MB file
    m = distance_metric("auto", PixelFeatures())
    assert isinstance(m, LpipsDistance) and m.name == "lpips-alex(v0.1)"
    r0 = intra_cluster_lpips(copies, train, metric=m)
    r1 = intra_cluster_lpips(varied, train, metric=m)
    assert r0["value"] == pytest.approx(0, abs=1e-6) and r1["value"] > r0["value"]


# ---------------------------------------------------------------------------------------------------------
# CLIP scores and domain metrics

def test_clip_quality_and_diversity_on_hand_built_embeddings():
    eye = torch.eye(4)
    assert clip_diversity(eye) == pytest.approx(1.0)
    assert clip_diversity(eye[:1].repeat(5, 1)) == pytest.approx(0.0, abs=1e-12)
    assert clip_diversity(torch.tensor([[1.0, 0], [-1.0, 0]])) == pytest.approx(2.0)
    assert clip_quality(eye[:1].repeat(3, 1), eye[0]) == pytest.approx(1.0)
    assert clip_quality(eye, eye[0]) == pytest.approx(0.25)
    # templates: the cosine averaged over template embeddings
    assert clip_quality(eye[:1], torch.stack([eye[0], eye[1]])) == pytest.approx(0.5)
    assert clip_quality(3 * eye[:1], 2 * eye[0]) == pytest.approx(1.0)  # inputs are normalised


def test_domain_error_ground_truth_and_identity_baseline():
    g = torch.Generator().manual_seed(0)
    source = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    transform = lambda x: -x  # noqa: E731 - a "negative" domain
    exact = domain_error(transform(source), source, transform, PixelFeatures())
    for k in ("pixel_l1", "pixel_mse", "pixel_rmse", "feature"):
        assert exact[k] == pytest.approx(0, abs=1e-12)
        assert exact["gap_closed"][k] == pytest.approx(1)
    assert exact["feature_extractor"] == "pixels"
    # doing nothing: target == source gives exactly the identity baseline
    none = domain_error(source, source, transform, PixelFeatures())
    for k in ("pixel_l1", "pixel_rmse", "feature"):
        assert none[k] == pytest.approx(none["identity_baseline"][k])
        assert none["gap_closed"][k] == pytest.approx(0, abs=1e-12)
    # pixel L1 on the 0..1 scale: |x - (-x)| / 2 = |x|
    assert none["pixel_l1"] == pytest.approx(float(source.abs().mean()))
    half = domain_error(torch.zeros_like(source), source, transform)
    assert 0 < half["pixel_l1"] < none["pixel_l1"] and "feature" not in half
    # per image: |x| averaged over each image's own pixels (zeros against -x), and the mean of those is the summary
    per = half["per_image"]
    assert per["pixel_l1"] == pytest.approx(((source / 2).abs().mean((1, 2, 3))).tolist(), abs=1e-6)
    assert per["identity_l1"] == pytest.approx(source.abs().mean((1, 2, 3)).tolist(), abs=1e-6)
    assert np.mean(per["pixel_l1"]) == pytest.approx(half["pixel_l1"], abs=1e-6)


def test_domain_accuracy_with_hand_built_embeddings(monkeypatch):
    from adapt_common.clip_models import tiny_clip
    clip = tiny_clip(0)
    text = {"photo of a face": [1.0, 0, 0], "sketch of a face": [0, 1.0, 0], "negative of a face": [0, 0, 1.0]}
    monkeypatch.setattr(clip, "encode_texts", lambda texts: torch.tensor([text[t] for t in texts]))
    # the image "embedding" is its mean colour per channel
    monkeypatch.setattr(clip, "encode_images", lambda im: torch.nn.functional.normalize(im.mean((2, 3)), dim=-1))
    images = torch.zeros(10, 3, 8, 8)
    images[:7, 1] = 1  # 7 look like sketches
    images[7:9, 0] = 1  # 2 like photos
    images[9:, 2] = 1  # 1 like a negative
    names = ["photo", "sketch", "negative"]
    r = domain_accuracy(clip, images, names, list(text), target="sketch")
    assert r["accuracy"] == pytest.approx(0.7)
    assert r["counts"] == {"photo": 2, "sketch": 7, "negative": 1} and r["n"] == 10
    labels = ["sketch"] * 8 + ["photo"] * 2
    r2 = domain_accuracy(clip, images, names, list(text), labels=labels)
    assert r2["confusion"]["sketch"] == {"photo": 1, "sketch": 7, "negative": 0}
    assert r2["confusion"]["photo"] == {"photo": 1, "sketch": 0, "negative": 1}
    assert r2["accuracy"] == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------------------
# Feature extractors

def test_inception_without_weights_names_the_missing_file(no_weights, tmp_path):
    with pytest.raises(InceptionWeightsMissing, match=INCEPTION_FILE):
        InceptionFeatures()
    with pytest.raises(InceptionWeightsMissing, match="nothere.pth"):
        InceptionFeatures(tmp_path / "nothere.pth")
    with pytest.raises(InceptionWeightsMissing):
        feature_extractor("inception")
    from adapt_common.clip_models import tiny_clip
    f = feature_extractor("auto", tiny_clip(0))
    assert isinstance(f, ClipFeatures) and f.name == "clip:tiny-0"
    out = f(torch.zeros(3, 3, 32, 32))
    assert out.dtype == np.float64 and out.shape == (3, 64)
    assert np.allclose(np.linalg.norm(out, axis=1), 1)


def test_inception_from_a_local_file(no_weights):
    from torchvision.models import inception_v3
    path = no_weights / INCEPTION_FILE
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    try:
        f = feature_extractor("auto")
        assert isinstance(f, InceptionFeatures) and f.name == "inception-v3(torchvision)"
        out = f(torch.rand(3, 3, 40, 40) * 2 - 1)
        assert out.shape == (3, 2048) and out.dtype == np.float64 and np.isfinite(out).all()
    finally:
        path.unlink()  # 100 MB


# ---------------------------------------------------------------------------------------------------------
# evaluate

def _stub_domain(kind="similar"):
    transform = lambda x: -x  # noqa: E731

    def world(n, size, offset=0):
        g = torch.Generator().manual_seed(100 + offset)
        return (torch.rand(n, 3, size, size, generator=g) * 2 - 1) * 0.8

    return EvalDomain(name="negative", kind=kind, prompt="a negative of a face",
                      eval_images=lambda n, size: transform(world(n, size, 1)),
                      shot_images=lambda size: transform(world(10, size, 2)),
                      transform=transform if kind == "similar" else None,
                      all_prompts={"photo": "a photo of a face", "negative": "a negative of a face",
                                   "sketch": "a sketch of a face"})


def test_evaluate_end_to_end(tmp_path, no_weights, tiny_generator):
    from adapt_common.clip_models import tiny_clip
    from adapt_common.metrics import gan_sampler
    make_batch, sample = gan_sampler(tiny_generator)
    report = evaluate(lambda z: -sample(z), _stub_domain(), sample_source=sample, make_batch=make_batch, n=12,
                      batch=5, clip=tiny_clip(0), out_dir=tmp_path / "ev", seed=3, kid_subsets=5,
                      settings={"ckpt": "tiny"}, quiet=True)
    on_disk = json.loads((tmp_path / "ev" / "report.json").read_text())
    for key in ("fid", "kid", "intra_cluster_diversity", "clip_quality", "clip_diversity", "domain_accuracy",
                "domain_error", "source", "reference", "settings", "domain"):
        assert key in on_disk, key
    s = on_disk["settings"]
    assert s["n"] == 12 and s["seeds"] == "3-14" and s["feature_extractor"] == "clip:tiny-0"
    assert s["clip"] == "tiny-0" and s["template_set"] == "prompt-only" and s["image_size"] == 32
    assert s["ckpt"] == "tiny" and s["diversity_metric"] == "cosine:clip:tiny-0" and s["n_shots"] == 10
    # the target is exactly T(source): zero domain error, the whole gap closed; reference == target scores
    de = on_disk["domain_error"]
    assert de["pixel_l1"] == pytest.approx(0, abs=1e-7) and de["identity_baseline"]["pixel_l1"] > 0.05
    assert de["gap_closed"]["pixel_l1"] == pytest.approx(1)
    assert on_disk["reference"]["fid"] == pytest.approx(on_disk["fid"], rel=1e-6, abs=1e-9)
    assert sum(on_disk["domain_accuracy"]["counts"].values()) == 12
    assert report["files"]["samples"].endswith("samples.png")
    from PIL import Image
    with Image.open(tmp_path / "ev" / "samples.png") as im:  # 3 rows (source / target / T(source)) of 8
        assert im.size == (8 * 34 + 2, 3 * 34 + 2)
    # without a source sampler: no domain error, a one-row grid
    r2 = evaluate(sample, _stub_domain("dissimilar"), make_batch=make_batch, n=6, batch=6, clip=tiny_clip(0),
                  out_dir=tmp_path / "ev2", kid_subsets=2, quiet=True)
    assert r2["domain_error"] is None and "source" not in r2 and r2["domain"]["kind"] == "dissimilar"


def test_evaluate_cli(tmp_path, no_weights, monkeypatch):
    from adapt_common import clip_models
    ev_mod = importlib.import_module("adapt_common.metrics.evaluate")  # the package's `evaluate` is the function
    from gan_adapt.cli import main
    ckpt = tmp_path / "g.pt"
    assert main(["init", "--out", str(ckpt), "--size", "32", "--style-dim", "32", "--n-mlp", "2",
                 "--channel-base", "256", "--channel-max", "32"]) == 0
    monkeypatch.setattr(clip_models, "load_clip", lambda name, device="cpu": clip_models.tiny_clip(0))
    monkeypatch.setattr(ev_mod, "synthfaces_domain", lambda name, **kw: _stub_domain())
    out = tmp_path / "cli"
    assert main(["evaluate", "--ckpt", str(ckpt), "--domain", "negative", "--clip", "tiny", "--n", "8",
                 "--batch", "4", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    # the source defaults to the checkpoint itself: the domain error is the identity baseline
    assert rep["settings"]["source_is_target"] is True and rep["settings"]["truncation"] == 1.0
    assert rep["domain_error"]["gap_closed"]["pixel_l1"] == pytest.approx(0, abs=1e-9)
    assert (out / "samples.png").exists()
    assert rep["settings"]["seeds"] == "0-7" and rep["settings"]["split"] == "validation"
    # --split test: latents from TEST_START, and the domain's eval images from that index
    asked = []
    monkeypatch.setattr(ev_mod, "synthfaces_domain", lambda name, **kw: asked.append(kw) or _stub_domain())
    assert main(["evaluate", "--ckpt", str(ckpt), "--domain", "negative", "--clip", "tiny", "--n", "8",
                 "--batch", "4", "--split", "test", "--out", str(tmp_path / "test")]) == 0
    rep = json.loads((tmp_path / "test" / "report.json").read_text())
    assert rep["settings"]["seeds"] == "100000-100007" and rep["settings"]["split"] == "test"
    assert asked == [{"eval_offset": 100000}]


def test_synthfaces_domain():
    from adapt_common import synthfaces as sf
    from adapt_common.metrics import synthfaces_domain
    similar = [n for n, d in sf.DOMAINS.items() if d.kind == "similar"]
    assert similar, "SynthFaces has no similar domain"
    dom = synthfaces_domain(similar[0])
    assert dom.kind == "similar" and callable(dom.transform) and dom.prompt
    ev = dom.eval_images(4, 32)
    shots = dom.shot_images(32)
    assert ev.shape == (4, 3, 32, 32) and shots.shape == (10, 3, 32, 32)
    assert set(dom.all_prompts) == set(sf.DOMAINS)
    src = [n for n, d in sf.DOMAINS.items() if d.kind == "source"]
    assert src, "SynthFaces has no source domain"
    faces = sf.render_domain(sf.sample_params(2, seed=0), src[0], size=32)
    assert dom.transform(faces).shape == faces.shape


def test_domain_error_scores_images_as_saved():
    """Overshooting pixels count as the clamped image shows them, in every caller (one metric definition)."""
    source = torch.zeros(2, 3, 4, 4)
    truth = lambda x: torch.ones_like(x)  # noqa: E731 - every pixel white
    overshoot = torch.full_like(source, 3.0)  # renders as white
    err = domain_error(overshoot, source, truth)
    assert err["pixel_l1"] == pytest.approx(0) and err["gap_closed"]["pixel_l1"] == pytest.approx(1)
    # by hand on the 0..1 scale: |clamp(-5) - 1| / 2 = 1
    assert domain_error(torch.full_like(source, -5.0), source, truth)["pixel_l1"] == pytest.approx(1)


def test_real_vs_real_floor_compares_the_eval_set_with_other_real_images():
    """The FID floor: the eval set that evaluate() compares samples with, against as many *other* real images of the
    domain (the train stream), at the given size; FID by the Fréchet formula written out here with scipy. Comparing
    the eval set with itself (FID 0), using the wrong size or another domain would each give another number."""
    from scipy import linalg

    from adapt_common import synthfaces as sf
    from adapt_common.metrics.evaluate import real_vs_real

    class BlockMeans:  # a small feature: each 8x8 block's mean colour
        name = "block-means"

        def __call__(self, images):
            return torch.nn.functional.avg_pool2d(images.double(), images.shape[-1] // 4).flatten(1).numpy()
    n, size = 40, 32
    floor = real_vs_real("cat", n, size, BlockMeans(), kid_subsets=10)
    a = BlockMeans()(sf.eval_set("cat", n, size)[0])
    b = BlockMeans()(sf.render_domain(sf.split_params("train", n), "cat", size=size))
    s1, s2 = np.cov(b, rowvar=False), np.cov(a, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert floor["fid"] == pytest.approx(expected, rel=1e-6) and floor["fid"] > 0
    assert floor["n"] == n and floor["size"] == size and floor["feature_extractor"] == "block-means"
    assert floor["kid"]["subset_size"] == n // 2 and floor["kid"]["std"] > 0


def test_evaluate_on_the_test_split_compares_with_the_test_eval_images(no_weights):
    """``eval_offset`` moves the real eval images to another stretch of the eval stream: the FID of one set of
    samples then equals the FID against those images computed here from the stream itself, and differs from the
    validation one (a cache keyed without the offset would give the validation FID twice)."""
    from adapt_common import synthfaces as sf
    from adapt_common.clip_models import tiny_clip
    from adapt_common.metrics.evaluate import TEST_START
    clip = tiny_clip(0)
    samples = sf.eval_set("cat", 12, 32, offset=500)[0]  # real cats from neither stretch, as "generated" images

    def sample(seeds):
        return samples[torch.as_tensor(seeds) % 12]
    reports = {off: evaluate(sample, "cat", n=12, batch=12, clip=clip, features="clip", kid_subsets=2, quiet=True,
                             eval_offset=off) for off in (0, TEST_START, 0)}
    feats = ClipFeatures(clip)
    for off in (0, TEST_START):
        expected = fid(feats(samples), feats(sf.eval_set("cat", 12, 32, offset=off)[0]))
        assert reports[off]["fid"] == pytest.approx(expected, rel=1e-5), off
        assert reports[off]["settings"]["eval_offset"] == off
    assert reports[0]["fid"] != pytest.approx(reports[TEST_START]["fid"], rel=0.05)
