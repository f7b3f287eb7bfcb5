"""Tests of segxai.core.intervals: bootstrap intervals, paired sign-flip test, rank agreement.

Every random draw is seeded, so the simulations below give the same numbers on every run and
cannot flake; their tolerances are still set from the Monte Carlo error, so that a different
seed would pass too.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from segxai.core.errors import SegxaiError
from segxai.core.intervals import (
    Interval,
    bootstrap_interval,
    bootstrap_mean,
    format_interval,
    paired_difference,
    sign_flip_test,
)
from segxai.evaluate.agreement import ranking_agreement, spearman_interval


# ---------------------------------------------------------------------------- refusals
def test_refuses_fewer_than_two_values_naming_the_argument() -> None:
    with pytest.raises(SegxaiError) as err:
        bootstrap_mean([0.5])
    assert str(err.value) == "values: expected at least 2 values for an interval, got 1"
    with pytest.raises(SegxaiError, match="^baseline: expected at least 2 values"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(SegxaiError, match="^values: expected at least 2 values"):
        bootstrap_mean(np.array([]))
    with pytest.raises(SegxaiError, match="^x: expected at least 3 values"):
        spearman_interval([1.0, 2.0], [2.0, 1.0])


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: bootstrap_mean([1.0, float("nan"), 2.0]), "^values: expected finite numbers"),
    (lambda: bootstrap_mean([[1.0, 2.0]]), r"^values: expected a 1-D sequence"),
    (lambda: bootstrap_mean("abc"), "^values: expected a sequence of numbers"),
    (lambda: bootstrap_mean([1.0, 2.0], level=1.0), r"^level: expected a number in \(0, 1\)"),
    (lambda: bootstrap_mean([1.0, 2.0], resamples=5), "^resamples: expected an integer >= 10"),
    (lambda: bootstrap_mean([1.0, 2.0], method="bc"), "^method: expected 'percentile' or 'bca'"),
    (lambda: paired_difference([1.0, 2.0, 3.0], [1.0, 2.0]),
     "^baseline: expected 3 values .*, got 2"),
    (lambda: sign_flip_test([1.0, 2.0], alternative="up"), "^alternative: expected"),
    (lambda: sign_flip_test([1.0, 2.0], permutations=0), "^permutations: expected"),
    (lambda: spearman_interval([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), "^x: expected values that"),
    (lambda: spearman_interval([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]), "^y: expected 3 values"),
    (lambda: ranking_agreement(np.ones((4, 2)), np.ones((4, 2))), "^scores_a: expected an"),
    (lambda: ranking_agreement(np.ones((4, 3)), np.ones((5, 3))), "^scores_b: expected shape"),
    (lambda: ranking_agreement(np.ones((4, 3)), np.ones((4, 3))), "rho is undefined"),
    (lambda: format_interval(1.0, 0.0, 2.0, digits=-1), "^digits: expected"),
])
def test_bad_inputs_are_refused(call, pattern: str) -> None:
    with pytest.raises(SegxaiError, match=pattern):
        call()


# ---------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_constant_data_give_a_degenerate_interval(method: str) -> None:
    ci = bootstrap_mean([0.1] * 7, method=method)
    assert (ci.estimate, ci.lo, ci.hi) == (0.1, 0.1, 0.1)
    assert ci.method == "degenerate" and ci.n == 7


def test_identical_pairs_give_exactly_zero() -> None:
    x = np.random.default_rng(0).random(30)
    res = paired_difference(x, x.copy(), method="bca")
    assert (res.difference.estimate, res.difference.lo, res.difference.hi) == (0.0, 0.0, 0.0)
    assert res.p_value == 1.0


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_large_normal_sample_matches_the_t_interval(method: str) -> None:
    # For n = 2000 normal values the bootstrap distribution of the mean is normal with
    # sd σ_b = s·sqrt((n-1)/n)/sqrt(n); its 2.5 % and 97.5 % quantiles differ from the t-interval
    # ends by (t_{.975,1999} − 1.96·sqrt(1999/2000))·σ_b ≈ 0.002·σ_b (systematic) plus the
    # Monte Carlo error of a quantile from B = 10,000 resamples, sqrt(p(1-p)/B)/φ(1.96) ≈
    # 0.027·σ_b. The tolerance 0.1·σ_b (5 % of the half-width 1.96·σ_b) is ~3.5 such errors.
    x = np.random.default_rng(11).normal(3.0, 2.0, size=2000)
    n = x.size
    se = x.std(ddof=1) / math.sqrt(n)
    t = stats.t.ppf(0.975, n - 1)
    ci = bootstrap_mean(x, method=method, seed=1)
    assert ci.estimate == pytest.approx(x.mean(), abs=1e-12)
    assert ci.lo == pytest.approx(x.mean() - t * se, abs=0.1 * se)
    assert ci.hi == pytest.approx(x.mean() + t * se, abs=0.1 * se)
    assert ci.method == method and ci.resamples == 10_000


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_skewed_sample_matches_scipy_bootstrap(method: str) -> None:
    # scipy.stats.bootstrap is an independent implementation; with 200,000 resamples its ends
    # are near-exact, ours (50,000 resamples) carry a Monte Carlo error of ~0.015·σ_b (the
    # quantile error above, sqrt(5) times smaller), so 0.08·σ_b is ~5 errors. On this skewed
    # (log-normal) sample the BCa and percentile upper ends differ by ~0.5·σ_b, so the test
    # tells the two methods apart (checked at the end).
    x = np.random.default_rng(5).lognormal(0.0, 1.0, size=40)
    se = x.std(ddof=0) / math.sqrt(x.size)
    ref = stats.bootstrap((x,), np.mean, n_resamples=200_000, method=method.replace("bca", "BCa"),
                          random_state=0).confidence_interval
    ci = bootstrap_mean(x, method=method, resamples=50_000, seed=3)
    assert ci.lo == pytest.approx(ref.low, abs=0.08 * se)
    assert ci.hi == pytest.approx(ref.high, abs=0.08 * se)
    other = bootstrap_mean(x, method="bca" if method == "percentile" else "percentile",
                           resamples=50_000, seed=3)
    assert abs(other.hi - ci.hi) > 0.3 * se


def test_bootstrap_is_deterministic_and_accepts_tensors() -> None:
    x = np.random.default_rng(2).random(40)
    a, b = bootstrap_mean(x, seed=4), bootstrap_mean(torch.tensor(x), seed=4)
    assert a == b
    assert bootstrap_mean(x, seed=5) != a
    assert a.lo < a.estimate < a.hi


def test_generic_bootstrap_interval_reproduces_the_mean() -> None:
    x = np.random.default_rng(12).gamma(2.0, size=35)
    mean = lambda idx: x[idx].mean(axis=1)  # noqa: E731
    assert bootstrap_interval(mean, x.size, estimate=x.mean(), seed=3) == \
        bootstrap_mean(x, seed=3)
    # BCa with the jackknife computed from leave-one-out index rows = the closed form
    generic = bootstrap_interval(mean, x.size, estimate=x.mean(), method="bca", seed=3)
    closed = bootstrap_mean(x, method="bca", seed=3)
    assert generic.method == closed.method == "bca"
    assert generic.lo == pytest.approx(closed.lo, abs=1e-12)
    assert generic.hi == pytest.approx(closed.hi, abs=1e-12)
    with pytest.raises(SegxaiError, match="^n: expected at least 2 units"):
        bootstrap_interval(mean, 1, estimate=0.0)
    with pytest.raises(SegxaiError, match="^statistic: expected resamples with a defined"):
        bootstrap_interval(lambda idx: np.full(len(idx), np.nan), 5, estimate=0.0)


# ---------------------------------------------------------------------------- coverage
def test_percentile_interval_covers_a_known_mean_95_percent() -> None:
    # 500 data sets of 50 normal values with mean 1: the percentile interval behaves like
    # mean ± 1.96·sqrt(49/50)·s/sqrt(n), whose exact coverage is P(|t_49| <= 1.94) ≈ 0.942. The
    # binomial sd of a 500-trial coverage is sqrt(.95·.05/500) ≈ 0.0097; ±0.03 is 3 sd around 95 %.
    rng = np.random.default_rng(123)
    hits = 0
    for k in range(500):
        x = rng.normal(1.0, 2.0, size=50)
        ci = bootstrap_mean(x, resamples=2000, seed=k)
        hits += ci.lo <= 1.0 <= ci.hi
    assert abs(hits / 500 - 0.95) < 0.03


def test_bca_covers_a_skewed_mean() -> None:
    # Exponential data (mean 1, skewness 2), n = 40: BCa's second-order correction keeps the
    # coverage near 95 % (the literature reports ~93-94 % here); same ±0.03 tolerance plus the
    # known small under-coverage.
    rng = np.random.default_rng(321)
    hits = 0
    for k in range(500):
        x = rng.exponential(1.0, size=40)
        ci = bootstrap_mean(x, resamples=2000, method="bca", seed=k)
        hits += ci.lo <= 1.0 <= ci.hi
    assert 0.90 < hits / 500 < 0.98


def test_sign_flip_test_holds_its_level_under_the_null() -> None:
    # Symmetric differences about 0: p < 0.05 should happen 5 % of the time (binomial sd over
    # 500 trials ≈ 0.0097; ±0.03 is 3 sd). A shifted alternative is detected most of the time.
    rng = np.random.default_rng(7)
    null = [sign_flip_test(rng.standard_t(3, size=20), permutations=2000, seed=k)[0]
            for k in range(500)]
    assert abs(np.mean(np.array(null) < 0.05) - 0.05) < 0.03
    shifted = [sign_flip_test(rng.normal(0.8, 1.0, size=20), permutations=2000, seed=k)[0]
               for k in range(100)]
    assert np.mean(np.array(shifted) < 0.05) > 0.8


# ---------------------------------------------------------------------------- sign-flip test
def _brute_force_p(d: list[float], alternative: str) -> float:
    obs = sum(d)
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        s = sum(e * v for e, v in zip(signs, d))
        if alternative == "two-sided":
            hits += abs(s) >= abs(obs) - 1e-12
        elif alternative == "greater":
            hits += s >= obs - 1e-12
        else:
            hits += s <= obs + 1e-12
    return hits / 2 ** len(d)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_sign_flip_exact_p_values(alternative: str) -> None:
    assert sign_flip_test([1.0, 2.0, 3.0], alternative=alternative) == (
        {"two-sided": 0.25, "greater": 0.125, "less": 1.0}[alternative], True)
    d = list(np.random.default_rng(1).normal(0.3, 1.0, size=9))
    p, exact = sign_flip_test(d, alternative=alternative)
    assert exact and p == pytest.approx(_brute_force_p(d, alternative), abs=1e-15)


def test_sign_flip_monte_carlo_agrees_with_enumeration() -> None:
    d = np.random.default_rng(2).normal(0.3, 1.0, size=16)  # 65,536 patterns
    exact, is_exact = sign_flip_test(d, permutations=2 ** 16)
    approx, is_approx = sign_flip_test(d, permutations=50_000, seed=0)
    assert is_exact and not is_approx
    assert 0.01 < exact < 0.5
    # binomial sd of a 50,000-draw estimate is <= 0.0023; 0.008 is ~3.5 sd
    assert approx == pytest.approx(exact, abs=0.008)
    assert sign_flip_test(np.zeros(40))[0] == 1.0


def test_paired_difference_is_the_two_standalone_calls() -> None:
    rng = np.random.default_rng(9)
    base = rng.random(25)
    meth = base - 0.1 + 0.05 * rng.standard_normal(25)
    res = paired_difference(meth, base, alternative="less", seed=6)
    assert res.difference == bootstrap_mean(meth - base, seed=6)
    assert (res.p_value, res.exact) == sign_flip_test(meth - base, alternative="less", seed=6)
    assert res.difference.hi < 0 and res.p_value < 0.001 and res.alternative == "less"
    assert res.to_dict()["difference"]["n"] == 25
    assert res.format(2).startswith(res.difference.format(2) + ", p = ")


# ---------------------------------------------------------------------------- rank correlation
def test_spearman_interval_estimate_and_width() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.random(200), rng.random(200)
    ci = spearman_interval(x, y, seed=0)
    assert ci.estimate == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    # independent data: rho's sd ≈ 1/sqrt(n-1), so the 95 % width ≈ 2·1.96/sqrt(199) = 0.278
    assert ci.lo < 0 < ci.hi
    assert ci.hi - ci.lo == pytest.approx(2 * 1.96 / math.sqrt(199), rel=0.15)


def test_spearman_interval_matches_scipy_bca() -> None:
    # reference: scipy's BCa bootstrap of a rho written with scipy's own rank and Pearson
    # routines; both ends carry ~0.005 Monte Carlo error, 0.02 is ~3 combined errors
    rng = np.random.default_rng(8)
    x = rng.random(40)
    y = x + 0.3 * rng.standard_normal(40)

    def rho(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return stats.pearsonr(stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis),
                              axis=axis).statistic

    ref = stats.bootstrap((x, y), rho, paired=True, vectorized=True, n_resamples=20_000,
                          method="BCa", random_state=0).confidence_interval
    ci = spearman_interval(x, y, method="bca", seed=1)
    assert ci.method == "bca"
    assert ci.lo == pytest.approx(ref.low, abs=0.02)
    assert ci.hi == pytest.approx(ref.high, abs=0.02)


def test_perfect_monotone_relation_gives_rho_one() -> None:
    x = np.random.default_rng(3).random(15)
    ci = spearman_interval(x, np.exp(x))
    assert (ci.estimate, ci.lo, ci.hi) == (1.0, 1.0, 1.0)


def test_ranking_agreement_of_method_rankings() -> None:
    rng = np.random.default_rng(10)
    scores = rng.random((30, 5)) + np.linspace(0, 1, 5)
    same = ranking_agreement(scores, 2 * scores + 1, method="bca")
    assert (same.estimate, same.lo, same.hi) == (1.0, 1.0, 1.0)
    flipped = ranking_agreement(scores, -scores)
    assert (flipped.estimate, flipped.lo, flipped.hi) == (-1.0, -1.0, -1.0)
    noisy = scores + rng.normal(0, 1.0, size=scores.shape)
    ci = ranking_agreement(scores, noisy, seed=2)
    assert ci.estimate == pytest.approx(
        stats.spearmanr(scores.mean(0), noisy.mean(0)).statistic, abs=1e-12)
    assert -1 <= ci.lo <= ci.estimate <= ci.hi <= 1 and ci.n == 30


# ---------------------------------------------------------------------------- formatting
def test_format_interval() -> None:
    assert format_interval(0.21371, 0.18, 0.2514) == "0.214 [0.180, 0.251]"
    ci = Interval(1.5, 1.25, 1.75, 0.95, "percentile", 10, 10_000)
    assert ci.format(1) == "1.5 [1.2, 1.8]"
    assert ci.to_dict()["method"] == "percentile"
