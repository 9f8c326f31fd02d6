"""One call that evaluates an adapted model on a SynthFaces domain and writes ``report.json`` + ``samples.png``.

``evaluate(sample_target, domain, sample_source=..., ...)`` draws ``n`` images for the seeds
``seed .. seed+n-1`` from the target sampler (and, when given, the source sampler **for the same seeds**), and
reports:

- ``fid`` / ``kid``: against the domain's SynthFaces eval set (``eval_set(domain, n_eval, size)``), with the
  feature extractor's name;
- ``intra_cluster_diversity``: Intra-LPIPS around the domain's 10-shot set (LPIPS when the AlexNet weights are
  local, else the CLIP-feature cosine distance; the metric name is in the result);
- ``clip_quality`` / ``clip_diversity`` (HyperDomainNet): target = the domain prompt under the stated templates;
- ``domain_accuracy``: zero-shot classification among every domain's prompt (distractors included);
- ``domain_error`` (similar domains with a source sampler): the ground-truth error of G_t(w) against T(G_s(w)),
  with the identity baseline (the unadapted source against T(source)) and the gap closed. This is the headline
  number (see docs/small_clip_guidance.md): CLIP scores can be won by shortcut features. For dissimilar
  SynthFaces domains (cat, robot) the truth of G_t(z) is the domain renderer's image of the face parameters z
  encodes, used when the source generator is checked to draw those faces (``domain_error.truth`` says which);
- ``reference`` (similar domains with a source sampler): the same FID/KID/CLIP numbers for T(G_s(w)), what a
  perfect adaptation of this source generator would score; ``source``: the numbers of the source images.
- ``skipped``: one line naming what could not be computed and why. A target known only by a prompt or a reference
  image (:func:`clip_only_domain`: a user's own style) has no real images or ground truth: it gets the CLIP
  quality (against the reference image when there is one) and diversity only.

Samplers map a batch to images [B, 3, H, W] in [-1, 1]; the batch is ``make_batch(seeds)`` (default: a LongTensor
of the seeds). For a GAN pass ``make_batch=lambda s: z_from_seeds(s, G.style_dim)`` and
``sample_target=lambda z: G.generate(z, truncation=1)``, or use :func:`gan_sampler`. Images are clamped to
[-1, 1] (as saving them would) and resized to ``size`` (default: the generated size) before every metric.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .clip_scores import PROMPT_ONLY, diversity as clip_diversity, quality as clip_quality, template_set, text_target
from .diversity import intra_cluster_lpips
from .domain import domain_accuracy, domain_error
from .features import ClipFeatures, feature_extractor
from .fid import fid as fid_fn, kid as kid_fn

SHOTS = 10

#: Where the test split of evaluation starts. Choices (configs, learning rates, step counts, a sweep's best variant)
#: are made on the validation split: latents / noises from seed 0 and the SynthFaces eval images from index 0, as
#: every trainer's end-of-run report uses by default. Numbers of record (the study's reports) are measured on the
#: test split: latents from seed ``TEST_START`` and eval images from index ``TEST_START`` of the same stream, which
#: nothing is ever tuned on (``evaluate(seed=TEST_START, eval_offset=TEST_START)``).
TEST_START = 100_000


@dataclass
class EvalDomain:
    """What evaluation needs to know about a domain (SynthFaces builds one with :func:`synthfaces_domain`;
    tests and other worlds can build their own).

    ``eval_images(n, size)``: the real images of the domain (FID/KID reference), or None (no FID/KID);
    ``shot_images(size)``: the few-shot set (the cluster centres of Intra-LPIPS), or None; ``transform``: the
    ground-truth map from the source domain (similar domains), or None; ``all_prompts``: every domain's prompt, for
    the zero-shot domain accuracy; ``reference``: images [R, 3, H, W] whose CLIP embeddings are the CLIP-quality
    target instead of the prompt (a one-shot reference image); ``note``: why the metrics this domain cannot have are
    skipped (stated in the report)."""
    name: str
    kind: str
    prompt: str
    eval_images: Callable[[int, int], torch.Tensor] | None
    shot_images: Callable[[int], torch.Tensor] | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    all_prompts: dict[str, str] = field(default_factory=dict)
    world: str = "custom"
    # The true image of a latent input in this domain, for domains rendered from what the latent encodes (SynthFaces
    # cat and robot: the renderer's image of z's face parameters); used only when the source generator draws the
    # source domain's truth of the same latents (checked by ``latent_truth_source``).
    latent_truth: Callable[[Any, int], torch.Tensor] | None = None
    latent_truth_source: Callable[[Any, int], torch.Tensor] | None = None
    reference: torch.Tensor | None = None
    note: str = ""
    eval_offset: int = 0  # the index of the first eval image in its stream (SynthFaces; 0 = validation)


def _images_of(x) -> torch.Tensor:
    """Images from what a world function returns: a tensor, an (images, params) pair, or an object with
    ``.images``."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    if hasattr(x, "images"):
        return x.images
    raise TypeError(f"expected images, got {type(x).__name__}")


