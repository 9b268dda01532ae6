"""The rate protocol (gelora.training.tuning) driven by hand-made validation curves of known shape: it
walks to the true optimum and stops with a worse neighbour on each side, stops at the grid's
limits and says so, keeps off-grid full-length rates as candidates, and never decides on a rate
that lacks a selection seed."""
import math

import pytest

from gelora.training.tuning import beyond, choose, grid_rate, measurably_worse, plateau_gain

DEFAULT = 2e-3
SEEDS = (0, 1, 2)


def peaked(best_rate, width=1.0):
    return lambda rate, seed: 0.9 - 0.05 * (math.log2(rate / best_rate) / width) ** 2 + 0.002 * seed


def run_protocol(metric, curve=None, rounds=30):
    curve = {} if curve is None else curve
    for _ in range(rounds):
        choice = choose("lora", curve, DEFAULT)
        if choice.settled:
            return choice, curve
        for rate in choice.to_train:
            curve.setdefault(rate, {}).update({s: metric(rate, s) for s in SEEDS})
    raise AssertionError("the protocol did not settle")


@pytest.mark.parametrize("best_k", [-3, 0, 2, 5])
def test_walks_to_the_optimum_and_brackets_it(best_k):
    choice, curve = run_protocol(peaked(grid_rate(DEFAULT, best_k)))
    assert choice.rate == grid_rate(DEFAULT, best_k)
    assert choice.status == "interior"
    assert choice.lower == grid_rate(DEFAULT, best_k - 1) and choice.upper == grid_rate(DEFAULT, best_k + 1)
    assert len(curve) == abs(best_k) + 3  # the start, the walk to the optimum, one rate beyond: nothing more
    assert set(choice.curve.loc[choice.curve["chosen"], "rate"]) == {choice.rate}


def test_a_flat_side_is_walked_until_worse_and_a_limit_is_reported():
    choice, curve = run_protocol(lambda rate, seed: 0.8 + 0.001 * seed)  # flat everywhere
    assert choice.status == "at both limits" and choice.lower == choice.upper == "limit"
    assert min(curve) == pytest.approx(DEFAULT * 2 ** -6) and max(curve) == pytest.approx(DEFAULT * 2 ** 7)
    rising = run_protocol(lambda rate, seed: 0.5 + 0.01 * math.log2(rate / DEFAULT) + 0.001 * seed)[0]
    assert rising.status == "at the upper limit" and rising.rate == pytest.approx(DEFAULT * 2 ** 7)


def test_an_off_grid_full_length_rate_is_a_candidate_and_the_grid_stays_factor_two():
    metric = peaked(1e-2)  # the optimum lies off the grid (5x the registry's rate)
    curve = {1e-2: {s: metric(1e-2, s) for s in (0, 1, 2, 3, 4)}}
    choice, curve = run_protocol(metric, curve)
    assert choice.rate == 1e-2 and choice.status == "interior"
    assert choice.lower == grid_rate(DEFAULT, 2) and choice.upper == grid_rate(DEFAULT, 3)  # 8e-3 and 1.6e-2


def test_a_rate_missing_a_selection_seed_is_trained_not_judged():
    curve = {DEFAULT: {0: 0.9, 1: 0.9}}  # seed 2 missing
    choice = choose("lora", curve, DEFAULT)
    assert not choice.settled and choice.rate is None and choice.to_train == [DEFAULT]


def test_measurably_worse_needs_more_than_one_standard_error():
    assert measurably_worse([0.90, 0.91, 0.92], [0.80, 0.81, 0.82])
    assert not measurably_worse([0.90, 0.91, 0.92], [0.92, 0.89, 0.91])  # mean 0.0033 below, se 0.0088
    assert not measurably_worse([0.9, 0.9, 0.9], [0.9, 0.9, 0.9])


def test_grid_and_plateau_helpers():
    assert beyond(1e-2, DEFAULT, +1) == grid_rate(DEFAULT, 3) and beyond(1e-2, DEFAULT, -1) == grid_rate(DEFAULT, 2)
    assert beyond(DEFAULT, DEFAULT, -1) == 1e-3
    record = {"metric": "accuracy", "evals": [{"step": s, "accuracy": v} for s, v in ((25, 0.5), (50, 0.7), (75, 0.8), (100, 0.83))]}
    assert plateau_gain(record) == pytest.approx(0.03)
    with pytest.raises(ValueError, match="seeds must hold at least 2"):
        choose("lora", {}, DEFAULT, seeds=(0,))
    with pytest.raises(ValueError, match="default must be a finite number > 0"):
        choose("lora", {}, -1.0)
