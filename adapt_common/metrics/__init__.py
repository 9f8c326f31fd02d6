"""Metrics shared by the GAN and diffusion adapters.

| metric | function | fallback when weights are not local |
|---|---|---|
| FID / KID | :func:`fid`, :func:`kid` on features from :func:`feature_extractor` | Inception-v3 (torchvision) -> CLIP image embeddings |
| Intra-cluster diversity (Intra-LPIPS) | :func:`intra_cluster_lpips` | LPIPS-alex -> cosine distance of CLIP features |
| CLIP Quality / Diversity (HyperDomainNet) | :func:`clip_quality`, :func:`clip_diversity` | - |
| SynthFaces domain error, domain accuracy | :func:`domain_error`, :func:`domain_accuracy` | - |
| all of them, with report.json + samples.png | :func:`evaluate` | |

Every number comes with the name of what produced it (extractor, CLIP, template set, metric); nothing is
ever downloaded.
"""
from .clip_scores import PROMPT_ONLY, SMALL_TEMPLATES, diversity as clip_diversity, quality as clip_quality, text_target
from .diversity import FeatureCosineDistance, LpipsDistance, LpipsWeightsMissing, intra_cluster_lpips, lpips_available
from .domain import domain_accuracy, domain_error
from .evaluate import EvalDomain, evaluate, gan_sampler, summary_lines, synthfaces_domain
from .features import (ClipFeatures, InceptionFeatures, InceptionWeightsMissing, feature_extractor,
                       inception_available)
from .fid import fid, frechet_distance, kid

__all__ = [
    "ClipFeatures", "EvalDomain", "FeatureCosineDistance", "InceptionFeatures", "InceptionWeightsMissing",
    "LpipsDistance", "LpipsWeightsMissing", "PROMPT_ONLY", "SMALL_TEMPLATES", "clip_diversity", "clip_quality",
    "domain_accuracy", "domain_error", "evaluate", "feature_extractor", "fid", "frechet_distance", "gan_sampler",
    "inception_available", "intra_cluster_lpips", "kid", "lpips_available", "summary_lines", "synthfaces_domain",
    "text_target",
]
