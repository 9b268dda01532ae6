"""The benchmark's profile, its reuse of the study's runs, and the pre-registration guard."""
import subprocess

import pytest

from gelora.study import benchmark as bm

PROFILE = bm.PROFILE.read_text()


def _profile(tmp_path, text):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("change, match", [
    (("heldout_seeds: [10, 11, 12]", "heldout_seeds: [2, 11, 12]"), "none of them a selection seed"),
    (("heldout_seeds: [10, 11, 12]", "heldout_seeds: [10, 11]"), "at least 3 seeds"),
    (("random_draws: 20", "random_draws: 5"), "random_draws must be a whole number >= 20"),
    (("selection_seeds: [0, 1, 2]", "selection_seeds: [0, 1, 3]"), "must be the rate protocol's"),
    (("margin: 0.01", "margin: 1"), "margin and alpha"),
    (("alpha: 0.05", "alpha: 0.05\nalfa: 0.1"), "unknown benchmark setting"),
    (("  sms-spam: {n_train: 3000, max_length: 64}", "  sms-spam: {n_train: 3000, max_len: 64}"), "unknown setting"),
    (("model: minilm", "model: &m minilm\nmodel2: *m"), "alias"),
    (("model: minilm", "model: minilm\nmodel: tiny-bert"), "appears twice"),
])
def test_a_bad_benchmark_profile_is_refused_by_name(tmp_path, change, match):
    assert change[0] in PROFILE
    with pytest.raises(ValueError, match=match):
        bm.load_benchmark(_profile(tmp_path, PROFILE.replace(*change)))


def test_projected_counts_are_points_rates_and_seeds():
    bench = bm.load_benchmark()
    assert bm.projected(bench, "heldout") == 7 * 3 * 3  # 7 points x (rate, /2, x2) x 3 seeds
    assert bm.projected(bench, "null") == (3 + 20) * 3  # GeLoRA, inverted, uniform + 20 random draws


def test_the_study_tasks_reuse_their_committed_rates():
    """movie-sentiment's seven points were settled by the study's protocol: no selection run is
    left, and its held-out runs are every point at its rate, half and twice it, seeds 10-12 only."""
    bench = bm.load_benchmark()
    task = next(t for t in bench.tasks if t.name == "movie-sentiment")
    current = bm.state(bench, task)
    assert set(current) == set(bm.POINTS) and all(c.settled for c, *_ in current.values())
    assert bm.selection_runs(bench, task) == []
    runs = bm.heldout_runs(bench, task, current)
    assert {c.seed for c in runs} == {10, 11, 12} and len(runs) == 63
    lora = sorted({c.lr for c in runs if c.method == "lora" and c.budget is not None})
    assert lora == [0.001, 0.002, 0.004]  # the protocol chose 2e-3 (results/study/movie-sentiment/rates.csv)


def test_held_out_runs_wait_for_a_committed_preregistration(tmp_path, monkeypatch):
    monkeypatch.setattr(bm, "repo_root", lambda: tmp_path)
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    with pytest.raises(RuntimeError, match="missing"):
        bm.preregistered()
    (tmp_path / "docs").mkdir()
    (tmp_path / bm.PREREGISTRATION).write_text("claims\n")
    with pytest.raises(RuntimeError, match="uncommitted"):
        bm.preregistered()
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pre-registration")
    assert len(bm.preregistered()) == 40
    (tmp_path / bm.PREREGISTRATION).write_text("claims, changed after the fact\n")
    with pytest.raises(RuntimeError, match="uncommitted"):
        bm.preregistered()


def test_every_task_asks_for_no_more_training_examples_than_its_split_holds():
    """A task whose training split is smaller than n_train would fail every run (the kit refuses
    a subset larger than the split): such a task takes its whole split (n_train null)."""
    import json

    manifest = json.loads((bm.repo_root() / "data" / "manifest.json").read_text())
    for task in bm.load_benchmark().tasks:
        rows = manifest["datasets"][task.data]["splits"]["train"]["rows"]
        assert task.n_train is None or task.n_train <= rows, (task.name, task.n_train, rows)