def synthfaces_domain(name: str, shots: int = SHOTS, eval_offset: int = 0) -> EvalDomain:
    """The :class:`EvalDomain` of a SynthFaces domain (imports ``adapt_common.synthfaces`` lazily): eval set
    ``eval_set(name, n, size, eval_offset)`` (the eval stream from ``eval_offset``: 0 for validation,
    :data:`TEST_START` for test), few-shot set ``fewshot_set(name, shots, size)``, ground truth
    ``apply_domain(images, name)`` for similar domains, and every domain's ``domain_prompt`` for the accuracy."""
    from .. import synthfaces as sf
    if name not in sf.DOMAINS and name not in sf.HELDOUT_STYLES:
        raise ValueError(f"unknown SynthFaces domain {name!r}; known: {', '.join(sf.DOMAINS)}; held-out styles: "
                         f"{', '.join(sf.HELDOUT_STYLES)}")
    kind = sf.get_domain(name).kind

    def eval_images(n: int, size: int) -> torch.Tensor:
        return _images_of(sf.eval_set(name, n, size, offset=eval_offset))

    def shot_images(size: int) -> torch.Tensor:
        return _images_of(sf.fewshot_set(name, shots, size))

    def transform(images: torch.Tensor) -> torch.Tensor:
        return sf.apply_domain(images, name).clamp(-1, 1)  # as render_domain does

    def truth_of(domain_name: str):
        def render(z, size: int) -> torch.Tensor:
            return sf.render_from_z(torch.as_tensor(z).float().cpu(), domain_name, size)
        return render

    return EvalDomain(name=name, kind=kind, prompt=sf.domain_prompt(name), eval_images=eval_images,
                      shot_images=shot_images, transform=transform if kind == "similar" else None,
                      all_prompts={d: sf.domain_prompt(d) for d in sf.DOMAINS}, world="synthfaces",
                      latent_truth=truth_of(name) if kind == "dissimilar" else None,
                      latent_truth_source=truth_of("photo") if kind == "dissimilar" else None,
                      eval_offset=int(eval_offset))


def is_synthfaces_domain(name: str) -> bool:
    """Whether ``name`` is a SynthFaces domain or held-out style (what has real images and a ground truth)."""
    from .. import synthfaces as sf
    return name in sf.DOMAINS or name in sf.HELDOUT_STYLES


def clip_only_domain(name: str, prompt: str = "", reference: torch.Tensor | None = None) -> EvalDomain:
    """A target known only by a prompt or reference image(s) (a user's own style): CLIP quality against the
    reference (else the prompt) and CLIP diversity; no real images, few-shot set or true transform."""
    if not prompt and reference is None:
        raise ValueError(f"domain {name!r}: give a prompt or a reference image to score CLIP quality against")
    return EvalDomain(name=name, kind="custom", prompt=prompt, eval_images=None, reference=reference,
                      note=f"{name!r} is not a SynthFaces domain: it has no real images or true transform to "
                           "compare with")


def eval_domain(name: str, prompt: str = "", reference: torch.Tensor | None = None) -> EvalDomain:
    """The SynthFaces domain ``name`` when there is one, else :func:`clip_only_domain`."""
    if is_synthfaces_domain(name):
        return synthfaces_domain(name)
    return clip_only_domain(name, prompt, reference)


