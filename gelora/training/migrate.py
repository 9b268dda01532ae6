"""Records written under an earlier identity rule, renamed to today's after a check of each one.

When the kit changes what a run's identity covers, the records a user already has would no longer
be found and every run would train again. A GeLoRA run was once identified by the bytes of its ID
profile; it is now identified by the ranks that profile allocates (a profile recomputed on another
machine differs in its last digits and gives the same ranks). A record is renamed only when:

- the ranks it trained (`record["allocation"]["ranks"]`) follow again from the dimensions it
  records, under its own settings and today's allocation code, and
- where its profile file is still there with the bytes it was trained from, the identity this
  checkout computes for the record's settings is exactly the new one (data, weights, layout, ranks).

Anything else is reported and left alone. Without --apply nothing is written.

    python -m gelora migrate results/ [--apply]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from gelora.training.identity import run_id, run_identity

PROG = "python -m gelora.training.migrate"
TEXT_SUFFIXES = (".csv", ".json", ".md", ".txt", ".ipynb")  # files that may name a run


@dataclass
class Rename:
    path: Path
    old: str
    new: str
    record: dict  # the record as it will be written
    checked: str  # what was verified: "profile file" (end to end) or "recorded dimensions"


def _config(record: dict):
    from gelora.training.config import config_from_record

    return config_from_record(record["config"])


def plan_record(path: Path) -> Rename | None:
    """The renaming of one record, or None when it is already under today's rule (or not a
    GeLoRA run given a profile). Raises ValueError, naming the record, when a check fails."""
    from gelora.data.tasks import file_sha256
    from gelora.methods.registry import REGISTRY
    from gelora.training.identity import identity_digest, profile_ranks

    record = json.loads(path.read_text())
    if not isinstance(record, dict) or "identity" not in record or "run_id" not in record:
        return None
    old_profile = record["identity"].get("content", {}).get("profile")
    method = REGISTRY.get(record.get("method"))
    if method is None or not method.uses_profile or not isinstance(old_profile, str):
        return None
    config = _config(record)
    ranks = [int(r) for r in record["allocation"]["ranks"]]
    from_dimensions = profile_ranks(config, dimensions=record["allocation"]["dimensions"])
    if from_dimensions != ranks:
        raise ValueError(f"{path}: the recorded dimensions allocate {from_dimensions} today, the run trained {ranks}")
    identity = json.loads(json.dumps(record["identity"]))
    identity["content"]["profile"] = {"ranks": ranks}
    new = f"{record['run_id'].rsplit('__', 1)[0]}__{identity_digest(identity)}"
    checked = "recorded dimensions"
    profile = Path(config.id_profile) if config.id_profile else None
    if profile is not None and profile.is_file() and file_sha256(profile) == old_profile:
        if run_id(config) != new:
            computed = run_identity(config)
            differ = sorted(k for k in computed if computed[k] != identity[k])
            raise ValueError(f"{path}: this checkout computes {run_id(config)} for the record's settings, not {new} "
                             f"(differs in {differ})")
        checked = "profile file"
    record = {**record, "run_id": new, "identity": identity}
    if isinstance(record.get("predictions"), dict) and "file" in record["predictions"]:
        record["predictions"] = {**record["predictions"],
                                 "file": record["predictions"]["file"].replace(path.stem, new)}
    return Rename(path, path.stem, new, record, checked)


def plan(folders) -> tuple[list[Rename], list[str]]:
    """The renamings of every record under `folders`, and the records that failed a check (each
    a sentence naming the file; those are left alone)."""
    renames, problems = [], []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.json")):
            if path.stem.count("__") >= 4:  # a record's name: dataset__model__method__seed__digest
                try:
                    found = plan_record(path)
                except (ValueError, KeyError, FileNotFoundError) as error:
                    problems.append(str(error) if isinstance(error, ValueError) else f"{path}: {error!r}")
                    continue
                if found is not None and found.old != found.new:
                    renames.append(found)
    return renames, problems


def apply(renames: list[Rename], folders) -> list[Path]:
    """Write each record under its new name (its sidecar files renamed with it), and replace every
    old name in the text files under `folders` (tables, notes). All or nothing: every text file is
    read and every new text made before the first write, so a file that cannot be read (not UTF-8)
    stops it with nothing changed. Returns the text files changed."""
    from gelora.core.records import atomic_write, atomic_write_json

    names = {r.old: r.new for r in renames}
    texts = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix not in TEXT_SUFFIXES or not path.is_file() or path.suffix == ".json" and path.stem in names:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError) as error:
                raise ValueError(f"{path} cannot be read as UTF-8 text ({error}); nothing was renamed: fix or move that "
                                 "file and run again") from None
            new_text = text
            for old, new in names.items():
                new_text = new_text.replace(old, new)
            if new_text != text:
                texts[path] = new_text
    for rename in renames:
        atomic_write_json(rename.path.with_name(rename.new + ".json"), rename.record)
        for sidecar in rename.path.parent.glob(rename.old + ".*"):
            if sidecar != rename.path:
                sidecar.rename(sidecar.with_name(rename.new + sidecar.name[len(rename.old):]))
        rename.path.unlink()
    for path, new_text in texts.items():
        atomic_write(path, lambda handle, text=new_text: handle.write(text))
    return list(texts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="folders of records (searched recursively)")
    parser.add_argument("--apply", action="store_true", help="rename (without it: print the plan only)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not Path(folder).is_dir():
            raise ValueError(f"{folder!r} is not a folder")
    renames, problems = plan(args.folders)
    for rename in renames:
        print(f"{rename.old} -> {rename.new}  (checked against the {rename.checked})")
    for problem in problems:
        print(f"left alone: {problem}", file=sys.stderr)
    print(f"{len(renames)} record(s) to rename, {len(problems)} left alone", file=sys.stderr)
    if args.apply and renames:
        changed = apply(renames, args.folders)
        print(f"renamed {len(renames)} record(s); {len(changed)} other file(s) now name them", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
