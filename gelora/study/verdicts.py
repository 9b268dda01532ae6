"""The study: the papers' comparisons decided on two tasks, from the committed results (the
claims, summaries, the efficiency curve, the per-block sweep, and the words notebooks 05 and 06
and the README use for them; `gelora study` is gelora.study.command).

Each task is a folder under results/study/ holding what its profile's notebook-04 grid wrote:
`results/` (one record and one prediction file per run), `lr_sweep.csv` and `id_profile.csv`.
Nothing here trains; every number comes from those files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gelora.analysis.results import claims_table, load_records, runs_table, summary_table
from gelora.methods import registry
from gelora.study.folders import STUDY_DIR, task_folders, task_records  # noqa: F401

# the runs the study plans live in gelora.study.plans; notebooks and the README read them here
from gelora.study.plans import (  # noqa: F401
    BLOCK_DIR,
    BLOCK_RANKS,
    CLAIM_RANGE,
    EFFICIENCY_DIR,
    EFFICIENCY_POINTS,
    EFFICIENCY_SEEDS,
    block_sweep_configs,
    efficiency_configs,
    efficiency_rates,
    efficiency_runs,
    efficiency_sweep_configs,
    efficiency_track,
    reference_choice,
    reference_configs,
)
from gelora.training.identity import run_id
from gelora.training.tuning import plateau_gain


def claims(study_dir: str | Path = STUDY_DIR) -> pd.DataFrame:
    """Every claim of `results.CLAIMS` on every task: paired difference, 95 % interval, verdict."""
    tables = [claims_table(task_records(folder), folder / "results").assign(task=task)
              for task, folder in task_folders(study_dir).items()]
    return pd.concat(tables, ignore_index=True)


def summaries(study_dir: str | Path = STUDY_DIR) -> pd.DataFrame:
    """Per task and method: parameters, seeds, learning rate and the metric (mean and std)."""
    tables = []
    for task, folder in task_folders(study_dir).items():
        records = task_records(folder)
        runs = runs_table(records)
        summary = summary_table(runs)
        examples = {r["method"]: r["train_examples"] for r in records}
        summary["train_examples"] = summary["method"].map(examples)
        summary["steps"] = summary["method"].map(runs.groupby("method")["steps"].max())
        summary["test_min"] = summary["method"].map(runs.groupby("method")["test"].min())
        mixed = runs.groupby("method")["lr"].nunique()
        if (mixed > 1).any():
            raise ValueError(f"{task}: method(s) {mixed[mixed > 1].index.tolist()} ran at several learning rates")
        summary["lr"] = summary["method"].map(runs.groupby("method")["lr"].first())
        summary["metric"] = runs["metric"].iloc[0]
        gains = pd.Series({m: float(np.nanmean([plateau_gain(r) for r in records if r["method"] == m]))
                           for m in summary["method"]})
        summary["gain_last_quarter"] = summary["method"].map(gains)
        tables.append(summary.assign(task=task))
    return pd.concat(tables, ignore_index=True)


def plateau(records: list[dict]) -> pd.DataFrame:
    """Does validation level off? Per method: the validation metric (mean over seeds) at the
    first and last evaluation, the gain over the last quarter of training (last evaluation minus
    the last one at or before 3/4 of the steps) and the step where it reached 99 % of its final
    value."""
    rows = []
    for method in registry.order({r["method"] for r in records}):
        runs = [r for r in records if r["method"] == method]
        metric = runs[0]["metric"]
        steps = sorted({e["step"] for r in runs for e in r["evals"]})
        curve = [np.mean([e[metric] for r in runs for e in r["evals"] if e["step"] == s]) for s in steps]
        reached = next(s for s, v in zip(steps, curve) if v >= 0.99 * curve[-1])
        earlier = [v for s, v in zip(steps, curve) if s <= 0.75 * steps[-1]]
        rows.append({"method": method, "steps": steps[-1], "first": curve[0], "final": curve[-1],
                     "gain_last_quarter": curve[-1] - earlier[-1] if earlier else np.nan, "reached_99pct_at": reached,
                     "evaluations": len(steps)})
    return pd.DataFrame(rows)

UNSTABLE_STD = 0.05  # seed-to-seed standard deviation of the test metric that the README flags



def efficiency(folder: Path, reference: str = "lora", tolerance: float = 0.01, points=EFFICIENCY_POINTS) -> pd.DataFrame:
    """Every point of the curve (the efficiency runs and the study's budget-matched runs) against
    `reference` at the study's budget and the rate `reference_choice` confirmed, paired on the
    seeds both have: trainable parameters, how many times fewer than the reference, the test
    metric, the difference with its 95 % interval, and whether the point is within `tolerance` of
    the reference (the interval inside +- tolerance: 'matches'), better, worse, or not resolved.
    When the confirmed rate is not the sweep's, the study's own `reference` runs are a point too.
    `attrs["reference"]`: the rate used, the sweep's rate and each candidate's mean validation."""
    from gelora.analysis.results import paired_arrays, paired_scores
    from gelora.analysis.stats import paired_interval
    from gelora.core.checks import check_real

    check_real("tolerance", tolerance, 0, open_low=True)
    main = task_records(folder)
    runs = efficiency_runs(folder, points)  # each point at its chosen rate, no other runs
    wanted = {run_id(c) for configs, _ in runs.values() for c in configs}
    chosen_by = {label: how for label, (_, how) in runs.items()}
    present = [p.stem for p in (folder / EFFICIENCY_DIR / "results").glob("*.json") if p.stem in wanted]
    if not present:
        raise FileNotFoundError(f"no efficiency runs of {folder.name}: python -m gelora study --efficiency {folder.name}")
    extra = load_records(folder / EFFICIENCY_DIR / "results", run_ids=present)
    by_rank = [dict(r, method=f"{r['method']}@{r['config']['rank']}") for r in extra]  # one point per rank
    scores = {("study", m): s for m, s in paired_scores(main, folder / "results").items()}
    scores.update({("efficiency", m): s for m, s in paired_scores(by_rank, folder / EFFICIENCY_DIR / "results").items()})
    params = {("study", r["method"]): r["adapter_params"] for r in main}
    params.update({("efficiency", r["method"]): r["adapter_params"] for r in by_rank})
    lrs = {("study", r["method"]): r["lr"] for r in main} | {("efficiency", r["method"]): r["lr"] for r in by_rank}
    choice = reference_choice(folder, reference)
    ref_scores = paired_scores(choice["records"], choice["results_dir"])[reference]
    ref_params = choice["records"][0]["adapter_params"]
    rows = []
    for key, per_seed in scores.items():
        if key[1] == "full" or (key == ("study", reference) and choice["lr"] == choice["sweep_lr"]):
            continue
        a, b, seeds, _ = paired_arrays(per_seed, ref_scores)
        if not seeds:
            continue
        result = paired_interval(a, b)
        verdict = ("matches" if -tolerance < result.low and result.high < tolerance else result.verdict)
        rows.append({"point": key[1], "source": key[0], "adapter_params": params[key],
                     "fewer_than_reference": ref_params / params[key], "lr": lrs[key],
                     "lr_chosen_by": chosen_by.get(key[1], "the comparison's") if key[0] == "efficiency" else "the comparison's",
                     "test": float(a.mean()),
                     "difference": result.difference, "low": result.low, "high": result.high, "verdict": verdict,
                     "seeds": ",".join(map(str, seeds)), "seed_std": float(a.mean(axis=1).std(ddof=1)) if len(seeds) > 1 else np.nan,
                     "worst_seed": float(a.mean(axis=1).min())})
    table = pd.DataFrame(rows).sort_values("adapter_params").reset_index(drop=True)
    table.attrs["reference"] = {k: v for k, v in choice.items() if k in ("lr", "sweep_lr", "validation")}
    table.attrs["reference"]["chosen_by"] = rate_provenance(folder).get(reference, "")
    return table


def block_needs(folder: Path) -> pd.DataFrame:
    """The per-block rank sweep's table (`rank_need.trained_needs`) from its runs of this study
    (records of other settings in the folder are left out); a missing run is an error."""
    from gelora.analysis.rank_need import sweep_labels, trained_needs
    from gelora.analysis.results import paired_scores

    configs = block_sweep_configs(folder)
    results = folder / BLOCK_DIR / "results"
    missing = [run_id(c) for c in configs if not (results / f"{run_id(c)}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} per-block sweep run(s) of {folder.name} are missing: "
                                f"python -m gelora study --block-sweep {folder.name}")
    records = sweep_labels(load_records(results, run_ids=[run_id(c) for c in configs]))
    return trained_needs(records, paired_scores(records, results))


def lesson_vs_study(run_claims: pd.DataFrame, study_claims: pd.DataFrame, task: str) -> tuple[pd.DataFrame, str]:
    """A small run's claims beside the study's on the same task: both differences, intervals and
    verdicts, and a sentence (from the numbers) on whether the small run could have told."""
    study = study_claims[study_claims["task"] == task]
    both = run_claims.merge(study, on="claim", suffixes=("_run", "_study"))
    if both.empty:
        return both, f"The study has no claim on {task} to compare this run with."
    cols = ["claim", "difference_run", "low_run", "high_run", "verdict_run", "detectable_run", "seeds_run",
            "difference_study", "low_study", "high_study", "verdict_study", "detectable_study", "seeds_study"]
    both = both[cols]
    same = int((both["verdict_run"] == both["verdict_study"]).sum())
    missed = both[(both["verdict_run"] == "not resolved") & (both["verdict_study"] != "not resolved")]
    wrong = both[(both["verdict_run"] != "not resolved") & (both["verdict_run"] != both["verdict_study"])]
    text = (f"On {task}, this run (seeds {both['seeds_run'].iloc[0]}) and the study (seeds {both['seeds_study'].iloc[0]}) "
            f"agree on {same} of {len(both)} claims. This run resolves differences of about "
            f"{both['detectable_run'].min():.3f}-{both['detectable_run'].max():.3f} at best (80 % power), the study "
            f"{both['detectable_study'].min():.3f}-{both['detectable_study'].max():.3f}")
    if len(missed):
        text += ("; the study resolves " + "; ".join(
            f"{r.claim} ({r.verdict_study}, {r.difference_study:+.3f})" for r in missed.itertuples())
                 + ", which this run's interval could not tell from 0")
    if len(wrong):
        text += ("; this run's verdict is overturned for " + "; ".join(
            f"{r.claim} (here {r.verdict_run}, the study {r.verdict_study})" for r in wrong.itertuples()))
    return both, text + "."


def rate_provenance(folder: Path) -> dict[str, str]:
    """Per method of the comparison: how its rate was chosen, in words."""
    from gelora.study.rates import choices

    runs = runs_table(task_records(folder))
    lrs = runs.groupby("method")["lr"].first()
    out = {}
    for method, (choice, _) in choices(folder).items():
        if choice.settled and choice.rate == lrs.get(method):
            lower = f"{choice.lower:.3g}" if isinstance(choice.lower, float) else "none"
            upper = f"{choice.upper:.3g}" if isinstance(choice.upper, float) else "none"
            where = "interior" if choice.status == "interior" else choice.status
            out[method] = f"protocol, {where} (worse at {lower} / {upper})"
        elif choice.settled:
            out[method] = (f"short one-seed sweep; the protocol has since chosen {choice.rate:.3g} ({choice.status}), "
                           "its comparison seeds still to train")
        elif choice.rate is not None:
            out[method] = f"short one-seed sweep; the protocol is under way (best so far {choice.rate:.3g})"
        else:
            out[method] = "short one-seed sweep (not yet re-tuned)"
    return out


def point_label(point: str) -> str:
    """'lora_sb@8' -> 'LoRA-SB r=8'; a study point (no rank) keeps its method's label."""
    method, _, rank = point.partition("@")
    return f"{registry.label(method)} r={rank}" if rank else registry.label(method)


def reference_text(ref: dict) -> str:
    """The curve's reference in words: its rate and how it was chosen (the full-length protocol, or
    the short sweep confirmed at full length against other rates)."""
    if ref.get("chosen_by", "").startswith("protocol"):
        return f"LoRA r = 8 at lr {ref['lr']:.3g}, chosen at full length by the rate protocol ({ref['chosen_by']})"
    others = ", ".join(f"{v:.3f} at {lr:.3g}" for lr, v in ref["validation"].items() if lr != ref["lr"])
    if len(ref["validation"]) == 1:
        return f"LoRA r = 8 at the sweep's lr {ref['lr']:.3g}, not yet confirmed at full length"
    how = "the sweep's choice, confirmed" if ref["lr"] == ref["sweep_lr"] else f"not the sweep's {ref['sweep_lr']:.3g}: chosen"
    return (f"LoRA r = 8 at lr {ref['lr']:.3g}, {how} at full length by mean validation "
            f"{ref['validation'][ref['lr']]:.3f} against {others}")


def trained_grid(trained: pd.DataFrame) -> str:
    """The per-block sweep's grid in words: its ranks and the seeds behind each point."""
    seeds = sorted(set(trained["seeds"]))
    return (f"ranks {', '.join(map(str, sorted(trained['rank'].unique())))}; seeds "
            + (seeds[0] if len(seeds) == 1 else "varying by point: " + " or ".join(seeds)))


def trained_need_words(table: pd.DataFrame, v: dict) -> str:
    """The per-block sweep's need in words: at most the smallest rank shown to match the best, at
    least the rank after the largest one resolved worse (`rank_need.trained_needs`)."""
    known = table.dropna(subset=["trained_need"])
    low, high = known["trained_need_at_least"], known["trained_need"]
    top = f" ({v['trained_need_at_top']} at the grid's top, so perhaps more)" if v["trained_need_at_top"] else ""
    undecided = int((low < high).sum())
    def span(values):
        return f"{values.min():.0f}" if values.min() == values.max() else f"{values.min():.0f}-{values.max():.0f}"
    return (f"blocks need at most {span(high)} ranks{top} and at least {span(low)}"
            + (f"; the sweep pins the need down in {len(known) - undecided} of {len(known)} blocks" if undecided else ""))


def correlation_words(v: dict, prefix: str = "") -> str:
    """Spearman's correlation of bound and need from a `bound_vs_need` verdict (`prefix` 'trained_'
    for the per-block sweep's need), with its interval over blocks, its permutation p-value and
    what it resolves: the words never go further than `rank_need.correlation_verdict`."""
    rho, verdict, blocks = v[f"{prefix}spearman"], v[f"{prefix}correlation"], v[f"{prefix}blocks"]
    if verdict == "undefined":
        return "no correlation: the bound (or the need) is the same in every block, so it cannot rank them"
    smallest = v.get(f"{prefix}spearman_smallest_p", float("nan"))
    meaning = {"positive": "resolved: a larger bound goes with a larger need",
               "negative": "resolved against the bound: a larger bound goes with a smaller need",
               "cannot resolve": f"cannot resolve: with these ties the smallest p any ordering gives is {smallest:.2g}",
               "not resolved": "not resolved"}[verdict]
    return (f"Spearman {rho:+.2f}, 95 % bootstrap interval over the {blocks} blocks {v[f'{prefix}spearman_low']:+.2f} to "
            f"{v[f'{prefix}spearman_high']:+.2f}, permutation p = {v[f'{prefix}spearman_p']:.3g}: {meaning}")


def bound_words(table: pd.DataFrame, need: str, grid_low: int | None = None) -> str:
    """Whether the bound (with its interval, columns bound_low and bound_high of `table`) stays
    below the need (column `need`; blocks without one are left out), and whether that test could
    have failed at all. Below: the whole interval at or under the need in every block; it cannot
    have failed where every interval is below the smallest need measured (or the sweep's smallest
    rank), and is then called not contradicted, never 'holds'. Contradicted: a block whose whole
    interval lies above its need; an interval that only reaches above it is not resolved."""
    known = table.dropna(subset=[need])
    low, high, needs = known["bound_low"], known["bound_high"], known[need]
    above, reaches = int((low > needs).sum()), int((high > needs).sum())
    if reaches:
        if not above:
            return (f"not resolved: the bound's interval reaches above the need in {reaches} of {len(known)} blocks "
                    "but lies wholly above it in none")
        more = f", and reaches above it in {reaches - above} more" if reaches > above else ""
        return f"contradicted: the bound's whole interval lies above the need in {above} of {len(known)} blocks{more}"
    floor = grid_low if grid_low is not None else needs.min()
    if high.max() < floor:
        what = f"the sweep's smallest rank {grid_low}" if grid_low is not None else f"the smallest need {needs.min():.0f}"
        return (f"not contradicted, but this test could not have failed: the bound's interval stays below "
                f"{what} in every block")
    return f"the bound stays below it in every block, and could have exceeded it in {int((high >= floor).sum())}"
