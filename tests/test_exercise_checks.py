"""The exercises' checks against hand-made outputs whose answer is known: each measures what it says
and fails when the outputs contradict the claim."""
import json

import pandas as pd
import pytest

from gelora.kit import exercise_checks as checks


def _profile(folder, widths, n_points, dimensions=None):
    folder.mkdir(parents=True, exist_ok=True)
    dimensions = dimensions or [10.0 - k for k in range(len(widths))]
    pd.DataFrame({"layer": range(len(widths)), "dimension": dimensions, "ci_low": [d - w / 2 for d, w in zip(dimensions, widths)],
                  "ci_high": [d + w / 2 for d, w in zip(dimensions, widths)], "n_points": n_points}).to_csv(
        folder / "id_profile.csv", index=False)


def test_fewer_texts_measures_the_width_ratio_and_tells_sqrt_from_linear(tmp_path):
    _profile(tmp_path / "base", [1.0, 2.0], 1800)
    _profile(tmp_path / "ex", [1.4, 2.8], 900, dimensions=[10.0, 10.5])  # x1.4: near sqrt(2)
    check = checks.fewer_texts(tmp_path / "ex", tmp_path / "base")
    assert check.values["width_ratio"] == pytest.approx(1.4) and check.values["points_ratio"] == 2
    assert check.values["rises"] == [0] and check.values["rises_before"] == []
    assert check.holds
    _profile(tmp_path / "twice", [1.9, 3.8], 900)  # x1.9: nearer the ratio itself than its square root
    assert not checks.fewer_texts(tmp_path / "twice", tmp_path / "base").holds


def _ranks(folder, ranks, reference_rank=8, budget=73728):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ranks.json").write_text(json.dumps({"reference_rank": reference_rank, "budget": budget,
                                                   "allocation": {"ranks": ranks}}))


def test_large_offset_counts_the_distance_from_uniform(tmp_path):
    _ranks(tmp_path / "base", [6, 6, 6, 6, 18, 6])  # |6-8| x 5 + |18-8| = 20
    _ranks(tmp_path / "ex", [7, 7, 7, 7, 13, 7])  # 5 + 5 = 10
    check = checks.large_offset(tmp_path / "ex", tmp_path / "base")
    assert (check.values["distance"], check.values["distance_before"], check.holds) == (10, 20, True)
    assert not checks.large_offset(tmp_path / "base", tmp_path / "ex").holds


def test_small_budget_compares_the_shrink_with_the_budget(tmp_path):
    for name, ranks, budget in (("base", [8] * 6, 73728), ("ex", [2] * 6, 18432), ("flat", [6] * 6, 18432)):
        _ranks(tmp_path / name, ranks, budget=budget)
        pd.DataFrame({"p_same_rank": [0.5, 0.99, 0.9, 1.0, 1.0, 1.0]}).to_csv(tmp_path / name / "rank_intervals.csv")
    check = checks.small_budget(tmp_path / "ex", tmp_path / "base")
    assert check.values["shrink"] == 4 and check.values["budget_ratio"] == 4 and check.values["noise_decided"] == 2
    assert check.holds
    assert not checks.small_budget(tmp_path / "flat", tmp_path / "base").holds  # shrank 1.33x for a 4x budget


def _init(folder, rank, errors, trainable, matrices=2):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lora_sb_init.json").write_text(json.dumps({
        "rank": rank, "singular_values": {f"m{k}": [1.0] for k in range(matrices)},
        "truncation_error": [{"layer": f"m{k}", "rank": r, "error": e} for k in range(matrices) for r, e in errors.items()],
        "trainable_params": {"lora_sb": trainable}}))


def test_larger_core_reads_the_error_at_the_nearest_grid_rank_and_counts_parameters(tmp_path):
    errors = {1: 0.95, 7: 0.85, 31: 0.6, 64: 0.0}
    _init(tmp_path / "base", 8, errors, 2 * 64 + 10)
    _init(tmp_path / "ex", 32, errors, 2 * 1024 + 10)
    check = checks.larger_core(tmp_path / "ex", tmp_path / "base")
    assert (check.values["rank"], check.values["error"], check.values["rank_before"]) == (31, 0.6, 7)
    assert check.values["added_params"] == 2 * (1024 - 64) and check.holds
    _init(tmp_path / "wrong", 32, errors, 2 * 1024 + 11)  # one parameter too many: the count is exact
    assert not checks.larger_core(tmp_path / "wrong", tmp_path / "base").holds


