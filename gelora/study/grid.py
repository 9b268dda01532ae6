"""The fine-tuning grid of notebook 04 (methods x seeds at one budget), as configs and as
independent command lines.

    python -m gelora grid --profile gpu                          # show one `python -m gelora train ...` per run
    python -m gelora grid --profile gpu --launcher accelerate    # `accelerate launch -m gelora.training.train ...`
    python -m gelora grid --profile cpu --missing --jobs 2       # train the missing runs here, 2 at a time
    python -m gelora grid --profile gpu --write-jobs jobs.jsonl  # the runs as a JSON Lines jobs file ...
    python -m gelora job jobs.jsonl --index 3                    # ... whose job 3 (from 1) runs without a shell
    python -m gelora grid --profile study --sweep --jobs 2      # run the sweep's jobs here, 2 at a time
    python -m gelora grid --profile gpu --executor slurm --partition gpu --gpus-per-job 1 --time-min 120
    python -m gelora grid --profile smoke --executor local --jobs 2   # submitit's local executor

The printed lines are for reading: jobs run from argument lists, never through a shell (`--jobs N`
here, `--write-jobs` with `gelora job` for a job array or one process per GPU, or `--executor`,
which submits the missing runs through submitit (gelora.training.cluster): a SLURM job array or its
local executor, finished runs skipped, failures reported with their log). Every notice goes to
stderr, so stdout holds the job lines only. Both build exactly
the configs notebook 04 builds (the same function makes them), so once the jobs have finished,
notebook 04 reads every record back and trains nothing.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gelora.core.checks import check_whole
from gelora.core.records import atomic_write
from gelora.methods import registry
from gelora.training.config import FinetuneConfig, validate
from gelora.training.identity import run_id

PROG = "python -m gelora.study.grid"  # `gelora grid` sets its own name in help and errors
LAUNCHERS = ("python", "torchrun", "accelerate")
NOTEBOOK = "04_fine_tuning"


def grid_configs(method_names, seeds, budget: int | None = None, lrs: dict | None = None,
                 **settings) -> list[FinetuneConfig]:
    """One validated config per method and seed: full fine-tuning without a budget, every
    adapter at `budget`, `lrs` overriding the registry's learning rates."""
    method_names, seeds = list(method_names), list(seeds)
    unknown = sorted(set(method_names) - set(registry.names())) + sorted(set(lrs or {}) - set(registry.names()))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected names from {registry.names()}")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    for argument, values in (("method_names", method_names), ("seeds", seeds)):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ValueError(f"{argument} repeats {repeated}: each run once")
    configs = []
    for method in method_names:
        for seed in seeds:
            full = registry.get_method(method).family == "full"
            config = FinetuneConfig(method=method, seed=seed, budget=None if full else budget,
                                    lr=(lrs or {}).get(method), **settings)
            validate(config)
            configs.append(config)
    return configs


def run_grid(method_names, seeds, budget: int | None = None, lrs: dict | None = None, log=print,
             **settings) -> list[dict]:
    """Every method x seed with the same settings (FinetuneConfig fields): full fine-tuning
    without a budget, every adapter at `budget`, `lrs` overriding the registry's learning rates.
    Finished runs are read back. Returns the records (without the model objects), in order."""
    from gelora.training.train import run_configs

    return run_configs(grid_configs(method_names, seeds, budget, lrs, **settings), log)


