"""The study's reading (gelora.study.verdicts, gelora.study.readme): verdicts, summaries, plateau and the parameter-efficiency
curve from hand-made records with known per-example scores, and the README section generated
from the committed study."""
import json

import numpy as np
import pandas as pd
import pytest

from gelora.kit.paths import repo_root
from gelora.study import readme
from gelora.study import verdicts as study
from gelora.training.identity import identity_digest, run_id, run_identity
from gelora.training.predictions import write_predictions

N = 400  # test examples


def write_run(folder, method, seed, correct, params=73_728, lr=2e-3, rank=8, evals=(0.6, 0.7, 0.74, 0.75), config=None):
    """A record and its prediction file: `correct` is the per-example 1/0 vector. With `config`
    (a FinetuneConfig) the record carries its settings and is named by its run id."""
    import dataclasses

    folder.mkdir(parents=True, exist_ok=True)
    identity = run_identity(config) if config is not None else hand_identity(method, seed, rank)
    name = run_id(config) if config is not None else hand_name(method, seed, rank)
    labels = np.zeros(N, dtype=np.int64)
    predictions = np.where(correct == 1, 0, 1)
    entry = write_predictions(folder / f"{name}.predictions.npz", np.arange(N), predictions, labels,
                              correct.astype(np.float32))
    accuracy = float(correct.mean())
    settings = dataclasses.asdict(config) if config is not None else {"rank": rank}
    record = {"run_id": name, "method": method, "seed": seed, "dataset": TASK, "model": BASE["model"], "metric": "accuracy",
              "identity": identity, "task": "classification",
              "test": {"accuracy": accuracy}, "final": {"accuracy": evals[-1]}, "best": {"accuracy": max(evals)},
              "evals": [{"step": 25 * (i + 1), "accuracy": v} for i, v in enumerate(evals)],
              "adapter_params": params, "effective_adapter_params": params, "head_params": 770,
              "trainable_params": params + 770, "total_params": 22_000_000, "train_time_s": 1.0, "wall_time_s": 2.0,
              "init_time_s": 0.0, "peak_memory_mb": 80.0, "lr": lr, "steps": 100, "device": "cpu",
              "train_examples": 1600, "predictions": entry, "config": settings}
    (folder / f"{name}.json").write_text(json.dumps(record))


BASE = dict(model="tiny-bert", dataset="movie-sentiment", n_train=64, n_eval=16, evals=4)
TASK = BASE["dataset"]  # the hand-made study's one task: its folder's name is its dataset's


def hand_identity(method, seed, rank) -> dict:
    """A hand-made run's identity: what its record says it is (readers check the two agree)."""
    return {"settings": {"dataset": TASK, "model": BASE["model"], "method": method, "seed": seed, "rank": rank}}


def hand_name(method, seed, rank=8) -> str:
    return f"{TASK}__{BASE['model']}__{method}__seed{seed}__{identity_digest(hand_identity(method, seed, rank))}"


@pytest.fixture
def fake_study(tmp_path):
    """A study of one task with hand-made scores; its LoRA record and sweep carry real settings, so
    the efficiency points' sweeps and runs are named by the identities the study computes."""
    from gelora.training.config import FinetuneConfig

    rng = np.random.default_rng(0)
    task = tmp_path / "study" / TASK
    half = (np.arange(N) % 2).astype(float)
    for seed in range(3):
        write_run(task / "results", "lora", seed, half, config=FinetuneConfig(method="lora", seed=seed, lr=2e-3, **BASE))
        write_run(task / "results", "gelora", seed, np.ones(N))  # always right: +0.5, resolved
        write_run(task / "results", "lora_sb", seed, half.copy(), params=73_008, lr=5e-3)  # identical to LoRA: 0
        write_run(task / "results", "lora_xs", seed, (rng.random(N) < 0.5).astype(float), params=73_008, lr=5e-3)
    write_run(task / "lr_sweep", "lora", 0, half, config=FinetuneConfig(method="lora", **dict(BASE, n_train=32)))
    return tmp_path / "study"


