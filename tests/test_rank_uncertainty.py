"""GeLoRA allocations with intervals (gelora.probing.rank_uncertainty), against data of known dimension
and hand computations."""
import numpy as np
import pandas as pd
import pytest

from gelora.geometry.synthetic import gaussian
from gelora.geometry.twonn import TwoNN
from gelora.probing.rank_uncertainty import allocation_intervals, bootstrap_dimensions, decided_by_noise, neighbour_ratios


def ceil_rule(dims):
    return [int(np.ceil(max(b, 0) + 1)) for b in np.diff(dims)]


def test_paired_resampling_keeps_a_copied_layer_at_bound_zero():
    # layer 1 is layer 0 scaled by 2: the same ratios, so every paired resample gives the same
    # dimension at both layers and a bound of exactly 0 (unpaired resampling would not)
    X = gaussian(600, 4, ambient=12, seed=0)
    resampled = bootstrap_dimensions([X, 2 * X], n_resamples=200)
    assert np.array_equal(resampled[:, 0], resampled[:, 1])
    table = allocation_intervals([TwoNN().fit(X).dimension_] * 2, resampled, ceil_rule)
    assert table.loc[0, "p_bound_positive"] == 0 and table.loc[0, "bound_high"] == 0
    assert table.loc[0, "p_same_rank"] == 1


def test_a_real_increase_is_resolved_and_its_interval_covers_the_estimate():
    states = [gaussian(800, 3, ambient=20, seed=1), gaussian(800, 9, ambient=20, seed=2)]
    resampled = bootstrap_dimensions(states, n_resamples=300, seed=0)
    dims = [TwoNN().fit(X).dimension_ for X in states]
    table = allocation_intervals(dims, resampled, ceil_rule)
    row = table.loc[0]
    assert row["p_bound_positive"] == 1.0
    assert row["bound_low"] < row["bound"] < row["bound_high"]
    assert 3 < row["bound_low"] and row["bound_high"] < 9  # around 9 - 3, TwoNN's bias at 800 points included
    assert decided_by_noise(table)["bound_sign"] == []


def test_intervals_by_hand():
    dims = [2.0, 3.0, 3.0]
    resampled = np.array([[2, 3, 3], [2, 2.5, 3.5], [2, 1.5, 3], [2, 3, 2.0]] * 50, dtype=float)
    table = allocation_intervals(dims, resampled, ceil_rule)
    # block 0 bounds per resample: 1, 0.5, 0, 1 -> P(> 0) = 0.75; block 1: 0, 1, 1.5, 0 -> 0.5
    assert table["p_bound_positive"].tolist() == [0.75, 0.5]
    # ranks ceil(bound + 1): block 0: 2, 2, 1, 2 (allocated 2); block 1: 1, 2, 3, 1 (allocated 1)
    assert table["p_same_rank"].tolist() == [0.75, 0.5]
    assert table.loc[1, ["rank_low", "rank_high"]].tolist() == [1, 3]
    assert decided_by_noise(table) == {"bound_sign": [0, 1], "rank": [0, 1]}


def test_a_layer_without_dimension_gives_bound_zero_not_an_error():
    X = gaussian(300, 3, ambient=8, seed=3)
    same = np.ones_like(X)  # the [CLS] embedding: one point repeated
    ratios, rows = neighbour_ratios([same, X])
    assert np.isnan(ratios[:, 0]).all() and len(rows) == 300
    resampled = bootstrap_dimensions([same, X], n_resamples=50)
    table = allocation_intervals([np.nan, TwoNN().fit(X).dimension_], resampled, lambda d: [1])
    assert table.loc[0, "bound"] == 0 and table.loc[0, "p_bound_positive"] == 0


def test_a_layer_of_few_distinct_points_cannot_shrink_the_sample_silently():
    # a decoder's embedding layer under last-token pooling: one point per distinct last token
    # (5 of 500 on trec6); intersecting the others' points with its 5 made every interval a 5-point one
    from gelora.probing.probe import profile_from_states
    from gelora.probing.rank_uncertainty import profile_intervals

    X, Y = gaussian(300, 3, ambient=8, seed=3), gaussian(300, 6, ambient=12, seed=4)
    lookup = np.repeat(np.eye(8)[:5], 60, axis=0)  # 5 distinct points, 60 copies each
    with pytest.raises(ValueError, match="only 5 of 300 points are distinct at every layer .layer 0 has 5 distinct"):
        neighbour_ratios([lookup, X, Y])
    with pytest.raises(ValueError, match="skip must name layers 0-2, got \\[3\\]"):
        neighbour_ratios([lookup, X, Y], skip=[3])
    ratios, rows = neighbour_ratios([lookup, X, Y], skip=[0])
    assert np.isnan(ratios[:, 0]).all() and len(rows) == 300
    with pytest.warns(UserWarning, match="layer 0: no intrinsic dimension .only 5 of 300 points are distinct"):
        profile = profile_from_states([lookup, X, Y], TwoNN(), min_distinct=0.5)
    assert np.isnan(profile.loc[0, "dimension"]) and profile.loc[1:, "dimension"].notna().all()
    alone = profile_from_states([X, Y], TwoNN(), min_distinct=0.5)["dimension"]
    assert alone.tolist() == profile.loc[1:, "dimension"].tolist()  # the others' dimensions are untouched
    table = profile_intervals(profile, [lookup, X, Y], lambda d: ceil_rule(np.nan_to_num(d)), n_resamples=100)
    assert table.loc[0, "bound"] == 0 and table.loc[1, "bound_low"] < table.loc[1, "bound"] < table.loc[1, "bound_high"]


@pytest.mark.parametrize("call, message", [
    (lambda: bootstrap_dimensions([gaussian(50, 2)]), "at least 2 layers"),
    (lambda: bootstrap_dimensions([gaussian(50, 2), gaussian(40, 2)]), "one point per probed text"),
    (lambda: bootstrap_dimensions([gaussian(50, 2), gaussian(50, 2)], n_resamples=1), "n_resamples"),
    (lambda: allocation_intervals([1.0, 2.0], np.ones((10, 3)), ceil_rule), "resamples x 2 layers"),
    (lambda: allocation_intervals([1.0, 2.0], np.full((10, 2), np.nan), ceil_rule), "too few"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_table_is_a_dataframe_with_the_resample_count():
    states = [gaussian(200, 2, ambient=6, seed=4), gaussian(200, 5, ambient=6, seed=5)]
    table = allocation_intervals([2.0, 5.0], bootstrap_dimensions(states, n_resamples=40), ceil_rule)
    assert isinstance(table, pd.DataFrame) and table.attrs["resamples"] == 40
