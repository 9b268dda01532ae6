"""Paired comparisons of two methods on the same test examples: is the difference resolved?

Scores are per example (1/0 correct for classification, the negative squared error for
regression), as an array of seeds x test examples, for each method. The bootstrap resamples test
examples (the same examples for both methods: paired) and, with several seeds, seeds too, so
the interval covers both the finite test set and the training noise.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .checks import check_real, check_whole

VERDICTS = ("better", "worse", "not resolved")


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


def compare_to_reference(scores: dict, reference: str, n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Every method of `scores` (name -> seeds x examples) against `reference`: one row each with
    the difference, its interval, the resolution and the verdict."""
    if reference not in scores:
        raise ValueError(f"reference {reference!r} is not among the methods {sorted(scores)}")
    rows = []
    for name, values in scores.items():
        if name == reference:
            continue
        result = paired_bootstrap(values, scores[reference], n_resamples, seed)
        rows.append({"method": name, "reference": reference, **result.as_dict()})
    return pd.DataFrame(rows)
