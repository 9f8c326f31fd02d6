"""FID and KID on precomputed features (float64 numpy [N, D]), computed by torchmetrics.

The formulas are torchmetrics' (``FrechetInceptionDistance``, ``KernelInceptionDistance``), one well-kept
implementation instead of the project's own; the project supplies the features (its feature extractors, named with
every number) and feeds them through a pass-through module, so the metrics never see images or load Inception:

- FID (Heusel et al. 2017): ``|mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^½)`` with unbiased covariances, the trace of
  the matrix square root from the eigenvalues of ``S1 S2`` (torchmetrics' route, in float64).
- KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel ``k(x, y) = (x·y/d + 1)³``,
  mean and standard deviation over random subsets (StyleGAN2-ADA's and torchmetrics' protocol). The subsets are
  drawn from a seeded generator (torchmetrics draws from torch's global one; :func:`kid` forks and seeds it, so
  a call is repeatable and leaves the caller's random stream alone). The subset size is ``subset_size`` clipped
  to half the smaller set (at least 2): a subset as large as the set is the same every time, and its "±" would be
  0 however noisy the estimate.

Values depend on the feature extractor: report its name with every number.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid
from torchmetrics.image.kid import KernelInceptionDistance


class _Precomputed(torch.nn.Module):
    """The "feature extractor" handed to torchmetrics: the features themselves (``num_features`` tells torchmetrics
    their size without a dummy forward)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def _as_features(feats, name: str) -> torch.Tensor:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"need features [N, D] for {name}, got shape {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x))


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, rows are samples) in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need features [N>=2, D], got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (for stored statistics; torchmetrics' formula)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    t = torch.from_numpy
    return float(_compute_fid(t(mu1), t(sigma1), t(mu2), t(sigma2)))


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets [N, D] and [M, D] (N, M >= 2), by torchmetrics' FrechetInceptionDistance."""
    a, b = _as_features(feats_a, "the first set"), _as_features(feats_b, "the second set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"need features of the same size, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 samples in each set, got {a.shape[0]} and {b.shape[0]}")
    metric = FrechetInceptionDistance(feature=_Precomputed(a.shape[1]))
    metric.update(a, real=True)
    metric.update(b, real=False)
    return float(metric.compute())


def kid_subset_size(n_a: int, n_b: int, subset_size: int = 1000) -> int:
    """``subset_size`` clipped to half the smaller set, and at least 2 (the unbiased estimator's minimum): subsets
    that differ from each other, so the spread over them measures the estimate's noise."""
    n = min(n_a, n_b)
    if n < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {n_a} and {n_b}")
    return max(2, min(subset_size, n // 2))


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> dict:
    """KID: ``{"mean", "std", "subsets", "subset_size"}`` by torchmetrics' KernelInceptionDistance: the unbiased
    MMD² per subset with ``k(x, y) = (x·y/d + 1)³``, mean and standard deviation over ``subsets`` random subsets
    of :func:`kid_subset_size` samples, drawn from torch's generator seeded with ``seed``."""
    a, b = _as_features(feats_a, "the first set"), _as_features(feats_b, "the second set")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"need features [N, D] and [M, D], got {tuple(a.shape)} and {tuple(b.shape)}")
    m = kid_subset_size(a.shape[0], b.shape[0], subset_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer": they are already in memory
        metric = KernelInceptionDistance(feature=_Precomputed(a.shape[1]), subsets=subsets, subset_size=m)
    metric.update(a, real=True)
    metric.update(b, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return {"mean": float(mean), "std": float(std), "subsets": subsets, "subset_size": m}
