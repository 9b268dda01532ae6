"""The grid as independent jobs: the printed command lines build exactly notebook 04's configs, and
after running them in parallel notebook 04 trains nothing."""
import json
import shlex
import subprocess
import sys

import pandas as pd
import pytest

from gelora.kit import pipeline
from gelora.kit.paths import repo_root
from gelora.study.grid import command_line, notebook_grid, profile_parameters
from gelora.training import train
from gelora.training.config import FinetuneConfig
from gelora.training.identity import run_id
from gelora.training.sweep import best_lrs

METHODS = "04.methods=[lora, lora_sb, gelora]"


def test_every_command_line_parses_back_to_its_config(tmp_path):
    configs, budget = notebook_grid(**profile_parameters("smoke", run_dir=str(tmp_path)))
    assert len(configs) == 10 and budget == 2048
    for config in configs:
        argv = shlex.split(command_line(config))
        assert argv[:3] == [sys.executable, "-m", "gelora.training.train"]
        parsed = FinetuneConfig(**vars(train._parser().parse_args(argv[3:])))
        assert parsed == config and run_id(parsed) == run_id(config)


def test_launchers(tmp_path):
    configs, _ = notebook_grid(**dict(profile_parameters("smoke", run_dir=str(tmp_path)), processes=2))
    assert command_line(configs[1], "torchrun").startswith("torchrun --nproc-per-node=2 -m gelora.training.train --method lora")
    assert command_line(configs[1], "accelerate").startswith("accelerate launch --num_processes=2 -m gelora.training.train")
    assert "--processes 2" in command_line(configs[1], "accelerate")
    with pytest.raises(ValueError, match="processes=2 needs a launcher"):
        command_line(configs[1], "python")
    with pytest.raises(ValueError, match=r"no record of this run with processes=2 .*`torchrun --nproc-per-node 2"):
        train.finetune(config=configs[1])  # one process never trains a run declared for two