POINT = [("lora_sb", 8)]


def add_efficiency_point(task, validation=(0.6, 0.8, 0.7)):
    """The point's sweep (best validation at `validation`'s maximum) and its three seeds at the
    chosen rate, scored like LoRA; plus an older run at another rate, always right, to be ignored."""
    sweep = study.efficiency_sweep_configs(task, POINT)
    for config, value in zip(sweep, validation):
        write_run(task / "efficiency" / "lr_sweep", "lora_sb", 0, np.ones(N), params=768, lr=config.lr, rank=8,
                  evals=(value,), config=config)
    half = (np.arange(N) % 2).astype(float)
    for config in study.efficiency_configs(task, POINT):
        write_run(task / "efficiency" / "results", "lora_sb", config.seed, half.copy(), params=768, lr=config.lr, rank=8,
                  config=config)
        import dataclasses
        stale = dataclasses.replace(config, lr=config.lr * 3)
        write_run(task / "efficiency" / "results", "lora_sb", config.seed, np.ones(N), params=768, lr=stale.lr, rank=8,
                  config=stale)
    return sweep


def test_claims_and_summaries_from_known_scores(fake_study):
    claims = study.claims(fake_study).set_index("claim")
    gelora = claims.loc["GeLoRA vs uniform LoRA, equal budget"]
    assert gelora["difference"] == pytest.approx(0.5) and gelora["verdict"] == "better"
    assert gelora["low"] == pytest.approx(0.5, abs=0.06) and gelora["seeds"] == "0,1,2"
    same = claims.loc["LoRA-SB vs LoRA, equal budget"]
    assert same["difference"] == 0 and same["verdict"] == "not resolved" and same["resolution"] == 0
    assert "GeLoRA vs AdaLoRA, equal budget" not in claims.index  # AdaLoRA was not run: no row, no guess
    summary = study.summaries(fake_study).set_index("method")
    assert summary.loc["gelora", "test_mean"] == 1.0 and summary.loc["lora_sb", "lr"] == 5e-3
    assert summary.loc["lora", "n_seeds"] == 3


def test_plateau_by_hand(fake_study):
    table = study.plateau(study.task_records(fake_study / TASK)).set_index("method")
    # evaluations at 25, 50, 75, 100: the last quarter is 75 -> 100, 0.74 -> 0.75; 0.74 < 0.99 x 0.75
    assert table.loc["lora", "gain_last_quarter"] == pytest.approx(0.01) and table.loc["lora", "reached_99pct_at"] == 100


def test_efficiency_sweeps_each_point_then_pairs_it_with_the_reference(fake_study):
    task = fake_study / TASK
    sweep = study.efficiency_sweep_configs(task, POINT)
    # around the study's LoRA-SB rate? the study has no lora_sb record with settings: its chosen rate is 5e-3
    assert [c.lr for c in sweep] == pytest.approx([1e-3, 5e-3, 2.5e-2]) and {c.n_train for c in sweep} == {32}
    assert {c.rank for c in sweep} == {8} and {c.budget for c in sweep} == {None} and {c.evals for c in sweep} == {1}
    assert study.efficiency_rates(task, POINT) == {}  # no sweep run yet: no rate, no run
    assert study.efficiency_configs(task, POINT) == []
    add_efficiency_point(task, validation=(0.6, 0.7, 0.8))
    assert study.efficiency_rates(task, POINT) == {("lora_sb", 8): pytest.approx(2.5e-2)}  # the best validation
    table = study.efficiency(task, points=POINT).set_index("point")
    point = table.loc["lora_sb@8"]
    assert point["fewer_than_reference"] == pytest.approx(96) and point["lr"] == pytest.approx(2.5e-2)
    assert point["difference"] == 0 and point["verdict"] == "matches"  # the stale, always-right runs are not read
    assert table.loc["gelora", "verdict"] == "better"
    assert point["seed_std"] == 0 and point["worst_seed"] == 0.5  # every seed scores half the examples
    # a point with one collapsed seed is named as unstable in the README's lines
    collapsed = pd.DataFrame({"point": ["lora@16", "lora@4"], "seed_std": [np.std([0.9, 0.9, 0.5], ddof=1), 0.0],
                              "worst_seed": [0.5, 0.9]})
    text = readme._unstable_text(collapsed)
    assert "LoRA r=16 (std 0.231, worst seed 0.500)" in text and "LoRA r=4" not in text
    assert readme._unstable_text(collapsed.iloc[1:]) == ""


