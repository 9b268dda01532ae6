"""Paired comparisons of two methods on the same test examples: is the difference resolved?

Scores are per example (1/0 correct for classification, the negative squared error for
regression), as an array of seeds x test examples, for each method; every seed is scored on the
same examples (a crossed design). `paired_interval`, the study's estimator, treats both as
samples: the seed means carry the training noise with a t quantile on S - 1 degrees of freedom (five
seeds are a small sample: 2.78, not 1.96), and the part of the test examples' variation that every
seed shares is added in quadrature with its own quantile. It is a closed form: no resampling, so no
Monte Carlo error and no dependence on a resampling seed. `paired_bootstrap` (a percentile bootstrap
over seeds and examples) is kept for comparison: with few seeds its seed part is too narrow (about
0.6x at 5 seeds). docs/STATISTICS.md gives the estimator, why, and its coverage by simulation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from scipy.optimize import brentq

from gelora.core.checks import check_real, check_whole

VERDICTS = ("better", "worse", "not resolved")
MIN_EXAMPLES = 5  # fewer paired examples give no interval worth stating (the t quantile handles small samples above it)
POWER = 0.8  # the power at which `IntervalResult.detectable` is stated


@dataclass(frozen=True)
class PairedResult:
    difference: float  # mean of a - b
    low: float  # the interval of the difference
    high: float
    resolution: float  # half the interval's width: the smallest difference this test set resolves
    verdict: str  # better (low > 0), worse (high < 0), not resolved
    n_seeds: int
    n_examples: int
    confidence: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IntervalResult(PairedResult):
    """A PairedResult with the parts of its standard error and its power."""

    se: float  # standard error of the difference
    seed_part: float  # the standard error's part from the seed means (seed_part^2 + example_part^2 = se^2)
    example_part: float  # its part from the test examples that every seed shares
    detectable: float  # the true difference resolved with probability POWER at these seeds and examples
    floor: float  # `detectable` with infinitely many seeds: what the test examples alone allow

    def seeds_for(self, target: float, most: int = 1000) -> float:
        """Seeds needed for `detectable` <= target at these examples, with this run's per-seed
        spread (inf when the examples alone cannot, or more than `most` would be needed)."""
        if self.n_seeds < 2 or self.floor >= target:
            return float("inf")
        per_seed = self.seed_part ** 2 * self.n_seeds  # the variance of one seed's mean
        for seeds in range(2, most + 1):
            q = _quantiles(seeds - 1, self.confidence, POWER)
            if np.sqrt(q ** 2 * per_seed / seeds + (self.floor) ** 2) <= target:
                return float(seeds)
        return float("inf")


def _quantiles(df: float, confidence: float, power: float | None = None) -> float:
    """t quantile for a two-sided interval at `confidence`, plus the one for `power` when given."""
    q = scipy_stats.t.ppf(1 - (1 - confidence) / 2, df)
    return float(q + (scipy_stats.t.ppf(power, df) if power is not None else 0.0))


def paired_interval(a, b, confidence: float = 0.95) -> IntervalResult:
    """Mean difference a - b with an interval that treats seeds and test examples as samples.
    a and b: the same shape, row s = seed s, column j = test example j (the same example in both).

    With d = a - b and S seeds x J examples: the seed means' mean square MS_s = J var(seed means)
    carries the training noise with S - 1 degrees of freedom (a t quantile: 2.78 at 5 seeds); the
    examples' part that every seed shares, max(MS_e - MS_r, 0) from the two-way mean squares, has
    J - 1. The half-width adds the two parts in quadrature, each with its own quantile:
    sqrt(t_{S-1}^2 MS_s + t_{J-1}^2 max(MS_e - MS_r, 0)) / sqrt(S J). It is never narrower than the
    t interval on seed means, so a verdict it resolves, that one resolves too. One seed: the paired
    t interval over examples (training noise is then not measured)."""
    a, b = _scores(a, "a"), _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same seeds and examples, got shapes {a.shape} and {b.shape}")
    check_real("confidence", confidence, 0, 1, open_low=True)
    d = a - b
    n_seeds, n_examples = d.shape
    if n_examples < MIN_EXAMPLES:
        raise ValueError(f"a paired interval needs at least {MIN_EXAMPLES} test examples, got {n_examples}")
    grand = float(d.mean())
    seed_means, example_means = d.mean(axis=1), d.mean(axis=0)
    ms_e = n_seeds * ((example_means - grand) ** 2).sum() / (n_examples - 1)
    if n_seeds == 1:
        seed_var, example_var = 0.0, ms_e / n_examples
    else:
        ms_s = n_examples * ((seed_means - grand) ** 2).sum() / (n_seeds - 1)
        residual = d - seed_means[:, None] - example_means[None, :] + grand
        ms_r = (residual ** 2).sum() / ((n_seeds - 1) * (n_examples - 1))
        seed_var, example_var = ms_s / (n_seeds * n_examples), max(ms_e - ms_r, 0.0) / (n_seeds * n_examples)
    if seed_var + example_var <= 0 and n_seeds > 1 and ms_r > 0:
        # the differences vary, but every seed's mean came out the same and the examples share nothing
        # beyond noise (small or tied data): the seed-by-example noise is the floor of the seeds' part
        seed_var = ms_r / (n_seeds * n_examples)
    if seed_var + example_var <= 0:
        if np.all(d == 0):
            return IntervalResult(0.0, 0.0, 0.0, 0.0, "not resolved", n_seeds, n_examples, confidence,
                                  0.0, 0.0, 0.0, 0.0, 0.0)
        raise ValueError(f"every paired difference is {grand:+.4g}: no variation to build an interval from "
                         f"({n_seeds} seed(s) x {n_examples} examples); score more examples")
    t_seeds = _quantiles(n_seeds - 1, confidence) if n_seeds > 1 else 0.0
    t_examples = _quantiles(n_examples - 1, confidence)
    half = float(np.sqrt(t_seeds ** 2 * seed_var + t_examples ** 2 * example_var))
    low, high = grand - half, grand + half
    verdict = "better" if low > 0 else "worse" if high < 0 else "not resolved"
    p_seeds = _quantiles(n_seeds - 1, confidence, POWER) if n_seeds > 1 else 0.0
    p_examples = _quantiles(n_examples - 1, confidence, POWER)
    detectable = float(np.sqrt(p_seeds ** 2 * seed_var + p_examples ** 2 * example_var))
    floor = float(p_examples * np.sqrt(example_var))  # one seed: training noise unmeasured, floor = detectable
    return IntervalResult(grand, float(low), float(high), half, verdict, n_seeds, n_examples, confidence,
                          float(np.sqrt(seed_var + example_var)), float(np.sqrt(seed_var)), float(np.sqrt(example_var)),
                          detectable, floor)


def _scores(x, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} must be per-example scores, shaped (examples,) or (seeds, examples), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or inf scores")
    return array


def paired_bootstrap(a, b, n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95) -> PairedResult:
    """Mean difference a - b with a percentile bootstrap interval. a and b: the same shape,
    row s = seed s, column j = test example j (the same example in both)."""
    a, b = _scores(a, "a"), _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same seeds and examples, got shapes {a.shape} and {b.shape}")
    check_whole("n_resamples", n_resamples, 100)
    check_real("confidence", confidence, 0, 1, open_low=True)
    d = a - b
    n_seeds, n_examples = d.shape
    if n_examples < MIN_EXAMPLES:
        raise ValueError(f"a paired interval needs at least {MIN_EXAMPLES} test examples, got {n_examples}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):  # in chunks: the example weights are chunk x examples
        size = min(1000, n_resamples - start)
        examples = rng.multinomial(n_examples, np.full(n_examples, 1 / n_examples), size=size)
        seeds = (rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=size) if n_seeds > 1
                 else np.ones((size, 1)))
        means[start:start + size] = ((seeds @ d) * examples).sum(axis=1) / (n_seeds * n_examples)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    verdict = "better" if low > 0 else "worse" if high < 0 else "not resolved"
    return PairedResult(float(d.mean()), float(low), float(high), float((high - low) / 2), verdict,
                        n_seeds, n_examples, confidence)


def compare_to_reference(scores: dict, reference: str, confidence: float = 0.95) -> pd.DataFrame:
    """Every method of `scores` (name -> seeds x examples) against `reference`: one row each with
    the difference, its `paired_interval`, the resolution, the detectable difference and the verdict."""
    if reference not in scores:
        raise ValueError(f"reference {reference!r} is not among the methods {sorted(scores)}")
    rows = []
    for name, values in scores.items():
        if name == reference:
            continue
        result = paired_interval(values, scores[reference], confidence)
        rows.append({"method": name, "reference": reference, **result.as_dict()})
    return pd.DataFrame(rows)


def interval_p_value(difference: float, seed_part: float, example_part: float, n_seeds: int, n_examples: int) -> float:
    """The two-sided p-value of `paired_interval`'s test: one minus the confidence at which its
    interval just reaches 0 (its half-width grows with the confidence, so there is one such level).
    It is what a multiplicity correction (Holm) needs from the study's comparisons."""
    check_whole("n_seeds", n_seeds, 1)
    check_whole("n_examples", n_examples, MIN_EXAMPLES)
    for name, value in (("seed_part", seed_part), ("example_part", example_part)):
        check_real(name, value, 0)
    if difference == 0:
        return 1.0
    if seed_part == 0 and example_part == 0:
        return 0.0

    def half(confidence: float) -> float:
        t_seeds = _quantiles(n_seeds - 1, confidence) if n_seeds > 1 else 0.0
        return float(np.sqrt(t_seeds ** 2 * seed_part ** 2 + _quantiles(n_examples - 1, confidence) ** 2 * example_part ** 2))

    low, high = 1e-12, 1 - 1e-15
    if half(high) < abs(difference):
        return 1 - high

    return float(1 - brentq(lambda c: half(c) - abs(difference), low, high, xtol=1e-14))
