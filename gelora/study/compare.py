"""`gelora compare DATA`: the study's quality of answer on your own data, in one command.

    gelora compare reviews.csv --text-column review --label-column sentiment --plan
    gelora compare reviews.csv --text-column review --label-column sentiment --budget-minutes 60
    gelora compare trec6 --methods lora lora_sb --n-train 800

Every method (default: LoRA, GeLoRA and LoRA-SB at uniform LoRA r = 8's budget, and full
fine-tuning) has its rate chosen by the study's full-length protocol on validation only (seeds 0-2,
`gelora.training.tuning`), then trains on held-out seeds and is paired with LoRA over the same test
examples and seeds (`gelora.analysis.stats.paired_interval`, Holm over the comparisons). It prints
its plan first, then one table and one sentence; it saves the best method's adapter (chosen on
validation, never on test) with a model card, and a figure. Finished runs are read back, so an
interrupted comparison resumes where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from gelora.analysis.pooled import holm
from gelora.analysis.stats import interval_p_value, paired_interval
from gelora.core.checks import check_whole
from gelora.core.records import atomic_write
from gelora.methods import registry
from gelora.study.rates import Track, at, base_configs, choices, cost, selection_configs
from gelora.training.config import FinetuneConfig, validate
from gelora.training.identity import run_id
from gelora.training.saved import MODEL_CARD as MODEL_CARD_FILE
from gelora.training.saved import RUN_FILE
from gelora.training.tuning import SELECTION_SEEDS

PROG = "python -m gelora.study.compare"
DEFAULT_METHODS = ("lora", "gelora", "lora_sb", "full")
HELDOUT_SEEDS = (10, 11, 12, 13, 14)  # disjoint from the selection seeds; the budget decides how many
MIN_HELDOUT = 2
REFERENCE = "lora"
ALPHA = 0.05
DEFAULT_RUN_S = 60.0  # a run's time before any has finished here (then: the mean of the finished ones)
FULL_MAX_PARAMS = 200_000_000  # full fine-tuning is left out of the default above this many parameters


@dataclasses.dataclass(frozen=True)
class Plan:
    track: Track
    heldout: tuple
    selection_runs: int  # what the protocol asks for now (more rounds may follow)
    per_run_s: float

    def heldout_runs(self) -> int:
        """The held-out runs still to train (all of them while a rate is pending)."""
        state = choices(self.track)
        if not all(choice.settled for choice, _ in state.values()):
            return len(self.track.points) * len(self.heldout)
        configs = heldout_configs(self, state)
        return sum(not (Path(c.output_dir) / f"{run_id(c)}.json").exists() for cs in configs.values() for c in cs)


def points(data: str, methods, model: str, folder: Path, settings: dict) -> tuple:
    """(label, base config) per method: adapters at uniform LoRA r = 8's budget on the model's
    default targets, full fine-tuning without one."""
    from gelora.data.tasks import load_dataset
    from gelora.kit.notebook import budget_for
    from gelora.models.loading import load_model

    train = load_dataset(data, "train", text_column=settings["text_column"], label_column=settings["label_column"])
    net, _ = load_model(model, train.task, train.num_labels if train.task == "classification" else None, seed=0)
    targets, budget = budget_for(net, None, 8)
    out = []
    for method in methods:
        full = registry.get_method(method).family == "full"
        config = FinetuneConfig(method=method, dataset=data, model=model, target_modules=targets,
                                budget=None if full else budget, output_dir=str(folder / "rates"),
                                cache_dir=str(folder / "cache"), progress=False, **settings)
        validate(config)
        out.append((method, config))
    return tuple(out)


def make_plan(track: Track, budget_minutes: float | None) -> Plan:
    """How many held-out seeds fit: all five without a budget; with one, as many as fit after the
    selection still to run (at least two, or an error saying what the budget would need)."""
    state = choices(track)
    todo = selection_configs(track, state)
    done = sum(len(runs) for _, runs in state.values())
    per_run = cost(track, [track.points[0][1]]) if done else DEFAULT_RUN_S
    pending = sum(not choice.settled for choice, _ in state.values())
    # a pending point needs at least its best rate and both neighbours at three seeds
    selection_s = max(len(todo), 3 * len(SELECTION_SEEDS) * pending) * per_run
    seeds = len(HELDOUT_SEEDS)
    if budget_minutes is not None:
        left = budget_minutes * 60 - selection_s
        seeds = min(len(HELDOUT_SEEDS), math.floor(left / (per_run * len(track.points)))) if left > 0 else 0
        if seeds < MIN_HELDOUT:
            need = (selection_s + MIN_HELDOUT * per_run * len(track.points)) / 60
            raise ValueError(f"--budget-minutes {budget_minutes:g} cannot hold the rate selection and {MIN_HELDOUT} held-out "
                             f"seeds of {len(track.points)} method(s): about {need:.0f} minutes would (at {per_run:.0f} s a run"
                             f"{'' if done else ', a first guess'}); give more minutes, fewer --methods or a smaller --n-train")
    return Plan(track, HELDOUT_SEEDS[:seeds], len(todo), per_run)


PLAN_FILE = "plan.json"


def resumed(track: Track, folder: Path, budget_minutes: float | None) -> Plan:
    """The plan: the one this folder already holds for the same runs (so a resumed comparison
    finishes the seeds it started with, whatever time is left), else a new one, written down."""
    names = sorted(run_id(config) for _, config in track.points)
    path = folder / PLAN_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("points") == names:
            fresh = make_plan(track, None)
            print(f"resuming the plan in {path}: held-out seeds {', '.join(map(str, saved['heldout']))}", file=sys.stderr)
            return dataclasses.replace(fresh, heldout=tuple(saved["heldout"]))
    plan = make_plan(track, budget_minutes)
    atomic_write(path, lambda handle: json.dump({"points": names, "heldout": list(plan.heldout),
                                                 "budget_minutes": budget_minutes}, handle, indent=2))
    return plan


def plan_text(plan: Plan) -> str:
    state = choices(plan.track)
    lines = [f"plan: {len(plan.track.points)} method(s); rates by the full-length protocol on validation (seeds "
             f"{', '.join(map(str, SELECTION_SEEDS))}), then held-out seeds {', '.join(map(str, plan.heldout))}"]
    for label, (choice, runs) in state.items():
        lines.append(f"  {registry.label(label):>10}: {len(runs)} run(s) so far, rate "
                     f"{choice.rate if choice.settled else 'pending'} ({choice.status})")
    total = plan.selection_runs + plan.heldout_runs()
    lines.append(f"about {total} run(s) known now ({plan.selection_runs} selection, {plan.heldout_runs()} held-out; more "
                 f"selection rounds may follow), about {total * plan.per_run_s / 60:.0f} minutes at "
                 f"{plan.per_run_s:.0f} s a run")
    return "\n".join(lines)


def _train(configs: list, jobs: int, logs: Path) -> None:
    if jobs == 1:
        from gelora.training.train import run_configs

        run_configs(configs, log=lambda line: print(line, file=sys.stderr, flush=True))
        return
    from gelora.study.grid import run_jobs

    if run_jobs(configs, jobs, logs, log=lambda line: print(line, file=sys.stderr, flush=True)):
        raise RuntimeError(f"a run failed: see {logs}")


def select(plan: Plan, jobs: int, max_rounds: int) -> dict:
    """Rounds of the protocol until every rate is settled (at most `max_rounds`)."""
    for round_ in range(1, max_rounds + 1):
        todo = selection_configs(plan.track)
        if not todo:
            break
        print(f"selection round {round_}: {len(todo)} run(s)", file=sys.stderr, flush=True)
        _train(todo, jobs, plan.track.folder / "logs")
    state = choices(plan.track)
    pending = [label for label, (choice, _) in state.items() if not choice.settled]
    if pending:
        raise ValueError(f"the rates of {pending} are not settled after {max_rounds} round(s): run the same command "
                         "again (finished runs are kept), or raise --max-rounds")
    return state


def heldout_configs(plan: Plan, state: dict) -> dict:
    bases = base_configs(plan.track)
    return {label: [at(bases[label], plan.track.folder, plan.track.results, choice.rate, seed) for seed in plan.heldout]
            for label, (choice, _) in state.items()}


def comparison(plan: Plan, configs: dict) -> pd.DataFrame:
    """One row per method: parameters, test metric, and the paired difference to LoRA with its
    interval, Holm-adjusted p and verdict (LoRA's own row has none)."""
    from gelora.analysis.results import load_records, paired_arrays, paired_scores

    folder = plan.track.folder / plan.track.results
    statuses = {label: choice.status for label, (choice, _) in choices(plan.track).items()}
    records = {label: load_records(folder, run_ids=[run_id(c) for c in cs]) for label, cs in configs.items()}
    scores = {label: next(iter(paired_scores(rs, folder).values())) for label, rs in records.items()}
    rows = []
    for label, rs in records.items():
        metric = rs[0]["metric"]
        tests = [r["test"][metric] for r in rs]
        row = {"method": label, "trainable params": rs[0]["adapter_params"] if label != "full" else rs[0]["trainable_params"],
               "rate": rs[0]["lr"], "rate chosen": statuses.get(label, ""), "seeds": ",".join(str(r["seed"]) for r in rs),
               f"test {metric}": float(np.mean(tests)),
               "std": float(np.std(tests, ddof=1)) if len(tests) > 1 else float("nan"),
               "validation": float(np.mean([r["final"][metric] for r in rs])),
               "minutes": sum(r["wall_time_s"] for r in rs) / 60}
        if label != REFERENCE and REFERENCE in scores:
            a, b, seeds, examples = paired_arrays(scores[label], scores[REFERENCE])
            result = paired_interval(a, b)
            row.update(difference=result.difference, low=result.low, high=result.high,
                       p=interval_p_value(result.difference, result.seed_part, result.example_part, len(seeds), len(examples)))
        rows.append(row)
    table = pd.DataFrame(rows)
    compared = table["p"].notna() if "p" in table else pd.Series(False, index=table.index)
    table["p_holm"] = np.nan
    table["verdict"] = ""
    if compared.any():
        table.loc[compared, "p_holm"] = holm(table.loc[compared, "p"].to_numpy())
        table.loc[compared, "verdict"] = ["better" if r.p_holm < ALPHA and r.difference > 0 else
                                          "worse" if r.p_holm < ALPHA else "not resolved" for r in table[compared].itertuples()]
    return table


def sentence(table: pd.DataFrame, metric: str) -> str:
    others = table[table["method"] != REFERENCE]
    if others.empty or REFERENCE not in set(table["method"]):
        return "No comparison with LoRA: run LoRA among the methods."
    parts = []
    for r in others.itertuples():
        parts.append(f"{registry.label(r.method)} {r.difference:+.3f} ({r.low:+.3f} to {r.high:+.3f}), {r.verdict}")
    resolved = others[others["verdict"] != "not resolved"]
    lead = ("none differs from LoRA after Holm's correction" if resolved.empty else
            f"{len(resolved)} of {len(others)} differ from LoRA after Holm's correction")
    return (f"Against LoRA on the same test examples and held-out seeds ({metric}, 95 % intervals): "
            f"{'; '.join(parts)}; {lead}.")


MODEL_CARD = """---
library_name: {library}
base_model: {base}
tags: [gelora, {method}, text-classification]
---

# {label} adapter for {base}, trained by gelora

- **Method**: {label} ({description}); trainable parameters {params:,}
- **Data**: `{data}` (train / validation / test as `gelora compare` divided it; the test split was
  never used to choose anything)
- **Rate**: {rate:g}, chosen by gelora's full-length protocol on validation (seeds 0-2)
- **Held-out test {metric}** (seeds {seeds}): {test:.4f} ± {std:.4f}; against LoRA:
  {against}
- **Chosen as the best** of {methods} by mean validation {metric} on the held-out seeds
- **gelora** {version}; run {run_id}

## Load it

```bash
gelora predict {folder} new.csv --out predictions.csv
```
{peft}
"""


def best_index(table: pd.DataFrame):
    """The row with the best mean validation metric (ties: the earlier row, LoRA first)."""
    return table["validation"].idxmax()


def save_best(table: pd.DataFrame, configs: dict, folder: Path, data: str, force: bool) -> Path:
    """The method with the best mean validation metric, retrained at its first held-out seed into
    folder/best-adapter (same identity: the same numbers), with a filled model card."""
    from gelora import __version__
    from gelora.training.train import finetune

    best = table.loc[best_index(table)]
    config = dataclasses.replace(configs[best["method"]][0], save_adapter=str(folder / "best-adapter"), force=force)
    record = finetune(config=config)
    metric = record["metric"]
    row = table.set_index("method").loc[best["method"]]
    against = ("it is the reference" if best["method"] == REFERENCE else
               f"{row['difference']:+.4f} ({row['low']:+.4f} to {row['high']:+.4f}), {row['verdict']} after Holm")
    saved = json.loads((folder / "best-adapter" / RUN_FILE).read_text())
    peft = ("" if saved["format"] != "peft" else
            "\nIn plain PEFT: `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, "
            f"num_labels={len(record.get('label_names') or [])}), \"{folder / 'best-adapter'}\")`.\n")
    card = MODEL_CARD.format(library="peft" if peft else "gelora", base=record["model"], method=best["method"],
                             label=registry.label(best["method"]), description=registry.get_method(best["method"]).description,
                             params=int(row["trainable params"]), data=data, rate=row["rate"], metric=metric,
                             seeds=row["seeds"], test=row[f"test {metric}"], std=row["std"], against=against,
                             methods=", ".join(registry.label(m) for m in table["method"]), version=__version__,
                             run_id=record["run_id"], folder=folder / "best-adapter", peft=peft)
    atomic_write(folder / "best-adapter" / MODEL_CARD_FILE, lambda handle: handle.write(card))
    return folder / "best-adapter"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a CSV/TSV/JSONL file, a folder of train/validation/test files, or a shipped dataset")
    parser.add_argument("--methods", nargs="+", default=None, help=f"methods to compare (default: {' '.join(DEFAULT_METHODS)}; "
                        "LoRA is the reference and is always included)")
    parser.add_argument("--model", default="minilm", help="base model (a packaged name, a hub id@commit or a folder)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--n-train", type=int, default=None, help="training examples (default: the whole split)")
    parser.add_argument("--max-length", type=int, default=64, help="tokens kept per text")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--budget-minutes", type=float, default=None, help="a cap: decides how many held-out seeds fit")
    parser.add_argument("--max-rounds", type=int, default=8, help="selection rounds before it stops and says so")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (1: in this process)")
    parser.add_argument("--output-dir", default="compare-out", help="folder of the runs, the table, the figure and the adapter")
    parser.add_argument("--plan", action="store_true", help="print the plan and its estimated time, train nothing")
    parser.add_argument("--force", action="store_true", help="replace an adapter of another run in <output-dir>/best-adapter")
    args = parser.parse_args(argv)
    check_whole("--jobs", args.jobs, 1)
    check_whole("--max-rounds", args.max_rounds, 1)
    if args.budget_minutes is not None and not (math.isfinite(args.budget_minutes) and args.budget_minutes > 0):
        raise ValueError(f"--budget-minutes must be a positive number, got {args.budget_minutes}")
    methods = list(dict.fromkeys([REFERENCE, *(args.methods or DEFAULT_METHODS)]))
    unknown = sorted(set(methods) - set(registry.names()))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected names from {registry.names()}")
    folder = Path(args.output_dir)
    settings = dict(text_column=args.text_column, label_column=args.label_column, n_train=args.n_train,
                    max_length=args.max_length, epochs=args.epochs)
    track = Track(folder, results="heldout", points=points(args.data, methods, args.model, folder, settings))
    plan = resumed(track, folder, args.budget_minutes)
    print(plan_text(plan), file=sys.stderr, flush=True)
    if args.plan:
        return 0
    state = select(plan, args.jobs, args.max_rounds)
    configs = heldout_configs(plan, state)
    missing = [c for cs in configs.values() for c in cs if not (Path(c.output_dir) / f"{run_id(c)}.json").exists()]
    if missing:
        print(f"held-out: {len(missing)} run(s)", file=sys.stderr, flush=True)
        _train(missing, args.jobs, folder / "logs")
    table = comparison(plan, configs)
    metric = next(c for c in table.columns if c.startswith("test "))
    table.to_csv(folder / "comparison.csv", index=False)
    _figure(table, folder, metric)
    adapter = save_best(table, configs, folder, args.data, args.force)
    shown = table.assign(method=[registry.label(m) for m in table["method"]])
    print(shown.drop(columns=["p"], errors="ignore").to_markdown(index=False, floatfmt=".4f"))
    print(f"\n{sentence(table, metric.removeprefix('test '))}")
    print(f"\nbest on validation: {registry.label(table.loc[best_index(table), 'method'])}, saved in {adapter} "
          f"(model card: {adapter / MODEL_CARD_FILE}); table {folder / 'comparison.csv'}, figure {folder / 'comparison.png'}")
    return 0


def _figure(table: pd.DataFrame, folder: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from gelora.kit import plots

    rows = table[table["method"] != REFERENCE]
    if rows.empty:
        return
    rows = pd.DataFrame({"task": [registry.label(m) for m in rows["method"]], "difference": rows["difference"],
                         "low": rows["low"], "high": rows["high"]})
    fig = plots.forest(rows, None, f"Each method against LoRA ({metric}, held-out seeds)")
    fig.savefig(folder / "comparison.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
