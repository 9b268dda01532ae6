"""The benchmark's estimators against known truth: simulated studies with a known effect and known
variance components (seeds, test examples, tasks), hand computations, and the null."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from gelora.analysis.pooled import holm, one_sided_p, pool, pooled_rank_p_value, rank_p_value, verdict
from gelora.analysis.stats import paired_interval


def _study(rng, effect, tau, tasks=9, seeds=3, examples=300, seed_sd=0.01, example_sd=0.3):
    """One simulated benchmark: per task a true difference effect + N(0, tau^2), scored as
    seeds x examples paired differences with a seed effect, an example effect and noise; returns
    each task's (difference, variance) from paired_interval, as the benchmark computes them."""
    out = []
    for _ in range(tasks):
        mu = effect + rng.normal(0, tau)
        d = (mu + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, example_sd * 0.3, (1, examples))
             + rng.normal(0, example_sd, (seeds, examples)))
        r = paired_interval(d, np.zeros_like(d))
        out.append((r.difference, r.se ** 2))
    return np.array(out)


@pytest.mark.parametrize("tau", [0.0, 0.01])
def test_pooled_interval_covers_the_true_effect_near_95_percent(tau):
    rng = np.random.default_rng(1)
    effect, n = 0.01, 300
    hits = {"re": 0, "t": 0, "shown": 0}
    for _ in range(n):
        p = pool(*_study(rng, effect, tau, examples=200).T)
        hits["re"] += p.re_low <= effect <= p.re_high
        hits["t"] += p.t_low <= effect <= p.t_high
        hits["shown"] += p.low <= effect <= p.high
    # 300 simulated studies: the binomial 99 % band around 0.95 is about 0.91-0.98. The weighted
    # interval alone undercovers a little (rough per-task variances from three seeds), which is why
    # a verdict needs both; the interval shown (their hull) covers at least 95 %
    assert 0.88 <= hits["re"] / n <= 0.995, hits
    assert 0.91 <= hits["t"] / n <= 0.99, hits
    assert 0.94 <= hits["shown"] / n <= 1.0, hits


def test_holm_keeps_the_family_wise_error_under_the_global_null():
    rng = np.random.default_rng(2)
    n, any_rejected = 150, 0
    for i in range(n):
        ps = np.array([pool(*_study(rng, 0.0, 0.005, examples=100).T).decision_p for _ in range(6)])
        # Holm rejects something exactly when its first step does (smallest p x 6 below 0.05);
        # statsmodels' multipletests runs a garbage collection per call, so it is checked on a few
        rejected = ps.min() * 6 < 0.05
        if i < 10:
            assert rejected == (holm(ps) < 0.05).any()
        any_rejected += rejected
    # six true nulls: Holm's family-wise error is at most 5 % (0.07 is the binomial 95 % top at 150 studies)
    assert any_rejected / n <= 0.07, any_rejected / n


def test_holm_against_a_hand_computation():
    # sorted p: 0.01 x 4 = 0.04, 0.02 x 3 = 0.06, 0.03 x 2 = 0.06 (monotone), 0.5 x 1
    assert np.allclose(holm([0.03, 0.01, 0.5, 0.02]), [0.06, 0.04, 0.5, 0.06])
    with pytest.raises(ValueError, match="p_values"):
        holm([0.2, 1.5])


def test_pool_with_equal_variances_and_no_spread_is_the_mean_and_its_t_interval():
    # identical variances: random-effects weights are equal, so the estimate is the plain mean
    effects = np.array([0.01, 0.02, 0.03, 0.00])
    p = pool(effects, np.full(4, 0.01 ** 2))
    assert p.estimate == pytest.approx(effects.mean())
    # the cross-check is the textbook t interval on the four values
    half = scipy_stats.t.ppf(0.975, 3) * effects.std(ddof=1) / 2
    assert (p.t_low, p.t_high) == pytest.approx((effects.mean() - half, effects.mean() + half))
    assert p.n_tasks == 4 and 0 <= p.i2 <= 1


def test_margin_tests_and_their_words():
    p = pool([-0.002, 0.001, -0.001, 0.0, 0.002], np.full(5, 0.002 ** 2))
    # far inside a 1-point margin: non-inferior and equivalent; a 0.1-point margin shows neither
    assert one_sided_p(p, 0.01, "non-inferiority") < 0.001
    assert one_sided_p(p, 0.01, "equivalence") < 0.001
    assert one_sided_p(p, 0.0001, "equivalence") > 0.05
    # hand computation: non-inferiority p = P(T_{k-1} > (estimate + margin) / se)
    t_se = np.std([-0.002, 0.001, -0.001, 0.0, 0.002], ddof=1) / np.sqrt(5)
    assert one_sided_p(p, 0.01, "non-inferiority") == pytest.approx(
        max(scipy_stats.t.sf((p.estimate + 0.01) / p.se, 4), scipy_stats.t.sf(0.01 / t_se, 4)))
    assert verdict("non-inferiority", p.estimate, 0.001, margin=0.01) == "non-inferior within 1 point"
    assert verdict("equivalence", p.estimate, 0.2, margin=0.01) == "equivalence not shown"
    assert verdict("difference", -0.01, 0.01) == "worse"
    assert verdict("difference", 0.01, 0.05) == "not resolved"  # p at the boundary is not below alpha
    with pytest.raises(ValueError, match="margin"):
        verdict("equivalence", 0.0, 0.01)


def test_rank_p_values_state_what_they_can_reach():
    p, smallest = rank_p_value(0.9, np.linspace(0.5, 0.8, 20))
    assert (p, smallest) == pytest.approx((1 / 21, 1 / 21))
    # five draws can never give p below 1/6
    assert rank_p_value(1.0, [0.1] * 5)[1] == pytest.approx(1 / 6)
    # two tasks, 20 draws each, 0 draws as good on both: p = 1/21^2 (hand computation)
    assert pooled_rank_p_value([0, 0], 20) == pytest.approx((1 / 441, 1 / 441))
    # P(sum <= 1) = 3/441 (0+0, 0+1, 1+0)
    assert pooled_rank_p_value([1, 0], 20)[0] == pytest.approx(3 / 441)


@pytest.mark.parametrize("effects, variances, match", [
    ([0.1], [0.01], "at least 2 tasks"),
    ([0.1, 0.2], [0.01], "two lists of one length"),
    ([0.1, float("nan")], [0.01, 0.01], "finite"),
    ([0.1, 0.2], [0.01, 0.0], "positive"),
])
def test_pool_refuses_what_it_cannot_pool(effects, variances, match):
    with pytest.raises(ValueError, match=match):
        pool(effects, variances)