def test_longer_start_measures_the_lead_of_lora_sb_over_lora_xs(tmp_path):
    curve = {0: {"lora_xs": 0.70, "lora_sb": 0.60, "lora": 0.70}, 1: {"lora_xs": 0.5, "lora_sb": 0.48, "lora": 0.45}}
    _init(tmp_path / "ex", 8, {1: 0.9}, 1)
    payload = json.loads((tmp_path / "ex" / "lora_sb_init.json").read_text())
    payload["first_steps"] = [{"method": m, "step": s, "loss": v} for s, row in curve.items() for m, v in row.items()]
    (tmp_path / "ex" / "lora_sb_init.json").write_text(json.dumps(payload))
    check = checks.longer_start(tmp_path / "ex", tmp_path / "ex")
    assert check.values["lead_at_start"] == pytest.approx(0.10) and check.values["lead_at_end"] == pytest.approx(0.02)
    assert check.values["order_at_end"] == ["lora", "lora_sb", "lora_xs"] and check.holds


def test_sweep_two_and_the_splits_read_the_runs(tmp_path):
    pd.DataFrame({"method": ["lora"] * 3 + ["gelora"] * 3, "lr": [4e-4, 2e-3, 1e-2] * 2,
                  "validation": [0.70, 0.80, 0.75, 0.71, 0.74, 0.79]}).to_csv(tmp_path / "lr_sweep.csv", index=False)
    check = checks.sweep_two(tmp_path, tmp_path)
    assert check.values["best_rate"] == {"gelora": 1e-2, "lora": 2e-3} and check.holds  # neighbours on the x5 grid
    (tmp_path / "figures").mkdir()
    pd.DataFrame({"method": ["full", "lora", "lora_sb"], "validation_mean": [0.9, 0.80, 0.82],
                  "test_mean": [0.9, 0.81, 0.80]}).to_csv(tmp_path / "figures" / "results_table.csv", index=False)
    split = checks.validation_split(tmp_path, tmp_path)
    assert split.values["swapped_pairs"] == [["lora", "lora_sb"]] and split.values["pairs"] == 3
    assert split.values["span"]["test"] == pytest.approx(0.01) and split.holds


def test_the_need_checks_read_the_bound_table(tmp_path):
    (tmp_path / "figures").mkdir()
    table = pd.DataFrame({"bound_high": [0.0, 1.7, 12.0], "energy_rank_90": [100, 90, 80],
                          "energy_rank_99": [230, 220, 200], "stable_rank": [9.0, 10.0, 11.0]})
    table.to_csv(tmp_path / "figures" / "bound_vs_need.csv", index=False)
    assert checks.stricter_need(tmp_path, tmp_path).holds
    stable = checks.stable_rank(tmp_path, tmp_path)
    assert stable.values["bound_above_stable_rank"] == 1 and stable.holds  # 12 > 11 in the last block
    table.assign(energy_rank_99=[230, 220, 70]).to_csv(tmp_path / "figures" / "bound_vs_need.csv", index=False)
    assert not checks.stricter_need(tmp_path, tmp_path).holds  # a 99 % need below the 90 % one


def test_a_missing_output_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="id_profile.csv"):
        checks.fewer_texts(tmp_path, tmp_path)


def test_small_manifolds_reads_the_gaussian_and_its_interval(tmp_path):
    rows = lambda g, interval: pd.DataFrame({"manifold": ["torus in R^3", "Gaussian d=20 in R^100"], "true d": [2, 20],
                                             "linear fit": [1.95, g], "95% interval": ["1.8 to 2.1", interval]})
    for name, g, interval in (("base", 16.7, "15.8 to 17.5"), ("ex", 17.2, "15.7 to 18.4"), ("narrow", 17.2, "16.9 to 17.5")):
        (tmp_path / name).mkdir()
        rows(g, interval).to_csv(tmp_path / name / "synthetic_ids.csv", index=False)
    check = checks.small_manifolds(tmp_path / "ex", tmp_path / "base")
    assert check.values["interval_width"] == pytest.approx(2.7) and check.values["interval_width_before"] == pytest.approx(1.7)
    assert check.holds
    assert not checks.small_manifolds(tmp_path / "narrow", tmp_path / "base").holds  # fewer points, narrower: wrong


def test_quarter_budget_reads_the_ranks_the_budget_gave(tmp_path):
    for name, lora, core in (("base", 8, 78), ("ex", 2, 39), ("wide", 2, 78)):
        (tmp_path / name / "results").mkdir(parents=True)
        rows = []
        for method, rank in (("lora", lora), ("lora_sb", core)):
            record = {"metric": "accuracy", "test": {"accuracy": 0.7}, "ranks": {str(b): rank for b in range(6)}}
            (tmp_path / name / "results" / f"{name}-{method}.json").write_text(json.dumps(record))
            rows.append({"method": method, "run_id": f"{name}-{method}"})
        pd.DataFrame(rows).to_csv(tmp_path / name / "runs.csv", index=False)
    check = checks.quarter_budget(tmp_path / "ex", tmp_path / "base")
    assert (check.values["core"], check.values["core_before"], check.values["lora_rank"], check.holds) == (39, 78, 2, True)
    assert not checks.quarter_budget(tmp_path / "wide", tmp_path / "base").holds  # the core did not shrink
