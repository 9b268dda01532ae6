"""Run the numbered notebooks (01 to 06) in order through papermill, with a named profile.

    python -m gelora run --profile cpu            # the README's main command
    python -m gelora run --profile smoke -p seed=1 -p 04_fine_tuning.epochs=2
    python -m gelora run --profile my_profile.yaml --only 04,05

A profile is a small YAML file (gelora/profiles/*.yaml; copy one to make your own): `common`
parameters go to every notebook that declares them, `notebooks.<name>` to one notebook. Every
name is checked against the notebook's `parameters` cell before anything runs: a parameter that
no notebook declares is an error, never a warning. Executed notebooks are saved under
<run_dir>/executed/; the notebooks reuse what earlier runs wrote, so a rerun is quick.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

# where files are (gelora.kit.paths) and the profiles (gelora.kit.profiles); notebooks read
# `shown`, and other modules `resolve` / `repo_root`, from here too
from gelora.kit.paths import notebooks, repo_root, resolve, shown  # noqa: F401
from gelora.kit.profiles import available_profiles, check_type, declared_parameters, literal_value, load_profile, parse_override
from gelora.kit.settle import changed, settle

PROG = "python -m gelora.kit.pipeline"  # `gelora run` sets its own name in help and errors


def plan(profile: dict, overrides: list[str] = (), only: list[str] | None = None,
         columns: dict | None = None) -> list[tuple[Path, dict]]:
    """Each notebook to run with its parameters, after checking every name and type. `columns`
    (text / label -> your table's names; else the profile's `columns`): a local dataset is read
    through a copy with the kit's names, written in the run folder."""
    books = notebooks()
    stems = {p.stem: p for p in books}
    numbers = {p.stem[:2]: p.stem for p in books}
    unknown_books = sorted((set(profile["notebooks"]) | set(profile.get("skip", []))) - set(stems))
    if unknown_books:
        raise ValueError(f"profile names notebook(s) {unknown_books} that do not exist; notebooks: {sorted(stems)}")
    declared = {stem: declared_parameters(path) for stem, path in stems.items()}
    chosen = {stem: {} for stem in stems}
    for name, value in profile["common"].items():
        takers = [s for s in stems if name in declared[s]]
        if not takers:
            raise ValueError(f"common parameter {name!r} is declared by no notebook")
        for stem in takers:
            chosen[stem][name] = value
    for stem, section in profile["notebooks"].items():
        for name, value in (section or {}).items():
            if name not in declared[stem]:
                raise ValueError(f"{stem} declares no parameter {name!r}; it declares {sorted(declared[stem])}")
            chosen[stem][name] = value
    for text in overrides:
        book, name, value = parse_override(text)
        if book is not None:
            stem = numbers.get(book, book)
            if stem not in stems:
                raise ValueError(f"override {text!r} names no notebook; notebooks: {sorted(stems)}")
            if name not in declared[stem]:
                raise ValueError(f"{stem} declares no parameter {name!r}; it declares {sorted(declared[stem])}")
            chosen[stem][name] = value
        else:
            takers = [s for s in stems if name in declared[s]]
            if not takers:
                raise ValueError(f"parameter {name!r} is declared by no notebook")
            for stem in takers:
                chosen[stem][name] = value
    given = {(numbers.get(b, b) if b else None, n) for b, n, _ in map(parse_override, overrides)}
    names = {name for _, name in given}
    if "run_dir" in names and "figures_dir" not in names:  # another run folder: its figures go inside it
        for stem in chosen:
            if "figures_dir" in chosen[stem]:
                chosen[stem]["figures_dir"] = ""
    columns = {**profile.get("columns", {}), **(columns or {})}
    if columns:
        with_kit_columns(chosen, columns)
    if "dataset" in names:  # your own data: the profile's folder and sizes were for its dataset
        if "run_dir" not in names and profile["common"].get("run_dir"):
            raise ValueError(f"-p dataset=... trains on another dataset than the profile's "
                             f"({profile['common'].get('dataset')}): give it its own folder with --run-dir, so that "
                             f"{profile['common']['run_dir']} keeps the profile's run")
        fit_sizes(chosen, declared, profile["common"].get("dataset"), given)
    for stem, params in chosen.items():
        for name, value in params.items():
            check_type(stem, name, value, declared[stem][name])
    selected = [p for p in books if p.stem not in profile.get("skip", [])]  # notebooks the profile has no use for
    if only:
        wanted = {numbers.get(o, o) for o in only}
        missing = sorted(wanted - set(stems))
        if missing:
            raise ValueError(f"--only names unknown notebook(s) {missing}")
        skipped = sorted(wanted & set(profile.get("skip", [])))
        if skipped:
            raise ValueError(f"--only names notebook(s) {skipped} that the profile skips")
        selected = [p for p in books if p.stem in wanted]
    return [(p, chosen[p.stem]) for p in selected]


