"""What the study trains beyond its comparison: the parameter-efficiency curve's points, the
reference confirmed at full length, and the per-block rank sweep, each as configs built from the
task's own records (so every extra run starts from the comparison's settings)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gelora.analysis.results import load_records
from gelora.methods import registry
from gelora.study.folders import task_records
from gelora.training.identity import run_id

# LoRA-SB's headline claim: it matches LoRA with 27-90x fewer trainable parameters. The points
# of the parameter-efficiency curve, each (method, rank) trained without a budget at the study's
# settings and chosen learning rate; LoRA r = 8 (the study's budget) is the reference.
# The curve's points beside the study's budget-matched runs: LoRA at r = 1-16, LoRA-SB from r = 8
# (96x fewer parameters than LoRA r = 8, on MiniLM's query/value) to 32 (6x), LoRA-XS at LoRA-SB's
# smallest size, and the two other initialisations at LoRA's reference rank.
# LoRA-SB r = 15 is the claim's 27x point (73,728 / (12 x 15^2) = 27.3), r = 8 its 90x point (96x:
# the nearest whole core to 90x, 8.26).
EFFICIENCY_POINTS = (("lora", 1), ("lora", 2), ("lora", 4), ("lora", 16), ("lora_xs", 8), ("lora_sb", 8),
                     ("lora_sb", 15), ("lora_sb", 16), ("lora_sb", 32), ("lora_ga", 8), ("pissa", 8))
CLAIM_RANGE = (27, 96)  # LoRA-SB's "27-90x fewer parameters", the 90x end at its nearest whole core (96x)
EFFICIENCY_SEEDS = (0, 1, 2)
EFFICIENCY_FACTORS = (0.2, 1.0, 5.0)  # each point's sweep, around the study's rate for its method
EFFICIENCY_DIR = "efficiency"
# The reference is confirmed at the study's full length: the one-seed sweep on its shorter training
# set can choose a rate that is unstable at full length (trec6's LoRA at 1e-2 lost a seed), so
# LoRA at the study's budget is also trained at the chosen rate x each of these factors.
REFERENCE_FACTORS = (0.2,)
REFERENCE_DIR = "reference"
BLOCK_RANKS = (1, 2, 4, 8, 16, 32, 64)  # the per-block sweep: one block adapted at each rank, the others not at all
BLOCK_SEEDS = (0, 1, 2)  # three seeds: the interval is seed-aware (t on seed means plus the test examples)
BLOCK_DIR = "block_sweep"


def _study_settings(folder: Path):
    """The study's own settings (its LoRA record), every method's rate as the short sweep chose it
    (`lr_sweep.csv`: the rate the efficiency points and the per-block sweep were built around, so
    their runs keep their names when the protocol moves a comparison's rate), and the sweep's
    training-set size: what the extra runs of a task start from."""
    from gelora.training.config import config_from_record
    from gelora.training.sweep import best_lrs

    records = task_records(folder)
    base = config_from_record(next(r for r in records if r["method"] == "lora")["config"])
    sweep = load_records(folder / "lr_sweep")
    if not sweep:
        raise FileNotFoundError(f"{folder / 'lr_sweep'} holds no sweep records: run the study's sweep first")
    rates = {r["method"]: r["lr"] for r in records}  # a study without a sweep table: the comparison's rates
    if (folder / "lr_sweep.csv").is_file():
        rates.update(best_lrs(pd.read_csv(folder / "lr_sweep.csv")))
    return base, rates, sweep[0]["config"]["n_train"]


def _run(base, folder: Path, sub: str, **changes):
    import dataclasses

    from gelora.training.config import validate

    config = dataclasses.replace(base, **{"budget": None, "id_profile": None, "output_dir": str(folder / sub), **changes})
    validate(config)
    return config


def efficiency_sweep_configs(folder: Path, points=EFFICIENCY_POINTS, factors=EFFICIENCY_FACTORS) -> list:
    """Each point's learning-rate sweep: its method's study rate (the registry's for a method the
    study did not run) x each factor, seed 0, on the sweep's training-set size, scored on
    validation once at the end."""
    base, chosen, n_train = _study_settings(folder)
    return [_run(base, folder, f"{EFFICIENCY_DIR}/lr_sweep", method=method, rank=rank, seed=0, n_train=n_train, evals=1,
                 lr=float(chosen.get(method, registry.get_method(method).lr) * factor))
            for method, rank in points for factor in factors]


def efficiency_rates(folder: Path, points=EFFICIENCY_POINTS, factors=EFFICIENCY_FACTORS) -> dict:
    """(method, rank) -> the rate of its sweep with the best final validation metric (a run whose
    loss rose is not chosen; ties go to the factor closest to 1), for every point whose sweep is
    complete (a point with a missing sweep run has no rate yet)."""
    import math

    configs = efficiency_sweep_configs(folder, points, factors)
    folder_of = Path(configs[0].output_dir)
    done = {run_id(c) for c in configs if (folder_of / f"{run_id(c)}.json").is_file()}
    records = {r["run_id"]: r for r in load_records(folder_of, run_ids=sorted(done))} if done else {}
    rates, per_point = {}, len(factors)
    for i, (method, rank) in enumerate(points):
        point = configs[i * per_point:(i + 1) * per_point]
        if not all(run_id(c) in records for c in point):
            continue
        runs = [(factor, c, records[run_id(c)]) for factor, c in zip(factors, point)]
        usable = [run for run in runs if not run[2].get("loss_rose")] or runs
        best = min(usable, key=lambda run: (-run[2]["final"][run[2]["metric"]], abs(math.log(run[0]))))
        rates[(method, rank)] = best[1].lr
    return rates


def efficiency_configs(folder: Path, points=EFFICIENCY_POINTS, seeds=EFFICIENCY_SEEDS) -> list:
    """The curve's runs for one task: the study's own settings with each method at a fixed rank
    and no budget, at the rate its own sweep chose (`efficiency_rates`; points whose sweep is not
    complete are left out)."""
    base, _, _ = _study_settings(folder)
    rates = efficiency_rates(folder, points)
    return [_run(base, folder, f"{EFFICIENCY_DIR}/results", method=method, rank=rank, seed=seed, lr=rates[(method, rank)])
            for method, rank in points if (method, rank) in rates for seed in seeds]


def efficiency_track(folder: Path, points=EFFICIENCY_POINTS):
    """The curve's points as a track of the rate protocol (`gelora.study.rates`): label
    "method@rank", the study's settings at that rank without a budget, runs in efficiency/results
    and efficiency/rates; each grid anchored at the short sweep's choice for that point where it
    has one (its three full-length seeds are then the protocol's first rate), else at the short
    sweep's choice for the same method's nearest rank, else at the comparison's chosen rate for
    the method, else the registry's."""
    from gelora.study.rates import Track, choices

    base, _, _ = _study_settings(folder)
    swept = efficiency_rates(folder, points)
    settled = {m: c.rate for m, (c, _) in choices(folder).items() if c.settled}
    configs, anchors = [], []
    for method, rank in points:
        nearest = sorted((abs(r - rank), rate) for (m, r), rate in swept.items() if m == method)  # same method, closest rank
        rate = swept.get((method, rank)) or (nearest[0][1] if nearest else None) or settled.get(method) \
            or registry.get_method(method).lr
        label = f"{method}@{rank}"
        configs.append((label, _run(base, folder, f"{EFFICIENCY_DIR}/results", method=method, rank=rank, seed=0, lr=rate)))
        anchors.append((label, float(rate)))
    return Track(folder, f"{EFFICIENCY_DIR}/results", f"{EFFICIENCY_DIR}/rates", tuple(configs), tuple(anchors))


def efficiency_runs(folder: Path, points=EFFICIENCY_POINTS) -> dict:
    """label -> (configs of the point's curve runs, how their rate was chosen): at the protocol's
    rate x EFFICIENCY_SEEDS where the protocol has settled the point, else at the short sweep's."""
    from gelora.study.rates import choices, comparison_configs

    track = efficiency_track(folder, points)
    state = choices(track)
    old: dict = {}
    for c in efficiency_configs(folder, points):
        old.setdefault(f"{c.method}@{c.rank}", []).append(c)
    out = {}
    for label, (choice, _) in state.items():
        if choice.settled:
            out[label] = (comparison_configs(track, EFFICIENCY_SEEDS, {label: state[label]}), f"protocol ({choice.status})")
        elif label in old:
            out[label] = (old[label], "one-seed short sweep (protocol pending)")
    return out


def reference_configs(folder: Path, reference: str = "lora", factors=REFERENCE_FACTORS, seeds=EFFICIENCY_SEEDS) -> list:
    """The reference's full-length runs at lower rates: the study's own settings and budget for
    `reference`, its chosen rate x each factor, the curve's seeds."""
    base, chosen, _ = _study_settings(folder)
    if reference not in chosen:
        raise ValueError(f"the study of {folder.name} has no {reference!r} runs to confirm")
    return [_run(base, folder, f"{EFFICIENCY_DIR}/{REFERENCE_DIR}", method=reference, budget=base.budget, seed=seed,
                 lr=float(chosen[reference] * factor)) for factor in factors for seed in seeds]


def reference_choice(folder: Path, reference: str = "lora", factors=REFERENCE_FACTORS, seeds=EFFICIENCY_SEEDS) -> dict:
    """Which rate the curve's reference uses: of the study's runs at the sweep's choice and the
    full-length runs of `reference_configs`, the rate with the best mean final validation metric
    over `seeds` (ties keep the sweep's choice; before the confirming runs exist, the sweep's
    choice). Returns the rate, its records, where they live and every candidate's mean."""
    study = [r for r in task_records(folder) if r["method"] == reference and r["seed"] in seeds]
    if not study:
        raise ValueError(f"the study of {folder.name} has no {reference!r} runs to compare the curve with")
    from gelora.study.rates import choices

    chosen = choices(folder).get(reference, (None,))[0]
    if chosen is not None and chosen.settled and chosen.rate == study[0]["lr"]:  # the protocol chose it: no more
        mean = float(np.mean([r["final"][r["metric"]] for r in study]))
        return {"lr": chosen.rate, "records": study, "results_dir": folder / "results", "validation": {chosen.rate: mean},
                "sweep_lr": chosen.rate}
    candidates = [(study[0]["lr"], study, folder / "results")]
    configs = reference_configs(folder, reference, factors, seeds)
    where = folder / EFFICIENCY_DIR / REFERENCE_DIR
    if all((where / f"{run_id(c)}.json").is_file() for c in configs):
        records = load_records(where, run_ids=[run_id(c) for c in configs])
        candidates += [(lr, [r for r in records if r["lr"] == lr], where) for lr in dict.fromkeys(c.lr for c in configs)]
    means = {lr: float(np.mean([r["final"][r["metric"]] for r in runs])) for lr, runs, _ in candidates}
    lr, runs, results = max(candidates, key=lambda c: means[c[0]])  # max keeps the first (the sweep's choice) on ties
    return {"lr": lr, "records": runs, "results_dir": results, "validation": means, "sweep_lr": study[0]["lr"]}


def block_sweep_configs(folder: Path, ranks=BLOCK_RANKS, seeds=BLOCK_SEEDS) -> list:
    """The per-block rank sweep: LoRA on one block only, at each rank the block's matrices allow,
    every other block left unadapted (so the block alone carries the adaptation), at uniform LoRA's
    rate as the protocol chose it at full length (the short sweep's where the protocol has not
    settled it), on the sweep's training-set size (100 steps: 7 ranks x 3 seeds x every block is
    what makes the need testable, and full length would cost 4x), scored on validation and test."""
    from gelora.study.rates import choices

    base, chosen, n_train = _study_settings(folder)
    protocol = choices(folder).get("lora")
    lr = protocol[0].rate if protocol and protocol[0].settled else chosen["lora"]
    records = task_records(folder)
    blocks = len(next(r for r in records if r["method"] == "lora")["ranks"])
    # a matrix's rank is at most its smaller side: the number of singular values full fine-tuning recorded
    side = min((len(v) for r in records if r["method"] == "full" for v in (r.get("update_spectra") or {}).values()),
               default=None)
    return [_run(base, folder, f"{BLOCK_DIR}/results", method="lora", seed=seed, n_train=n_train, evals=1, lr=lr,
                 block_ranks=[rank if b == block else 0 for b in range(blocks)])
            for seed in seeds for block in range(blocks) for rank in ranks if side is None or rank <= side]
