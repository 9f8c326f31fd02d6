"""Intervals and verdicts for the study: bootstrap over evaluation latents and training seeds, paired comparisons.

Every number a table reports is a mean over training seeds (and, one-shot, reference images) of a mean over
evaluation latents. Its uncertainty comes from both, so the bootstrap here resamples hierarchically: first the
runs (seeds x references), then the latents within each resampled run. Comparisons are paired: two methods are
scored on the same seeds, references and latents, and the interval is that of the difference.

A claim is judged against a stated margin and printed as one of three verdicts:

- "A beats B by more than m": **holds** when the whole interval of A − B (oriented so that larger is better) lies
  above m, **does not hold** when it lies below m, else **cannot tell at this n**;
- "A ≈ B within m": **holds** when the interval lies inside [−m, m], **does not hold** when it lies wholly
  outside, else **cannot tell at this n**.

With few runs the percentile bootstrap is too narrow: its interval never leaves the range of the values, and 3
values have only 10 distinct resamples, so a 95 % interval covers far less than 95 % (``tests/test_stats.py``: 3
latents of 0.02 ± 0.05, all above 0.005, "beat" a 0.005 margin). ``student=True`` gives instead Student's interval
around the mean with the hierarchical bootstrap's standard error: mean ± t_{n−1}(1 − α/2) · √(n/(n−1)) · SE, SE the
standard deviation of the bootstrap means and n the number of units resampled at the top level (the runs, or the
values when there is one run). For one level of n values this is exactly the t interval; at large n it is close to
the percentile interval; with a single value there is no interval (−∞, ∞).

Student's interval is symmetric, so near a bound it can leave the range a quantity can take (a probability of 0.97
± 0.05, or a difference of probabilities of 0.43 ± 0.60). ``bounds=(lo, hi)`` cuts the interval to that range: the
true mean lies in it for certain, so the cut loses no coverage and only stops the table from printing impossible
values; a verdict read from the cut interval is the one read from the uncut one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOLDS, FAILS, CANNOT_TELL = "holds", "does not hold", "cannot tell at this n"


def _as_runs(values) -> list[np.ndarray]:
    """A list of per-run arrays of per-latent values (a 1-D input is one run)."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return [values.astype(np.float64)]
    runs = [np.asarray(v, dtype=np.float64).reshape(-1) for v in values]
    if not runs or any(r.size == 0 for r in runs):
        raise ValueError("need at least one run with at least one value")
    return runs


def _means(runs: list[np.ndarray]) -> float:
    return float(np.mean([r.mean() for r in runs]))


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n_runs: int
    n_values: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n_runs": self.n_runs,
                "n_values": self.n_values, "level": self.level}


def bootstrap_interval(values, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                       student: bool = False, bounds: tuple[float, float] | None = None) -> Interval:
    """Percentile bootstrap interval of the mean over runs of the per-run mean, resampling runs, then values
    within each run (``values``: one array, or a list of arrays, one per seed/reference run). ``student``: Student's
    interval with the bootstrap standard error, for small samples; ``bounds``: the range the quantity can take, to
    which the interval is cut (module docstring)."""
    iv = _bootstrap_interval(values, level=level, n_boot=n_boot, seed=seed, student=student)
    if bounds is not None:
        lo, hi = bounds
        if not lo <= iv.mean <= hi:
            raise ValueError(f"the mean {iv.mean:g} lies outside the bounds {bounds}: these values are not of a "
                             "quantity in that range")
        iv.low, iv.high = max(iv.low, lo), min(iv.high, hi)
    return iv


def _bootstrap_interval(values, *, level: float, n_boot: int, seed: int, student: bool) -> Interval:
    runs = _as_runs(values)
    rng = np.random.default_rng(seed)
    k = len(runs)
    # per bootstrap draw: each run's mean over its resampled values, then the mean over resampled runs
    run_means = np.stack([r[rng.integers(0, r.size, (n_boot, r.size))].mean(1) for r in runs], 1)  # [n_boot, k]
    pick = rng.integers(0, k, (n_boot, k)) if k > 1 else np.zeros((n_boot, 1), dtype=int)
    stats = np.take_along_axis(run_means, pick, 1).mean(1)
    mean, n_values = _means(runs), int(sum(r.size for r in runs))
    a = (1 - level) / 2
    if student:
        n_top = k if k > 1 else runs[0].size
        if n_top < 2:
            return Interval(mean, -np.inf, np.inf, k, n_values, level)
        from scipy import stats as sps
        half = float(sps.t.ppf(1 - a, n_top - 1) * np.sqrt(n_top / (n_top - 1)) * stats.std())
        return Interval(mean, mean - half, mean + half, k, n_values, level)
    low, high = np.quantile(stats, [a, 1 - a])
    return Interval(mean, float(low), float(high), k, n_values, level)


def paired_difference(a, b, **kw) -> Interval:
    """Interval of mean(A − B) for paired scores (same runs, same latents, in the same order); ``bounds``, if
    given, is the range of A and of B (the difference is cut to the range it can take)."""
    ra, rb = _as_runs(a), _as_runs(b)
    if len(ra) != len(rb) or any(x.shape != y.shape for x, y in zip(ra, rb)):
        raise ValueError("paired scores need the same runs and latents on both sides")
    if kw.get("bounds") is not None:  # A and B each in [lo, hi]: A − B in [lo − hi, hi − lo]
        lo, hi = kw["bounds"]
        kw = {**kw, "bounds": (lo - hi, hi - lo)}
    return bootstrap_interval([x - y for x, y in zip(ra, rb)], **kw)


def verdict_better(diff: Interval, margin: float) -> str:
    """"A beats B by more than ``margin``" from the interval of A − B (larger is better)."""
    if diff.low > margin:
        return HOLDS
    if diff.high < margin:
        return FAILS
    return CANNOT_TELL


def verdict_equivalent(diff: Interval, margin: float) -> str:
    """"A ≈ B within ``margin``" from the interval of A − B."""
    if -margin < diff.low and diff.high < margin:
        return HOLDS
    if diff.low > margin or diff.high < -margin:
        return FAILS
    return CANNOT_TELL
