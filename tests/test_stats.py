"""Bootstrap intervals and paired verdicts, checked against scipy and against known distributions."""
import numpy as np
import pytest
from scipy import stats as sps

from adapt_common.metrics.stats import (CANNOT_TELL, FAILS, HOLDS, bootstrap_interval, paired_difference,
                                        verdict_better, verdict_equivalent)


def test_one_run_interval_agrees_with_scipy_percentile_bootstrap():
    x = np.random.default_rng(1).normal(0.3, 1.0, 200)
    ours = bootstrap_interval(x, n_boot=4000, seed=3)
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=3).confidence_interval
    assert ours.mean == pytest.approx(x.mean())
    assert ours.low == pytest.approx(ref.low, abs=0.03) and ours.high == pytest.approx(ref.high, abs=0.03)


def test_interval_covers_the_truth_at_about_its_level():
    """Runs differ (a seed effect) and latents vary within runs: the hierarchical interval must cover the true
    mean about 95% of the time; resampling latents only would be far too narrow here."""
    rng = np.random.default_rng(0)
    hits = 0
    trials = 120
    for t in range(trials):
        runs = [rng.normal(rng.normal(0.0, 0.5), 1.0, 50) for _ in range(8)]
        iv = bootstrap_interval(runs, n_boot=400, seed=t)
        hits += iv.low <= 0.0 <= iv.high
    assert 0.82 <= hits / trials <= 1.0
    flat = bootstrap_interval(np.concatenate(runs), n_boot=400)
    assert (flat.high - flat.low) < 0.6 * (iv.high - iv.low)


def test_paired_difference_removes_what_both_share():
    rng = np.random.default_rng(5)
    shared = rng.normal(0, 3, 300)  # latents differ a lot, equally for both methods
    a, b = shared + 0.2 + rng.normal(0, 0.05, 300), shared + rng.normal(0, 0.05, 300)
    d = paired_difference(a, b)
    assert d.low > 0.15 and d.high < 0.25
    with pytest.raises(ValueError, match="same runs"):
        paired_difference([a], [b[:-1]])


def test_verdicts_read_the_interval_against_the_margin():
    from adapt_common.metrics.stats import Interval
    iv = lambda lo, hi: Interval((lo + hi) / 2, lo, hi, 3, 300)  # noqa: E731
    assert verdict_better(iv(0.06, 0.1), 0.05) == HOLDS
    assert verdict_better(iv(0.0, 0.04), 0.05) == FAILS
    assert verdict_better(iv(0.02, 0.08), 0.05) == CANNOT_TELL
    assert verdict_equivalent(iv(-0.01, 0.02), 0.05) == HOLDS
    assert verdict_equivalent(iv(0.06, 0.2), 0.05) == FAILS
    assert verdict_equivalent(iv(-0.01, 0.09), 0.05) == CANNOT_TELL