def notebook_grid(model: str, dataset: str, methods: list, seeds: list, reference_rank: int, budget, target_modules,
                  n_train, n_eval, n_test, test_split: str, epochs: float, batch_size: int, max_length: int,
                  lrs: dict, sb_num_samples: int, pooling: str, n_examples: int, device: str, precision: str,
                  force: bool, run_dir: str, processes: int = 1, lr_factors=(), sweep_n_train=None, log=None,
                  sweep_only: bool = False, max_new_tokens: int = 48, sb_init_lr=None) -> tuple[list[FinetuneConfig], int]:
    """The runs of notebook 04 from its parameters (the notebook and this module's command both
    call it): the ID profile is read or computed first for the GeLoRA methods, the budget is
    `budget` or uniform LoRA at `reference_rank`; `processes` > 1: the runs are trained by
    multi-process jobs (their records are collected, never retrained in one process).
    lr_factors: the learning-rate sweep (`gelora.training.sweep`, on `sweep_n_train` training examples)
    runs first (finished sweep runs are read back), its table goes to <run_dir>/lr_sweep.csv and
    every method trains at its best rate (rates given in `lrs` are kept). sweep_only: return the
    sweep's configs instead, untrained (to run them as independent jobs). Returns (configs, budget)."""
    from gelora.kit.notebook import budget_for, profile_for, task_model
    from gelora.kit.paths import resolve

    run = resolve(run_dir)
    profile = None
    if any(registry.get_method(m).uses_profile for m in methods):
        _, profile = profile_for(run, model, dataset, n_examples, pooling, max_length, seed=min(seeds), log=None)
    _, net, _ = task_model(model, dataset)
    targets, budget_used = budget_for(net, target_modules, reference_rank, budget)
    configs = grid_configs(methods, seeds, budget_used, lrs, model=model, dataset=dataset, target_modules=targets,
                           id_profile=None if profile is None else str(profile), n_train=n_train, n_eval=n_eval, n_test=n_test,
                           test_split=test_split, epochs=epochs, batch_size=batch_size, max_length=max_length,
                           sb_num_samples=sb_num_samples, sb_init_lr=sb_init_lr, max_new_tokens=max_new_tokens, device=device,
                           precision=precision, force=force,
                           processes=None if processes == 1 else processes,
                           output_dir=str(run / "results"), cache_dir=str(run / "cache"), progress=False)
    if sweep_only:
        from gelora.training.sweep import sweep_configs

        return (sweep_configs(configs, lr_factors, str(run / "lr_sweep"), sweep_n_train) if lr_factors else []), budget_used
    if lr_factors:
        from gelora.training.sweep import best_lrs, lr_sweep, with_lrs

        sweep = lr_sweep(configs, lr_factors, str(run / "lr_sweep"), log=log, n_train=sweep_n_train)
        sweep.to_csv(run / "lr_sweep.csv", index=False)
        configs = with_lrs(configs, best_lrs(sweep), keep=lrs)
    return configs, budget_used


def profile_parameters(profile: str, overrides=(), run_dir: str | None = None) -> dict:
    """Notebook 04's parameters under a pipeline profile: its defaults, then the profile, then
    the overrides (the same merge the pipeline does)."""
    from gelora.kit.pipeline import declared_parameters, load_profile, notebooks, plan

    path = next(p for p in notebooks() if p.stem == NOTEBOOK)
    params = {name: ast.literal_eval(spec["default"]) for name, spec in declared_parameters(path).items()}
    overrides = [*overrides, *([f"run_dir={run_dir}"] if run_dir else [])]
    ((_, chosen),) = plan(load_profile(profile), overrides, only=[NOTEBOOK])
    params.update(chosen)
    params.pop("figures_dir", None)
    return params


def command_line(config: FinetuneConfig, launcher: str = "python") -> str:
    """`command_argv` as one quoted line, to read (jobs run from argv lists, never through a shell)."""
    return shlex.join(command_argv(config, launcher))


def write_jobs(configs: list, path: str | Path, launcher: str = "python") -> Path:
    """The configs' argv lists as a JSON Lines jobs file, one {"run_id", "argv"} per line (written
    atomically), for `gelora job FILE --index N` (gelora.study.jobs) to run without a shell."""
    path = Path(path)
    if path.suffix != ".jsonl":
        raise ValueError(f"a jobs file is JSON Lines: give a name ending in .jsonl, got {str(path)!r}")
    lines = [json.dumps({"run_id": run_id(c), "argv": command_argv(c, launcher)}) for c in configs]
    return atomic_write(path, lambda handle: handle.write("".join(line + "\n" for line in lines)))