#: A source generator whose images lie within this mean pixel error (0..1 scale) of the renderer's faces of the same
#: z draws z's face parameters, so the renderer's image of those parameters in a dissimilar domain is the truth of
#: an adaptation (the bundled generators: 0.044 and better; an unrelated generator: about 0.25).
LATENT_TRUTH_MAX_SOURCE_ERROR = 0.1


def _is_latent_batch(x) -> bool:
    return isinstance(x, torch.Tensor) and x.ndim == 2 and x.is_floating_point()


def real_vs_real_fid(domain: str, n: int, size: int, extractor) -> float:
    """FID between two disjoint sets of ``n`` real SynthFaces images of ``domain`` (the train and eval streams):
    the floor a perfect generator reaches with this sample size and feature extractor."""
    return real_vs_real(domain, n, size, extractor)["fid"]


def real_vs_real(domain: str, n: int, size: int, extractor, kid_subsets: int = 100, kid_subset_size: int = 1000,
                 seed: int = 0, eval_offset: int = 0) -> dict:
    """FID and KID between the ``n`` eval-set images of a SynthFaces ``domain`` from ``eval_offset`` (what
    :func:`evaluate` compares samples with) and ``n`` other real images of it (the train stream): what a perfect
    generator scores at this sample size and with this extractor. Below it, a difference in FID is sampling noise,
    not quality."""
    from .. import synthfaces as sf
    a = extractor(_images_of(sf.eval_set(domain, n, size, offset=eval_offset)))
    b = extractor(sf.render_domain(sf.split_params("train", n), domain, size=size))
    return {"fid": fid_fn(b, a), "kid": kid_fn(b, a, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed),
            "n": n, "size": size, "feature_extractor": extractor.name}


def gan_sampler(G, truncation: float = 1.0, noise_mode: str = "const") -> tuple[Callable, Callable]:
    """``(make_batch, sample)`` for a StyleGAN2 generator: seeds -> z (NVIDIA seeding) -> images."""
    from gan_adapt.seeds import z_from_seeds
    dev = next(G.parameters()).device

    def make_batch(seeds):
        return z_from_seeds(list(seeds), G.style_dim).to(dev)

    def sample(z):
        return G.generate(z, truncation=truncation, noise_mode=noise_mode)
    return make_batch, sample


def _fit(images: torch.Tensor, size: int) -> torch.Tensor:
    images = images.detach().float().cpu().clamp(-1, 1)
    if images.shape[-1] != size or images.shape[-2] != size:
        scale = size / min(images.shape[-2:])
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=scale < 1)
    return images


def _latent_truth(domain: EvalDomain, inputs: list, source: torch.Tensor, size: int
                  ) -> tuple[torch.Tensor | None, str]:
    """The truth of each latent in a domain rendered from what latents encode, or (None, why not). It holds only
    when the source generator draws the source domain's truth of the same latents (checked here, not assumed)."""
    if not all(_is_latent_batch(x) for x in inputs):
        return None, "the sampler's inputs are not latent vectors, so they encode no face parameters"
    z = torch.cat([x.detach().float().cpu() for x in inputs])
    try:
        photo = _fit(domain.latent_truth_source(z, size), size)
    except ValueError as e:  # e.g. a latent too short to hold the parameters
        return None, f"no face parameters in these latents ({e})"
    err = float((source - photo).abs().mean() / 2)
    if err > LATENT_TRUTH_MAX_SOURCE_ERROR:
        return None, (f"the source generator does not draw the renderer's faces of its latents (mean pixel error "
                      f"{err:.3f} > {LATENT_TRUTH_MAX_SOURCE_ERROR}), so its latents have no known {domain.name}")
    return _fit(domain.latent_truth(z, size), size), (
        f"the {domain.name} renderer's image of the face parameters z encodes (the source generator draws their "
        f"photo within mean pixel error {err:.3f})")


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


#: Eval-set features by (images, size, extractor): encoding them is the same every time. SynthFaces eval sets are
#: rendered deterministically from their name, so they are keyed by name (and not rendered again); any other
#: domain (a folder of images) by the content of its images: two folders of one base name are different sets.
_EVAL_CACHE: dict[tuple, np.ndarray] = {}