def test_efficiency_ties_go_to_the_middle_rate(fake_study):
    task = fake_study / TASK
    add_efficiency_point(task, validation=(0.8, 0.8, 0.8))
    assert study.efficiency_rates(task, POINT) == {("lora_sb", 8): pytest.approx(5e-3)}


@pytest.mark.parametrize("validation", [0.9, 0.75])
def test_the_reference_rate_is_confirmed_at_full_length(fake_study, validation):
    """LoRA at the study's budget is also trained at a fifth of its rate; the rate with the better
    mean validation over the seeds becomes the curve's reference (a tie keeps the sweep's)."""
    task = fake_study / TASK
    add_efficiency_point(task)
    before = study.efficiency(task, points=POINT)
    assert before.attrs["reference"]["validation"] == {2e-3: 0.75} and "lora" not in set(before["point"])
    configs = study.reference_configs(task)
    assert [(c.lr, c.seed) for c in configs] == [(pytest.approx(4e-4), s) for s in (0, 1, 2)]
    assert {c.method for c in configs} == {"lora"} and {c.budget for c in configs} == {None}  # the study's own budget
    assert {c.n_train for c in configs} == {64}  # the study's full length, not the sweep's 32
    for config in configs:  # always right at the lower rate
        write_run(task / "efficiency" / "reference", "lora", config.seed, np.ones(N), lr=config.lr, config=config,
                  evals=(validation,))
    table = study.efficiency(task, points=POINT).set_index("point")
    reference = table.attrs["reference"]
    assert list(reference["validation"]) == pytest.approx([2e-3, 4e-4])
    assert list(reference["validation"].values()) == [0.75, validation]
    if validation > 0.75:  # the lower rate wins: every point is paired with the always-right runs
        assert reference["lr"] == pytest.approx(4e-4) and table.loc["lora_sb@8", "difference"] == -0.5
        assert table.loc["lora", "verdict"] == "worse" and table.loc["lora", "lr"] == 2e-3
        assert "not the sweep's 0.002" in study.reference_text(reference)
    else:  # a tie keeps the sweep's choice, and the study's LoRA is not compared with itself
        assert reference["lr"] == 2e-3 and table.loc["lora_sb@8", "difference"] == 0 and "lora" not in table.index
        assert "the sweep's choice, confirmed" in study.reference_text(reference)


def test_block_sweep_adapts_one_block_at_a_time(fake_study):
    task = fake_study / TASK
    for r in (task / "results").glob("*lora__seed*.json"):  # the study's LoRA: 2 blocks
        record = json.loads(r.read_text())
        r.write_text(json.dumps(dict(record, ranks={"0": 8, "1": 8})))
    configs = study.block_sweep_configs(task, ranks=(2, 8), seeds=(0,))
    assert [c.block_ranks for c in configs] == [[2, 0], [8, 0], [0, 2], [0, 8]]
    assert {c.lr for c in configs} == {2e-3} and {c.n_train for c in configs} == {32} and {c.method for c in configs} == {"lora"}
    assert len({run_id(c) for c in configs}) == 4
    write_run(task / "results", "full", 0, np.ones(N))  # a full fine-tuning record whose matrices have 4 singular values
    record_path = next((task / "results").glob("*__full__*.json"))
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps(dict(record, update_spectra={"q.0": [3, 2, 1, 0], "q.1": [1, 1, 0, 0]})))
    capped = study.block_sweep_configs(task, ranks=(2, 4, 8), seeds=(0,))
    assert [c.block_ranks for c in capped] == [[2, 0], [4, 0], [0, 2], [0, 4]]  # no rank above a matrix's side


