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
import re
import sys
import time
from pathlib import Path

import yaml

PROG = "python -m gelora.kit.pipeline"  # `gelora run` sets its own name in help and errors
PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"
TYPE_CHECKS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def repo_root() -> Path:
    """The checkout holding notebooks/ and data/ (paths in profiles are relative to it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "notebooks").is_dir():
        raise FileNotFoundError(f"no notebooks/ beside the package at {root}: run from a clone of the repository")
    return root


def resolve(path: str | Path) -> Path:
    """A path from a parameter: absolute as is, relative ones from the repository root (so a
    notebook opened in JupyterLab and the pipeline write to the same place)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root() / path


def shown(path: str | Path) -> str:
    """A path as a reader should see it in an output: relative to the repository root when it
    lies inside (no machine-specific prefix in executed notebooks), else as given."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def notebooks() -> list[Path]:
    found = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError("no numbered notebooks under notebooks/")
    return found


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key repeated in one mapping (PyYAML keeps the last one
    without a word: a second `04_fine_tuning:` section would silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_profile(name_or_path: str) -> dict:
    """A profile by name (smoke, cpu, gpu) or by the path of a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ValueError(f"unknown profile {name_or_path!r}: not one of {available_profiles()} nor a YAML file")
    try:
        with open(path, encoding="utf-8") as handle:  # a file stream: YAML's errors then name it with the line
            profile = yaml.load(handle, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ValueError(f"profile {path} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"profile {path} is not UTF-8 text: {error}") from None
    profile = {} if profile is None else profile
    if not isinstance(profile, dict):
        raise ValueError(f"profile {path} must be a mapping with common / notebooks sections, got {type(profile).__name__}")
    for section in ("common", "notebooks"):
        if profile.get(section) is not None and not isinstance(profile[section], dict):
            raise ValueError(f"profile {path}: section {section!r} must be a mapping")
        profile[section] = profile.get(section) or {}
    unknown = sorted(set(profile) - {"description", "common", "notebooks", "skip", "columns"})
    if unknown:
        raise ValueError(f"profile {path} has unknown section(s) {unknown}; expected common, notebooks, skip, "
                         "columns, description")
    columns = profile.setdefault("columns", {}) or {}
    if not isinstance(columns, dict) or set(columns) - {"text", "label"} or not all(
            isinstance(v, str) and v for v in columns.values()):
        raise ValueError(f"profile {path}: columns must map text and/or label to column names, got {columns!r}")
    profile["columns"] = columns
    skip = profile.setdefault("skip", [])
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise ValueError(f"profile {path}: skip must be a list of notebook names, got {skip!r}")
    for section in profile["notebooks"].values():
        if section is not None and not isinstance(section, dict):
            raise ValueError(f"profile {path}: every notebooks.<name> section must be a mapping")
    return profile


def declared_parameters(path: Path) -> dict[str, dict]:
    """Names, inferred types and defaults of a notebook's `parameters` cell."""
    import nbformat
    import papermill

    params = papermill.inspect_notebook(str(path))
    if not params:
        raise ValueError(f"{path.name} has no cell tagged 'parameters'")
    book = nbformat.read(str(path), as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    assigned = re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=", cell.source, flags=re.M)
    unparsed = [name for name in assigned if name not in params]
    if unparsed:  # papermill skips lines it cannot parse (an `int | None` annotation, say) without a word
        raise ValueError(f"{path.name}: papermill cannot parse parameter(s) {unparsed}; "
                         "annotate them as plain types or strings such as \"Optional[int]\"")
    return params


def parse_override(text: str) -> tuple[str | None, str, object]:
    """`name=value` or `notebook.name=value` (notebook: full stem or its number); the value is
    read as YAML, so 3, 0.5, true, [1, 2] and null have their types."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not name=value")
    key, _, raw = text.partition("=")
    notebook, _, name = key.rpartition(".")
    if not raw.strip():
        raise ValueError(f"override {text!r} has no value: write {key}=null for None, {key}='' for an empty string")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ValueError(f"override {text!r}: the value is not valid YAML ({error})") from None
    return notebook or None, name.strip(), value


def _check_type(notebook: str, name: str, value, declared: dict) -> None:
    kind = (declared.get("inferred_type_name") or "None").split("[")[0].strip().lower()
    if value is None or kind in ("none", "") or "|" in declared.get("inferred_type_name", ""):
        return
    if "optional" in kind or kind == "any":
        return
    allowed = TYPE_CHECKS.get(kind)
    if allowed and (not isinstance(value, allowed) or (kind != "bool" and isinstance(value, bool))):
        raise ValueError(f"{notebook}: parameter {name!r} must be {kind}, got {value!r} ({type(value).__name__})")


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
            _check_type(stem, name, value, declared[stem][name])
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
            value = params.get(name, _literal(declared[stem][name].get("default")))
            if isinstance(value, list) and any(isinstance(v, int) and v > room for v in value):
                params[name] = [v for v in value if v <= room] or [room]
            elif isinstance(value, int) and not isinstance(value, bool) and value > room:
                params[name] = room
            else:
                continue
            log(f"{stem}: {name}={value} was set for {profile_dataset}; {dataset} has {room} {split} examples: "
                f"using {params[name]} (-p {stem[:2]}.{name}=... to choose)")


def _literal(text):
    import ast

    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return None


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
        print(f"pipeline error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
