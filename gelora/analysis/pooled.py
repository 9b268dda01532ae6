"""The benchmark's answer: one paired difference per task, pooled across tasks, decided with
multiplicity control.

Per task, `paired_interval` (gelora.analysis.stats) gives the difference over the held-out seeds
and the same test examples, with a standard error that carries both. Across tasks the differences
are pooled by a random-effects meta-analysis (statsmodels' `combine_effects`: Paule-Mandel's
between-task variance, the Hartung-Knapp-Sidik-Jonkman interval on K - 1 degrees of freedom, which
keeps its coverage with a handful of tasks where the normal interval does not; its scale is kept at
1 or more, as Roever et al. 2015 advise). A t interval on the
task means is printed beside it as a cross-check. The primary family's two-sided p-values are
Holm-adjusted (statsmodels' `multipletests`); "non-inferior" and "equivalent" come only from one-sided
tests at a declared margin (a TOST for equivalence), never from an interval that happens to be narrow.
docs/PREREGISTRATION.md says which claims are primary and how each is decided.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as scipy_stats

from gelora.core.checks import check_real

KINDS = ("difference", "non-inferiority", "equivalence")


@dataclass(frozen=True)
class Pooled:
    """A random-effects estimate over tasks, with its heterogeneity and a t cross-check."""

    estimate: float  # the pooled difference (random-effects weights)
    low: float  # the interval a reader is shown: the hull of the two below, so it excludes 0 exactly
    high: float  # when both tests resolve (the verdict's rule, `decision_p`)
    re_low: float  # the random-effects interval (Hartung-Knapp, t on K - 1 degrees of freedom)
    re_high: float
    se: float  # the Hartung-Knapp standard error (scale at least 1)
    p_value: float  # two-sided, H0: no difference
    tau2: float  # between-task variance (Paule-Mandel)
    i2: float  # share of the spread that is between tasks, not noise (0-1)
    n_tasks: int
    t_low: float  # the cross-check: a t interval on the task differences, unweighted
    t_high: float
    t_p_value: float  # its two-sided p-value
    confidence: float

    @property
    def decision_p(self) -> float:
        """The p-value a verdict uses: the larger of the two, so both must resolve. With three seeds
        per task the per-task variances are rough, and the weighted test alone rejects a true null
        about 7 % of the time at 5 % in simulation (tests/test_pooled.py); the larger p keeps 5 %."""
        return max(self.p_value, self.t_p_value)

    def as_dict(self) -> dict:
        return asdict(self)


def _arrays(effects, variances) -> tuple[np.ndarray, np.ndarray]:
    effects, variances = np.asarray(effects, dtype=float), np.asarray(variances, dtype=float)
    if effects.ndim != 1 or effects.shape != variances.shape:
        raise ValueError(f"effects and variances must be two lists of one length, got shapes {effects.shape} and {variances.shape}")
    if len(effects) < 2:
        raise ValueError(f"pooling needs at least 2 tasks, got {len(effects)}")
    if not (np.isfinite(effects).all() and np.isfinite(variances).all()):
        raise ValueError("effects and variances must be finite numbers (a task without an interval cannot be pooled)")
    if (variances <= 0).any():
        raise ValueError(f"every variance must be positive, got {variances.tolist()}")
    return effects, variances


def pool(effects, variances, confidence: float = 0.95) -> Pooled:
    """Pool per-task differences `effects` with squared standard errors `variances`."""
    from statsmodels.stats.meta_analysis import combine_effects

    check_real("confidence", confidence, 0, 1, open_low=True)
    effects, variances = _arrays(effects, variances)
    k = len(effects)
    with warnings.catch_warnings():  # per-task intervals are not used; statsmodels warns about them
        warnings.simplefilter("ignore")
        result = combine_effects(effects, variances, method_re="iterated", use_t=True, alpha=1 - confidence)
    estimate = float(result.mean_effect_re)
    # Hartung-Knapp's scale, never below 1 (Roever et al. 2015): with tasks that agree more than their
    # own errors suggest, the plain HKSJ interval is narrower than the normal one and undercovers
    se = float(max(result.sd_eff_w_re_hksj, result.sd_eff_w_re))
    q = scipy_stats.t.ppf(1 - (1 - confidence) / 2, k - 1)
    p = float(2 * scipy_stats.t.sf(abs(estimate) / se, k - 1))
    t_se = effects.std(ddof=1) / np.sqrt(k)
    t_p = float(2 * scipy_stats.t.sf(abs(effects.mean()) / t_se, k - 1)) if t_se > 0 else float(effects.mean() == 0)
    re_low, re_high = estimate - q * se, estimate + q * se
    t_low, t_high = effects.mean() - q * t_se, effects.mean() + q * t_se
    return Pooled(estimate, float(min(re_low, t_low)), float(max(re_high, t_high)), re_low, re_high, se, p,
                  float(result.tau2), float(max(result.i2, 0.0)), k,
                  float(t_low), float(t_high), t_p, confidence)


def one_sided_p(pooled: Pooled, margin: float, kind: str) -> float:
    """p-value of a margin test on a pooled estimate (t on K - 1 degrees of freedom), the larger of
    the random-effects and the task-mean test's. non-inferiority: H0 difference <= -margin;
    equivalence: the larger of the two one-sided tests (TOST), H0 |difference| >= margin."""
    check_real("margin", margin, 0, open_low=True)
    if kind not in ("non-inferiority", "equivalence"):
        raise ValueError(f"kind must be 'non-inferiority' or 'equivalence', got {kind!r}")
    df = pooled.n_tasks - 1
    def tests(estimate: float, se: float) -> tuple[float, float]:
        return (float(scipy_stats.t.sf((estimate + margin) / se, df)), float(scipy_stats.t.cdf((estimate - margin) / se, df)))

    # as for the difference, both estimators must pass: the weighted one and the t on task means
    t_mean = (pooled.t_low + pooled.t_high) / 2
    t_se = (pooled.t_high - pooled.t_low) / 2 / scipy_stats.t.ppf(1 - (1 - pooled.confidence) / 2, df)
    (re_lower, re_upper), (t_lower, t_upper) = tests(pooled.estimate, pooled.se), tests(t_mean, max(t_se, 1e-300))
    if kind == "non-inferiority":
        return max(re_lower, t_lower)
    return max(re_lower, re_upper, t_lower, t_upper)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error at the level the adjusted p is compared with)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or len(p) == 0 or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p_values must be a non-empty list of numbers in [0, 1], got {list(p_values)}")
    return multipletests(p, method="holm")[1]


def verdict(kind: str, estimate: float, adjusted_p: float, alpha: float = 0.05, margin: float | None = None) -> str:
    """The words for one primary claim, from its Holm-adjusted p-value.

    difference: "better" / "worse" when adjusted p < alpha, else "not resolved";
    non-inferiority: "non-inferior within -margin" or "non-inferiority not shown";
    equivalence: "equivalent within +-margin" or "equivalence not shown"."""
    check_real("alpha", alpha, 0, 1, open_low=True)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    resolved = adjusted_p < alpha
    if kind == "difference":
        return ("better" if estimate > 0 else "worse") if resolved else "not resolved"
    if margin is None:
        raise ValueError(f"a {kind} verdict needs its declared margin")
    points = f"{100 * margin:g} point{'s' if margin != 0.01 else ''}"
    if kind == "non-inferiority":
        return f"non-inferior within {points}" if resolved else "non-inferiority not shown"
    return f"equivalent within +-{points}" if resolved else "equivalence not shown"


def rank_p_value(reference: float, draws) -> tuple[float, float]:
    """Where `reference` stands among random `draws` (higher is better): the one-sided permutation
    p-value (1 + draws at least as good) / (1 + draws) and the smallest p these draws can give."""
    draws = np.asarray(draws, dtype=float)
    if draws.ndim != 1 or len(draws) == 0 or not np.isfinite(draws).all() or not np.isfinite(reference):
        raise ValueError("reference and draws must be finite numbers, with at least one draw")
    return float((1 + (draws >= reference).sum()) / (1 + len(draws))), float(1 / (1 + len(draws)))


def pooled_rank_p_value(positions, n_draws: int) -> tuple[float, float]:
    """Across tasks: is the reference's number of draws at least as good as it (summed over tasks)
    smaller than chance? Under the null each task's count is uniform on 0..n_draws, independently;
    the exact p is the chance that the sum is at most the observed one (by convolution), and the
    smallest attainable p is (1 / (n_draws + 1)) ** tasks."""
    positions = [int(x) for x in positions]
    if not positions or any(x < 0 or x > n_draws for x in positions):
        raise ValueError(f"positions must be counts in 0..{n_draws}, got {positions}")
    one = np.full(n_draws + 1, 1 / (n_draws + 1))
    dist = np.array([1.0])
    for _ in positions:
        dist = np.convolve(dist, one)
    return float(dist[: sum(positions) + 1].sum()), float((1 / (n_draws + 1)) ** len(positions))
