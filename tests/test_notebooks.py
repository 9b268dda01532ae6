"""The notebooks as a user meets them: stripped, documented, parameterised, and runnable through
papermill, alone or as the whole pipeline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from gelora.kit import pipeline
from gelora.methods import registry as methods

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIGURES = ["fig_id_profile", "fig_ranks_per_method", "fig_lora_sb_spectra", "fig_metric_vs_params",
           "fig_training_curves", "fig_cost", "twonn_fit", "id_profile_poolings", "id_scaling",
           "ranks_from_profile", "rank_sensitivity", "sb_spectra", "sb_truncation_error", "sb_subspace_stability",
           "sb_first_steps", "training_curves", "rank_intervals", "fig_study_claims", "bound_vs_need", "lr_sensitivity"]


def test_six_numbered_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_stripped_and_documented(path):
    book = nbformat.read(str(path), as_version=4)
    nbformat.validate(book)
    assert all(cell.get("id") for cell in json.loads(path.read_text())["cells"]), "every cell has an id (nbformat 4.5)"
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
    first = book.cells[0]
    assert first.cell_type == "markdown" and "**Reads:**" in first.source and "**Writes:**" in first.source
    tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and book.cells.index(tagged[0]) == 1
    declared = pipeline.declared_parameters(path)  # raises if papermill cannot parse a line
    for line in tagged[0].source.splitlines()[1:]:
        if line.strip():
            assert "#" in line, f"{path.name}: parameter line without a comment: {line}"
    assert all(v["inferred_type_name"] != "None" for v in declared.values()), "every parameter is typed"
    for cell in book.cells[2:]:  # short code cells with prose between them; logic lives in gelora
        if cell.cell_type == "code":
            assert len(cell.source.splitlines()) <= 20, f"{path.name}: a code cell of {len(cell.source.splitlines())} lines"


def test_the_whole_pipeline_runs_on_the_smoke_profile(smoke_run):
    run, outputs = smoke_run
    assert [p.name for p in outputs] == [p.name for p in NOTEBOOKS]
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000, name
    for name in ("fig_id_profile", "fig_metric_vs_params"):
        assert (run / "figures" / f"{name}.pdf").exists()
    table = (run / "figures" / "results_table.md").read_text()
    for method in methods.names():  # the smoke profile compares every registered method
        assert f"| {method} " in table
    ranks = json.loads((run / "ranks.json").read_text())
    assert ranks["allocation"]["params"] <= ranks["budget"]
    assert len(list((run / "results").glob("*.json"))) == len(methods.names())


def test_a_rerun_reuses_finished_work(smoke_run):
    run, _ = smoke_run
    stamps = {p: p.stat().st_mtime for p in (run / "results").glob("*.json")}
    pipeline.run("smoke", overrides=[f"figures_dir={run / 'figures'}"], run_dir=str(run), only=["04"], progress=False)
    assert stamps == {p: p.stat().st_mtime for p in (run / "results").glob("*.json")}


def test_notebooks_run_on_their_own_and_on_your_own_data(tmp_path, capsys):
    """02 and 04 compute the profile they need when notebook 01 has not run; one `-p dataset=` of a
    user's CSV with its own column names (divided by the kit) is enough, the profile's sizes that do
    not fit are fitted."""
    from gelora.data.tasks import load_dataset

    movies = load_dataset("movie-sentiment", "train")
    own = tmp_path / "mine.csv"
    pd.DataFrame({"review": movies.texts[:200], "stars": [movies.label_names[i] for i in movies.labels[:200]]}).to_csv(
        own, index=False)
    run = tmp_path / "run"
    overrides = [f"dataset={own}", "04.methods=[lora, gelora]", "02.sensitivity_examples=[40]"]
    outputs = pipeline.run("smoke", overrides=overrides, run_dir=str(run), only=["02", "04"], progress=False,
                           columns={"text": "review", "label": "stars"})
    assert len(outputs) == 2 and (run / "id_profile.csv").exists() and (run / "ranks.json").exists()
    assert "n_test=24 was set for movie-sentiment; " in capsys.readouterr().out  # 20 test rows of 200: fitted
    records = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    assert {r["method"] for r in records} == {"lora", "gelora"}
    assert all(r["file_split"]["sizes"] == {"train": 160, "validation": 20, "test": 20} for r in records)
    assert all(r["examples"]["test"] == 20 for r in records) and (run / "figures").is_dir()


def test_the_guides_papermill_line_writes_only_into_its_run_folder(tmp_path):
    lines = (ROOT / "docs" / "GUIDE.md").read_text().splitlines()
    line = next(x for x in lines if x.startswith(".venv/bin/papermill "))
    assert lines[lines.index(line) - 1].startswith("mkdir -p /tmp/run")  # papermill does not make the folder
    args = line.replace("/tmp/run", str(tmp_path / "run")).split()[1:] + ["--log-level", "ERROR"]
    args += ["-y", "seeds: [0]\nmethods: [lora, gelora]"]  # fewer runs: the writes are what is tested
    (tmp_path / "run").mkdir()
    status = ["git", "status", "--porcelain", "--untracked-files=all"]
    before = subprocess.run(status, cwd=ROOT, capture_output=True, text=True).stdout
    result = subprocess.run([sys.executable, "-m", "papermill", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert subprocess.run(status, cwd=ROOT, capture_output=True, text=True).stdout == before
    assert (tmp_path / "run" / "figures" / "training_curves.png").is_file()


def test_unknown_parameters_and_profiles_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="declared by no notebook"):
        pipeline.run("smoke", overrides=["learning_rate=3"], run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="04_fine_tuning declares no parameter 'pooling_kind'"):
        pipeline.run("smoke", overrides=["04.pooling_kind=mean"], run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="must be int"):
        pipeline.run("smoke", overrides=["01.n_examples=many"], run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown profile 'laptop'"):
        pipeline.run("laptop")
    bad = tmp_path / "bad.yaml"
    bad.write_text("common:\n  model: tiny-bert\nnotebooks:\n  01_representation_probing:\n    n_points: 3\n")
    with pytest.raises(ValueError, match="declares no parameter 'n_points'"):
        pipeline.run(str(bad))


def test_a_failing_cell_is_reported_with_notebook_and_cell(tmp_path):
    with pytest.raises(pipeline.NotebookFailed, match=r"01_representation_probing.ipynb failed in cell \d+.*unknown pooling"):
        pipeline.run("smoke", overrides=["01.pooling=maxpool"], run_dir=str(tmp_path), only=["01"], progress=False)
    assert (tmp_path / "executed" / "01_representation_probing.ipynb").exists()


def test_command_line_reports_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gelora.kit.pipeline", "--profile", "smoke", "-p", "nope=1",
                             "--run-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ))
    assert result.returncode == 1 and "parameter 'nope' is declared by no notebook" in result.stderr
    listing = subprocess.run([sys.executable, "-m", "gelora.kit.pipeline", "--profile", "cpu", "--list"],
                             capture_output=True, text=True, cwd=ROOT)
    assert listing.returncode == 0 and "04_fine_tuning" in listing.stdout


@pytest.mark.parametrize("name", pipeline.available_profiles())
def test_every_shipped_profile_is_valid(name):
    profile = pipeline.load_profile(name)
    steps = pipeline.plan(profile)
    assert len(steps) == len(NOTEBOOKS) - len(profile["skip"]) and not {p.stem for p, _ in steps} & set(profile["skip"])


def test_the_decoder_path_runs_on_the_smoke_llm_profile(tmp_path):
    """Notebooks 01-05 on a tiny Llama and the arithmetic set: last-token profile over its blocks,
    ranks over seven projections, chat-free generation runs scored by exact match; no noise."""
    outputs = pipeline.run("smoke-llm", overrides=[f"figures_dir={tmp_path / 'figures'}"], run_dir=str(tmp_path),
                           progress=False)
    assert [p.stem[:2] for p in outputs] == ["01", "02", "03", "04", "05"]
    profile = pd.read_csv(tmp_path / "id_profile.csv")
    assert set(profile["pooling"]) == {"last"} and len(profile) == 5  # embeddings + 4 blocks
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    assert {r["metric"] for r in records} == {"exact_match"} and len(records) == 3
    lora = next(r for r in records if r["method"] == "lora")
    assert len(lora["target_modules"]) == 7 and len(lora["ranks"]) == 4 and set(lora["ranks"].values()) == {2}
    for path in outputs:
        for cell in nbformat.read(str(path), as_version=4).cells:
            assert not [o for o in cell.get("outputs", []) if o.get("name") == "stderr"], path.name


def test_executed_notebooks_carry_no_noise(smoke_run):
    """No stderr (warnings, progress bars, load reports) and no machine-specific paths in outputs."""
    _, outputs = smoke_run
    root = str(pipeline.repo_root())
    for path in outputs:
        book = nbformat.read(str(path), as_version=4)
        for cell in book.cells:
            for output in cell.get("outputs", []):
                text = json.dumps(output.get("text", "")) + json.dumps(output.get("data", {}).get("text/plain", ""))
                assert output.get("name") != "stderr", f"{path.name}: stderr output {text[:300]}"
                assert root not in text, f"{path.name}: absolute path in an output: {text[:300]}"
                assert "it/s]" not in text and "Warning" not in text, f"{path.name}: {text[:300]}"
