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


def test_paired_difference_is_the_mean_of_run_means_of_the_differences():
    """Independent arithmetic: the point estimate is the mean over runs of each run's mean difference (runs of
    different lengths weigh the same), and the interval contains it."""
    rng = np.random.default_rng(2)
    a = [rng.normal(0.3, 0.1, n) for n in (10, 40, 25)]
    b = [x - rng.normal(0.05, 0.02, x.size) for x in a]
    d = paired_difference(a, b, n_boot=500)
    assert d.mean == pytest.approx(np.mean([np.mean(x - y) for x, y in zip(a, b)]), abs=1e-12)
    assert d.low <= d.mean <= d.high and (d.n_runs, d.n_values) == (3, 75)


def test_identical_scores_are_equivalent_at_any_margin_and_never_better():
    a = [np.random.default_rng(s).normal(0, 1, 30) for s in range(3)]
    d = paired_difference(a, [x.copy() for x in a])
    assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0)
    assert verdict_equivalent(d, 0.01) == HOLDS
    assert verdict_better(d, 0.01) == FAILS  # 0 is not "better by more than 0.01"
    assert verdict_better(d, -0.01) == HOLDS  # but it is "no worse than −0.01" (non-inferiority)


def test_one_run_of_few_latents_gives_a_wide_interval_and_no_verdict():
    """A true difference of 0.02 with per-latent noise 0.05. With 3 latents of one run the percentile bootstrap
    stays inside the values' range (here it calls the claim "holds" against a 0.005 margin); the Student interval
    is about as wide as scipy's t interval and cannot tell, while 3 runs of 2000 latents can."""
    from scipy import stats as sps
    x = np.random.default_rng(7).normal(0.02, 0.05, 3)
    plain = paired_difference(x, np.zeros(3))
    assert x.min() > 0.005 and verdict_better(plain, 0.005) == HOLDS  # the failure the correction is for
    few = paired_difference(x, np.zeros(3), student=True, n_boot=20000)
    t = sps.t.interval(0.95, 2, loc=x.mean(), scale=sps.sem(x))
    assert few.low == pytest.approx(t[0], rel=0.05) and few.high == pytest.approx(t[1], rel=0.05)
    assert few.high - few.low > 2 * (plain.high - plain.low)
    assert verdict_better(few, 0.005) == CANNOT_TELL
    rng = np.random.default_rng(8)
    many = paired_difference([rng.normal(0.02, 0.05, 2000) for _ in range(3)], [np.zeros(2000)] * 3, student=True)
    assert many.high - many.low < 0.03 and verdict_better(many, 0.005) == HOLDS


def test_student_interval_matches_the_percentile_one_at_large_n_and_is_infinite_for_one_value():
    x = np.random.default_rng(4).normal(0, 1, 500)
    a, b = bootstrap_interval(x, seed=1), bootstrap_interval(x, seed=1, student=True)
    assert b.low == pytest.approx(a.low, abs=0.01) and b.high == pytest.approx(a.high, abs=0.01)
    one = bootstrap_interval([[0.3]], student=True)
    assert one.mean == 0.3 and one.low == -np.inf and one.high == np.inf
    assert verdict_better(one, 0.0) == CANNOT_TELL and verdict_equivalent(one, 1.0) == CANNOT_TELL


def test_bounded_interval_of_a_probability_stays_in_its_range_and_keeps_the_inside_end():
    # three runs near 1 (the judge is sure): Student's symmetric interval pokes above 1 unless cut
    runs = [[0.99, 1.0, 0.98], [0.80, 0.85, 0.9], [1.0, 0.99, 1.0]]
    free = bootstrap_interval(runs, student=True, seed=3)
    cut = bootstrap_interval(runs, student=True, seed=3, bounds=(0.0, 1.0))
    assert free.high > 1.0  # the premise: uncut, the interval leaves [0, 1]
    assert cut.high == 1.0 and cut.low == free.low and cut.mean == free.mean
    # one run of one value has the interval (-inf, inf): cut, it is the whole range
    whole = bootstrap_interval([[0.4]], student=True, bounds=(0.0, 1.0))
    assert (whole.low, whole.high) == (0.0, 1.0)
    # a difference of two probabilities lies in [-1, 1]; paired_difference widens the bounds to that
    a, b = [[1.0, 1.0], [0.1, 0.0], [1.0, 0.9]], [[0.0, 0.0], [0.0, 0.1], [0.0, 0.0]]
    d = paired_difference(a, b, student=True, seed=0, bounds=(0.0, 1.0))
    assert d.high == 1.0 and -1.0 <= d.low < 0.2
    assert paired_difference(a, b, student=True, seed=0).high > 1.0
    with pytest.raises(ValueError, match="outside the bounds"):
        bootstrap_interval([[2.0, 3.0]], bounds=(0.0, 1.0))
