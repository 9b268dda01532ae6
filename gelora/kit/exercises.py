"""The notebooks' exercises, kept in one file (notebooks/exercises.yaml): each a parameter change
and a question. The Exercises section of every notebook and notebooks/SOLUTIONS.md are rendered
from it, so the questions, the commands and the answers never drift apart.

    python -m gelora exercises            # fail if a notebook or SOLUTIONS.md is out of date
    python -m gelora exercises --write    # rewrite them from the YAML file
    python -m gelora exercises --measure  # run every exercise on the class profile, check its answer
                                          # (gelora.kit.exercise_checks), record the numbers, rewrite
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from gelora.kit.exercise_checks import CHECKS
from gelora.kit.pipeline import executed_status, load_profile, notebooks, repo_root, resolve

PROG = "python -m gelora.kit.exercises"  # `gelora exercises` sets its own name in help and errors
MARKER = "## Exercises"
MEASURED = "notebooks/exercise_checks.json"  # every exercise's check, measured on the class profile


def load() -> dict[str, list[dict]]:
    """Notebook stem -> its exercises (id, params, question, answer), checked for shape."""
    path = repo_root() / "notebooks" / "exercises.yaml"
    data = yaml.safe_load(path.read_text())
    stems = {p.stem for p in notebooks()}
    if not isinstance(data, dict) or set(data) != stems:
        raise ValueError(f"{path} must have one entry per notebook {sorted(stems)}, got {sorted(data or {})}")
    for stem, items in data.items():
        for item in items:
            if set(item) != {"id", "params", "question", "answer"} or not item["params"]:
                raise ValueError(f"{path}: exercise {item.get('id')!r} of {stem} needs id, params, question, answer")
            if item["id"] not in CHECKS:
                raise ValueError(f"{path}: exercise {item['id']!r} has no check in gelora.kit.exercise_checks.CHECKS")
    return data


def measured() -> dict:
    """The committed measurements ({} before the first --measure)."""
    path = repo_root() / MEASURED
    return json.loads(path.read_text()) if path.exists() else {}


def measure(profile: str = "class", ids: list[str] | None = None, log=print) -> dict:
    """Run the profile (finished notebooks are kept), then every exercise (or `ids`) by its own
    command, check each against the profile's run and record the numbers in MEASURED."""
    data, root = load(), repo_root()
    unknown = sorted(set(ids or []) - {item["id"] for items in data.values() for item in items})
    if unknown:
        raise ValueError(f"unknown exercise id(s) {unknown}; see notebooks/exercises.yaml")
    baseline = resolve(load_profile(profile)["common"]["run_dir"])
    if any(executed_status(baseline / "executed" / p.name) != "completed" for p in notebooks()):
        log(f"the {profile} profile's run first ({baseline})")
        subprocess.run([sys.executable, "-m", "gelora.kit.pipeline", "--profile", profile, "--no-progress"], cwd=root,
                       check=True)
    record = measured() if ids else {}
    results = dict(record.get("exercises", {})) if record.get("profile") == profile else {}
    for stem, items in data.items():
        for item in items:
            if ids and item["id"] not in ids:
                continue
            folder = root / "runs" / "exercises" / item["id"]
            args = command(stem, item, profile, folder=str(folder.relative_to(root)))
            start = time.perf_counter()
            log(f"{item['id']}: {shlex.join(args)}")
            subprocess.run([sys.executable, *args[1:], "--no-progress"], cwd=root, check=True,
                           stdout=subprocess.DEVNULL)
            check = CHECKS[item["id"]](folder, baseline)
            results[item["id"]] = {**check.as_dict(), "params": item["params"],
                                   "seconds": round(time.perf_counter() - start)}
            log(f"    {'holds' if check.holds else 'DOES NOT HOLD'}: {check.observed}")
    payload = {"profile": profile, "measured": time.strftime("%Y-%m-%d"), "exercises": results}
    (root / MEASURED).write_text(json.dumps(payload, indent=1, default=float) + "\n")
    return payload


def command(stem: str, exercise: dict, profile: str = "class", folder: str | None = None,
            finished_run: str | None = None) -> list[str]:
    """The command that runs one exercise: the pipeline, that notebook only, its parameters. Its
    outputs and its executed notebook go to `folder` (default runs/exercises/<id>/: never over your
    run or the reference figures); notebook 05, which draws a finished run, reads the profile's run
    folder (or `finished_run`); notebook 06 reads the committed study."""
    folder = folder or f"runs/exercises/{exercise['id']}"
    args = ["python", "-m", "gelora", "run", "--profile", profile, "--only", stem[:2]]
    if stem[:2] == "05":
        args += ["--run-dir", finished_run] if finished_run else []
    elif stem[:2] != "06":  # 06 reads the committed study, not a run folder
        args += ["--run-dir", folder]
    args += ["--executed-dir", f"{folder}/executed", "-p", f"figures_dir={folder}/figures"]
    for param in exercise["params"]:
        args += ["-p", f"{stem[:2]}.{param}"]
    return args


