"""The study's rate protocol on a hand-made task folder whose records carry real identities:
the curve is read from results/ and rates/, the protocol asks for the next rate, and once settled
the comparison folder holds exactly the chosen rate (runs at other rates moved, selection runs
reused by copy, only the missing seeds left to train)."""
import numpy as np
import pytest

from gelora.study import rates as study_rates
from gelora.training.config import FinetuneConfig
from gelora.training.identity import run_id

from .test_study import BASE, TASK, N, write_run

VALIDATION = {1e-3: 0.70, 2e-3: 0.80, 4e-3: 0.85, 8e-3: 0.60}


def add(folder, sub, lr, seed):
    config = FinetuneConfig(method="lora", seed=seed, lr=lr, **BASE)
    value = VALIDATION[lr] + 0.001 * seed
    write_run(folder / sub, "lora", seed, (np.arange(N) % 3 != 0).astype(float), lr=lr,
              evals=(0.5, 0.6, value, value), config=config)


def test_protocol_then_arrange(tmp_path):
    task = tmp_path / TASK
    for seed in range(5):
        add(task, "results", 2e-3, seed)  # the old comparison, at the old rate
    for lr in (1e-3, 4e-3):
        for seed in (0, 1, 2):
            add(task, "rates", lr, seed)
    state = study_rates.choices(task)
    choice, runs = state["lora"]
    assert len(runs) == 11 and choice.rate == 4e-3 and choice.to_train == [8e-3]
    todo = study_rates.selection_configs(task, state)
    assert [(c.lr, c.seed) for c in todo] == [(8e-3, 0), (8e-3, 1), (8e-3, 2)]
    assert all(c.output_dir == str(task / "rates") for c in todo)
    for seed in (0, 1, 2):
        add(task, "rates", 8e-3, seed)
    state = study_rates.choices(task)
    assert state["lora"][0].status == "interior" and state["lora"][0].rate == 4e-3
    missing = study_rates.arrange(task, seeds=range(5), state=state, log=None)
    assert sorted((c.lr, c.seed) for c in missing) == [(4e-3, 3), (4e-3, 4)]
    kept = sorted(p.name for p in (task / "results").glob("*.json"))
    assert kept == sorted(f"{run_id(FinetuneConfig(method='lora', seed=s, lr=4e-3, **BASE))}.json" for s in (0, 1, 2))
    assert len(list((task / "rates").glob("*.json"))) == 5 + 9  # the old rate's runs joined the curve
    table = study_rates.rate_table(task)
    assert table.set_index("rate").loc[4e-3, "chosen"] and len(table) == 4


def test_arrange_makes_the_results_folder_of_a_track_tuned_only_in_rates(tmp_path):
    """The allocators' track trains every rate in rates/ first: arrange creates results/ and copies
    the chosen rate's selection runs in (the study stopped on a missing folder here once)."""
    task = tmp_path / TASK
    for lr in (2e-3, 4e-3, 8e-3):
        for seed in (0, 1, 2):
            add(task, "rates", lr, seed)
    track = study_rates.Track(task, points=(("lora", FinetuneConfig(method="lora", lr=2e-3, **BASE)),),
                              anchors=(("lora", 4e-3),))
    state = study_rates.choices(track)
    assert state["lora"][0].status == "interior" and not (task / "results").exists()
    missing = study_rates.arrange(track, seeds=range(5), state=state, log=None)
    assert sorted((c.lr, c.seed) for c in missing) == [(4e-3, 3), (4e-3, 4)]
    assert len(list((task / "results").glob("*.json"))) == 3 and len(list((task / "rates").glob("*.json"))) == 9


