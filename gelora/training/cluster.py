"""A grid's missing runs through submitit: one SLURM job array on a cluster, or submitit's local
executor on one machine (the field's standard for grids of independent runs; each job trains one
config with `gelora.training.train.finetune` and writes its record, so a rerun skips what has finished).

    gelora grid --profile gpu --missing --executor slurm --partition gpu --time-min 120 --gpus-per-job 1
    gelora grid --profile smoke --missing --executor local --jobs 2
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from gelora.training.identity import run_id

EXECUTORS = ("local", "slurm")


@dataclasses.dataclass
class Outcome:
    """What happened to the submitted runs: finished run ids, failures with their log, and (when
    not waited for) the job ids still running."""

    finished: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)  # (run_id, log path, last error line)
    running: list = dataclasses.field(default_factory=list)  # (run_id, job id)
    jobs: list = dataclasses.field(default_factory=list)  # submitit's jobs, in the order of the configs


def train_config(config, threads: int | None = None) -> str:
    """One job: train (or read back) `config` and return its run id (runs in the job's process)."""
    import torch

    from gelora.training.train import finetune

    if threads:
        torch.set_num_threads(threads)
    record = finetune(config=config)
    return record["run_id"]


def make_executor(kind: str, folder: str | os.PathLike, *, partition: str | None = None, time_min: int = 60,
                  gpus_per_job: int = 0, cpus_per_job: int | None = None, mem_gb: int | None = None,
                  array_parallelism: int = 16):
    """A submitit executor for `kind` (local | slurm) with the job's resources."""
    import submitit

    from gelora.core.checks import check_whole

    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
    check_whole("time_min", time_min, 1)
    check_whole("gpus_per_job", gpus_per_job, 0)
    check_whole("array_parallelism", array_parallelism, 1)
    check_whole("cpus_per_job", cpus_per_job, 1, optional=True)
    check_whole("mem_gb", mem_gb, 1, optional=True)
    if kind == "slurm" and not partition:
        raise ValueError("the slurm executor needs --partition (the queue your cluster runs GPU jobs on)")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    parameters = {"timeout_min": time_min, "gpus_per_node": gpus_per_job, "name": "gelora"}
    if kind == "slurm":
        parameters.update(slurm_partition=partition, slurm_array_parallelism=array_parallelism,
                          cpus_per_task=cpus_per_job or 1, **({"mem_gb": mem_gb} if mem_gb else {}))
    executor.update_parameters(**parameters)
    return executor


ARRAY_SIZE = 1000  # SLURM's default MaxArraySize is 1001: a larger array is refused at submission


def submit(configs: list, executor, kind: str, jobs: int = 1, wait: bool = True, log=print,
           array_size: int = ARRAY_SIZE, retries: int = 0) -> Outcome:
    """Submit every config as one job: SLURM arrays of at most `array_size` jobs (throttled by the
    executor's array parallelism), locally `jobs` at a time, each with an equal share of the CPU
    threads; when `wait`, collect the outcome and resubmit failed runs up to `retries` times.
    Output folders are made absolute first: a job may start in another directory."""
    from gelora.core.checks import check_whole

    check_whole("jobs", jobs, 1)
    check_whole("array_size", array_size, 1)
    check_whole("retries", retries, 0)
    configs = [dataclasses.replace(c, output_dir=str(Path(c.output_dir).resolve()), progress=False) for c in configs]
    outcome = _submit_waves(configs, executor, kind, jobs, wait, log, array_size)
    for attempt in range(1, retries + 1 if wait else 1):
        failed = {name for name, _, _ in outcome.failed}
        again = [c for c in configs if run_id(c) in failed]
        if not again:
            break
        if log is not None:
            log(f"resubmitting {len(again)} failed run(s) (retry {attempt} of {retries})")
        retry = _submit_waves(again, executor, kind, jobs, wait, log, array_size)
        outcome.failed = retry.failed
        outcome.finished += retry.finished
        outcome.jobs += retry.jobs
    return outcome


def _submit_waves(configs: list, executor, kind: str, jobs: int, wait: bool, log, array_size: int) -> Outcome:
    outcome = Outcome()
    threads = max(1, (os.cpu_count() or 1) // jobs) if kind == "local" else None
    size = min(jobs, array_size) if kind == "local" else array_size
    waves = [configs[i:i + size] for i in range(0, len(configs), size)]
    for wave in waves:
        submitted = executor.map_array(train_config, wave, [threads] * len(wave))
        outcome.jobs += submitted
        if log is not None:
            log(f"submitted {len(wave)} run(s) to the {kind} executor: job(s) "
                f"{', '.join(j.job_id for j in submitted[:3])}{' ...' if len(submitted) > 3 else ''}")
        if wait:
            collect(wave, submitted, outcome, log)
        else:
            outcome.running += [(run_id(c), j.job_id) for c, j in zip(wave, submitted)]
    return outcome


def collect(configs: list, submitted: list, outcome: Outcome | None = None, log=print) -> Outcome:
    """Wait for each job and sort it into finished or failed (with its log and last error line)."""
    outcome = outcome or Outcome()
    for config, job in zip(configs, submitted):
        try:
            outcome.finished.append(job.result())
            if log is not None:
                log(f"{config.method:>10} seed {config.seed}: done ({run_id(config)})")
        except Exception as err:  # noqa: BLE001 - a failed job is reported, the others go on
            last = _error_line(err)
            outcome.failed.append((run_id(config), str(job.paths.stderr), last))
            if log is not None:
                log(f"{config.method:>10} seed {config.seed}: FAILED ({last}); log {job.paths.stderr}")
    return outcome


def _error_line(err: Exception) -> str:
    """The line naming the job's own error in submitit's report (which ends with log paths)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b.*", line)]
    return (named or lines or [type(err).__name__])[-1]
