"""How many ranks does each block need, and does GeLoRA's bound predict it?

Full fine-tuning records the singular values of every target matrix's update W_ft - W_0
(`spectra.update_spectra`); its energy ranks (the smallest r holding 90 % or 99 % of the update's
squared norm) and stable rank measure the rank the task used, per block. GeLoRA claims that the
ID increment max(d_{k+1} - d_k, 0) is a lower bound on that need: the bound must not exceed the
need, and, to be useful, blocks with larger bounds should need more.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .spectra import update_ranks

NEEDS = ("energy_rank_90", "energy_rank_99", "stable_rank")  # measures of the rank an update used


def update_needs(records: list[dict]) -> pd.DataFrame:
    """Per block, from the full fine-tuning records (every seed): each measure of NEEDS (the
    energy ranks at 90 % and 99 % and the stable rank of the update), averaged over the block's
    matrices and then the seeds, with the seeds' min and max (<measure>_min, <measure>_max)."""
    rows = []
    for r in records:
        if r.get("method") == "full" and r.get("update_spectra"):
            rows += [dict(row, seed=r["seed"]) for row in update_ranks(r["update_spectra"])]
    if not rows:
        raise ValueError("no full fine-tuning record with update spectra: rerun full fine-tuning with this version")
    table = pd.DataFrame(rows)
    per_seed = table.groupby(["block", "seed"])[list(NEEDS)].mean()
    grouped = per_seed.groupby("block")
    out = grouped.mean()
    for measure in NEEDS:
        out[f"{measure}_min"], out[f"{measure}_max"] = grouped[measure].min(), grouped[measure].max()
    out["seeds"] = grouped.size()
    out["matrix_side"] = table.groupby("block")["rows"].min()
    return out.reset_index()


def bound_vs_need(intervals: pd.DataFrame, needs: pd.DataFrame, need: str = "energy_rank_90") -> tuple[pd.DataFrame, dict]:
    """Join the bound (with its interval, from `rank_uncertainty.allocation_intervals`) and the
    measured need per block. Returns (table, verdict): whether the bound stays below the need in
    every block (a lower bound), how far below (the largest bound / need), and the Spearman rank
    correlation of bound and need across blocks (does a larger bound mean a larger need?)."""
    if need not in NEEDS:
        raise ValueError(f"need must be one of {NEEDS}, got {need!r}")
    table = intervals.merge(needs, on="block", how="inner")
    if table.empty:
        raise ValueError("the intervals and the needs share no block")
    below = bool((table["bound_high"] <= table[need]).all())
    correlation = stats.spearmanr(table["bound"], table[need]).statistic if table["bound"].nunique() > 1 else np.nan
    verdict = {"lower_bound_holds": below, "largest_bound_over_need": float((table["bound_high"] / table[need]).max()),
               "spearman": float(correlation), "need": need, "blocks": int(len(table))}
    return table, verdict


def lr_sensitivity(sweep: pd.DataFrame, factors=(0.2, 1.0, 5.0)) -> pd.DataFrame:
    """How much a method's validation metric depends on its learning rate: per method, over the
    sweep's `factors`, the best and worst metric and their spread (LoRA-SB claims it needs no
    tuning: its spread should be small next to LoRA's)."""
    part = sweep[sweep["factor"].round(6).isin([round(f, 6) for f in factors])]
    grouped = part.groupby("method", sort=False)["validation"]
    return pd.DataFrame({"best": grouped.max(), "worst": grouped.min(), "spread": grouped.max() - grouped.min(),
                         "factors": grouped.size()}).reset_index()