def with_kit_columns(chosen: dict, columns: dict, log=print) -> None:
    """Point every notebook's local `dataset` at a copy whose columns carry the kit's names (`text`,
    `label`), written once into the run folder (<run_dir>/data/): the notebooks read those names."""
    from gelora.data.tasks import TABLE_SUFFIXES, read_table

    copies: dict = {}
    for params in chosen.values():
        dataset, run_dir = params.get("dataset"), params.get("run_dir")
        if not dataset or not run_dir or not Path(dataset).exists():
            continue
        if dataset not in copies:
            source = Path(dataset)
            files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.suffix in TABLE_SUFFIXES)
            target = resolve(run_dir) / "data" / source.stem
            target.mkdir(parents=True, exist_ok=True)
            for file in files:
                frame = read_table(file)
                missing = sorted(set(columns.values()) - set(frame.columns))
                if missing:
                    raise ValueError(f"{file} has no column(s) {missing}; its columns are {list(frame.columns)}")
                frame = frame.rename(columns={name: kit for kit, name in columns.items()})
                frame.to_csv(target / f"{file.stem}.csv", index=False)
            copies[dataset] = str(target / f"{source.stem}.csv") if source.is_file() else str(target)
            log(f"{dataset}: columns {columns} read as the kit's names through {shown(copies[dataset])}")
        params["dataset"] = copies[dataset]


# Parameters that count examples of a split: a profile's value is for its own dataset.
SIZES = {"n_train": "train", "sweep_n_train": "train", "n_examples": "train", "num_samples": "train",
         "reference_samples": "train", "n_eval": "validation", "n_test": "test"}
LIST_SIZES = {"sensitivity_examples": "train", "sample_sizes": "train"}


def fit_sizes(chosen: dict, declared: dict, profile_dataset: str | None, given: set, log=print) -> None:
    """With `-p dataset=...` (another dataset than the profile's), a size the profile or the
    notebook set (not one given with -p) that exceeds its split becomes the whole split, with a
    line saying so; a size given with -p is left for the notebook to refuse."""
    from gelora.data.tasks import load_dataset

    sizes: dict = {}
    for stem, params in chosen.items():
        dataset = params.get("dataset", declared[stem].get("dataset", {}).get("default", "").strip("'\""))
        if not dataset or dataset == profile_dataset or "dataset" not in declared[stem]:
            continue
        test_split = params.get("test_split", "test")
        for name in [*SIZES, *LIST_SIZES]:
            if name not in declared[stem] or (stem, name) in given or (None, name) in given:
                continue
            split = test_split if SIZES.get(name) == "test" else SIZES.get(name, LIST_SIZES.get(name))
            if (dataset, split) not in sizes:
                sizes[dataset, split] = len(load_dataset(dataset, split, label_column=None))
            room = sizes[dataset, split]
            value = params.get(name, literal_value(declared[stem][name].get("default")))
            if isinstance(value, list) and any(isinstance(v, int) and v > room for v in value):
                params[name] = [v for v in value if v <= room] or [room]
            elif isinstance(value, int) and not isinstance(value, bool) and value > room:
                params[name] = room
            else:
                continue
            log(f"{stem}: {name}={value} was set for {profile_dataset}; {dataset} has {room} {split} examples: "
                f"using {params[name]} (-p {stem[:2]}.{name}=... to choose)")



class NotebookFailed(RuntimeError):
    """A notebook stopped on an error: which notebook, which cell, what error."""


def mark(path: Path, status: str, reason: str = "") -> None:
    """Write the run's outcome into an executed notebook's metadata (`gelora.status`: completed,
    failed or interrupted; papermill's paths made relative); a failure also sets papermill's own
    `exception` flag."""
    import nbformat

    if not path.exists():
        return
    book = nbformat.read(str(path), as_version=4)
    book.metadata["gelora"] = {"status": status, "reason": reason}
    papermill = book.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # no machine-specific prefix in a published copy
        if papermill.get(key):
            papermill[key] = shown(papermill[key])
    if status != "completed":
        book.metadata.setdefault("papermill", {})["exception"] = True
    nbformat.write(book, str(path))


