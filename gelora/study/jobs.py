"""A grid's runs as a JSON Lines jobs file, and the one command that runs a job from it.

    gelora grid --profile gpu --write-jobs jobs.jsonl   # written by gelora.study.grid.write_jobs
    gelora job jobs.jsonl --index 1        # job 1 of the file, e.g. --index "$SLURM_ARRAY_TASK_ID"

Each line is {"run_id": ..., "argv": [...]}: the job is started from that list as it is, never
through a shell, so no dataset, folder or profile text can become a command. A line whose argv is
not a gelora training command is refused.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PROG = "python -m gelora.study.jobs"
LAUNCH_PREFIXES = (["-m", "gelora.training.train"],)  # after the interpreter, torchrun's or accelerate's flags


def read_job(path: str | Path, index: int) -> list[str]:
    """Job `index` (from 1) of a jobs file, checked: a list of strings that runs gelora.training.train."""
    path = Path(path)
    if isinstance(index, bool) or not isinstance(index, int) or index < 1:
        raise ValueError(f"--index must be a whole number >= 1, got {index!r}")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the jobs file {path}: {error}") from None
    if index > len(lines):
        raise ValueError(f"--index {index} is past the last job of {path} ({len(lines)} job(s))")
    try:
        job = json.loads(lines[index - 1])
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {index}: not a JSON object ({error})") from None
    argv = job.get("argv") if isinstance(job, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"{path}, line {index}: 'argv' must be a non-empty list of strings")
    if "gelora.training.train" not in argv or argv[argv.index("gelora.training.train") - 1] != "-m":
        raise ValueError(f"{path}, line {index}: not a gelora training command ({argv[:4]} ...); "
                         "write jobs files with `gelora grid --write-jobs`")
    return argv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="a jobs file written by `gelora grid --write-jobs`")
    parser.add_argument("--index", type=int, required=True, help="the job to run, from 1 (a SLURM array index)")
    parser.add_argument("--dry-run", action="store_true", help="print the job's arguments, one per line, and run nothing")
    args = parser.parse_args(argv)
    try:
        job = read_job(args.file, args.index)
    except ValueError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        print("\n".join(json.dumps(a) for a in job))
        return 0
    if job[0] in ("python", "python3"):  # the interpreter of this kit, not whichever is first on PATH
        job = [sys.executable, *job[1:]]
    return subprocess.call(job)


if __name__ == "__main__":
    sys.exit(main())