def notebook_section(stem: str, exercises: list[dict]) -> str:
    lines = [MARKER, "",
             "Each exercise reruns this notebook with changed parameters (on the `class` profile here; any "
             "profile works) and asks what its outputs show. Run the command from the repository root; the outputs "
             "go to `runs/exercises/<exercise>/`, the executed notebook to its `executed/` folder. Answers: "
             "`notebooks/SOLUTIONS.md`.", ""]
    for n, item in enumerate(exercises, 1):
        lines += [f"{n}. {item['question']}", "", f"   ```bash\n   {shlex.join(command(stem, item))}\n   ```", ""]
    return "\n".join(lines).rstrip() + "\n"


def solutions(data: dict[str, list[dict]], record: dict | None = None) -> str:
    record = measured() if record is None else record
    checks = record.get("exercises", {})
    lines = ["# Solutions to the notebooks' exercises", "",
             "Generated from `notebooks/exercises.yaml` and the measurements in `notebooks/exercise_checks.json` "
             f"(`python -m gelora exercises --measure` ran every exercise on the `{record.get('profile', 'class')}` "
             f"profile on {record.get('measured', '(not yet measured)')} and checked each answer with "
             "`gelora.kit.exercise_checks`; the test suite asserts every check). Your numbers differ on another profile; "
             "the check says what should still hold.", ""]
    for stem, items in data.items():
        lines += [f"## {stem}", ""]
        for n, item in enumerate(items, 1):
            lines += [f"**{n}. {item['question']}**", "", f"`{shlex.join(command(stem, item))}`", "", item["answer"], ""]
            check = checks.get(item["id"])
            lines += ([f"*Measured* (in {check['seconds']} s): {check['observed']}.", "",
                       f"*Check:* {check['claim']}: **{'holds' if check['holds'] else 'does not hold'}**.", ""]
                      if check else ["*Measured:* not yet (`python -m gelora exercises --measure`).", ""])
    return "\n".join(lines).rstrip() + "\n"


GUIDE_START, GUIDE_END = "<!-- exercises:start (python -m gelora exercises --write) -->", "<!-- exercises:end -->"


def guide_table(data: dict[str, list[dict]], record: dict) -> str:
    """docs/TEACHING.md's table: every exercise, its notebook, what it showed and its measured time."""
    checks = record.get("exercises", {})
    lines = [f"| exercise | notebook | time on the {record.get('profile', 'class')} profile | its answer's check |",
             "|---|---|---|---|"]
    for stem, items in data.items():
        for item in items:
            check = checks.get(item["id"])
            verdict = ("holds" if check["holds"] else "does not hold") if check else "-"
            seconds = f"{check['seconds']} s" if check else "not measured"
            lines.append(f"| {item['id']} | {stem[:2]} | {seconds} | {verdict} |")
    return "\n".join([GUIDE_START, *lines, GUIDE_END])


def _with_guide_table(text: str, table: str) -> str:
    start, end = text.index(GUIDE_START), text.index(GUIDE_END) + len(GUIDE_END)
    return text[:start] + table + text[end:]


def _with_section(path: Path, section: str) -> dict:
    """The notebook with its last markdown cell replaced by (or followed by) the Exercises section."""
    book = json.loads(path.read_text())
    cell = {"cell_type": "markdown", "id": "exercises", "metadata": {}, "source": section.splitlines(True)}
    cells = [c for c in book["cells"] if not (c["cell_type"] == "markdown" and "".join(c["source"]).startswith(MARKER))]
    book["cells"] = cells + [cell]
    return book


def out_of_date(write: bool = False) -> list[str]:
    """The generated files that differ from the YAML (rewritten when write=True)."""
    data, stale = load(), []
    for path in notebooks():
        text = json.dumps(_with_section(path, notebook_section(path.stem, data[path.stem])), indent=1,
                          ensure_ascii=False) + "\n"
        if path.read_text() != text:
            stale.append(str(path.relative_to(repo_root())))
            if write:
                path.write_text(text)
    guide = repo_root() / "docs" / "TEACHING.md"
    text = _with_guide_table(guide.read_text(), guide_table(data, measured()))
    if guide.read_text() != text:
        stale.append(str(guide.relative_to(repo_root())))
        if write:
            guide.write_text(text)
    target = repo_root() / "notebooks" / "SOLUTIONS.md"
    if not target.exists() or target.read_text() != solutions(data):
        stale.append(str(target.relative_to(repo_root())))
        if write:
            target.write_text(solutions(data))
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the notebooks' sections and SOLUTIONS.md")
    parser.add_argument("--measure", nargs="*", metavar="ID", default=None,
                        help="run the exercises (all, or these ids) on --profile, check their answers, record the "
                             f"numbers in {MEASURED} and rewrite SOLUTIONS.md")
    parser.add_argument("--profile", default="class", help="the profile --measure runs on (default: class)")
    args = parser.parse_args(argv)
    if args.measure is not None:
        try:
            payload = measure(args.profile, args.measure or None)
        except (ValueError, FileNotFoundError, subprocess.CalledProcessError) as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            return 1
        out_of_date(write=True)
        failed = sorted(k for k, v in payload["exercises"].items() if not v["holds"])
        print(f"{len(payload['exercises']) - len(failed)} of {len(payload['exercises'])} checks hold"
              + (f"; not: {failed}" if failed else ""))
        return 1 if failed else 0
    stale = out_of_date(write=args.write)
    if stale and not args.write:
        print(f"out of date with notebooks/exercises.yaml: {stale}; run python -m gelora exercises --write",
              file=sys.stderr)
        return 1
    print(f"rewrote {stale}" if stale else "exercises up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
