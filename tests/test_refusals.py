"""The fault table of the third bad-input round: nothing runs that a user did not write, nothing
finished is overwritten, no real change is settled away. Each row either ends in a clear error
(type and message) or asserts the correct result against an independent truth."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gelora.training.config import FinetuneConfig, validate
from tests.cases import Table, check

table = Table()
case = table.case
TINY = dict(model="tiny-bert", n_train=32, n_eval=16, n_test=16, max_length=16, epochs=1.0, batch_size=16, evals=1,
            progress=False)
HOSTILE = "d;touch INJECTED;#$(touch X)`touch Y`'q\""


def _task(folder: Path, rows: int = 48) -> Path:
    """A small two-class task folder (train/validation/test) of shipped movie sentences."""
    from gelora.data.tasks import load_dataset

    data = load_dataset("movie-sentiment", "train").subset(3 * rows, seed=0)
    frame = pd.DataFrame({"text": data.texts, "label": np.array(data.label_names)[data.labels]})
    folder.mkdir(parents=True)
    for i, split in enumerate(("train", "validation", "test")):
        frame.iloc[i * rows:(i + 1) * rows].to_csv(folder / f"{split}.csv", index=False)
    return folder


# ---------------------------------------------------------------- no shell in the job path

@case("jobs", "a hostile folder name trains as a path through a jobs file, nothing injected runs")
def _hostile_jobs_file(tmp):
    from gelora.study.grid import write_jobs
    from gelora.training.identity import run_id

    data = _task(tmp / HOSTILE)
    config = FinetuneConfig(method="lora", dataset=str(data), output_dir=str(tmp / "runs"), **TINY)
    write_jobs([config], tmp / "jobs.jsonl")
    done = subprocess.run([sys.executable, "-m", "gelora", "job", str(tmp / "jobs.jsonl"), "--index", "1"], cwd=tmp,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp / "runs" / f"{run_id(config)}.json").is_file()
    assert not any((tmp / name).exists() for name in ("INJECTED", "X", "Y"))


@case("jobs", "run_jobs starts an argument list: the hostile path is one argument")
def _run_jobs_argv(tmp):
    from gelora.study import grid

    seen = []
    real = subprocess.call
    try:
        grid.subprocess.call = lambda argv, **kw: seen.append(argv) or 0
        config = FinetuneConfig(method="lora", dataset=str(tmp / HOSTILE), output_dir=str(tmp / "runs"), **TINY)
        assert grid.run_jobs([config], 1, tmp / "logs", log=None) == 0
    finally:
        grid.subprocess.call = real
    (argv,) = seen
    assert isinstance(argv, list) and argv[argv.index("--dataset") + 1] == str(tmp / HOSTILE)


@case("jobs", "gelora grid writes notices to stderr: stdout holds only job lines")
def _grid_stdout(tmp):
    import contextlib
    import io
    import shlex

    from gelora.study import grid

    config = FinetuneConfig(method="lora", dataset=str(tmp / HOSTILE), output_dir=str(tmp / "runs"), **TINY)

    def noisy(**params):
        print(f"split {tmp / HOSTILE} 80/10/10")  # a notice naming the data, as the data loaders print
        return [config], 0

    originals = grid.profile_parameters, grid.notebook_grid
    out, err = io.StringIO(), io.StringIO()
    try:
        grid.profile_parameters = lambda *a, **k: {"run_dir": str(tmp)}
        grid.notebook_grid = noisy
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert grid.main(["--profile", "smoke"]) == 0
    finally:
        grid.profile_parameters, grid.notebook_grid = originals
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "80/10/10" in err.getvalue() and "80/10/10" not in out.getvalue()
    assert shlex.split(lines[0])[shlex.split(lines[0]).index("--dataset") + 1] == str(tmp / HOSTILE)


@case("jobs", "a newline in a dataset folder name is refused before anything is written", ValueError,
      r"dataset must not contain control characters")
def _newline(tmp):
    validate(FinetuneConfig(method="lora", dataset=str(tmp / "a\nb"), **TINY))


@case("jobs", "a terminal escape in a label column name is refused", ValueError, r"label_column must not contain")
def _escape(tmp):
    validate(FinetuneConfig(method="lora", label_column="lab\x1b[2Jel", **TINY))


@case("jobs", "a jobs line that is not a gelora training command is refused", ValueError, r"not a gelora training command")
def _foreign_job(tmp):
    from gelora.study.jobs import read_job

    (tmp / "jobs.jsonl").write_text(json.dumps({"argv": ["sh", "-c", "touch X"]}) + "\n")
    read_job(tmp / "jobs.jsonl", 1)


@case("jobs", "a jobs index past the file names the count", ValueError, r"past the last job .* \(1 job")
def _past_index(tmp):
    from gelora.study.grid import write_jobs
    from gelora.study.jobs import read_job

    write_jobs([FinetuneConfig(method="lora", **TINY)], tmp / "jobs.jsonl")
    read_job(tmp / "jobs.jsonl", 2)


@case("jobs", "a 1 KB YAML alias bomb in a profile is refused before anything expands", ValueError, r"alias \*a")
def _alias_bomb(tmp):
    from gelora.kit.profiles import load_profile

    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                                                     for p, c in zip("abcdefgh", "bcdefghi")]
    (tmp / "bomb.yaml").write_text("\n".join(lines) + "\ncommon: {seed: 0}\n")
    load_profile(str(tmp / "bomb.yaml"))


# ---------------------------------------------------------------- finished work is never overwritten

def _saved(tmp, seed=0, **extra):
    from gelora.training.train import finetune

    data = tmp / "task" if (tmp / "task").is_dir() else _task(tmp / "task")
    return finetune("lora", dataset=str(data), output_dir=str(tmp / "runs"), seed=seed, **TINY, **extra)


@case("adapter", "--save-adapter refuses a folder holding another run's adapter, before training", ValueError,
      r"holds the adapter of another run .*--force")
def _other_run(tmp):
    _saved(tmp, save_adapter=str(tmp / "A"))
    _saved(tmp, seed=1, save_adapter=str(tmp / "A"))


@case("adapter", "--force replaces another run's adapter, and predict reads the new one")
def _forced(tmp):
    from gelora.training.saved import load_trained

    _saved(tmp, save_adapter=str(tmp / "A"))
    second = _saved(tmp, seed=1, save_adapter=str(tmp / "A"), force=True)
    assert load_trained(tmp / "A")[2]["run_id"] == second["run_id"]
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []  # no leftover partial folders


@case("adapter", "an existing file as --save-adapter is refused", ValueError, r"is a file")
def _file_target(tmp):
    (tmp / "A").write_text("notes")
    _saved(tmp, save_adapter=str(tmp / "A"))


@case("adapter", "--save-adapter equal to --output-dir is refused", ValueError, r"is the results folder")
def _same_as_results(tmp):
    _saved(tmp, save_adapter=str(tmp / "runs"))


@case("adapter", "an unwritable --save-adapter fails before training and keeps no half record", ValueError,
      r"cannot write|is a file")
def _unwritable(tmp):
    (tmp / "blocker").write_text("a file where a folder should be")
    try:
        _saved(tmp, save_adapter=str(tmp / "blocker" / "A"))
    finally:
        assert not (tmp / "runs").exists() or not list((tmp / "runs").glob("*.json"))


@case("adapter", "predict refuses weights that are not the ones its run saved", ValueError,
      r"does not hold what run .* saved: changed or missing: \['adapter_model.safetensors'\]")
def _swapped_weights(tmp):
    from gelora.training.saved import load_trained

    _saved(tmp, save_adapter=str(tmp / "A"))
    _saved(tmp, seed=1, save_adapter=str(tmp / "B"))
    (tmp / "A" / "adapter_model.safetensors").write_bytes((tmp / "B" / "adapter_model.safetensors").read_bytes())
    load_trained(tmp / "A")


@case("adapter", "a write cut short leaves the old adapter whole")
def _cut_short(tmp):
    from gelora.training import saved
    from gelora.training.saved import load_trained

    first = _saved(tmp, save_adapter=str(tmp / "A"))
    real = saved._write_trained

    def dies(model, tokenizer, folder, run, initial):
        (folder / "adapter_model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # killed between the weights and the run file

    saved._write_trained = dies
    try:
        with pytest.raises(KeyboardInterrupt):
            _saved(tmp, seed=1, save_adapter=str(tmp / "A"), force=True)
    finally:
        saved._write_trained = real
    assert load_trained(tmp / "A")[2]["run_id"] == first["run_id"]
    assert oct((tmp / "A" / "adapter_model.safetensors").stat().st_mode & 0o777) == "0o644"


# ---------------------------------------------------------------- labels decided explicitly

def _labels(values, task=None):
    from gelora.data.tasks import _from_frame

    frame = pd.DataFrame({"text": [f"text {i}" for i in range(len(values))], "label": values})
    return _from_frame(frame, "own", "train", "text", "label", task, None)


@case("labels", '"1" and "1.0" in one column are one class, not a 4-class head')
def _one_class(tmp):
    data = _labels(["1", "1.0", "0", "0.0", 1, 0.0] * 4)
    assert data.task == "classification" and data.label_names == ["0", "1"]
    assert data.labels.tolist() == [1, 1, 0, 0, 1, 0] * 4


@case("labels", "one stray non-whole label among whole ones is an error naming its row", ValueError,
      r"1 non-whole label\(s\) .* declare task='regression'.*data row\(s\) 7 ")
def _stray(tmp):
    _labels(["1", "0"] * 3 + ["1.5"] + ["0", "1"] * 10)


@case("labels", "a declared regression keeps whole-number scores as numbers")
def _declared_regression(tmp):
    data = _labels(["1", "0", "3", "2"] * 3, task="regression")
    assert data.task == "regression" and data.labels.dtype == np.float32 and data.labels[:4].tolist() == [1, 0, 3, 2]


@case("labels", "clearly continuous labels are regression")
def _continuous(tmp):
    assert _labels([f"{0.37 * i:.2f}" for i in range(1, 30)]).task == "regression"


# ---------------------------------------------------------------- records cross-checked where read

def _study_copy(tmp) -> Path:
    import shutil

    from gelora.kit.paths import repo_root

    source = repo_root() / "results" / "study" / "trec6" / "results"
    record = sorted(source.glob("*__lora__seed0__*.json"))[0]
    folder = tmp / "trec6" / "results"
    folder.mkdir(parents=True)
    for path in (record, source / json.loads(record.read_text())["predictions"]["file"]):
        shutil.copy2(path, folder / path.name)
    return folder / record.name


def _edited(tmp, edit):
    """A committed study record copied into tmp, changed by `edit`, then read as every reader reads it."""
    from gelora.analysis.results import load_records

    path = _study_copy(tmp)
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    load_records(path.parent)


@case("records", "a record edited to say movie-sentiment / tiny-bert is refused where it is read", ValueError,
      r"its dataset, model differ from the identity")
def _edited_dataset(tmp):
    _edited(tmp, lambda record: record.update(dataset="movie-sentiment", model="tiny-bert"))


@case("records", "an edited test accuracy no longer moves any table", ValueError,
      r"is not the mean of its per-example scores")
def _edited_accuracy(tmp):
    _edited(tmp, lambda record: record["test"].update(accuracy=record["test"]["accuracy"] + 0.01))


@case("records", "an edited identity no longer hashes to the record's name", ValueError, r"does not hash to its name")
def _edited_identity(tmp):
    def edit(record):
        record["identity"]["settings"]["dataset"] = record["dataset"] = "movie-sentiment"

    _edited(tmp, edit)


@case("records", "a record of another task copied into a task folder is refused", ValueError,
      r"holds runs of \['trec6'\]")
def _other_task(tmp):
    from gelora.study.folders import task_records

    path = _study_copy(tmp)
    (tmp / "sms-spam").mkdir()
    path.parent.rename(tmp / "sms-spam" / "results")
    task_records(tmp / "sms-spam")


@case("records", "a record that is an empty object is one line from the CLI, no traceback")
def _empty_record(tmp):
    folder = tmp / "study" / "trec6" / "results"
    folder.mkdir(parents=True)
    (folder / "x.json").write_text("{}")
    done = subprocess.run([sys.executable, "-m", "gelora", "study", "--study-dir", str(tmp / "study")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "not a gelora run record" in done.stderr


@case("records", "a moving branch is not a pin: a cached ref resolves to its commit, else a warning")
def _moving_branch(tmp):
    import huggingface_hub.constants as hub

    from gelora.training import identity

    commit = "0123456789abcdef0123456789abcdef01234567"
    ref = Path(hub.HF_HUB_CACHE) / "models--org--model" / "refs"
    original = hub.HF_HUB_CACHE
    try:
        hub.HF_HUB_CACHE = str(tmp)
        (tmp / "models--org--model" / "refs").mkdir(parents=True)
        (tmp / "models--org--model" / "refs" / "main").write_text(commit)
        assert identity.model_fingerprint("org/model@main", 0) == f"hub:org/model@{commit}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert identity.model_fingerprint("org/other@master", 0) == "hub:org/other@master"
        assert any("branch or tag that can move" in str(w.message) for w in caught)
        assert identity.model_fingerprint(f"org/model@{commit}", 0) == f"hub:org/model@{commit}"
    finally:
        hub.HF_HUB_CACHE = original
    assert not ref.exists() or ref.is_dir()


# ---------------------------------------------------------------- the leftovers

@case("leftovers", "a profile with fewer layers than the model's blocks is refused", ValueError,
      r"3 layers, so 2 blocks, but the model has 4 blocks")
def _short_profile(tmp):
    from gelora.allocation.ranks import gelora_ranks

    shapes = {b: [("query", 8, 8)] for b in range(4)}
    gelora_ranks(pd.DataFrame({"layer": [0, 1, 2], "dimension": [5.0, 7.0, 9.0]}), budget=64, shapes=shapes, offset=1.0)


@case("leftovers", "an all-zero LoRA-SB update is refused naming the layer", ValueError, r"update\[.*\] is all zeros")
def _zero_update(tmp):
    from gelora.adapters.lora_sb import apply_lora_sb
    from gelora.models.loading import load_model
    from gelora.models.targets import find_targets

    model, _ = load_model("tiny-bert", "classification", 2, seed=0)
    update = {name: torch.zeros_like(m.weight) for name, m in find_targets(model, ["query"]).items()}
    apply_lora_sb(model, update, rank=2, target_modules=["query"])


@case("leftovers", "a NaN in the LoRA-SB update is one error naming the layer, not a linalg error", ValueError,
      r"update\[.*\] holds NaN or inf")
def _nan_update(tmp):
    from gelora.adapters.lora_sb import apply_lora_sb
    from gelora.models.loading import load_model
    from gelora.models.targets import find_targets

    model, _ = load_model("tiny-bert", "classification", 2, seed=0)
    update = {name: torch.randn_like(m.weight) for name, m in find_targets(model, ["query"]).items()}
    next(iter(update.values()))[0, 0] = float("nan")
    apply_lora_sb(model, update, rank=2, target_modules=["query"])


@case("leftovers", "TwoNN on the meta device is one error naming the device", ValueError, r"device must be .* got 'meta'")
def _meta_twonn(tmp):
    from gelora.geometry.twonn import TwoNN

    TwoNN(device="meta").fit(np.random.default_rng(0).normal(size=(50, 4)))


@case("leftovers", "hub ids pass profile's and recommend's argument check (as in train)")
def _hub_ids(tmp):
    import argparse

    from gelora.cli import _check_probe_arguments

    for model in ("HuggingFaceTB/SmolLM2-135M", "org/model@0123abc"):
        _check_probe_arguments(argparse.Namespace(model=model, n_texts=10, max_length=8, batch_size=4, seed=0,
                                                  device="cpu", output_dir=str(tmp / "out")))
    with pytest.raises(ValueError, match="neither a known name, a hub id"):
        _check_probe_arguments(argparse.Namespace(model="./no/such/folder/here", n_texts=10, max_length=8, batch_size=4,
                                                  seed=0, device="cpu", output_dir=str(tmp / "out")))


@case("leftovers", "migrate --apply stops on a non-UTF-8 file with nothing renamed, and a rerun still sees the plan")
def _migrate_atomic(tmp):
    from gelora.training import migrate

    record = tmp / "old__name.json"
    record.write_text("{}")
    (tmp / "notes.md").write_bytes(b"old__name \xff\xfe")
    rename = migrate.Rename(record, "old__name", "new__name", {"run_id": "new__name"}, "test")
    with pytest.raises(ValueError, match="cannot be read as UTF-8 text .* nothing was renamed"):
        migrate.apply([rename], [tmp])
    assert record.is_file() and not (tmp / "new__name.json").exists()


@case("leftovers", "an unexpected error in the CLI is one line without --debug")
def _one_line(tmp):
    from gelora import cli

    def boom(args):
        raise RuntimeError("the device went away")

    parser = cli.parser
    try:
        cli.parser = lambda: type("P", (), {"parse_args": lambda self, argv: type("A", (), {"handler": staticmethod(boom)})()})()
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert cli.main(["predict", "x", "y"]) == 1
    finally:
        cli.parser = parser
    assert err.getvalue().count("\n") == 1 and "RuntimeError: the device went away" in err.getvalue()


CASES = table.rows


def test_the_table_covers_every_area():
    areas = {row.id.split(":")[0] for row in CASES}
    assert areas == {"jobs", "adapter", "labels", "records", "leftovers"} and len(CASES) >= 30


@pytest.mark.parametrize("action, expected", CASES)
def test_refusal(action, expected, tmp_path):
    check(action, expected, tmp_path)
