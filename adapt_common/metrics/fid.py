"""FID and KID on precomputed features (float64 numpy [N, D]).

- FID (Heusel et al. 2017): ``|mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^½)``, the matrix square root by
  ``scipy.linalg.sqrtm`` with pytorch-fid's handling of non-finite results (retry with ``eps·I`` added to both
  covariances) and of complex results (the imaginary part must be negligible; the real part is used).
- KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel ``k(x, y) = (x·y/d + 1)³``,
  averaged over random subsets as in StyleGAN2-ADA's ``kernel_inception_distance.py``; subsets are drawn without
  replacement by a seeded generator. The subset size is ``subset_size`` clipped to half the smaller set (at least
  2): a subset as large as the set is the same every time, and its "±" would be 0 however noisy the estimate.

Values depend on the feature extractor: report its name with every number.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, rows are samples) in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need features [N>=2, D], got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _trace_sqrt_product_eig(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^½) through symmetric eigendecompositions (exact for PSD inputs; the fallback when sqrtm
    leaves large imaginary parts): the eigenvalues of S1 S2 are those of S1^½ S2 S1^½, which is PSD."""
    w, v = linalg.eigh(sigma1)
    s1h = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = s1h @ sigma2 @ s1h
    ev = linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on singular matrices; the checks below handle them
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            # pytorch-fid raises here; the eigenvalue route gives the exact trace instead.
            tr_covmean = _trace_sqrt_product_eig(sigma1, sigma2)
        else:
            tr_covmean = float(np.trace(covmean.real))
    else:
        tr_covmean = float(np.trace(covmean))
    if not np.isfinite(tr_covmean):
        tr_covmean = _trace_sqrt_product_eig(sigma1, sigma2)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets [N, D] and [M, D]."""
    mu1, s1 = feature_stats(feats_a)
    mu2, s2 = feature_stats(feats_b)
    return frechet_distance(mu1, s1, mu2, s2)


def kid_subset_size(n_a: int, n_b: int, subset_size: int = 1000) -> int:
    """``subset_size`` clipped to half the smaller set, and at least 2 (the unbiased estimator's minimum): subsets
    that differ from each other, so the spread over them measures the estimate's noise."""
    n = min(n_a, n_b)
    if n < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {n_a} and {n_b}")
    return max(2, min(subset_size, n // 2))


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> dict:
    """KID: ``{"mean", "std", "subsets", "subset_size"}``; the unbiased MMD² per subset with
    ``k(x, y) = (x·y/d + 1)³``, mean and standard deviation over ``subsets`` seeded random subsets of
    :func:`kid_subset_size` samples."""
    a = np.asarray(feats_a, np.float64)
    b = np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need features [N, D] and [M, D], got {a.shape} and {b.shape}")
    d = a.shape[1]
    m = kid_subset_size(a.shape[0], b.shape[0], subset_size)
    rng = np.random.RandomState(seed)
    vals = np.empty(subsets)
    for s in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        vals[s] = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) \
            - 2 * kxy.sum() / (m * m)
    return {"mean": float(vals.mean()), "std": float(vals.std()), "subsets": subsets, "subset_size": m}