def _eval_features(domain: EvalDomain, n_eval: int, size: int, extractor) -> tuple[np.ndarray, torch.Tensor | None]:
    images = None
    if domain.world == "synthfaces":
        key = (domain.world, domain.name, domain.eval_offset, n_eval, size, extractor.name)
    else:
        images = _fit(domain.eval_images(n_eval, size), size)
        key = ("content", hashlib.sha256(images.numpy().tobytes()).hexdigest(), tuple(images.shape), extractor.name)
    if key in _EVAL_CACHE:
        return _EVAL_CACHE[key], images
    if images is None:
        images = _fit(domain.eval_images(n_eval, size), size)
    feats = extractor(images)
    while len(_EVAL_CACHE) >= 8:
        _EVAL_CACHE.pop(next(iter(_EVAL_CACHE)))
    _EVAL_CACHE[key] = feats
    return feats, images


@torch.no_grad()
def _clip_embed(clip, images: torch.Tensor, batch: int) -> torch.Tensor:
    dev = next(clip.parameters()).device
    return torch.cat([clip.encode_images(images[i:i + batch].to(dev)).float().cpu()
                      for i in range(0, images.shape[0], batch)])


def _set_scores(feats, eval_feats, emb, target_text, domain, clip, kid_subsets, kid_subset_size, seed) -> dict:
    real = eval_feats is not None  # FID/KID need the domain's real images
    out = {"fid": fid_fn(feats, eval_feats) if real else None,
           "kid": kid_fn(feats, eval_feats, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed) if real
           else None,
           "clip_quality": clip_quality(emb, target_text),
           "clip_diversity": clip_diversity(emb)}
    if domain.all_prompts:
        names = list(domain.all_prompts)
        out["domain_accuracy"] = domain_accuracy(clip, emb, names, [domain.all_prompts[k] for k in names],
                                                 target=domain.name)
    return out


