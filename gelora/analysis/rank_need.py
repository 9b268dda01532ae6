"""How many ranks does each block need, and does GeLoRA's bound predict it?

Full fine-tuning records the singular values of every target matrix's update W_ft - W_0
(`spectra.update_spectra`); its energy ranks (the smallest r holding 90 % or 99 % of the update's
squared norm) and stable rank measure the rank the task used, per block. GeLoRA claims that the
ID increment max(d_{k+1} - d_k, 0) is a lower bound on that need: the bound must not exceed the
need, and, to be useful, blocks with larger bounds should need more.

The need is also measured from training (`trained_needs`): LoRA on one block only, at a grid of
ranks, the other blocks unadapted; the need lies between the rank after the largest one resolved
worse on test than the rank with the best validation metric, and the smallest rank shown to match
that best (the choice on validation, the judgement on test).
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from gelora.models.spectra import update_ranks

NEEDS = ("energy_rank_90", "energy_rank_99", "stable_rank")  # measures of the rank an update used
CORRELATION_RESAMPLES = 10_000  # bootstrap resamples of the blocks for Spearman's interval


def rank_correlation(x, y, n_resamples: int = CORRELATION_RESAMPLES, seed: int = 0, level: float = 0.95) -> dict:
    """Spearman's correlation of x and y across blocks, with a percentile bootstrap interval over
    the blocks (pairs resampled with replacement) and a permutation p-value (two-sided; exact where
    the blocks' orderings number at most `n_resamples`, 720 for six blocks). Six blocks give a wide
    interval, and the width is the point. The bootstrap alone misleads when most values tie (a bound
    of 0 in five of six blocks): resamples without the one informative block have no correlation and
    must be dropped (their share is `undefined`), so the interval describes only the resamples that
    contain it; the exact permutation test has no such gap, so a correlation counts as resolved only
    when both agree (`correlation_verdict`). `mc_error`: the Monte Carlo standard error of the
    interval's ends (the binomial spread of the tail counts, read off as values)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of equal length, got shapes {x.shape} and {y.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be at least 100, got {n_resamples}")
    n = len(x)
    out = {"spearman": np.nan, "low": np.nan, "high": np.nan, "p_value": np.nan, "level": level, "blocks": n,
           "resamples": n_resamples, "undefined": 1.0, "mc_error": np.nan}
    if n < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return out  # a constant has no rank order: nothing to correlate
    rank_x, rank_y = stats.rankdata(x), stats.rankdata(y)  # average ranks for ties: Spearman = Pearson on ranks
    out["spearman"] = float(_pearson(rank_x, rank_y))
    out["smallest_p"] = smallest_p(rank_x, rank_y)
    out["p_value"] = float(stats.permutation_test((rank_y,), lambda b, axis=-1: _pearson(rank_x, b, axis), vectorized=True,
                                                  permutation_type="pairings", n_resamples=n_resamples,
                                                  random_state=seed).pvalue)
    index = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    xs, ys = stats.rankdata(x[index], axis=1), stats.rankdata(y[index], axis=1)
    defined = (xs.std(axis=1) > 0) & (ys.std(axis=1) > 0)
    values = np.sort(_pearson(xs[defined], ys[defined], axis=1))
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    k, m = np.sqrt(tail * (1 - tail) * len(values)), len(values)
    spread = [values[min(m - 1, int(q * m + k))] - values[max(0, int(q * m - k))] for q in (tail, 1 - tail)]
    out.update(low=float(low), high=float(high), undefined=float(1 - defined.mean()), mc_error=float(max(spread) / 2))
    return out


EXACT_BLOCKS = 8  # up to 8! = 40,320 orderings the smallest attainable p is counted exactly


def smallest_p(rank_x, rank_y) -> float:
    """The smallest two-sided permutation p-value any ordering of these ranks can give: the share of
    orderings whose |rho| reaches the largest |rho| possible. With ties it can exceed any level (five
    tied bounds of six: 2/6), and then no data could resolve the test. NaN above EXACT_BLOCKS blocks."""
    n = len(rank_x)
    if n > EXACT_BLOCKS:
        return float("nan")
    values = np.abs(_pearson(np.asarray(rank_x, dtype=float), np.array(list(itertools.permutations(rank_y)), dtype=float)))
    return float((values >= values.max() - 1e-12).mean())


def _pearson(a, b, axis=-1):
    a, b = a - a.mean(axis=axis, keepdims=True), b - b.mean(axis=axis, keepdims=True)
    return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))


