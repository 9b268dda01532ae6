"""The study's one rate-selection protocol: every method's learning rate chosen at full length.

A rate chosen by a short one-seed sweep can collapse seeds at full length (trec6's LoRA at 1e-2:
seeds 0.22-0.79 where 2e-3 gives 0.90). So every candidate rate is trained exactly as the
comparison trains (full training set, full length) with `SELECTION_SEEDS`, and the rate with the
best *mean validation* metric over those seeds is chosen (test data play no part).

Candidates lie on a log grid: the registry's rate x factor^k (factor 2), plus any rate already
trained at full length with every selection seed (finer locally, never coarser). Starting from the
best rate so far, each side is walked outwards: the side is settled when a candidate no more than
one grid factor further out is *measurably worse* (its mean validation, paired by seed, is below
the best's by more than one standard error of that paired difference); otherwise the next grid
point is trained. A side that would pass `LOWEST_FACTOR` or `HIGHEST_FACTOR` of the registry's rate
stops there, and the choice says it sits at that limit. Nothing here trains: `plan` says which rates
still need runs, `gelora study --tune` trains them and asks again, until every method is settled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gelora.core.checks import check_real

SELECTION_SEEDS = (0, 1, 2)
GRID_FACTOR = 2.0
LOWEST_FACTOR, HIGHEST_FACTOR = 2.0 ** -6, 2.0 ** 7  # of the registry's rate: the grid's limits
STATUSES = ("interior", "at the lower limit", "at the upper limit", "at both limits", "pending")


def grid_rate(default: float, k: int, factor: float = GRID_FACTOR) -> float:
    """The grid's k-th rate, default x factor^k, rounded to 6 significant digits (so that the same
    rate is the same float, and the same run identity, however it was reached)."""
    return float(f"{default * factor ** k:.6g}")


def _grid_index(rate: float, default: float, factor: float) -> float:
    return math.log(rate / default) / math.log(factor)


def beyond(rate: float, default: float, side: int, factor: float = GRID_FACTOR) -> float:
    """The first grid rate strictly below (side -1) or above (side +1) `rate`."""
    k = _grid_index(rate, default, factor)
    nearest = round(k)
    on_grid = abs(k - nearest) < 1e-6
    step = (nearest - 1 if on_grid else math.floor(k)) if side < 0 else (nearest + 1 if on_grid else math.ceil(k))
    return grid_rate(default, step, factor)


@dataclass
class RateChoice:
    """Where one method's search stands: the best complete rate, how each side is settled (the
    worse neighbour's rate, 'limit', or None while pending) and the rates still to train."""

    method: str
    rate: float | None
    status: str
    lower: float | str | None
    upper: float | str | None
    to_train: list = field(default_factory=list)
    curve: pd.DataFrame | None = None  # rate, mean, std, seeds, worse_than_best

    @property
    def settled(self) -> bool:
        return self.status != "pending"


def measurably_worse(best: np.ndarray, other: np.ndarray) -> bool:
    """Is `other` (validation per selection seed) measurably below `best` (the same seeds)? The
    paired difference's mean exceeds its standard error (and zero)."""
    d = np.asarray(best, float) - np.asarray(other, float)
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return bool(d.mean() > 0 and d.mean() > se)


def choose(method: str, curve: dict, default: float, seeds=SELECTION_SEEDS, factor: float = GRID_FACTOR,
           lowest: float = LOWEST_FACTOR, highest: float = HIGHEST_FACTOR) -> RateChoice:
    """Apply the protocol to one method. `curve`: rate -> {seed: final validation metric} of the
    full-length runs found so far; `default`: the registry's rate (the grid's anchor)."""
    check_real("default", default, 0, open_low=True)
    check_real("factor", factor, 1, open_low=True)
    seeds = tuple(seeds)
    if len(seeds) < 2:
        raise ValueError(f"seeds must hold at least 2 seeds to judge a rate (the protocol uses 3), got {seeds!r}")
    low_limit, high_limit = default * lowest * (1 - 1e-9), default * highest * (1 + 1e-9)
    complete = {rate: np.array([runs[s] for s in seeds]) for rate, runs in curve.items() if all(s in runs for s in seeds)}
    partial = sorted(rate for rate in curve if rate not in complete)
    if not complete:
        start = partial or [grid_rate(default, 0, factor)]
        return RateChoice(method, None, "pending", None, None, sorted(set(start)), _table(curve, seeds, None))
    means = {rate: values.mean() for rate, values in complete.items()}
    # the best mean; ties go to the rate nearest the registry's (in log space), then the lower one
    best = min(complete, key=lambda r: (-means[r], abs(math.log(r / default)), r))
    to_train, sides = list(partial), {}
    for side in (-1, 1):
        current, rates = best, sorted((r for r in complete if (r < best if side < 0 else r > best)), reverse=side < 0)
        sides[side] = None
        for _ in range(64):
            nxt = rates.pop(0) if rates else None
            if nxt is None or max(nxt / current, current / nxt) > factor * (1 + 1e-9):
                proposal = beyond(current, default, side, factor)
                if proposal < low_limit or proposal > high_limit:
                    sides[side] = "limit"
                elif proposal not in curve:
                    to_train.append(proposal)
                break
            if measurably_worse(complete[best], complete[nxt]):
                sides[side] = nxt
                break
            current = nxt
    to_train = sorted(set(to_train))
    if to_train:
        status = "pending"
    elif sides[-1] == "limit" and sides[1] == "limit":
        status = "at both limits"
    elif sides[-1] == "limit":
        status = "at the lower limit"
    elif sides[1] == "limit":
        status = "at the upper limit"
    else:
        status = "interior"
    return RateChoice(method, best, status, sides[-1], sides[1], to_train, _table(curve, seeds, best))


def _table(curve: dict, seeds, best) -> pd.DataFrame:
    rows = []
    for rate in sorted(curve):
        values = np.array([curve[rate][s] for s in seeds if s in curve[rate]])
        complete = len(values) == len(seeds)
        rows.append({"rate": rate, "mean": values.mean() if len(values) else np.nan,
                     "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                     "min": values.min() if len(values) else np.nan, "max": values.max() if len(values) else np.nan,
                     "seeds": len(values), "complete": complete, "chosen": rate == best,
                     "worse_than_best": (bool(measurably_worse(np.array([curve[best][s] for s in seeds]), values))
                                         if complete and best is not None and rate != best else False)})
    return pd.DataFrame(rows, columns=["rate", "mean", "std", "min", "max", "seeds", "complete", "chosen", "worse_than_best"])


def plateau_gain(record: dict) -> float:
    """Validation gained over the last quarter of a run: the final evaluation minus the last one at
    or before 3/4 of its steps (nan when the run was evaluated only once)."""
    metric = record["metric"]
    evals = sorted(record["evals"], key=lambda e: e["step"])
    if len(evals) < 2:
        return float("nan")
    earlier = [e for e in evals if e["step"] <= 0.75 * evals[-1]["step"]]
    return float(evals[-1][metric] - earlier[-1][metric]) if earlier else float("nan")


PLATEAU_GAIN = 0.01  # a run still gaining more than this in its last quarter has not converged
