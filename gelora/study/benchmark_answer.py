"""The benchmark's primary table (docs/PREREGISTRATION.md), from the held-out runs: per task the
paired difference of each claim, pooled across tasks, Holm over the six primary claims, and the
sensitivity rows; the allocation null as an exact rank test.

`primary_table` and `sensitivity_table` take per-task score arrays (seeds x test examples) and are
pure, so they are tested on simulated tasks with known effects; `task_scores` reads the committed
held-out records of a task into that form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gelora.analysis.pooled import holm, one_sided_p, pool, pooled_rank_p_value, verdict
from gelora.analysis.stats import paired_interval


@dataclass(frozen=True)
class Claim:
    key: str
    words: str
    method: str  # a point label of gelora.study.benchmark.POINTS
    reference: str
    kind: str  # difference | non-inferiority


PRIMARY = (Claim("P1", "GeLoRA vs uniform LoRA, equal budget", "gelora", "lora", "difference"),
           Claim("P2", "GeLoRA vs AdaLoRA, equal budget", "gelora", "adalora", "difference"),
           Claim("P3", "LoRA-SB vs LoRA-XS, equal parameters", "lora_sb", "lora_xs", "difference"),
           Claim("P4", "LoRA-SB r = 15 (27x fewer) non-inferior to LoRA r = 8", "lora_sb@15", "lora", "non-inferiority"),
           Claim("P5", "LoRA-SB r = 8 (96x fewer) non-inferior to LoRA r = 8", "lora_sb@8", "lora", "non-inferiority"))
NULL_CLAIM = "P6"
NULL_WORDS = "GeLoRA's allocation vs random allocations, equal budget and rate"
CHOSEN, LOWER, UPPER = "chosen", "half", "double"  # a point's rate and its two neighbours


def _task_effect(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    result = paired_interval(a, b)
    return result.difference, max(result.se ** 2, 1e-12)


def _pooled(scores: dict, method: tuple, reference: tuple):
    """Pool a - b over the tasks that have both (method, rate) and (reference, rate) scored."""
    effects, variances, seeds = [], [], set()
    for per_task in scores.values():
        if method in per_task and reference in per_task:
            a, b = per_task[method], per_task[reference]
            difference, variance = _task_effect(a, b)
            effects.append(difference)
            variances.append(variance)
            seeds.add(a.shape[0])
    if len(effects) < 2:
        return None, 0, seeds
    return pool(effects, variances), len(effects), seeds


def primary_table(scores: dict, null_counts: dict, n_draws: int, margin: float = 0.01, alpha: float = 0.05) -> pd.DataFrame:
    """scores: task -> {(label, CHOSEN | LOWER | UPPER): seeds x examples}; null_counts: task -> how
    many of the n_draws random allocations scored at least GeLoRA's allocation (held-out mean).
    One row per primary claim: pooled estimate and interval, heterogeneity, the p-value its test
    uses, Holm's adjustment over the six, and the verdict in words."""
    rows = []
    for claim in PRIMARY:
        pooled, tasks, seeds = _pooled(scores, (claim.method, CHOSEN), (claim.reference, CHOSEN))
        if pooled is None:
            rows.append({"claim": claim.key, "words": claim.words, "kind": claim.kind, "tasks": tasks, "p": np.nan})
            continue
        p = pooled.decision_p if claim.kind == "difference" else one_sided_p(pooled, margin, claim.kind)
        rows.append({"claim": claim.key, "words": claim.words, "kind": claim.kind, "estimate": pooled.estimate,
                     "low": pooled.low, "high": pooled.high, "tau2": pooled.tau2, "i2": pooled.i2, "tasks": tasks,
                     "seeds": ",".join(map(str, sorted(seeds))), "p": p})
    if null_counts:
        p, smallest = pooled_rank_p_value(list(null_counts.values()), n_draws)
        rows.append({"claim": NULL_CLAIM, "words": NULL_WORDS, "kind": "rank", "tasks": len(null_counts), "p": p,
                     "estimate": float(np.mean(list(null_counts.values()))), "smallest_p": smallest})
    table = pd.DataFrame(rows)
    known = table["p"].notna()
    table["p_holm"] = np.nan
    if known.any():
        table.loc[known, "p_holm"] = holm(table.loc[known, "p"].to_numpy())
    table["verdict"] = [_verdict(r, margin, alpha) for r in table.itertuples()]
    return table


def _verdict(row, margin: float, alpha: float) -> str:
    if not np.isfinite(row.p_holm):
        return "not yet run"
    if row.kind == "rank":
        return "better than chance" if row.p_holm < alpha else "not resolved"
    return verdict(row.kind, row.estimate, row.p_holm, alpha, margin if row.kind != "difference" else None)


def sensitivity_table(scores: dict) -> pd.DataFrame:
    """For each of P1-P5: the pooled estimate with one of the two methods at half or twice its
    chosen rate (four rows per claim; estimates and intervals, no verdict words)."""
    rows = []
    for claim in PRIMARY:
        for moved, (m_rate, r_rate) in (("method at half its rate", (LOWER, CHOSEN)), ("method at twice its rate", (UPPER, CHOSEN)),
                                        ("reference at half its rate", (CHOSEN, LOWER)),
                                        ("reference at twice its rate", (CHOSEN, UPPER))):
            pooled, tasks, _ = _pooled(scores, (claim.method, m_rate), (claim.reference, r_rate))
            rows.append({"claim": claim.key, "row": moved, "tasks": tasks,
                         **({"estimate": pooled.estimate, "low": pooled.low, "high": pooled.high} if pooled else {})})
    return pd.DataFrame(rows)


def rank_count(reference: np.ndarray, draws: list[np.ndarray]) -> int:
    """How many random allocations' mean held-out score (over the same seeds and examples) is at
    least the reference allocation's."""
    mean = float(np.mean(reference))
    return int(sum(float(np.mean(d)) >= mean for d in draws))


def per_task(scores: dict, claim: Claim) -> pd.DataFrame:
    """One claim's paired difference on every task that has both methods at their chosen rates."""
    rows = []
    for task, found in scores.items():
        if (claim.method, CHOSEN) in found and (claim.reference, CHOSEN) in found:
            result = paired_interval(found[(claim.method, CHOSEN)], found[(claim.reference, CHOSEN)])
            rows.append({"task": task, "difference": result.difference, "low": result.low, "high": result.high})
    return pd.DataFrame(rows, columns=["task", "difference", "low", "high"])


def forest_figures(scores: dict, table: pd.DataFrame, folder, margin: float = 0.01) -> list:
    """One forest figure per primary claim P1-P5 (its tasks and its pooled row), as PNG and PDF in
    `folder`. Returns the files written."""
    import matplotlib.pyplot as plt

    from gelora.kit import plots

    rows = table.set_index("claim")
    written = []
    for claim in PRIMARY:
        tasks = per_task(scores, claim)
        if len(tasks) < 2 or claim.key not in rows.index or not np.isfinite(rows.loc[claim.key, "estimate"]):
            continue
        pooled = {k: float(rows.loc[claim.key, k]) for k in ("estimate", "low", "high")}
        fig = plots.forest(tasks, pooled, f"{claim.key}: {claim.words}",
                           margin=margin if claim.kind == "non-inferiority" else None)
        written += plots.save(fig, f"forest_{claim.key}", folder)
        plt.close(fig)
    return written
