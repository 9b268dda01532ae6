"""A learning-rate sweep per method, so every method is compared at a rate that suits it.

Each method of a grid is trained at its registry default times each factor (for example 1/3, 1
and 3), on the comparison's own settings with one seed, and scored on the validation split; the
rate with the best validation metric is chosen (ties: the one closest to the default). The test
split is never looked at. The sweep may use a smaller training set than the comparison (`n_train`)
when repeating the comparison's training per rate costs too much. Sweep records go to their own
folder, apart from the comparison's.
"""
from __future__ import annotations

import dataclasses
import math

import pandas as pd

from gelora.methods import registry
from gelora.training.config import FinetuneConfig, validate


def sweep_configs(configs: list[FinetuneConfig], factors, output_dir: str, n_train: int | None = None) -> list[FinetuneConfig]:
    """The sweep's runs: each distinct method of `configs` (its first seed's config) at its
    registry default x each factor, written to `output_dir`; `n_train` (None: the comparison's)
    sweeps on a smaller training set when the comparison's is too costly to repeat per rate."""
    factors = list(factors)
    if not factors or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0
                              for f in factors):
        raise ValueError(f"factors must be a non-empty list of positive numbers, got {factors!r}")
    if len(set(factors)) != len(factors):
        raise ValueError(f"factors repeat a value: {factors!r}")
    first = {}
    for config in configs:
        first.setdefault(config.method, config)
    runs = []
    for method, config in first.items():
        for factor in factors:
            run = dataclasses.replace(config, lr=float(registry.get_method(method).lr * factor), output_dir=str(output_dir),
                                      n_train=config.n_train if n_train is None else n_train)
            validate(run)
            runs.append(run)
    return runs


def lr_sweep(configs: list[FinetuneConfig], factors, output_dir: str, log=print, n_train: int | None = None) -> pd.DataFrame:
    """Train (or read back) the runs of `sweep_configs`. Returns one row per (method, lr): factor,
    validation metric (final and best), loss_rose."""
    from gelora.training.train import finetune

    rows = []
    for run in sweep_configs(configs, factors, output_dir, n_train):
        record = finetune(config=run)
        metric = record["metric"]
        rows.append({"method": run.method, "factor": round(run.lr / registry.get_method(run.method).lr, 9), "lr": run.lr,
                     "metric": metric, "validation": record["final"][metric], "best_validation": record["best"][metric],
                     "loss_rose": record.get("loss_rose", False), "seed": run.seed, "n_train": record["train_examples"],
                     "run_id": record["run_id"]})
        if log is not None:
            log(f"{run.method:>10} lr {run.lr:.2e}: validation {metric} {record['final'][metric]:.4f}")
    return pd.DataFrame(rows)


def best_lrs(table: pd.DataFrame) -> dict[str, float]:
    """Per method, the rate with the highest final validation metric (a run whose loss rose is
    never chosen; ties go to the factor closest to 1, the registry default)."""
    chosen = {}
    for method, group in table.groupby("method", sort=False):
        usable = group[~group["loss_rose"]] if (~group["loss_rose"]).any() else group
        ranked = usable.assign(distance=usable["factor"].map(lambda f: abs(math.log(f))))
        ranked = ranked.sort_values(["validation", "distance"], ascending=[False, True])
        chosen[method] = float(ranked.iloc[0]["lr"])
    return chosen


def with_lrs(configs: list[FinetuneConfig], lrs: dict[str, float], keep: dict | None = None) -> list[FinetuneConfig]:
    """The configs at the chosen rates; methods in `keep` (rates set by hand) keep theirs."""
    keep = keep or {}
    return [dataclasses.replace(c, lr=keep.get(c.method, lrs.get(c.method, c.lr))) for c in configs]