def test_bound_words_call_a_bound_contradicted_only_where_its_whole_interval_is_above():
    table = pd.DataFrame({"bound_low": [0.0, 0.0, 4.0], "bound_high": [0.5, 3.0, 6.0], "need": [2.0, 2.0, 3.0]})
    assert study.bound_words(table, "need") == ("contradicted: the bound's whole interval lies above the need in 1 of 3 "
                                                 "blocks, and reaches above it in 1 more")
    assert study.bound_words(table.iloc[:2], "need").startswith("not resolved: the bound's interval reaches above the "
                                                                "need in 1 of 2 blocks but lies wholly above it in none")
    assert study.bound_words(table.iloc[:1], "need").startswith("not contradicted, but this test could not have failed")
    below = table.assign(need=[1.0, 10.0, 10.0])
    assert study.bound_words(below, "need") == "the bound stays below it in every block, and could have exceeded it in 2"
    # a block without a need is left out: the smallest need is then 10, above every interval
    assert study.bound_words(below.assign(need=[np.nan, 10.0, 10.0]), "need").endswith("below the smallest need 10 in every block")


def test_correlation_words_say_only_what_the_interval_resolves():
    from gelora.analysis.rank_need import bound_vs_need

    needs = pd.DataFrame({"block": range(6), "energy_rank_90": [10.0, 20, 30, 40, 50, 60]})
    rising = pd.DataFrame({"block": range(6), "bound": [0.0, 1, 2, 3, 4, 5], "bound_high": [0.5] * 6})
    _, v = bound_vs_need(rising, needs)
    assert study.correlation_words(v).endswith("permutation p = 0.00278: resolved: a larger bound goes with a larger need")
    one_block = rising.assign(bound=[0.0, 0, 0, 0, 0, 1.5])  # GeLoRA's usual case: one block above 0
    _, v = bound_vs_need(one_block, needs)
    # five tied bounds: the block above 0 is as extreme on the top or the bottom need, 2 orderings of 6
    assert v["spearman"] == pytest.approx(0.6547, abs=1e-4) and study.correlation_words(v).endswith(
        ": cannot resolve: with these ties the smallest p any ordering gives is 0.33")
    _, v = bound_vs_need(rising.assign(bound=0.0), needs)
    assert study.correlation_words(v).startswith("no correlation: the bound (or the need) is the same in every block")


def test_readme_section_is_written_between_the_markers(fake_study, tmp_path):
    section = readme.readme_section(fake_study)
    assert "| GeLoRA vs uniform LoRA, equal budget | **better** +0.500" in section
    page = tmp_path / "README.md"
    page.write_text(f"intro\n{readme.README_START}\nold\n{readme.README_END}\nrest\n")
    assert readme.update_readme(section, page) and readme.readme_block(page) == section
    assert not readme.update_readme(section, page)
    assert page.read_text().endswith(f"{readme.README_END}\nrest\n")
    with pytest.raises(FileNotFoundError, match="no study results"):
        study.task_folders(tmp_path / "nothing")


def test_the_readme_states_what_the_committed_study_says():
    from gelora.study.answer import ANSWER_END, ANSWER_START, answer_block

    assert readme.readme_block(repo_root() / readme.STUDY_PAGE) == readme.readme_section()
    assert readme.readme_block(repo_root() / "README.md", ANSWER_START, ANSWER_END) == answer_block()
    claims = pd.read_csv(repo_root() / "figures" / "study_claims.csv")
    assert set(claims["task"]) == set(study.task_folders())


