"""Bootstrap confidence intervals and paired tests over images.

The unit of every interval here is the image (or image × ROI), never the pixel: a metric is
first reduced to one number per image, then these functions say how well the mean over the
images is known. All are deterministic for a given ``seed`` (a :class:`numpy.random.Generator`)
and vectorised: 10,000 resamples of a few hundred images take milliseconds.

* :func:`bootstrap_mean`: percentile or BCa (Efron, 1987) interval of a mean.
* :func:`paired_difference`: per-image differences ``values − baseline`` (a method against the
  random baseline on the same images): the bootstrap interval of their mean and a sign-flip
  (paired permutation) p-value from :func:`sign_flip_test`.
* :func:`bootstrap_interval`: the same for any statistic of resampled unit indices (used by
  :mod:`segxai.evaluate.agreement` for rank correlations).
* :func:`format_interval`: ``mean [lo, hi]``.

Example:
    >>> import numpy as np
    >>> ci = bootstrap_mean(np.arange(10.0), seed=0)
    >>> ci.format(2)
    '4.50 [2.70, 6.30]'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import special

from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = [
    "Interval",
    "PairedDifference",
    "bootstrap_interval",
    "bootstrap_mean",
    "check_options",
    "check_values",
    "format_interval",
    "paired_difference",
    "sign_flip_test",
]

Method = Literal["percentile", "bca"]
Alternative = Literal["two-sided", "greater", "less"]

_CHUNK = 4_000_000
"""Array elements gathered per chunk of resamples (bounds memory to a few tens of MB)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    Attributes:
        estimate: the statistic on the full sample.
        lo: lower end of the interval.
        hi: upper end.
        level: confidence level (e.g. 0.95).
        method: ``"percentile"``, ``"bca"``, ``"degenerate"`` (constant data, ``lo = hi =
            estimate``) or ``"percentile (bca undefined)"`` (BCa asked, but every resample fell
            on one side of the estimate).
        n: number of units (images, pairs).
        resamples: bootstrap resamples used (resamples whose statistic is undefined, e.g. a
            rank correlation of a constant resample, are left out).
    """

    estimate: float
    lo: float
    hi: float
    level: float
    method: str
    n: int
    resamples: int

    def format(self, digits: int = 3) -> str:
        """``estimate [lo, hi]`` with ``digits`` decimals."""
        return format_interval(self.estimate, self.lo, self.hi, digits=digits)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-image difference ``values − baseline`` with its interval and a p-value.

    Attributes:
        difference: the interval of the mean difference.
        p_value: sign-flip test of "the differences are symmetric about 0".
        alternative: ``"two-sided"``, ``"greater"`` (values > baseline) or ``"less"``.
        exact: the p-value enumerated all ``2**n`` sign patterns (else Monte Carlo).
    """

    difference: Interval
    p_value: float
    alternative: str
    exact: bool

    def format(self, digits: int = 3) -> str:
        """``mean [lo, hi], p = ...``."""
        return f"{self.difference.format(digits)}, p = {self.p_value:.{max(digits, 3)}g}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


def format_interval(estimate: float, lo: float, hi: float, digits: int = 3) -> str:
    """Format ``estimate [lo, hi]`` with ``digits`` decimals, e.g. ``0.214 [0.180, 0.251]``."""
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
        raise SegxaiError(f"digits: expected an integer >= 0, got {digits!r}")
    return f"{estimate:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# ---------------------------------------------------------------------------- checks
