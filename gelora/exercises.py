"""The notebooks' exercises, kept in one file (notebooks/exercises.yaml): each a parameter change
and a question. The Exercises section of every notebook and notebooks/SOLUTIONS.md are rendered
from it, so the questions, the commands and the answers never drift apart.

    python -m gelora.exercises            # fail if a notebook or SOLUTIONS.md is out of date
    python -m gelora.exercises --write    # rewrite them from the YAML file
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml

from .pipeline import notebooks, repo_root

PROG = "python -m gelora.exercises"  # `gelora exercises` sets its own name in help and errors
MARKER = "## Exercises"


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
    return data


def command(stem: str, exercise: dict, profile: str = "class", folder: str | None = None,
            finished_run: str | None = None) -> list[str]:
    """The command that runs one exercise: the pipeline, that notebook only, its parameters. Its
    outputs go to `folder` (default runs/exercises/<id>/: never over your run or the reference
    figures); notebook 05, which draws a finished run, reads the profile's run folder (or
    `finished_run`); notebook 06 reads the committed study."""
    folder = folder or f"runs/exercises/{exercise['id']}"
    args = ["python", "-m", "gelora.pipeline", "--profile", profile, "--only", stem[:2]]
    if stem[:2] == "05":
        args += ["--run-dir", finished_run] if finished_run else []
    elif stem[:2] != "06":  # 06 reads the committed study, not a run folder
        args += ["--run-dir", folder]
    args += ["-p", f"figures_dir={folder}/figures"]
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


def solutions(data: dict[str, list[dict]]) -> str:
    lines = ["# Solutions to the notebooks' exercises", "",
             "Generated from `notebooks/exercises.yaml` (`python -m gelora.exercises --write`). Each answer says what "
             "to look for; the numbers are in your run's outputs.", ""]
    for stem, items in data.items():
        lines += [f"## {stem}", ""]
        for n, item in enumerate(items, 1):
            lines += [f"**{n}. {item['question']}**", "", f"`{shlex.join(command(stem, item))}`", "", item["answer"], ""]
    return "\n".join(lines).rstrip() + "\n"


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
    target = repo_root() / "notebooks" / "SOLUTIONS.md"
    if not target.exists() or target.read_text() != solutions(data):
        stale.append(str(target.relative_to(repo_root())))
        if write:
            target.write_text(solutions(data))
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the notebooks' sections and SOLUTIONS.md")
    args = parser.parse_args(argv)
    stale = out_of_date(write=args.write)
    if stale and not args.write:
        print(f"out of date with notebooks/exercises.yaml: {stale}; run python -m gelora.exercises --write",
              file=sys.stderr)
        return 1
    print(f"rewrote {stale}" if stale else "exercises up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
