"""Study throughput: runs per hour, and what a run costs besides training.

    python benchmarks/study_throughput.py                 # trec6's study settings, 4 short runs per mode
    python benchmarks/study_throughput.py --runs 6 --n-train 320

Side by side in one invocation (this machine's speed drifts 2-4x from hour to hour: compare the
ratio, not the seconds): the same configs (the study's LoRA config of a task, one thread, short
training sets so that the fixed costs show) trained (a) as the study trains them, one fresh
`python -m gelora train` process per run, and (b) one after another in this process
(`gelora.training.train.run_configs`: imports, the packaged model files and the data are warm). The
difference is the per-run overhead a shared worker could save. The committed study's records then
give its real runs per hour (wall time per run, two one-thread jobs side by side), with and without
that overhead.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import tempfile
import time

import numpy as np

from gelora.analysis.results import load_records
from gelora.study import verdicts as study
from gelora.study.grid import command_line
from gelora.study.rates import base_configs
from gelora.training.train import run_configs


def configs_for(task: str, runs: int, n_train: int, folder: str):
    base = base_configs(study.task_folders()[task])["lora"]
    return [dataclasses.replace(base, seed=100 + i, n_train=n_train, evals=1, output_dir=folder, progress=False,
                                force=True) for i in range(runs)]


def fresh_processes(configs) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    for config in configs:
        subprocess.run(shlex.split(command_line(config)), check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def one_process(configs) -> float:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    run_configs(configs, log=None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="trec6")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=160, help="training examples per benchmark run (short: fixed costs show)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        configs = configs_for(args.task, args.runs, args.n_train, folder)
        t_fresh = fresh_processes(configs)
        t_warm = one_process(configs)
    overhead = (t_fresh - t_warm) / args.runs
    print(f"{args.runs} short runs of the {args.task} study's LoRA config ({args.n_train} training examples, one thread):")
    print(f"  one fresh process per run (as the study): {t_fresh:7.1f} s  ({t_fresh / args.runs:.1f} s per run)")
    print(f"  one after another in this process:       {t_warm:7.1f} s  ({t_warm / args.runs:.1f} s per run)")
    print(f"  per-run overhead of a fresh process: {overhead:.1f} s (ratio {t_fresh / t_warm:.2f}, measured side by side)")
    records = [r for t in study.task_folders().values() for sub in ("results", "rates")
               if (t / sub).is_dir() for r in load_records(t / sub)]
    wall = float(np.mean([r["wall_time_s"] for r in records]))
    per_hour = 2 * 3600 / (wall + overhead)  # two one-thread jobs side by side
    print(f"\nThe committed study: {len(records)} full-length runs, {wall:.0f} s of wall time per run inside the "
          f"process (mean); with the overhead above, two jobs side by side train {per_hour:.0f} runs per hour; "
          f"without it, {2 * 3600 / wall:.0f} ({100 * overhead / (wall + overhead):.1f} % of a run is the fresh process).")


if __name__ == "__main__":
    main()
