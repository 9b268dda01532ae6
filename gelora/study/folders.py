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
    records = load_records(folder / "results")
    if not records:
        raise FileNotFoundError(f"{folder / 'results'} holds no run records")
    return records
