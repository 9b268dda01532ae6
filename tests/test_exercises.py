"""Every notebook exercise runs as its command says (on the smoke profile), and the notebooks'
Exercises sections and SOLUTIONS.md are what notebooks/exercises.yaml renders."""
import json
import os
import subprocess
import sys

import pytest

from gelora.kit import exercises
from gelora.kit.exercise_checks import CHECKS
from gelora.kit.paths import repo_root

EXERCISES = [(stem, item) for stem, items in exercises.load().items() for item in items]


def test_every_notebook_has_two_or_three_exercises_and_the_files_are_current():
    data = exercises.load()
    assert all(2 <= len(items) <= 3 for items in data.values())
    assert exercises.out_of_date() == []  # notebooks and SOLUTIONS.md rendered from the YAML
    ids = [item["id"] for _, item in EXERCISES]
    assert len(ids) == len(set(ids))


# One exercise per notebook is executed (a notebook run costs 20-30 s here); every exercise's command
# is planned by the pipeline below, which checks its notebook, parameter names and types.
EXECUTED = [(stem, items[0]) for stem, items in exercises.load().items()]


@pytest.mark.parametrize("stem, exercise", EXERCISES, ids=[item["id"] for _, item in EXERCISES])
def test_every_exercise_command_is_a_valid_plan(stem, exercise, capsys):
    from gelora.kit.pipeline import main

    args = exercises.command(stem, exercise, profile="smoke", folder="runs/exercises/x", finished_run="runs/smoke")
    assert main([*args[4:], "--list"]) == 0, capsys.readouterr().err
    planned = capsys.readouterr().out.splitlines()
    assert len(planned) == 1 and planned[0].startswith(stem)
    for param in exercise["params"]:
        name, value = param.split("=", 1)
        assert f"'{name}': " in planned[0]


@pytest.mark.parametrize("stem, exercise", EXECUTED, ids=[item["id"] for _, item in EXECUTED])
def test_exercise_command_runs_writes_only_its_folder_and_can_be_checked(stem, exercise, smoke_run, tmp_path):
    run, _ = smoke_run
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    args = exercises.command(stem, exercise, profile="smoke", folder=str(tmp_path), finished_run=str(run))
    assert args[:4] == ["python", "-m", "gelora", "run"]
    result = subprocess.run([sys.executable, *args[1:], "--no-progress"], capture_output=True, text=True,
                            cwd=repo_root(), env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-2000:]
    executed = tmp_path / "executed" / f"{stem}.ipynb"  # the exercise's own folder, even for 05 and 06
    book = json.loads(executed.read_text())
    assert book["metadata"]["gelora"]["status"] == "completed"
    parameters = book["metadata"]["papermill"]["parameters"]
    for param in exercise["params"]:  # the exercise's change reached the notebook
        name, value = param.split("=", 1)
        assert name in parameters and str(parameters[name]).replace("'", "").replace(" ", "") == value.replace(" ", "")
    # the finished run it read is untouched (05 reads it; the others write elsewhere)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    check = CHECKS[exercise["id"]](tmp_path, run)  # its answer's check reads these outputs
    assert check.observed and check.claim and isinstance(check.holds, bool)


def test_every_exercise_is_measured_on_the_class_profile_and_its_check_holds():
    """The committed measurements (python -m gelora exercises --measure, about 15 minutes, not run
    here) cover every exercise, were made on the class profile and confirm every answer; SOLUTIONS.md
    states them (checked above by out_of_date)."""
    record = exercises.measured()
    assert record["profile"] == "class"
    assert set(record["exercises"]) == {item["id"] for _, item in EXERCISES}
    stale = sorted(item["id"] for _, item in EXERCISES if record["exercises"][item["id"]]["params"] != item["params"])
    assert not stale, f"exercises changed since they were measured: {stale} (python -m gelora exercises --measure ...)"
    failed = {k: v["observed"] for k, v in record["exercises"].items() if not v["holds"]}
    assert not failed, failed
    solutions = (repo_root() / "notebooks" / "SOLUTIONS.md").read_text()
    for check in record["exercises"].values():
        assert check["observed"] in solutions
