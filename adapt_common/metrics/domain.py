"""SynthFaces ground-truth metrics: how far an adapted model is from the true target domain, and which domain a
CLIP judge thinks its images are in.

``domain_error`` is the headline metric for similar domains (docs/small_clip_guidance.md): a small
CLIP can be satisfied by shortcut features (tint, saturation) while the images are no closer to the target, but
for a similar domain with a known transform T the right answer for latent w is T(G_s(w)), and the error of
G_t(w) against it can be measured directly.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F



def _errors(a: torch.Tensor, b: torch.Tensor, feature_extractor=None, fb: np.ndarray | None = None
            ) -> tuple[dict, list[float]]:
    """(the mean errors of images ``a`` against ``b``, each image's pixel L1)."""
    d = (a.double() - b.double()) / 2  # [-1, 1] scale -> 0..1 scale
    l1 = d.abs().mean((1, 2, 3))
    out = {"pixel_l1": float(l1.mean()), "pixel_mse": float((d ** 2).mean())}
    out["pixel_rmse"] = float(np.sqrt(out["pixel_mse"]))
    if feature_extractor is not None:
        fa = torch.from_numpy(np.asarray(feature_extractor(a), np.float64))
        fb_t = torch.from_numpy(np.asarray(fb if fb is not None else feature_extractor(b), np.float64))
        out["feature"] = float((1 - F.cosine_similarity(fa, fb_t, dim=-1)).mean())
    return out, [round(float(x), 6) for x in l1]


@torch.no_grad()
def domain_error(target_images: torch.Tensor, source_images: torch.Tensor, transform: Callable | None,
                 feature_extractor=None, *, transformed_source: torch.Tensor | None = None) -> dict:
    """Ground-truth error of an adaptation to a similar domain with transform T, for the same latents:
    target ``G_t(w)`` against ``T(G_s(w))``, on images clamped to [-1, 1] (as saved and as ``evaluate`` sees them).

    Returns ``{pixel_l1, pixel_mse, pixel_rmse, [feature], feature_extractor, identity_baseline: {...},
    gap_closed: {...}}``:

    - ``pixel_l1``: mean absolute difference on the 0..1 pixel scale (|·| of [-1, 1] images divided by 2);
      ``pixel_mse``/``pixel_rmse`` likewise on the 0..1 scale;
    - ``feature``: mean cosine distance ``1 − cos`` between the extractor's features (only with an extractor;
      its name is in ``feature_extractor``);
    - ``identity_baseline``: the same metrics for the unadapted source images against T(source): the error of
      doing nothing; ``gap_closed`` = ``1 − error / baseline`` per metric (1: perfect, 0: no better than the
      source, negative: worse).

    - ``per_image``: each image's ``pixel_l1`` and that of doing nothing (``identity_l1``), in the order of the
      latents, so that intervals can be taken over images as well as over runs.

    ``transformed_source`` skips computing T(source) (pass it when it is at hand already).
    """
    if target_images.shape != source_images.shape:
        raise ValueError(f"target and source images differ in shape: {tuple(target_images.shape)} vs "
                         f"{tuple(source_images.shape)}; they must come from the same latents")
    # One definition everywhere (training curves, the study, evaluate): images as they would be saved, in [-1, 1].
    # A generator's raw output can overshoot (a fifth of a sketch direction's pixels lie outside [-1, 1]), and
    # scoring that overshoot would make the same file score differently in different places.
    target_images, source_images = target_images.clamp(-1, 1), source_images.clamp(-1, 1)
    ref = transformed_source if transformed_source is not None else transform(source_images)
    ref = ref.to(target_images.device).clamp(-1, 1)
    fref = np.asarray(feature_extractor(ref), np.float64) if feature_extractor is not None else None
    err, err_per_image = _errors(target_images, ref, feature_extractor, fref)
    base, base_per_image = _errors(source_images, ref, feature_extractor, fref)
    gap = {k: (1 - err[k] / base[k]) if base[k] > 0 else float("nan") for k in err}
    return {**err, "feature_extractor": getattr(feature_extractor, "name", None), "identity_baseline": base,
            "gap_closed": gap, "n": int(target_images.shape[0]),
            "per_image": {"pixel_l1": err_per_image, "identity_l1": base_per_image}}


@torch.no_grad()
def domain_accuracy(clip, images: torch.Tensor, domain_names: Sequence[str], prompts: Sequence[str],
                    target: str | None = None, *, labels: Sequence[str] | None = None, batch: int = 64) -> dict:
    """Zero-shot classification of each image among all domains (by the cosine to each domain's prompt).

    ``images``: [N, 3, H, W] in [-1, 1], or precomputed normalised CLIP image embeddings [N, D]. ``target``
    (default the first domain) is the domain the images should be in. Returns ``{accuracy (the fraction
    classified as target), target, counts {predicted domain: count} for every domain, n, clip}``; with ``labels``
    (the true domain of each image) also ``confusion {true: {predicted: count}}`` and ``accuracy`` becomes the
    fraction classified as their own label.
    """
    names = list(domain_names)
    if len(names) != len(prompts):
        raise ValueError(f"{len(names)} domain names but {len(prompts)} prompts")
    target = names[0] if target is None else target
    if target not in names:
        raise ValueError(f"target domain {target!r} is not among {names}")
    if images.ndim == 2:
        emb = images.float()
    else:
        emb = torch.cat([clip.encode_images(images[i:i + batch]).float().cpu()
                         for i in range(0, images.shape[0], batch)])
    text = clip.encode_texts(list(prompts)).float().cpu()
    pred = (F.normalize(emb.cpu(), dim=-1) @ F.normalize(text, dim=-1).T).argmax(dim=1).tolist()
    pred_names = [names[p] for p in pred]
    c = Counter(pred_names)
    out = {"target": target, "counts": {n: int(c.get(n, 0)) for n in names}, "n": len(pred_names),
           "clip": getattr(clip, "name", None)}
    if labels is None:
        out["accuracy"] = c.get(target, 0) / max(1, len(pred_names))
    else:
        labels = list(labels)
        if len(labels) != len(pred_names):
            raise ValueError(f"{len(labels)} labels for {len(pred_names)} images")
        conf = {t: {n: 0 for n in names} for t in dict.fromkeys(labels)}
        for t, p in zip(labels, pred_names):
            conf[t][p] += 1
        out["confusion"] = conf
        out["accuracy"] = sum(t == p for t, p in zip(labels, pred_names)) / max(1, len(pred_names))
    return out
