"""Independent runs side by side with one thread each, against one at a time with every thread:
the wall time of the same runs both ways, measured in one invocation (this machine's speed varies
from hour to hour: only the ratio is comparable).

    python benchmarks/parallel_jobs.py [--runs 4] [--n-train 800] [--jobs 2]

`python -m gelora grid --jobs N` (and `make study`) trains a grid the first way; small models on
a few cores use one thread poorly, so side-by-side runs finish sooner.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from gelora.study.grid import run_jobs
from gelora.training.config import FinetuneConfig


def configs(n: int, n_train: int, folder: str) -> list[FinetuneConfig]:
    return [FinetuneConfig("lora", seed=seed, n_train=n_train, n_eval=200, n_test=200, evals=1, progress=False,
                           output_dir=folder) for seed in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4, help="identical LoRA runs (different seeds) per layout")
    parser.add_argument("--n-train", type=int, default=800, help="training examples per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side in the second layout")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    times = {}
    for label, jobs in (("one at a time", 1), (f"{args.jobs} side by side", args.jobs)):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            failed = run_jobs(configs(args.runs, args.n_train, folder), jobs, Path(folder) / "logs", log=None)
            times[label] = time.perf_counter() - start
            if failed:
                raise SystemExit(f"{failed} run(s) failed: see the logs")
        print(f"{label:>16}: {args.runs} runs in {times[label]:.1f} s ({max(1, cores // jobs)} thread(s) each, {cores} cores)")
    first, second = times.values()
    print(f"ratio: side by side takes {second / first:.2f}x the time of one at a time ({first / second:.2f}x the throughput)")


if __name__ == "__main__":
    main()