def test_the_package_carries_the_committed_allocator_findings(tmp_path):
    """`gelora recommend` prints these to installed users: they must be the committed study's, and
    a changed result must make the file stale (so `gelora study --check` fails)."""
    from gelora.allocation.recommend import study_findings_text
    from gelora.study.findings import FINDINGS_PATH, findings, findings_json

    found = findings()  # about 20 s: every allocator table of both tasks
    assert FINDINGS_PATH.read_text() == findings_json(found=found)
    for t in found["tasks"].values():
        assert t["random_draws"] == 5 and t["allocators"]["uniform"]["verdict"] == "reference"
        assert t["allocators"]["weight_spectrum"]["verdict"] == "same ranks as uniform"  # MiniLM: the rule gives r = 8
    text = study_findings_text()
    assert all(f"- {task} (" in text for task in found["tasks"]) and "above every one of 5 random allocations" in text
    edited = json.loads(FINDINGS_PATH.read_text())
    edited["tasks"]["trec6"]["allocators"]["gelora"]["verdict"] = "worse"
    (tmp_path / "f.json").write_text(json.dumps(edited))
    assert "GeLoRA worse" in study_findings_text(tmp_path / "f.json")
    with pytest.raises(FileNotFoundError, match="lacks the study's findings"):
        study_findings_text(tmp_path / "missing.json")


def test_records_of_one_grid_only(fake_study):
    from gelora.analysis.results import load_records

    folder = fake_study / TASK / "results"
    assert len(load_records(folder)) == 12
    chosen = load_records(folder, run_ids=[hand_name("lora_sb", 0), hand_name("gelora", 1)])
    assert sorted(r["method"] for r in chosen) == ["gelora", "lora_sb"]
    with pytest.raises(FileNotFoundError, match="lacks the record"):
        load_records(folder, run_ids=[hand_name("lora", 9)])


def test_committed_verdicts_agree_with_a_t_interval_on_seed_means():
    """Every resolved claim of the committed study is also resolved, the same way, by the plain t
    interval on the seed means (t with S - 1 degrees of freedom), and the verdicts are the same on
    every call (a closed form: no resampling seed)."""
    from scipy import stats as scipy_stats

    from gelora.analysis.results import CLAIMS, paired_arrays, paired_scores

    table = study.claims()
    assert table.equals(study.claims())
    for task, folder in study.task_folders().items():
        scores = paired_scores(study.task_records(folder), folder / "results")
        for claim, method, reference, _ in CLAIMS:
            a, b, seeds, _ = paired_arrays(scores[method], scores[reference])
            means = (a - b).mean(axis=1)
            half = scipy_stats.t.ppf(0.975, len(seeds) - 1) * means.std(ddof=1) / np.sqrt(len(seeds))
            t_verdict = "better" if means.mean() - half > 0 else "worse" if means.mean() + half < 0 else "not resolved"
            verdict = table[(table["task"] == task) & (table["claim"] == claim)]["verdict"].item()
            if verdict != "not resolved":
                assert t_verdict == verdict, (task, claim)


def test_a_small_run_beside_the_study():
    row = dict(low=0.0, high=0.0, detectable=0.05)
    run = pd.DataFrame([dict(row, claim="A", difference=0.01, verdict="not resolved", seeds="0,1,2"),
                        dict(row, claim="B", difference=0.04, verdict="better", seeds="0,1,2")])
    big = pd.DataFrame([dict(row, claim="A", difference=-0.02, verdict="worse", seeds="0,1,2,3,4", task="t", detectable=0.01),
                        dict(row, claim="B", difference=0.00, verdict="not resolved", seeds="0,1,2,3,4", task="t",
                             detectable=0.01)])
    table, text = study.lesson_vs_study(run, big, "t")
    assert len(table) == 2 and "agree on 0 of 2 claims" in text
    assert "the study resolves A (worse, -0.020), which this run's interval could not tell from 0" in text
    assert "overturned for B (here better, the study not resolved)" in text
    assert study.lesson_vs_study(run, big, "other")[1] == "The study has no claim on other to compare this run with."