def test_the_efficiency_curve_points_are_tuned_by_the_same_protocol(tmp_path):
    """A curve point (LoRA r = 2, no budget) is a track of its own: its short-sweep runs anchor the
    grid, its runs live in efficiency/results and efficiency/rates, two points of one method never
    mix, and once settled its three seeds sit in efficiency/results at the chosen rate."""
    import dataclasses

    from gelora.study import verdicts as study

    task = tmp_path / "study" / TASK
    for seed in range(3):
        add(task, "results", 2e-3, seed)
    write_run(task / "lr_sweep", "lora", 0, np.ones(N), config=FinetuneConfig(method="lora", **dict(BASE, n_train=32)))
    points = (("lora", 2), ("lora", 4))
    for config in study.efficiency_sweep_configs(task, points):  # the short sweep: 2e-3 wins for both points
        write_run(task / "efficiency" / "lr_sweep", "lora", 0, np.ones(N), lr=config.lr, rank=config.rank,
                  evals=(0.9 if config.lr == 2e-3 else 0.5,), config=config)
    track = study.efficiency_track(task, points)
    assert dict(track.anchors) == {"lora@2": 2e-3, "lora@4": 2e-3} and track.results == "efficiency/results"
    bases = dict(track.points)
    for label in ("lora@2", "lora@4"):
        for lr in (1e-3, 2e-3, 4e-3):
            for seed in (0, 1, 2):
                config = dataclasses.replace(bases[label], lr=lr, seed=seed)
                value = {1e-3: 0.70, 2e-3: 0.80, 4e-3: 0.60}[lr] if label == "lora@2" else {1e-3: 0.9, 2e-3: 0.8,
                                                                                           4e-3: 0.7}[lr]
                write_run(task / "efficiency" / ("results" if lr == 2e-3 else "rates"), "lora", seed,
                          np.ones(N), lr=lr, rank=config.rank, evals=(value + 0.001 * seed,), config=config)
    state = study_rates.choices(track)
    assert state["lora@2"][0].status == "interior" and state["lora@2"][0].rate == 2e-3
    assert state["lora@4"][0].rate == 1e-3 and state["lora@4"][0].to_train == [5e-4]  # its own curve, not r = 2's
    assert {len(runs) for _, runs in state.values()} == {9}
    assert study_rates.arrange(track, seeds=(0, 1, 2), state=state, log=None) == []  # lora@2: its seeds are there
    runs = study.efficiency_runs(task, points)
    assert runs["lora@2"][1] == "protocol (interior)" and {c.lr for c in runs["lora@2"][0]} == {2e-3}
    assert runs["lora@4"][1].startswith("one-seed short sweep")  # not settled: the old runs, said so


def _state(curves: dict) -> dict:
    """A `choices`-shaped state from method -> (chosen rate, rate -> per-seed validation)."""
    from gelora.training.tuning import RateChoice

    state = {}
    for method, (rate, curve) in curves.items():
        runs = {f"{method}{lr}{seed}": ({"lr": lr, "seed": seed, "metric": "accuracy", "final": {"accuracy": v}}, None)
                for lr, values in curve.items() for seed, v in enumerate(values)}
        state[method] = (RateChoice(method, rate, "interior", None, None), runs)
    return state


def test_flatter_is_a_t_interval_on_the_seed_drops_by_hand():
    """Each method's drop is paired within a seed (chosen rate minus the worse neighbour one step
    away, which is the lower mean, not each seed's lower value); the two methods' drops are
    compared with a t interval on 2 degrees of freedom, checked against a hand computation."""
    state = _state({
        "lora": (2e-3, {1e-3: [0.78, 0.70, 0.74], 2e-3: [0.90, 0.91, 0.92], 4e-3: [0.88, 0.90, 0.89], 1e-2: [0.1] * 3}),
        "lora_sb": (5e-3, {2.5e-3: [0.89, 0.88, 0.91], 5e-3: [0.90, 0.90, 0.91], 1e-2: [0.91, 0.87, 0.88]}),
    })
    drops = study_rates.step_drops(state)
    np.testing.assert_allclose(drops["lora"], [0.12, 0.21, 0.18])  # 1e-3 is the worse neighbour; 1e-2 is 5x away
    np.testing.assert_allclose(drops["lora_sb"], [-0.01, 0.03, 0.03])  # 1e-2 (mean 0.887) is below 2.5e-3 (0.893)
    result = study_rates.flatter(state)
    se = np.sqrt(np.var([0.12, 0.21, 0.18], ddof=1) / 3 + np.var([-0.01, 0.03, 0.03], ddof=1) / 3)
    assert result["difference"] == pytest.approx(0.17 - 0.0166667, abs=1e-6)
    assert result["high"] - result["difference"] == pytest.approx(4.302653 * se, rel=1e-6)
    assert result["verdict"] == "flatter" and result["low"] > 0
    assert "**flatter** than LoRA" in study_rates.flatter_words(result)
    # the same drops with seeds that scatter: the interval covers 0 and the words say not resolved
    noisy = _state({"lora": (2e-3, {1e-3: [0.80, 0.92, 0.75], 2e-3: [0.90, 0.91, 0.92]}),
                    "lora_sb": (5e-3, {2.5e-3: [0.80, 0.92, 0.91], 5e-3: [0.90, 0.90, 0.91]})})
    assert study_rates.flatter(noisy)["verdict"] == "not resolved"
    assert "flatter than LoRA: **not resolved**" in study_rates.flatter_words(study_rates.flatter(noisy))
    assert study_rates.flatter(_state({"lora": (2e-3, {2e-3: [0.9] * 3})})) is None
    with pytest.raises(ValueError, match="confidence"):
        study_rates.flatter(state, confidence=95)