def command_argv(config: FinetuneConfig, launcher: str = "python") -> list[str]:
    """The argv that runs this config with `python -m gelora train` (only the settings that differ
    from the defaults are written), under torchrun or accelerate with `config.processes` processes
    when asked. Every value is one argument: nothing is parsed by a shell."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    processes = config.processes or 1
    if launcher == "python" and processes > 1:
        raise ValueError(f"processes={processes} needs a launcher: torchrun or accelerate")
    args = []
    own = registry.options()  # the methods' own settings: every one given is written
    given = [(f, getattr(config, f.name)) for f in dataclasses.fields(FinetuneConfig) if f.name != "options"]
    given += [(own[name][0], value) for name, value in config.options.items()]
    for f, value in given:
        if value == f.default and (f.name != "method" and f.name not in config.options):
            continue
        if value is None and f.default is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if value is None:
            raise ValueError(f"{f.name}=None cannot be written on a command line (its default is {f.default!r})")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    prefix = {"python": [sys.executable, "-m"],
              "torchrun": ["torchrun", f"--nproc-per-node={processes}", "-m"],
              "accelerate": ["accelerate", "launch", f"--num_processes={processes}", "-m"]}[launcher]
    return [*prefix, "gelora.training.train", *args]


def run_jobs(configs: list[FinetuneConfig], jobs: int, log_dir: Path, log=print) -> int:
    """Train the configs as `python -m gelora train` processes, `jobs` at a time, each with an
    equal share of the CPU threads (on a small CPU, two one-thread runs side by side finish
    sooner than two two-thread runs in turn). Each job's output goes to <log_dir>/<run_id>.log.
    Returns the number of failed jobs (named in the log)."""
    check_whole("jobs", jobs, 1)
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false")

    def one(config: FinetuneConfig) -> bool:
        start = time.perf_counter()
        with open(log_dir / f"{run_id(config)}.log", "w") as out:
            code = subprocess.call(command_argv(config), stdout=out, stderr=subprocess.STDOUT, env=env)
        if log is not None:
            log(f"{config.method:>10} seed {config.seed} lr {config.lr or 'default'}: "
                f"{'done' if code == 0 else f'FAILED (exit {code}, see {log_dir / run_id(config)}.log)'} "
                f"in {time.perf_counter() - start:.0f} s")
        return code == 0

    with ThreadPoolExecutor(jobs) as pool:
        return sum(not ok for ok in pool.map(one, configs))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    parser.add_argument("--profile", default="cpu", help="pipeline profile (smoke, cpu, gpu) or a YAML file")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="[04.]NAME=VALUE",
                        help="override a notebook-04 parameter, as in gelora.kit.pipeline; repeatable")
    parser.add_argument("--run-dir", default=None, help="results folder (default: the profile's run_dir)")
    parser.add_argument("--launcher", default="python", choices=LAUNCHERS, help="how each job starts")
    parser.add_argument("--processes", type=int, default=1, help="processes per job (with --launcher torchrun or accelerate)")
    parser.add_argument("--missing", action="store_true", help="only the runs without a finished record")
    parser.add_argument("--sweep", action="store_true",
                        help="the learning-rate sweep's runs (lr_factors) instead of the comparison's")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="train the missing runs here, N processes at a time, instead of printing them "
                             "(with --executor local: N jobs at a time)")
    cluster = parser.add_argument_group("submitit (--executor): the missing runs as jobs, finished ones skipped")
    cluster.add_argument("--executor", default=None, choices=("local", "slurm"),
                         help="submit through submitit: a SLURM job array, or its local executor on this machine")
    cluster.add_argument("--partition", default=None, help="SLURM partition")
    cluster.add_argument("--time-min", type=int, default=60, help="time limit of each job, in minutes")
    cluster.add_argument("--gpus-per-job", type=int, default=0, help="GPUs of each job (one process per GPU)")
    cluster.add_argument("--cpus-per-job", type=int, default=None, help="SLURM CPUs per job")
    cluster.add_argument("--mem-gb", type=int, default=None, help="SLURM memory per job, in GB")
    cluster.add_argument("--array-parallelism", type=int, default=16, help="SLURM jobs of the array running at once")
    cluster.add_argument("--array-size", type=int, default=1000,
                         help="most jobs in one SLURM array (a default cluster refuses arrays over MaxArraySize, 1001)")
    cluster.add_argument("--retries", type=int, default=0, help="resubmit failed runs this many times (with waiting)")
    cluster.add_argument("--no-wait", action="store_true", help="submit and return (rerun later: finished runs are skipped)")
    parser.add_argument("--write-jobs", default=None, metavar="FILE.jsonl",
                        help="write the runs as a JSON Lines jobs file (one argv per line) that `gelora job FILE --index N` runs")
    args = parser.parse_args(argv)
    out = sys.stdout  # the job lines' stream
    try:
        with contextlib.redirect_stdout(sys.stderr):  # notices (data splits, probes) never mix with the job lines
            return _main(args, out)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1


def _main(args, out) -> int:
    params = profile_parameters(args.profile, args.param, args.run_dir)
    if args.processes != 1:
        params["processes"] = args.processes
    if args.jobs is not None and (args.launcher != "python" or args.processes != 1):
        raise ValueError("--jobs runs one-process jobs: leave out --launcher and --processes")
    if not args.sweep and params.get("lr_factors"):  # the comparison's rates come from the sweep's records
        sweep, _ = notebook_grid(**params, sweep_only=True)
        unswept = [c for c in sweep if not (Path(c.output_dir) / f"{run_id(c)}.json").exists()]
        if unswept:
            raise ValueError(f"profile {args.profile!r} chooses its rates by a learning-rate sweep, and {len(unswept)} "
                             f"of its {len(sweep)} runs have no record yet: print them with --sweep (or train them "
                             "here with --sweep --jobs N) first; this command trains nothing to decide rates")
    configs, _ = notebook_grid(**params, sweep_only=args.sweep)
    if args.sweep and not configs:
        raise ValueError(f"profile {args.profile!r} has no learning-rate sweep (lr_factors is empty)")
    if args.missing or args.jobs is not None:
        configs = [c for c in configs if not (Path(c.output_dir) / f"{run_id(c)}.json").exists()]
    if args.executor is not None:
        return _submit(args, params, [c for c in configs if not (Path(c.output_dir) / f"{run_id(c)}.json").exists()], out)
    if args.jobs is not None:  # seed by seed: a study stopped early still has every method at its first seeds
        from gelora.kit.paths import resolve

        configs = sorted(configs, key=lambda c: c.seed)
        failed = run_jobs(configs, args.jobs, resolve(params["run_dir"]) / "logs")
        return 1 if failed else 0
    if args.write_jobs is not None:
        path = write_jobs(configs, args.write_jobs, args.launcher)
        print(f"{len(configs)} job(s) written to {path}: run job N with `gelora job {path} --index N`")
        return 0
    for config in configs:
        print(command_line(config, args.launcher), file=out, flush=True)
    return 0


def _submit(args, params: dict, configs: list, out=None) -> int:
    """--executor: the missing runs through submitit; one line per outcome, exit 1 if any failed."""
    from gelora.kit.paths import resolve
    from gelora.training.cluster import make_executor, submit

    if args.launcher != "python" or args.processes != 1:
        raise ValueError("--executor runs one process per job: leave out --launcher and --processes "
                         "(give a job its GPUs with --gpus-per-job)")
    if not configs:
        print("every run of the grid has its record: nothing to submit", file=out)
        return 0
    folder = resolve(params["run_dir"]) / "logs" / "submitit"
    executor = make_executor(args.executor, folder, partition=args.partition, time_min=args.time_min,
                             gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb,
                             array_parallelism=args.array_parallelism)
    outcome = submit(sorted(configs, key=lambda c: c.seed), executor, args.executor, jobs=args.jobs or 1,
                     wait=not args.no_wait, array_size=args.array_size, retries=args.retries)
    if outcome.running:
        print(f"{len(outcome.running)} job(s) submitted; logs in {folder}; run the same command again when they "
              "have finished: it skips every run with a record", file=out)
    print(f"{len(outcome.finished)} run(s) finished, {len(outcome.failed)} failed"
          + "".join(f"\n  {run_id}: {error} (log {log})" for run_id, log, error in outcome.failed), file=out)
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
