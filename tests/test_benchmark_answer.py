"""The benchmark's primary table on simulated tasks with known effects: a real pooled effect is
found and named, a null is not, margins decide non-inferiority, and the null's rank test counts."""
import numpy as np
import pytest

from gelora.study.benchmark_answer import CHOSEN, LOWER, PRIMARY, UPPER, primary_table, rank_count, sensitivity_table


def _simulated(rng, effects: dict, tasks=9, seeds=3, examples=600):
    """task -> {(label, rate): seeds x examples 0/1 scores}; each label's accuracy is 0.8 plus its
    effect, with a per-task shift, a per-seed shift and per-example difficulty shared by all labels."""
    out = {}
    labels = sorted({c.method for c in PRIMARY} | {c.reference for c in PRIMARY})
    for task in range(tasks):
        difficulty = rng.normal(0, 1.0, examples)
        base = 0.8 + rng.normal(0, 0.03)
        out[f"t{task}"] = {}
        for label in labels:
            for rate in (CHOSEN, LOWER, UPPER):
                p = base + effects.get(label, 0.0) - (0.01 if rate != CHOSEN else 0.0) + rng.normal(0, 0.004, (seeds, 1))
                logit = np.log(p / (1 - p)) + difficulty
                out[f"t{task}"][(label, rate)] = (rng.random((seeds, examples)) < 1 / (1 + np.exp(-logit))).astype(float)
    return out


def test_a_real_effect_is_named_and_nulls_are_not():
    rng = np.random.default_rng(0)
    scores = _simulated(rng, {"gelora": 0.03, "lora_sb@8": -0.06}, examples=1000)
    table = primary_table(scores, {f"t{i}": 0 for i in range(9)}, 20).set_index("claim")
    assert table.loc["P1", "verdict"] == "better" and table.loc["P1", "low"] > 0  # +3 points on every task
    assert table.loc["P2", "verdict"] == "better"
    assert table.loc["P3", "verdict"] == "not resolved"  # no effect
    assert table.loc["P4", "verdict"] == "non-inferior within 1 point"  # no difference, against a 1-point margin
    assert table.loc["P5", "verdict"] == "non-inferiority not shown"  # -6 points
    assert table.loc["P6", "verdict"] == "better than chance" and table.loc["P6", "smallest_p"] == pytest.approx(21.0 ** -9)
    # Holm: every adjusted p is at least its own p
    assert (table["p_holm"] >= table["p"] - 1e-12).all()


def test_sensitivity_rows_move_with_the_rate():
    rng = np.random.default_rng(1)
    scores = _simulated(rng, {"gelora": 0.0})
    rows = sensitivity_table(scores)
    p1 = rows[rows["claim"] == "P1"].set_index("row")
    # the method off its rate loses what the simulation takes off (1 point on the probability scale,
    # about 1-2 after the examples' difficulty); the reference off its rate moves it the other way
    assert -0.03 < p1.loc["method at half its rate", "estimate"] < -0.005
    assert 0 < p1.loc["reference at twice its rate", "estimate"] < 0.03
    assert (rows["tasks"] == 9).all()


def test_a_claim_without_runs_says_so_and_the_rank_count_is_exact():
    table = primary_table({}, {}, 20)
    assert set(table["verdict"]) == {"not yet run"}
    assert rank_count(np.array([0.5, 1.0]), [np.array([0.75]), np.array([0.5]), np.array([1.0])]) == 2  # ties count


def test_the_forest_figure_draws_every_task_and_the_pooled_row():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from gelora.kit import plots

    tasks = pd.DataFrame({"task": ["a", "b", "c"], "difference": [0.01, -0.02, 0.0], "low": [0.0, -0.03, -0.01],
                          "high": [0.02, -0.01, 0.01]})
    fig = plots.forest(tasks, {"estimate": -0.003, "low": -0.02, "high": 0.014}, "P1", margin=0.01)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c", "pooled"]
    # the pooled diamond sits at its estimate
    assert any(np.allclose(line.get_xdata(), [-0.003]) for line in ax.get_lines() if len(line.get_xdata()) == 1)


def test_a_forest_figure_per_claim_from_the_primary_table(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from gelora.study.benchmark_answer import forest_figures, per_task

    rng = np.random.default_rng(3)
    scores = _simulated(rng, {"gelora": 0.02}, tasks=4, examples=300)
    table = primary_table(scores, {}, 20)
    written = forest_figures(scores, table, tmp_path)
    assert sorted(p.name for p in written if p.suffix == ".png") == [f"forest_P{i}.png" for i in range(1, 6)]
    rows = per_task(scores, PRIMARY[0])
    assert list(rows["task"]) == ["t0", "t1", "t2", "t3"] and (rows["low"] <= rows["difference"]).all()
