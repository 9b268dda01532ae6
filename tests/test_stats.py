"""gelora.analysis.stats against closed forms and known variance components: the crossed-design interval
covers the true difference about 95 % of the time at 3, 5 and 10 seeds (simulated studies with
known seed, example and residual variance), where the percentile bootstrap over seeds does not;
with one seed it is the paired t interval; identical methods are never resolved."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from gelora.analysis.stats import MIN_EXAMPLES, compare_to_reference, paired_bootstrap, paired_interval

TRUE = 0.01


def simulated(rng, seeds, examples, seed_sd, example_sd, noise_sd):
    """d[s, j] = TRUE + seed_s + example_j + noise_sj, every part normal with the given sd."""
    return (TRUE + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, example_sd, (1, examples))
            + rng.normal(0, noise_sd, (seeds, examples)))


@pytest.mark.parametrize("seeds", [3, 5, 10])
@pytest.mark.parametrize("components", [(0.03, 0.1, 0.1), (0.005, 0.3, 0.3), (0.0, 0.1, 0.3)],
                         ids=["seeds-dominate", "examples-dominate", "no-seed-effect"])
def test_interval_covers_the_true_difference_about_95_percent(seeds, components):
    rng = np.random.default_rng(seeds)
    studies = 1500
    covered = 0
    for _ in range(studies):
        d = simulated(rng, seeds, 300, *components)
        result = paired_interval(d, np.zeros_like(d))
        covered += result.low <= TRUE <= result.high
    coverage = covered / studies  # binomial sd at 95 %: 0.0056
    assert 0.935 <= coverage <= 0.985, coverage


def test_the_percentile_bootstrap_over_few_seeds_undercovers():
    """Why the study left it: when seeds dominate, 3 seeds give far below 95 % (the test of the
    estimator above could fail, and does for this one)."""
    rng = np.random.default_rng(7)
    studies, covered = 300, 0
    for i in range(studies):
        d = simulated(rng, 3, 200, 0.05, 0.1, 0.1)
        boot = paired_bootstrap(d, np.zeros_like(d), n_resamples=1000, seed=i)
        covered += boot.low <= TRUE <= boot.high
    assert covered / studies < 0.88


def test_one_seed_is_the_paired_t_interval():
    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.80).astype(float)
    b = (rng.random(2000) < 0.75).astype(float)
    result = paired_interval(a, b)
    d = a - b
    half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert result.difference == pytest.approx(d.mean(), abs=1e-12)
    assert (result.low, result.high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-12)
    power = (scipy_stats.t.ppf(0.975, len(d) - 1) + scipy_stats.t.ppf(0.8, len(d) - 1)) * d.std(ddof=1) / np.sqrt(len(d))
    assert result.detectable == pytest.approx(power, rel=1e-9)


def test_never_narrower_than_the_t_interval_on_seed_means():
    rng = np.random.default_rng(3)
    for _ in range(50):
        d = simulated(rng, 5, 400, 0.02, 0.2, 0.3)
        result = paired_interval(d, np.zeros_like(d))
        means = d.mean(axis=1)
        t_half = scipy_stats.t.ppf(0.975, 4) * means.std(ddof=1) / np.sqrt(5)
        assert result.resolution >= t_half - 1e-12
        # the examples' shared part is what the seed means miss: equal when it is zero
    flat = np.tile(rng.normal(size=(5, 1)), (1, 400))  # whole seeds move, examples do not
    result = paired_interval(flat, np.zeros_like(flat))
    t_half = scipy_stats.t.ppf(0.975, 4) * flat.mean(axis=1).std(ddof=1) / np.sqrt(5)
    assert result.resolution == pytest.approx(t_half, rel=1e-9)


def test_seeds_needed_follow_the_components():
    rng = np.random.default_rng(4)
    d = simulated(rng, 5, 1000, 0.02, 0.1, 0.2)
    result = paired_interval(d, np.zeros_like(d))
    assert result.floor < result.detectable
    assert result.seeds_for(result.floor * 0.99) == float("inf")  # the examples alone cannot
    needed = result.seeds_for(result.detectable * 0.5)
    assert np.isfinite(needed) and needed > 5


def test_identical_methods_are_not_resolved_and_a_clear_gap_is():
    rng = np.random.default_rng(1)
    a = (rng.random((3, 500)) < 0.7).astype(float)
    same = paired_interval(a, a.copy())
    assert (same.difference, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "not resolved")
    b = a.copy()
    b[:, :100] = 1 - b[:, :100]  # flip 100 of 500 answers in every seed: a large, variable gap
    gap = paired_interval(np.ones((3, 500)), b)
    assert gap.verdict == "better" and gap.low > 0.1


def test_tiny_or_degenerate_samples_are_refused():
    with pytest.raises(ValueError, match=f"at least {MIN_EXAMPLES} test examples, got 1"):
        paired_interval([1.0], [0.0])
    with pytest.raises(ValueError, match=f"at least {MIN_EXAMPLES} test examples, got 3"):
        paired_bootstrap([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])  # three all one way: no longer "better"
    with pytest.raises(ValueError, match="every paired difference is \\+1: no variation"):
        paired_interval(np.ones((2, 20)), np.zeros((2, 20)))


def test_compare_to_reference_and_bad_inputs():
    rng = np.random.default_rng(5)
    base = (rng.random((5, 50)) < 0.5).astype(float)
    worse = base.copy()
    worse[:, :30] = 0
    scores = {"lora": base, "gelora": base.copy(), "full": worse}
    table = compare_to_reference(scores, "lora")
    assert table.set_index("method")["verdict"].to_dict() == {"gelora": "not resolved", "full": "worse"}
    with pytest.raises(ValueError, match="same seeds and examples"):
        paired_interval(np.ones((5, 50)), np.ones((3, 50)))
    with pytest.raises(ValueError, match="NaN"):
        paired_interval([1.0, np.nan] * 10, [1.0, 0.0] * 10)
    with pytest.raises(ValueError, match="reference 'eva' is not among"):
        compare_to_reference(scores, "eva")
