"""The study's folders: one per task under results/study/, each holding what its grid wrote
(`results/`: one record and one prediction file per run; `lr_sweep.csv`, `id_profile.csv`)."""
from __future__ import annotations

from pathlib import Path

from gelora.analysis.results import load_records

STUDY_DIR = "results/study"


def task_folders(study_dir: str | Path = STUDY_DIR) -> dict[str, Path]:
    """Task name -> its folder, for every folder under `study_dir` with run records."""
    from gelora.kit.paths import resolve

    root = resolve(study_dir)
    folders = {p.name: p for p in sorted(root.iterdir()) if (p / "results").is_dir()} if root.is_dir() else {}
    if not folders:
        raise FileNotFoundError(f"no study results under {root}: run `make study` (or check study_dir)")
    return folders


def task_records(folder: Path) -> list[dict]:
    """The comparison's records of a task folder, each checked to be a run on that task (its
    folder's name) with one model: a record of another task copied in is an error."""
    records = load_records(folder / "results")
    if not records:
        raise FileNotFoundError(f"{folder / 'results'} holds no run records")
    others = sorted({r["dataset"] for r in records} - {folder.name})
    models = sorted({r["model"] for r in records})
    if others or len(models) > 1:
        raise ValueError(f"{folder / 'results'} holds runs of {others or models}: a task folder holds its own task's "
                         f"runs ({folder.name}) on one model")
    return records
