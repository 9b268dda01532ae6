"""Result records (one JSON per run) as tables: per run, per method (mean and spread over seeds),
and the training curves, for notebooks 04 and 05."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import methods
from .targets import block_index


def load_records(results_dir: str | os.PathLike) -> list[dict]:
    """Every run record under a folder (temporary files of interrupted writes are ignored)."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no results folder {folder}")
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a valid record ({error}): delete it and rerun that run") from None
        if not isinstance(record, dict) or not {"run_id", "method", "seed", "test"} <= set(record):
            raise ValueError(f"{path} is not a gelora run record: move it out of {folder}")
        records.append(record)
    return records


def runs_table(records: list[dict]) -> pd.DataFrame:
    """One row per run: method, seed, validation and test metric, parameters, time, memory."""
    if not records:
        raise ValueError("no result records to tabulate")
    runs: dict = {}
    for r in records:
        runs.setdefault((r["dataset"], r["model"], r["method"], r["seed"]), []).append(r["run_id"])
    mixed = {key: ids for key, ids in runs.items() if len(ids) > 1}
    if mixed:
        (dataset, model, method, seed), ids = next(iter(mixed.items()))
        raise ValueError(f"{len(ids)} runs of {method} seed {seed} ({dataset}, {model}) with different settings: "
                         f"{ids[:4]}; tabulating them together would mix results. Keep one run per method and "
                         "seed in the folder (move older records away, or use a new run_dir)")
    rows = []
    for r in records:
        metric = r["metric"]
        rows.append({
            "method": r["method"], "seed": r["seed"], "dataset": r["dataset"], "model": r["model"],
            "metric": metric, "validation": r["final"][metric], "best_validation": r["best"][metric],
            "test": r["test"].get(metric, np.nan), "adapter_params": r["adapter_params"],
            "head_params": r["head_params"], "trainable_params": r["trainable_params"],
            "effective_adapter_params": r.get("effective_adapter_params", r["adapter_params"]),
            "total_params": r["total_params"], "train_time_s": r["train_time_s"], "wall_time_s": r["wall_time_s"],
            "init_time_s": r.get("init_time_s", 0.0), "peak_memory_mb": r["peak_memory_mb"], "lr": r["lr"],
            "steps": r["steps"], "device": r["device"], "run_id": r["run_id"],
        })
    return pd.DataFrame(rows)


def summary_table(runs: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """Per method: trainable parameters, seeds, and mean / std over seeds of the metric, time and
    memory, in `order` (default: the registry's). Parameter counts must agree across seeds (they
    do unless a config changed)."""
    grouped = runs.groupby("method")
    table = pd.DataFrame({
        "adapter_params": grouped["adapter_params"].median().astype(int),
        "effective_adapter_params": grouped["effective_adapter_params"].median().astype(int),
        "trainable_params": grouped["trainable_params"].median().astype(int),
        "seeds": grouped["seed"].apply(lambda s: ",".join(str(x) for x in sorted(s))),
        "n_seeds": grouped.size(),
        "validation_mean": grouped["validation"].mean(), "validation_std": grouped["validation"].std(ddof=1),
        "test_mean": grouped["test"].mean(), "test_std": grouped["test"].std(ddof=1),
        "train_time_s": grouped["train_time_s"].mean(), "init_time_s": grouped["init_time_s"].mean(),
        "peak_memory_mb": grouped["peak_memory_mb"].mean(),
    })
    order = order or methods.order(table.index)
    if order:
        table = table.reindex([m for m in order if m in table.index] + [m for m in table.index if m not in order])
    return table.reset_index()


def to_markdown(summary: pd.DataFrame, metric: str = "accuracy") -> str:
    """The summary as a Markdown table (mean ± std over seeds)."""
    view = pd.DataFrame({
        "method": summary["method"],
        "trainable adapter params": [f"{a:,}" if a == e else f"{a:,} ({e:,} after pruning)"
                                     for a, e in zip(summary["adapter_params"], summary["effective_adapter_params"])],
        "seeds": summary["seeds"],
        f"validation {metric}": [f"{m:.4f} ± {s:.4f}" if np.isfinite(s) else f"{m:.4f}"
                                 for m, s in zip(summary["validation_mean"], summary["validation_std"])],
        f"test {metric}": [f"{m:.4f} ± {s:.4f}" if np.isfinite(s) else f"{m:.4f}"
                           for m, s in zip(summary["test_mean"], summary["test_std"])],
        "train time (s)": summary["train_time_s"].map("{:.1f}".format),
        "peak memory (MB)": summary["peak_memory_mb"].map("{:.0f}".format),
    })
    return view.to_markdown(index=False)


def curves(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long tables of the training loss and the validation metric per step, method and seed."""
    loss = pd.DataFrame([{"method": r["method"], "seed": r["seed"], **point}
                         for r in records for point in r["train_loss"]])
    evals = pd.DataFrame([{"method": r["method"], "seed": r["seed"], "step": e["step"],
                           "value": e[r["metric"]], "metric": r["metric"]}
                          for r in records for e in r["evals"]])
    return loss, evals


def ranks_by_block(records: list[dict]) -> pd.DataFrame:
    """Rank per block for each method (its lowest seed): the allocation for LoRA, GeLoRA and the
    LoRA-SB family, the realised ranks for EVA and the ranks AdaLoRA kept after pruning (both
    averaged over the modules of a block). Full fine-tuning has no rank and is left out."""
    first: dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        first.setdefault(r["method"], r)
    rows = []
    for method, r in first.items():
        ranks = r.get("final_ranks") or r.get("ranks")  # AdaLoRA: the ranks kept after pruning
        if not ranks or (method in methods.REGISTRY and methods.get_method(method).family == "full"):
            continue
        per_block: dict[int, list] = {}
        for key, value in ranks.items():
            block = int(key) if str(key).isdigit() else block_index(key)
            if block is not None:
                per_block.setdefault(block, []).append(value)
        rows += [{"method": method, "block": b, "rank": float(np.mean(v))} for b, v in sorted(per_block.items())]
    return pd.DataFrame(rows, columns=["method", "block", "rank"])