def evaluate(sample_target: Callable[[Any], torch.Tensor], domain: str | EvalDomain, *,
             sample_source: Callable[[Any], torch.Tensor] | None = None, n: int = 256, batch: int = 32,
             clip=None, features="auto", out_dir: str | Path | None = None, seed: int = 0,
             make_batch: Callable[[list[int]], Any] | None = None, n_eval: int | None = None,
             size: int | None = None, templates: str | Sequence[str] = PROMPT_ONLY, diversity_metric="auto",
             kid_subsets: int = 100, kid_subset_size: int = 1000, baselines: bool = True,
             settings: dict | None = None, quiet: bool = False, eval_offset: int = 0) -> dict:
    """Evaluate a target sampler on a domain; see the module docstring for what is reported.

    ``domain``: a SynthFaces domain name or an :class:`EvalDomain`. ``clip``: a ClipModel or a name/path for
    :func:`load_clip` (default the bundled judge, ``DEFAULT_JUDGE``). ``features``: "auto" (Inception when its weights are
    local, else CLIP), "inception", "clip", or an extractor. ``n_eval``: eval-set size (default ``n``).
    ``eval_offset``: the first eval image's index for a domain given by name (0: validation, :data:`TEST_START`:
    test; ``seed`` is the first latent's). ``templates``: "prompt-only" (default: SynthFaces prompts are whole
    captions), "small", or a list of ``{}``
    templates. ``baselines``: also score the source images and T(source). ``settings``: extra entries for the
    report (checkpoint names, truncation ...). Returns the report dict (also written to ``out_dir/report.json``).
    """
    from ..loop import progress

    t0 = time.time()
    if n < 2:
        raise ValueError("n must be at least 2")
    if isinstance(domain, str):
        domain = synthfaces_domain(domain, eval_offset=eval_offset)
    elif eval_offset and eval_offset != domain.eval_offset:
        raise ValueError(f"eval_offset={eval_offset} applies to a SynthFaces domain given by name; this EvalDomain "
                         f"({domain.name}) was built with eval_offset={domain.eval_offset}")
    if clip is None or isinstance(clip, (str, Path)):
        from ..clip_models import DEFAULT_JUDGE, load_clip
        clip = load_clip(str(clip or DEFAULT_JUDGE))
    clip_feats = ClipFeatures(clip)
    extractor = clip_feats if features == "clip" else feature_extractor(features, clip)
    tset_name, tset = template_set(templates)
    make_batch = make_batch or (lambda s: torch.tensor(list(s), dtype=torch.long))
    seeds = list(range(seed, seed + n))

    # 1. samples for the same seeds
    tgt, src, inputs = [], [], []
    bar = progress(n, desc=f"evaluate {domain.name}: sampling", quiet=quiet)
    with torch.no_grad():
        for i in range(0, n, batch):
            chunk = seeds[i:i + batch]
            inp = make_batch(chunk)
            inputs.append(inp)
            tgt.append(sample_target(inp).detach().float().cpu())
            if sample_source is not None:
                src.append(sample_source(inp).detach().float().cpu())
            bar.update(len(chunk))
    bar.close()
    gen_size = int(tgt[0].shape[-1])
    size = int(size or gen_size)
    target = _fit(torch.cat(tgt), size)
    source = _fit(torch.cat(src), size) if src else None
    transformed, truth_note = None, None
    if source is not None and domain.transform is not None:
        transformed = _fit(domain.transform(source), size)
    elif source is not None and domain.latent_truth is not None:
        transformed, truth_note = _latent_truth(domain, inputs, source, size)

    # 2. features, eval set, CLIP embeddings
    stage = progress(6, desc=f"evaluate {domain.name}: metrics", quiet=quiet)
    n_eval = int(n_eval or n)
    eval_feats = None if domain.eval_images is None else _eval_features(domain, n_eval, size, extractor)[0]
    feats = extractor(target)
    stage.update()
    emb = _clip_embed(clip, target, batch)
    if domain.reference is not None:  # CLIP quality against the reference image(s), not a text
        target_text = _clip_embed(clip, _fit(domain.reference, size), batch)
    else:
        target_text = text_target(clip, domain.prompt, tset)
    report: dict[str, Any] = {"domain": {"name": domain.name, "kind": domain.kind, "prompt": domain.prompt,
                                         "world": domain.world},
                              "clip_quality_target": "reference image" if domain.reference is not None
                              else "prompt"}
    report.update(_set_scores(feats, eval_feats, emb, target_text, domain, clip, kid_subsets, kid_subset_size,
                              seed))
    stage.update()

    # 3. intra-cluster diversity around the few-shot set
    if domain.shot_images is not None:
        shots = _fit(domain.shot_images(size), size)
        report["intra_cluster_diversity"] = intra_cluster_lpips(target, shots, diversity_metric,
                                                                features=clip_feats, seed=seed)
    else:
        report["intra_cluster_diversity"] = None
    stage.update()

    # 4. ground truth (similar domains)
    if transformed is not None:
        report["domain_error"] = domain_error(target, source, domain.transform, extractor,
                                              transformed_source=transformed)
        report["domain_error"]["truth"] = truth_note or "T(source image): the domain's transform of the source"
    else:
        report["domain_error"] = None
        report["domain_error_skipped"] = ("no source sampler" if source is None else truth_note or
                                          f"domain kind {domain.kind!r} has no ground-truth transform")
    report["skipped"] = _skipped_note(report, domain)
    stage.update()

    # 5. baselines: the source images as they are, and T(source) (the ideal adaptation of this source)
    if baselines and source is not None:
        report["source"] = _set_scores(extractor(source), eval_feats, _clip_embed(clip, source, batch),
                                       target_text, domain, clip, kid_subsets, kid_subset_size, seed)
        if transformed is not None:
            report["reference"] = _set_scores(extractor(transformed), eval_feats,
                                              _clip_embed(clip, transformed, batch), target_text, domain, clip,
                                              kid_subsets, kid_subset_size, seed)
    stage.update()

    report["settings"] = {
        "n": n, "seeds": f"{seeds[0]}-{seeds[-1]}", "seed": seed, "batch": batch, "image_size": size,
        "generated_size": gen_size, "n_eval": n_eval if eval_feats is not None else None,
        "eval_offset": domain.eval_offset if eval_feats is not None else None,
        "eval_set": f"{domain.world}:{domain.name} eval set" if eval_feats is not None else None,
        "n_shots": None if domain.shot_images is None else int(shots.shape[0]),
        "feature_extractor": extractor.name, "clip": getattr(clip, "name", None),
        "template_set": tset_name, "templates": list(tset),
        "diversity_metric": (report["intra_cluster_diversity"] or {}).get("metric"),
        "kid_subsets": kid_subsets, "kid_subset_size": (report["kid"] or {}).get("subset_size"),
        "has_source": source is not None, "images_clamped_to": [-1, 1],
        "pixel_error_scale": "0..1 (|difference of [-1, 1] images| / 2)",
        **(settings or {}),
    }
    report["seconds"] = round(time.time() - t0, 2)
    report = _clean(report)

    # 6. files
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_samples(out / "samples.png", target, source, transformed)
        from ..files import atomic_path
        with atomic_path(out / "report.json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        report["files"] = {"report": str(out / "report.json"), "samples": str(out / "samples.png")}
    stage.update()
    stage.close()
    return report


def _skipped_note(report: dict, domain: EvalDomain) -> str | None:
    """One line: the metrics this evaluation could not compute, and why."""
    items = [(report.get("domain_error") is None, "ground-truth domain error", report.get("domain_error_skipped")),
             (report.get("fid") is None, "FID/KID", "no real images of the domain"),
             (report.get("intra_cluster_diversity") is None, "intra-cluster diversity", "no few-shot set"),
             ("domain_accuracy" not in report, "domain accuracy", "no list of domain prompts")]
    missing = [(what, why) for skipped, what, why in items if skipped]
    if not missing:
        return None
    if domain.note:
        return f"skipped {', '.join(what for what, _ in missing)}: {domain.note}"
    return "skipped " + "; ".join(f"{what} ({why})" for what, why in missing)


def write_samples(path: Path, target: torch.Tensor, source: torch.Tensor | None = None,
                  transformed: torch.Tensor | None = None, k: int = 8) -> Path:
    """A grid of the first ``k`` seeds: one row each of source / target / T(source) (those present)."""
    from ..image_io import save_grid
    rows = [r[:k] for r in (source, target, transformed) if r is not None]
    k = min(r.shape[0] for r in rows)
    return save_grid(torch.cat([r[:k] for r in rows]), path, nrow=k)


def summary_lines(report: dict) -> list[str]:
    """A few human-readable lines of a report (the CLI prints them)."""
    s = report["settings"]
    f = lambda v, p=4: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"domain {report['domain']['name']} ({report['domain']['kind']}), n={s['n']}, seeds {s['seeds']}, "
             f"{s['image_size']} px"]
    if report.get("kid") is not None:
        lines.append(f"FID {f(report['fid'], 3)}  KID {f(report['kid']['mean'], 5)} ± {f(report['kid']['std'], 5)}  "
                     f"[{s['feature_extractor']}, eval set n={s['n_eval']}]")
    icd = report.get("intra_cluster_diversity")
    if icd:
        lines.append(f"intra-cluster diversity {f(icd['value'])} [{icd['metric']}, {icd['n_clusters_used']} clusters]")
    against = ("the reference image" if report.get("clip_quality_target") == "reference image"
               else f"templates {s['template_set']}")
    lines.append(f"CLIP quality {f(report['clip_quality'])}  diversity {f(report['clip_diversity'])}  "
                 f"[{s['clip']}, {against}]")
    acc = report.get("domain_accuracy")
    if acc:
        lines.append(f"domain accuracy {f(acc['accuracy'], 3)} (classified as {acc['target']} among "
                     f"{len(acc['counts'])} domains)")
    de = report.get("domain_error")
    if de:
        b, g = de["identity_baseline"], de["gap_closed"]
        lines.append(f"domain error L1 {f(de['pixel_l1'])} (identity {f(b['pixel_l1'])}, gap closed "
                     f"{f(g['pixel_l1'], 3)})  RMSE {f(de['pixel_rmse'])} (identity {f(b['pixel_rmse'])})")
    if report.get("skipped"):
        lines.append(f"note: {report['skipped']}")
    return lines