def test_the_readme_job_recipe_is_safe_with_any_path(tmp_path):
    """The README's recipe (a jobs file, then `gelora job FILE --index N`) with folders named to break
    out of any quoting: each job's arguments arrive as written, one argument per value, and no
    injected command runs (the README no longer pipes any line to a shell)."""
    pages = [(repo_root() / name).read_text() for name in ("README.md", "docs/GUIDE.md", "docs/TEACHING.md")]
    assert not any("sh -c" in page or "xargs" in page for page in pages)
    assert "gelora job jobs.jsonl --index" in pages[1]
    from gelora.study.grid import write_jobs

    hostile = [str(tmp_path / "d;touch INJECTED;#"), str(tmp_path / "with space"), str(tmp_path / "q'uote\"$(touch X)`touch Y`")]
    configs = [FinetuneConfig(method="lora", dataset=path, model="tiny-bert", output_dir=str(tmp_path / "runs")) for path in hostile]
    write_jobs(configs, tmp_path / "jobs.jsonl")
    for index, path in enumerate(hostile, 1):
        shown = subprocess.run([sys.executable, "-m", "gelora", "job", str(tmp_path / "jobs.jsonl"), "--index", str(index),
                                "--dry-run"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        argv = [json.loads(line) for line in shown.stdout.splitlines()]
        assert argv[argv.index("--dataset") + 1] == path
    assert not any((tmp_path / name).exists() for name in ("INJECTED", "X", "Y"))


def test_parallel_jobs_then_the_notebook_trains_nothing(tmp_path):
    run = tmp_path / "run"
    lines = subprocess.run([sys.executable, "-m", "gelora.study.grid", "--profile", "smoke", "--run-dir", str(run),
                            "-p", METHODS], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(lines) == 3  # the printed lines: only the jobs (notices went to stderr)
    subprocess.run([sys.executable, "-m", "gelora.study.grid", "--profile", "smoke", "--run-dir", str(run), "-p", METHODS,
                    "--write-jobs", str(tmp_path / "jobs.jsonl")], capture_output=True, text=True, check=True)
    jobs = [subprocess.Popen([sys.executable, "-m", "gelora", "job", str(tmp_path / "jobs.jsonl"), "--index", str(i)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in (1, 2, 3)]
    for job in jobs:  # three jobs side by side, as a job array runs them
        assert job.wait(timeout=600) == 0, job.stderr.read()[-2000:]
    results = run / "results"
    before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert len(before) == 3
    missing = subprocess.run([sys.executable, "-m", "gelora.study.grid", "--profile", "smoke", "--run-dir", str(run),
                              "-p", METHODS, "--missing"], capture_output=True, text=True, check=True).stdout
    assert missing == ""
    (out,) = pipeline.run("smoke", [METHODS, f"figures_dir={tmp_path / 'figures'}"], only=["04"], run_dir=str(run),
                          progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")} == before  # nothing retrained
    outputs = json.dumps(json.loads(out.read_text())["cells"])
    assert outputs.count("[reused]") == 3


def test_the_sweep_runs_first_and_sets_the_rates(tmp_path):
    params = dict(profile_parameters("smoke", run_dir=str(tmp_path)), methods=["lora"], lr_factors=[0.5, 2.0])
    configs, _ = notebook_grid(**params)
    sweep = pd.read_csv(tmp_path / "lr_sweep.csv")
    best = sweep.sort_values(["validation", "factor"], ascending=[False, True]).iloc[0]
    assert len(sweep) == 2 and configs[0].lr in set(sweep["lr"])
    assert sweep.set_index("lr").loc[configs[0].lr, "validation"] == best["validation"]
    again, _ = notebook_grid(**params)  # the sweep's runs are read back: the same choice
    assert again[0].lr == configs[0].lr


def test_jobs_train_the_sweep_then_the_grid_and_a_rerun_trains_nothing(tmp_path, capsys):
    from gelora.study.grid import main

    args = ["--profile", "smoke", "--run-dir", str(tmp_path), "-p", "04.methods=[lora, lora_xs]",
            "-p", "04.lr_factors=[1, 5]", "-p", "04.sweep_n_train=24"]
    assert main([*args, "--sweep", "--jobs", "2"]) == 0
    sweep = sorted((tmp_path / "lr_sweep").glob("*.json"))
    assert len(sweep) == 4 and all(json.loads(p.read_text())["train_examples"] == 24 for p in sweep)
    stamps = {p: p.stat().st_mtime for p in sweep}
    assert main([*args, "--jobs", "2"]) == 0  # the sweep is read back, the best rates chosen, the grid trained
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    chosen = best_lrs(pd.read_csv(tmp_path / "lr_sweep.csv"))
    assert {r["method"]: r["lr"] for r in records} == chosen
    assert {p: p.stat().st_mtime for p in sweep} == stamps and len(records) == 2
    capsys.readouterr()
    assert main([*args, "--missing"]) == 0 and capsys.readouterr().out == ""  # nothing left to run
    assert main(["--profile", "smoke", "--run-dir", str(tmp_path), "--sweep"]) == 1  # smoke has no sweep


def test_printing_a_swept_grid_trains_nothing(tmp_path, capsys):
    """A profile whose rates come from a sweep: printing the comparison before the sweep has run
    is refused (it used to train the whole sweep in-process while saying it schedules nothing)."""
    from gelora.study.grid import main

    run = tmp_path / "run"
    args = ["--profile", "smoke", "--run-dir", str(run), "-p", "04.methods=[lora, lora_sb, lora_xs]",
            "-p", "04.lr_factors=[1, 2]"]  # no GeLoRA: nothing to probe
    assert main(args) == 1
    refused = capsys.readouterr()
    assert refused.out == "" and "6 of its 6 runs have no record yet: print them with --sweep" in refused.err
    assert not list(run.rglob("*.json"))  # nothing trained
    assert main([*args, "--sweep"]) == 0
    sweep = capsys.readouterr().out.splitlines()
    assert len(sweep) == 6 and all("gelora.training.train" in line for line in sweep)


def test_submitit_local_executor_trains_the_missing_runs_once(tmp_path, capsys):
    """gelora grid --executor local: the smoke grid's missing runs through submitit, then nothing;
    notebook 04's configs find the records."""
    from gelora.study.grid import main

    argv = ["--profile", "smoke", "--run-dir", str(tmp_path), "-p", "04.methods=[lora]", "--executor", "local"]
    assert main(argv) == 0
    assert "1 run(s) finished, 0 failed" in capsys.readouterr().out
    configs, _ = notebook_grid(**profile_parameters("smoke", ["04.methods=[lora]"], run_dir=str(tmp_path)))
    assert all((tmp_path / "results" / f"{run_id(c)}.json").is_file() for c in configs)
    assert main(argv) == 0
    assert "nothing to submit" in capsys.readouterr().out


def test_slurm_job_array_under_submitits_mock(tmp_path):
    """The SLURM path offline, with submitit's own mocked sbatch/sacct: the array script carries the
    partition, time, GPUs and parallelism; a job run as SLURM would run it writes its record, and a
    failing job is reported with its log."""
    import contextlib
    import dataclasses

    from submitit.core import submission
    from submitit.slurm.test_slurm import mocked_slurm

    from gelora.training.cluster import collect, make_executor, submit

    configs, _ = notebook_grid(**profile_parameters("smoke", ["04.methods=[lora]"], run_dir=str(tmp_path)))
    broken = dataclasses.replace(configs[0], n_train=10**6)  # fails when its data loads, inside the job
    with pytest.raises(ValueError, match="needs --partition"):
        make_executor("slurm", tmp_path / "logs")
    with mocked_slurm() as mock:
        executor = make_executor("slurm", tmp_path / "logs", partition="gpu", time_min=90, gpus_per_job=1,
                                 array_parallelism=3)
        outcome = submit([configs[0], broken], executor, "slurm", wait=False, log=None)
        script = next((tmp_path / "logs").glob("*submission_file*.sh")).read_text()
        for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                     "#SBATCH --array=0-1%2"):  # 3 at once asked; submitit caps it at the array's 2 jobs
            assert line in script
        for job, fails in zip(outcome.jobs, (False, True)):
            with mock.job_context(job.job_id), contextlib.suppress(ValueError if fails else ()):
                submission.process_job(job.paths.folder)  # what the job's process runs (a failure is pickled)
        result = collect([configs[0], broken], outcome.jobs, log=None)
    assert result.finished == [run_id(configs[0])] and (tmp_path / "results" / f"{run_id(configs[0])}.json").is_file()
    (failed_id, log, error), = result.failed
    assert failed_id == run_id(broken) and "n_train=1000000 exceeds" in error and log.endswith(".err")


def test_a_grid_larger_than_the_array_limit_submits_in_chunks_and_retries_failures():
    """Runs go to SLURM as arrays of at most --array-size (default 1,000: a default cluster's
    MaxArraySize is 1001, and the study's 1,300 runs would be refused as one array); a failed run is
    resubmitted once when asked, the finished ones are not."""
    from gelora.training import cluster

    class Job:
        def __init__(self, job_id, fails):
            self.job_id, self.fails = job_id, fails
            self.paths = type("P", (), {"stderr": f"/logs/{job_id}.err"})()

        def result(self):
            if self.fails:
                raise RuntimeError(f"job {self.job_id} failed")
            return self.job_id

    class Executor:
        def __init__(self):
            self.arrays, self.calls = [], 0

        def map_array(self, function, configs, threads):
            self.arrays.append(len(configs))
            self.calls += 1
            return [Job(f"{self.calls}_{i}", fails=self.calls == 1 and i == 0) for i in range(len(configs))]

    assert cluster.ARRAY_SIZE == 1000
    configs = [FinetuneConfig(method="lora", seed=seed, model="tiny-bert") for seed in range(13)]
    executor = Executor()
    outcome = cluster.submit(configs, executor, "slurm", wait=False, log=None, array_size=10)
    assert executor.arrays == [10, 3] and len(outcome.running) == 13
    executor = Executor()
    outcome = cluster.submit(configs[:3], executor, "slurm", wait=True, log=None, array_size=2, retries=1)
    assert executor.arrays == [2, 1, 1] and outcome.failed == [] and len(outcome.finished) == 3
