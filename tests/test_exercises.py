"""Every notebook exercise runs as its command says (on the smoke profile), and the notebooks'
Exercises sections and SOLUTIONS.md are what notebooks/exercises.yaml renders."""
import json
import os
import subprocess
import sys

import pytest

from gelora import exercises
from gelora.pipeline import load_profile, repo_root, resolve

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
    from gelora.pipeline import main

    args = exercises.command(stem, exercise, profile="smoke", folder="runs/exercises/x", finished_run="runs/smoke")
    assert main([*args[3:], "--list"]) == 0, capsys.readouterr().err
    planned = capsys.readouterr().out.splitlines()
    assert len(planned) == 1 and planned[0].startswith(stem)
    for param in exercise["params"]:
        name, value = param.split("=", 1)
        assert f"'{name}': " in planned[0]


@pytest.mark.parametrize("stem, exercise", EXECUTED, ids=[item["id"] for _, item in EXECUTED])
def test_exercise_command_runs(stem, exercise, smoke_run, tmp_path):
    run, _ = smoke_run
    args = exercises.command(stem, exercise, profile="smoke", folder=str(tmp_path), finished_run=str(run))
    assert args[:3] == ["python", "-m", "gelora.pipeline"]
    result = subprocess.run([sys.executable, *args[1:], "--no-progress"], capture_output=True, text=True,
                            cwd=repo_root(), env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-2000:]
    folder = {"05": run, "06": resolve(load_profile("smoke")["common"]["run_dir"])}.get(stem[:2], tmp_path)
    executed = folder / "executed" / f"{stem}.ipynb"  # 06 declares no run_dir: the profile's folder
    book = json.loads(executed.read_text())
    assert book["metadata"]["gelora"]["status"] == "completed"
    parameters = book["metadata"]["papermill"]["parameters"]
    for param in exercise["params"]:  # the exercise's change reached the notebook
        name, value = param.split("=", 1)
        assert name in parameters and str(parameters[name]).replace("'", "").replace(" ", "") == value.replace(" ", "")