def correlation_verdict(c: dict) -> str:
    """From `rank_correlation`: 'positive' or 'negative' when the bootstrap interval excludes 0 and
    the permutation test rejects no correlation at the interval's level (p below 1 - level: an exact
    p of 0.05 sits on the boundary and does not reject), 'cannot resolve' when even the most extreme
    ordering of these (tied) ranks could not give such a p, else 'not resolved' ('undefined' when x
    or y is constant)."""
    if c["spearman"] != c["spearman"]:
        return "undefined"
    alpha = 1 - c["level"]
    if c.get("smallest_p", 0.0) >= alpha - 1e-9:  # as for p: reaching alpha exactly does not reject
        return "cannot resolve"
    if c["p_value"] >= alpha - 1e-9:  # 1e-9: an exact 36/720 is 0.05, not 0.05 - float noise
        return "not resolved"
    return "positive" if c["low"] > 0 else "negative" if c["high"] < 0 else "not resolved"


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


def bound_vs_need(intervals: pd.DataFrame, needs: pd.DataFrame, need: str = "energy_rank_90",
                  trained: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """Join the bound (with its interval, from `rank_uncertainty.allocation_intervals`) and the
    measured need per block. Returns (table, verdict): whether the bound stays below the need in
    every block (a lower bound), how far below (the largest bound / need), and the Spearman rank
    correlation of bound and need across blocks with its bootstrap interval over blocks and its
    verdict (`rank_correlation`, `correlation_verdict`: does a larger bound mean a larger need?). With
    `trained` (from `trained_needs`) the table gains `trained_need` and the verdict the same three
    answers for it (`trained_*`)."""
    if need not in NEEDS:
        raise ValueError(f"need must be one of {NEEDS}, got {need!r}")
    table = intervals.merge(needs, on="block", how="inner")
    if trained is not None:
        per_block = trained.groupby("block")[["need", "need_at_top", "need_at_least"]].first().rename(
            columns={"need": "trained_need", "need_at_top": "trained_need_at_top",
                     "need_at_least": "trained_need_at_least"}).reset_index()
        table = table.merge(per_block, on="block", how="left")
    if table.empty:
        raise ValueError("the intervals and the needs share no block")
    below = bool((table["bound_high"] <= table[need]).all())
    correlation = rank_correlation(table["bound"], table[need])
    verdict = {"lower_bound_holds": below, "largest_bound_over_need": float((table["bound_high"] / table[need]).max()),
               "spearman": correlation["spearman"], "spearman_low": correlation["low"],
               "spearman_high": correlation["high"], "spearman_p": correlation["p_value"],
               "spearman_smallest_p": correlation.get("smallest_p", float("nan")),
               "correlation": correlation_verdict(correlation),
               "need": need, "blocks": int(len(table))}
    if trained is not None:
        known = table.dropna(subset=["trained_need"])
        verdict["trained_lower_bound_holds"] = bool((known["bound_high"] <= known["trained_need"]).all())
        verdict["trained_largest_bound_over_need"] = float((known["bound_high"] / known["trained_need"]).max())
        correlation = rank_correlation(known["bound"], known["trained_need"])
        verdict.update(trained_spearman=correlation["spearman"], trained_spearman_low=correlation["low"],
                       trained_spearman_high=correlation["high"], trained_spearman_p=correlation["p_value"],
                       trained_spearman_smallest_p=correlation.get("smallest_p", float("nan")),
                       trained_correlation=correlation_verdict(correlation),
                       trained_blocks=int(len(known)),
                       trained_need_at_top=int(known["trained_need_at_top"].fillna(False).astype(bool).sum()))
    return table, verdict


MATCH_TOLERANCE = 0.01  # a rank "matches" the best when its whole interval lies within +- this (as the claims table)


def trained_needs(records: list[dict], scores: dict[str, dict[int, pd.Series]],
                  tolerance: float = MATCH_TOLERANCE) -> pd.DataFrame:
    """Per block and rank of the per-block sweep (records of method 'lora' with `block_ranks`, one
    block above 0; `scores`: run label 'b<block>@<rank>' -> seed -> per-example test scores, as
    `sweep_labels` names them): mean validation and test metric over seeds, the paired test
    difference to the block's best-on-validation rank with its 95 % interval and verdict, and two
    readings of the block's need that low power cannot shrink:

    - `need`: the smallest rank shown to suffice, its whole interval within +- `tolerance` of the
      best (the best itself when no smaller rank is shown to): the need is at most this.
      `need_at_top`: it is the largest rank tried, so the true need may be larger.
    - `need_at_least`: the rank after the largest one resolved worse than the best (the smallest
      rank tried when none is): the need is at least this.

    "Not resolved worse" is no evidence that a rank suffices: with three seeds a 15-point loss can
    be unresolved, so the smallest such rank would report a need of 1 from a lack of power."""
    from gelora.analysis.results import paired_arrays
    from gelora.analysis.stats import paired_interval
    from gelora.core.checks import check_real

    check_real("tolerance", tolerance, 0, open_low=True)
    rows = []
    for r in records:
        block, rank = _one_block(r)
        rows.append({"block": block, "rank": rank, "seed": r["seed"], "validation": r["final"][r["metric"]],
                     "test": r["test"][r["metric"]], "label": f"b{block}@{rank}"})
    if not rows:
        raise ValueError("no per-block sweep records")
    runs = pd.DataFrame(rows)
    out = []
    for block, group in runs.groupby("block"):
        means = group.groupby("rank")[["validation", "test"]].mean()
        seeds = group.groupby("rank")["seed"].apply(lambda s: ",".join(map(str, sorted(s))))
        best = int(means["validation"].idxmax())  # the smallest rank among equals: idxmax takes the first
        ranks = sorted(means.index)
        block_rows = []
        for rank in ranks:
            a, b, _, _ = paired_arrays(scores[f"b{block}@{rank}"], scores[f"b{block}@{best}"])
            result = paired_interval(a, b) if rank != best else None
            verdict = "best" if result is None else result.verdict
            if result is not None and -tolerance < result.low and result.high < tolerance:
                verdict = "matches"
            block_rows.append({"block": block, "rank": rank, "validation": means.loc[rank, "validation"],
                               "test": means.loc[rank, "test"], "seeds": seeds[rank], "best_rank": best,
                               "difference": 0.0 if result is None else result.difference,
                               "low": 0.0 if result is None else result.low, "high": 0.0 if result is None else result.high,
                               "verdict": verdict})
        need = next(r["rank"] for r in block_rows if r["verdict"] in ("matches", "best"))
        worse = [r["rank"] for r in block_rows if r["verdict"] == "worse"]
        above = [rank for rank in ranks if rank > max(worse)] if worse else ranks
        at_least = min(above[0], need) if above else need
        for row in block_rows:
            row.update(need=need, need_at_top=need == max(ranks), need_at_least=at_least)
        out += block_rows
    return pd.DataFrame(out)


def sweep_labels(records: list[dict]) -> list[dict]:
    """The per-block sweep's records relabelled 'b<block>@<rank>', for `results.paired_scores`."""
    return [dict(r, method="b{}@{}".format(*_one_block(r))) for r in records]


def _one_block(record: dict) -> tuple[int, int]:
    ranks = record["config"].get("block_ranks")
    adapted = [(b, r) for b, r in enumerate(ranks or []) if r > 0]
    if len(adapted) != 1:  # block_ranks is accepted for method 'lora' only (config.validate)
        raise ValueError(f"record {record.get('run_id')} is not a per-block sweep run (lora with one block adapted)")
    return adapted[0]


def lr_sensitivity(sweep: pd.DataFrame, factors=(0.2, 1.0, 5.0)) -> pd.DataFrame:
    """How much a method's validation metric depends on its learning rate: per method, over the
    sweep's `factors`, the best and worst metric and their spread (LoRA-SB claims it needs no
    tuning: its spread should be small next to LoRA's)."""
    part = sweep[sweep["factor"].round(6).isin([round(f, 6) for f in factors])]
    grouped = part.groupby("method", sort=False)["validation"]
    return pd.DataFrame({"best": grouped.max(), "worst": grouped.min(), "spread": grouped.max() - grouped.min(),
                         "factors": grouped.size()}).reset_index()
