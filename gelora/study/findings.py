"""What the study found about allocators, as a small file inside the package, so that `gelora
recommend` can say it to people who installed the kit without its results folder.

The file is generated from the committed study by `gelora study --readme` (with the README's
section) and `gelora study --check` fails when it differs from the results, so it cannot drift
from them. It holds the allocator comparison only: per task, each allocation's paired difference
against uniform LoRA with its interval and verdict, the same-rate check, and whether it lies above
every random allocation of the same budget.
"""
from __future__ import annotations

import json
from pathlib import Path

from gelora.allocation.recommend import FINDINGS_PATH  # noqa: F401  (where the package reads them)
from gelora.study.folders import STUDY_DIR, task_folders, task_records

SECTION = "docs/STUDY.md (the study page of the book), table 'Does geometry allocate ranks better than chance?'"


def findings(study_dir: str | Path = STUDY_DIR) -> dict:
    """The allocator comparison of every task that has one, as plain JSON-ready values."""
    from gelora.study.allocators import ALLOCATOR_DIR, allocator_table

    tasks = {}
    for task, folder in task_folders(study_dir).items():
        if not (Path(folder) / ALLOCATOR_DIR / "results").is_dir():
            continue
        table = allocator_table(folder)
        lora = next(r for r in task_records(folder) if r["method"] == "lora")
        rows = {}
        for r in table.itertuples():
            matched = r.matched_verdict if isinstance(r.matched_verdict, str) else None
            rows[r.allocation] = {"ranks": [int(x) for x in r.ranks], "verdict": r.verdict,
                                  "difference": round(float(r.difference), 6), "low": round(float(r.low), 6),
                                  "high": round(float(r.high), 6), "same_rate_verdict": matched,
                                  "above_every_random_draw": bool(r.better_than_chance)}
        tasks[task] = {"model": lora["model"], "metric": lora["metric"], "budget": f"uniform LoRA r = {lora['config']['rank']}",
                       "seeds": table["seeds"].iloc[0], "random_draws": int(table["random_draws"].iloc[0]),
                       "allocators": rows}
    return {"section": SECTION, "tasks": tasks}


def findings_json(study_dir: str | Path = STUDY_DIR, found: dict | None = None) -> str:
    """The findings file's text (from `found` when given, else computed from the study)."""
    return json.dumps(found if found is not None else findings(study_dir), indent=1, sort_keys=True) + "\n"


def write_findings(study_dir: str | Path = STUDY_DIR, path: Path = FINDINGS_PATH) -> bool:
    """Write the findings file. Returns whether it changed."""
    text = findings_json(study_dir)
    changed = not path.is_file() or path.read_text() != text
    if changed:
        path.write_text(text)
    return changed