def executed_status(path: str | Path) -> str:
    """completed, failed, interrupted, or unknown (a copy killed before it could be marked, or
    not written by this pipeline): only `completed` is a finished notebook."""
    import nbformat

    return nbformat.read(str(path), as_version=4).metadata.get("gelora", {}).get("status", "unknown")


def run(profile_name: str = "cpu", overrides: list[str] = (), only: list[str] | None = None,
        run_dir: str | None = None, progress: bool = True, columns: dict | None = None,
        executed_dir: str | None = None) -> list[Path]:
    """Execute the notebooks; returns the executed copies (in `executed_dir`, default
    <run_dir>/executed: an exercise that reads a finished run keeps its copies apart). Raises
    NotebookFailed at the first failing cell, naming the notebook, the cell and the error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    profile = load_profile(profile_name)
    if run_dir is not None:
        overrides = [*overrides, f"run_dir={run_dir}"]
    steps = plan(profile, overrides, only, columns)
    folder = (resolve(executed_dir) if executed_dir else
              resolve(steps[0][1].get("run_dir", profile["common"].get("run_dir", "runs/default"))) / "executed")
    folder.mkdir(parents=True, exist_ok=True)
    outputs = []
    for index, (path, params) in enumerate(steps, 1):
        out = folder / path.name
        print(f"[{index}/{len(steps)}] {path.stem}  " + " ".join(f"{k}={v}" for k, v in params.items()), flush=True)
        start = time.perf_counter()
        out.unlink(missing_ok=True)  # an older copy must not stand in for this run
        try:
            papermill.execute_notebook(str(path), str(out), parameters=params, cwd=str(repo_root()),
                                       progress_bar=progress, kernel_name="python3",
                                       # the kernel's own log (transport notices, the interrupt at shutdown)
                                       # is not the notebook's: a cell's error still stops the run, named
                                       extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
        except PapermillExecutionError as err:
            source = (err.source or "").strip().splitlines()
            first = source[0] if source else ""
            message = (f"{path.name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
                       f"{err.ename}: {err.evalue}")
            mark(out, "failed", message)
            raise NotebookFailed(f"{message}\n  cell begins: {first}\n  executed copy: {out}") from None
        except BaseException as err:  # Ctrl-C, a dead kernel, a full disk: never left looking complete
            with contextlib.suppress(Exception):
                mark(out, "interrupted", f"{type(err).__name__}: {err}")
            raise
        mark(out, "completed")
        print(f"      done in {time.perf_counter() - start:.0f} s -> {out}", flush=True)
        outputs.append(out)
    written = {folder, *(resolve(p[k]) for _, p in steps for k in ("run_dir", "figures_dir") if p.get(k))}
    settle(changed(repo_root(), sorted(written)), repo_root())
    return outputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help=f"one of {available_profiles()} or a YAML file")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="[NOTEBOOK.]NAME=VALUE",
                        help="override a parameter (value read as YAML); repeatable")
    parser.add_argument("--only", default=None, help="comma-separated notebooks to run, e.g. 04,05")
    parser.add_argument("--run-dir", default=None, help="results folder (default: the profile's run_dir)")
    parser.add_argument("--executed-dir", default=None, help="folder of the executed notebooks (default: <run dir>/executed)")
    parser.add_argument("--no-progress", action="store_true", help="no cell progress bar")
    parser.add_argument("--list", action="store_true", help="show the plan (notebooks and parameters) and stop")
    parser.add_argument("--text-column", default=None, help="your table's text column (the notebooks read 'text')")
    parser.add_argument("--label-column", default=None, help="your table's label column (the notebooks read 'label')")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    columns = {k: v for k, v in (("text", args.text_column), ("label", args.label_column)) if v}
    try:
        if args.list:
            profile = load_profile(args.profile)
            overrides = args.param + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
            for path, params in plan(profile, overrides, only, columns):
                print(path.stem, params)
            return 0
        run(args.profile, args.param, only, args.run_dir, progress=not args.no_progress, columns=columns,
            executed_dir=args.executed_dir)
    except (ValueError, NotebookFailed, FileNotFoundError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