def check_values(values: Any, name: str, minimum: int = 2, what: str = "an interval") -> np.ndarray:
    """``values`` (a sequence, array or tensor) as a 1-D float64 array of finite numbers.

    Raises:
        SegxaiError: not 1-D, fewer than ``minimum`` values (``name: expected at least 2 values
            for an interval, got 1``) or a NaN/infinite value. SegxaiTypeError: not numbers.
    """
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU
        values = values.detach().cpu().numpy()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise SegxaiTypeError(f"{name}: expected a sequence of numbers, got "
                              f"{type(values).__name__}")
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SegxaiTypeError(f"{name}: expected a sequence of numbers, got {values!r}") from err
    if x.ndim != 1:
        raise SegxaiError(f"{name}: expected a 1-D sequence (one value per image), got shape "
                          f"{x.shape}")
    if x.size < minimum:
        raise SegxaiError(f"{name}: expected at least {minimum} values for {what}, got {x.size}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise SegxaiError(f"{name}: expected finite numbers, got {x[bad[0]]} at index {bad[0]}")
    return x


def check_options(level: float, resamples: int, method: str) -> None:
    """Refuse a level outside (0, 1), fewer than 10 resamples or an unknown method."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise SegxaiError(f"level: expected a number in (0, 1), got {level!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 10:
        raise SegxaiError(f"resamples: expected an integer >= 10, got {resamples!r}")
    if method not in ("percentile", "bca"):
        raise SegxaiError(f"method: expected 'percentile' or 'bca', got {method!r}")


def _check_alternative(alternative: str) -> None:
    if alternative not in ("two-sided", "greater", "less"):
        raise SegxaiError(f"alternative: expected 'two-sided', 'greater' or 'less', got "
                          f"{alternative!r}")


# ---------------------------------------------------------------------------- core
def _chunked(stat: Callable[[np.ndarray], np.ndarray], rows: int, n: int, width: int,
             make: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """``stat`` on index rows ``make(start, stop)`` (``(stop − start) × n``), in chunks."""
    step = max(1, _CHUNK // max(1, n * width))
    return np.concatenate([stat(make(s, min(rows, s + step))) for s in range(0, rows, step)])


def _leave_one_out(n: int) -> Callable[[int, int], np.ndarray]:
    base = np.arange(n - 1)

    def make(start: int, stop: int) -> np.ndarray:
        left_out = np.arange(start, stop)[:, None]
        return base[None, :] + (base[None, :] >= left_out)
    return make


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], n: int, *,
                       estimate: float, width: int = 1, level: float = 0.95,
                       resamples: int = 10_000, method: Method = "percentile", seed: int = 0,
                       jackknife: np.ndarray | None = None) -> Interval:
    """Bootstrap interval of any statistic of ``n`` units, vectorised over resamples.

    Args:
        statistic: maps a ``(b, m)`` integer array of unit indices (each row one resample, or
            one leave-one-out sample for BCa) to the ``b`` statistics; NaN marks an undefined
            resample, which is left out.
        n: number of units (rows are drawn with replacement from ``0 … n-1``).
        estimate: the statistic on the full sample.
        width: array elements gathered per index (sizes the chunks that bound memory).
        level: confidence level.
        resamples: bootstrap resamples.
        method: ``"percentile"`` or ``"bca"``.
        seed: seed of the :class:`numpy.random.Generator`.
        jackknife: the ``n`` leave-one-out statistics for BCa, if known in closed form
            (computed with ``statistic`` otherwise).

    Returns:
        An :class:`Interval`.
    """
    check_options(level, resamples, method)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise SegxaiError(f"n: expected at least 2 units for an interval, got {n!r}")
    rng = np.random.default_rng(seed)
    boot = _chunked(statistic, resamples, n, width,
                    lambda a, b: rng.integers(0, n, size=(b - a, n)))
    boot = boot[np.isfinite(boot)]
    if boot.size < 2:
        raise SegxaiError(f"statistic: expected resamples with a defined value, got {boot.size} "
                          f"of {resamples}")
    alpha = 1.0 - level
    probs = np.array([alpha / 2, 1 - alpha / 2])
    used = "percentile"
    if method == "bca":
        if jackknife is None:
            jackknife = _chunked(statistic, n, n - 1, width, _leave_one_out(n))
        bca = _bca_probabilities(estimate, boot, jackknife, probs)
        if bca is None:
            used = "percentile (bca undefined)"
        else:
            probs, used = bca, "bca"
    lo, hi = np.quantile(boot, probs)
    return Interval(float(estimate), float(lo), float(hi), float(level), used, n, int(boot.size))


def _bca_probabilities(estimate: float, boot: np.ndarray, jackknife: np.ndarray,
                       probs: np.ndarray) -> np.ndarray | None:
    """Efron's bias-corrected and accelerated quantile levels, or None where undefined.

    ``z0 = Φ⁻¹(share of resamples below the estimate)`` (ties count one half, as SciPy),
    acceleration ``a = Σd³ / (6 (Σd²)^{3/2})`` with ``d = mean(jackknife) − jackknife``, levels
    ``Φ(z0 + (z0 + z)/(1 − a (z0 + z)))`` for ``z = Φ⁻¹(probs)``.
    """
    if not np.all(np.isfinite(jackknife)):
        return None
    share = (np.count_nonzero(boot < estimate) + 0.5 * np.count_nonzero(boot == estimate))
    z0 = special.ndtri(share / boot.size)
    d = jackknife.mean() - jackknife
    ss = float(np.sum(d * d))
    a = float(np.sum(d ** 3)) / (6.0 * ss ** 1.5) if ss > 0 else 0.0
    z = special.ndtri(probs)
    out = special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
    return out if np.all(np.isfinite(out)) else None


def _degenerate(value: float, n: int, level: float, resamples: int) -> Interval:
    return Interval(value, value, value, float(level), "degenerate", n, resamples)


# ---------------------------------------------------------------------------- means
def bootstrap_mean(values: Sequence[float] | np.ndarray, *, level: float = 0.95,
                   resamples: int = 10_000, method: Method = "percentile",
                   seed: int = 0) -> Interval:
    """Bootstrap confidence interval of the mean of ``values`` (one value per image).

    Args:
        values: at least 2 finite numbers (a sequence, array or tensor).
        level: confidence level.
        resamples: bootstrap resamples (with replacement, of the same size).
        method: ``"percentile"`` (quantiles ``(1 ± level)/2`` of the resampled means) or
            ``"bca"`` (bias-corrected and accelerated, jackknife acceleration; better coverage
            for skewed data, falls back to percentile where undefined).
        seed: seed of the :class:`numpy.random.Generator`.

    Returns:
        An :class:`Interval`; for constant data exactly ``[c, c]``.

    Raises:
        SegxaiError: fewer than 2 values, non-finite values or a bad option.
    """
    x = check_values(values, "values")
    check_options(level, resamples, method)
    n = x.size
    if np.ptp(x) == 0:
        return _degenerate(float(x[0]), n, level, resamples)
    jack = (x.sum() - x) / (n - 1)
    return bootstrap_interval(lambda idx: x[idx].mean(axis=1), n, estimate=float(x.mean()),
                              level=level, resamples=resamples, method=method, seed=seed,
                              jackknife=jack)


def sign_flip_test(differences: Sequence[float] | np.ndarray, *,
                   alternative: Alternative = "two-sided", permutations: int = 10_000,
                   seed: int = 0) -> tuple[float, bool]:
    """Paired permutation test: are the per-image differences symmetric about 0?

    Under the null each difference's sign is a fair coin, so the observed sum is compared with
    the sums under sign flips. All ``2**n`` patterns are enumerated when that is at most
    ``permutations`` (an exact p-value); otherwise ``permutations`` random patterns give
    ``(1 + #{as extreme})/(1 + permutations)`` (never 0, a valid p-value).

    Args:
        differences: per-image differences (at least 2).
        alternative: ``"two-sided"`` (``|Σd*| ≥ |Σd|``), ``"greater"`` (``Σd* ≥ Σd``: the
            mean difference is positive) or ``"less"``.
        permutations: random sign patterns when enumeration is too large.
        seed: seed of the :class:`numpy.random.Generator`.

    Returns:
        ``(p_value, exact)``.
    """
    d = check_values(differences, "differences", what="a test")
    _check_alternative(alternative)
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 10:
        raise SegxaiError(f"permutations: expected an integer >= 10, got {permutations!r}")
    n = d.size
    observed = float(d.sum())
    tol = 1e-10 * float(np.abs(d).sum())  # equal sums must not be split by rounding

    def count(signs: np.ndarray) -> int:
        sums = signs @ d
        if alternative == "two-sided":
            return int(np.count_nonzero(np.abs(sums) >= abs(observed) - tol))
        if alternative == "greater":
            return int(np.count_nonzero(sums >= observed - tol))
        return int(np.count_nonzero(sums <= observed + tol))

    if n < 63 and 2 ** n <= permutations:
        codes = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]
        return count(1.0 - 2.0 * (codes & 1)) / 2 ** n, True
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // n)
    hits = 0
    for start in range(0, permutations, step):
        rows = min(permutations, start + step) - start
        hits += count(1.0 - 2.0 * rng.integers(0, 2, size=(rows, n)))
    return (1 + hits) / (1 + permutations), False


def paired_difference(values: Sequence[float] | np.ndarray,
                      baseline: Sequence[float] | np.ndarray, *, level: float = 0.95,
                      resamples: int = 10_000, method: Method = "percentile",
                      alternative: Alternative = "two-sided", permutations: int = 10_000,
                      seed: int = 0) -> PairedDifference:
    """A method against a baseline on the same images: mean difference, interval, p-value.

    The differences ``values[i] − baseline[i]`` are formed per image (a paired design: the
    image-to-image spread cancels). Their mean gets :func:`bootstrap_mean`'s interval and
    :func:`sign_flip_test`'s p-value (both with ``seed``, so each equals the standalone call).

    Args:
        values: the method's per-image scores (at least 2).
        baseline: the baseline's scores on the same images, in the same order.
        level: confidence level.
        resamples: bootstrap resamples.
        method: ``"percentile"`` or ``"bca"``.
        alternative: of the test; ``"greater"`` means values > baseline.
        permutations: random sign patterns of the test.
        seed: seed of both.

    Returns:
        A :class:`PairedDifference`; identical inputs give exactly ``0 [0, 0]``, p = 1.

    Example:
        >>> r = paired_difference([0.9, 0.8, 0.85, 0.7], [0.5, 0.6, 0.55, 0.6], seed=0)
        >>> r.difference.format(2), r.p_value, r.exact
        ('0.25 [0.15, 0.35]', 0.125, True)
    """
    a = check_values(values, "values")
    b = check_values(baseline, "baseline")
    if a.size != b.size:
        raise SegxaiError(f"baseline: expected {a.size} values (one per image of values), got "
                          f"{b.size}")
    d = a - b
    interval = bootstrap_mean(d, level=level, resamples=resamples, method=method, seed=seed)
    p, exact = sign_flip_test(d, alternative=alternative, permutations=permutations, seed=seed)
    return PairedDifference(interval, float(p), alternative, exact)
