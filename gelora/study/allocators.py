"""The control comparison of the study: every rank allocator (`gelora.allocation.allocators`) as a LoRA run
at the comparison's budget, its rate chosen by the same protocol (`gelora.study.rates`), then paired
with uniform LoRA and set against the spread of random allocations.

    python -m gelora study --allocators trec6 --plan             # the allocations and what is left
    python -m gelora study --allocators trec6 --points alloc:inverted_gelora --jobs 2

Each allocation is a point of a track labelled `alloc:<name>`: LoRA with `block_ranks` at the
study's settings, no budget (the ranks spend it), runs in allocators/results and allocators/rates
of the task's folder, its grid anchored at the comparison's chosen LoRA rate.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from gelora.training.identity import run_id

ALLOCATOR_DIR = "allocators"
RANDOM_DRAWS = 5
# Allocations the comparison already trains (uniform LoRA at the budget, GeLoRA), each at its own
# protocol-chosen rate: read from results/, never trained again here.
IN_COMPARISON = {"uniform": "lora", "gelora": "gelora"}


def allocations(folder: Path, draws: int = RANDOM_DRAWS) -> dict:
    """name -> Allocation for the task: uniform, GeLoRA, its inversion, `draws` random ones, the
    weight and gradient spectra, and EVA's and AdaLoRA's final ranks (seed 0), at the budget of
    the comparison's LoRA."""
    import transformers

    from gelora.adapters.lora_sb import estimate_update
    from gelora.allocation import allocators
    from gelora.data.tasks import load_dataset, seeded_loader, tokenize
    from gelora.models.loading import load_model
    from gelora.models.targets import block_index, block_shapes
    from gelora.probing.probe import load_profile
    from gelora.study.rates import base_configs

    transformers.utils.logging.disable_progress_bar()  # the weight-loading bar
    bases = base_configs(folder)
    lora = bases["lora"]
    train = load_dataset(lora.dataset, "train")
    model, tokenizer = load_model(lora.model, train.task, train.num_labels, seed=0)
    shapes = block_shapes(model, lora.target_modules)
    budget = lora.budget
    found = {"uniform": allocators.uniform(shapes, budget)}
    found["gelora"] = allocators.gelora(load_profile(folder / "id_profile.csv"), shapes, budget,
                                        offset=lora.gelora_offset)
    found["inverted_gelora"] = allocators.inverted(found["gelora"], shapes)
    found.update({a.name: a for a in allocators.random(shapes, budget, draws=draws, seed=0)})
    found["weight_spectrum"] = allocators.weight_spectrum(model, lora.target_modules, shapes, budget)
    sample = train.subset(min(lora.sb_num_samples, len(train)), seed=0)
    batches = seeded_loader(tokenize(sample, tokenizer, lora.max_length), tokenizer, train.task, lora.batch_size, 0)
    update = estimate_update(model, batches, lora.target_modules, num_samples=len(sample))
    found["gradient_spectrum"] = allocators.gradient_spectrum(update, shapes, budget)
    records = {r["method"]: r for r in _records(folder) if r["seed"] == 0}
    for method, key in (("eva", "ranks"), ("adalora", "final_ranks")):
        if method in records and isinstance(records[method].get(key), dict):
            per_block = np.zeros(len(shapes))
            for name, rank in records[method][key].items():
                per_block[block_index(name)] += rank / len(shapes[block_index(name)])
            found[f"{method}_final"] = allocators.read_back(f"{method}_final", per_block, shapes, budget)
    return found


def _records(folder: Path) -> list:
    from gelora.analysis.results import load_records

    return load_records(folder / "results")


def allocation_track(folder: Path, names=None, draws: int = RANDOM_DRAWS, found: dict | None = None):
    """The allocations as a track of the rate protocol (label `alloc:<name>`), anchored at the
    comparison's chosen LoRA rate (`found`: the task's `allocations`, when already computed)."""
    from gelora.study.rates import Track, base_configs, choices

    lora = base_configs(folder)["lora"]
    choice = choices(folder)["lora"][0]
    rate = choice.rate if choice.settled else lora.lr
    found = found if found is not None else allocations(folder, draws)
    trainable = {f"alloc:{n}" for n, a in found.items() if n not in IN_COMPARISON and a.ranks != found["uniform"].ranks}
    unknown = sorted(set(names or ()) - trainable)
    if unknown:
        raise ValueError(f"unknown allocation(s) {unknown}; the task trains {sorted(trainable)} (uniform and GeLoRA "
                         "are the comparison's own runs)")
    points, anchors = [], []
    for name, allocation in found.items():
        label = f"alloc:{name}"
        same = name not in IN_COMPARISON and allocation.ranks == found["uniform"].ranks  # uniform LoRA's computation
        if name in IN_COMPARISON or same or (names and label not in names):
            continue
        config = dataclasses.replace(lora, method="lora", budget=None, block_ranks=list(allocation.ranks), lr=rate,
                                     output_dir=str(folder / ALLOCATOR_DIR / "results"), force=False, progress=False)
        points.append((label, config))
        anchors.append((label, float(rate)))
    return Track(folder, f"{ALLOCATOR_DIR}/results", f"{ALLOCATOR_DIR}/rates", tuple(points), tuple(anchors))


def uniform_at(folder: Path, reference: dict, rate: float) -> dict:
    """Uniform LoRA's per-example scores at `rate` (seed -> scores): the comparison's run with only
    its rate changed, found by identity among the task's full-length runs (the rate protocol's
    selection runs in rates/, the comparison's in results/); seeds without such a run are absent."""
    from gelora.analysis.results import load_records, paired_scores
    from gelora.training.config import config_from_record

    base = config_from_record(reference["config"])
    wanted = {run_id(dataclasses.replace(base, lr=float(rate), seed=s)) for s in range(10)}
    scores: dict = {}
    for sub in ("results", "rates"):
        present = [p.stem for p in (folder / sub).glob("*.json") if p.stem in wanted]
        records = [r for r in load_records(folder / sub, run_ids=present) if r["seed"] not in scores]
        scores.update(paired_scores(records, folder / sub).get("lora", {}) if records else {})
    return scores


def _matched(row: dict, scores: dict, folder: Path, reference: dict) -> dict:
    """The row's allocation against uniform LoRA trained at the allocation's own rate (the seeds
    both have): a verdict that changes here cannot be credited to the ranks."""
    from gelora.analysis.results import paired_arrays
    from gelora.analysis.stats import paired_interval

    if row["lr"] == reference["lr"]:
        return {"matched_difference": row["difference"], "matched_low": row["low"], "matched_high": row["high"],
                "matched_verdict": row["verdict"], "matched_seeds": row["seeds"]}
    a, b, used, _ = paired_arrays(scores, uniform_at(folder, reference, row["lr"]))
    if not used:
        return {"matched_difference": np.nan, "matched_low": np.nan, "matched_high": np.nan,
                "matched_verdict": "no uniform run at this rate", "matched_seeds": ""}
    result = paired_interval(a, b)
    return {"matched_difference": result.difference, "matched_low": result.low, "matched_high": result.high,
            "matched_verdict": result.verdict, "matched_seeds": ",".join(map(str, used))}


def allocator_table(folder: Path, seeds=(0, 1, 2, 3, 4)) -> pd.DataFrame:
    """Every settled allocation against uniform LoRA (paired over seeds and test examples), each
    at its own protocol-chosen rate, then against uniform LoRA at the allocation's rate (the
    `matched_` columns, on the seeds trained there), and against the random draws: 'better than
    chance' when its test mean lies above every random draw's (how many draws is in the table)."""
    from gelora.analysis.results import load_records, paired_arrays, paired_scores
    from gelora.analysis.stats import paired_interval
    from gelora.study.rates import choices, comparison_configs

    found = allocations(folder)
    track = allocation_track(folder, found=found)
    state = choices(track)
    comparison = [r for r in _records(folder) if r["seed"] in seeds]
    scores = paired_scores(comparison, folder / "results")
    ref_scores = scores["lora"]
    rows, where = [], folder / ALLOCATOR_DIR / "results"
    own = {r["method"]: r for r in comparison}
    for name, method in IN_COMPARISON.items():  # the comparison's own runs, at their own rates
        if method in scores:
            a, b, used, _ = paired_arrays(scores[method], ref_scores)
            result = paired_interval(a, b) if method != "lora" else None
            rows.append({"allocation": name, "ranks": list(own[method]["allocation"]["ranks"]) if method == "gelora"
                         else list(own[method]["ranks"].values()), "adapter_params": own[method]["adapter_params"],
                         "lr": own[method]["lr"], "test": float(a.mean()),
                         "difference": 0.0 if result is None else result.difference,
                         "low": 0.0 if result is None else result.low, "high": 0.0 if result is None else result.high,
                         "verdict": "reference" if result is None else result.verdict, "seeds": ",".join(map(str, used))})
            if method != "lora":
                rows[-1].update(_matched(rows[-1], scores[method], folder, own["lora"]))
    for label, (choice, _) in state.items():
        if not choice.settled:
            continue
        wanted = {run_id(c) for c in comparison_configs(track, seeds, {label: state[label]})}
        present = [p.stem for p in where.glob("*.json") if p.stem in wanted]
        if not present:
            continue
        records = [dict(r, method=label) for r in load_records(where, run_ids=present)]
        own_scores = paired_scores(records, where)[label]
        a, b, used, _ = paired_arrays(own_scores, ref_scores)
        result = paired_interval(a, b)
        rows.append({"allocation": label.split(":", 1)[1], "ranks": records[0]["config"]["block_ranks"],
                     "adapter_params": records[0]["adapter_params"], "lr": choice.rate, "test": float(a.mean()),
                     "difference": result.difference, "low": result.low, "high": result.high,
                     "verdict": result.verdict, "seeds": ",".join(map(str, used))})
        rows[-1].update(_matched(rows[-1], own_scores, folder, own["lora"]))
    uniform = next((r for r in rows if r["allocation"] == "uniform"), None)
    for name, allocation in found.items():  # the same ranks as uniform LoRA: the same computation, not retrained
        if uniform and name not in IN_COMPARISON and allocation.ranks == found["uniform"].ranks:
            rows.append(dict(uniform, allocation=name, verdict="same ranks as uniform"))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    draws = table[table["allocation"].str.startswith("random_")]
    top = draws["test"].max() if len(draws) else np.nan
    table["random_draws"] = len(draws)
    table["better_than_chance"] = table["test"] > top if len(draws) else np.nan
    return table


def allocator_sentence(task: str, table: pd.DataFrame) -> str:
    """What `allocator_table` shows for one task, in words: GeLoRA against uniform, the other
    trained allocators, and whether any lies above every random draw (or that none was drawn)."""
    rows = table.set_index("allocation")
    draws = int(table["random_draws"].iloc[0])
    same = [a for a in rows.index if rows.loc[a, "verdict"] == "same ranks as uniform"]
    trained = [a for a in rows.index if a not in IN_COMPARISON and a not in same]
    def said(a):
        words = (f"{rows.loc[a, 'difference']:+.4f} ({rows.loc[a, 'low']:+.4f} to {rows.loc[a, 'high']:+.4f}), "
                 f"**{rows.loc[a, 'verdict']}**")
        if not rows.loc[a, "matched_seeds"]:
            words += f" (uniform LoRA has no run at its rate {rows.loc[a, 'lr']:g} to check it against)"
        elif rows.loc[a, "matched_verdict"] != rows.loc[a, "verdict"]:  # the same-rate check disagrees
            words += (f" (against uniform LoRA at its rate {rows.loc[a, 'lr']:g}, seeds {rows.loc[a, 'matched_seeds']}: "
                      f"{rows.loc[a, 'matched_difference']:+.4f} ({rows.loc[a, 'matched_low']:+.4f} to "
                      f"{rows.loc[a, 'matched_high']:+.4f}), {rows.loc[a, 'matched_verdict']})")
        return words
    words = f"**{task}**: "
    if "gelora" in rows.index:
        words += f"GeLoRA (ranks {rows.loc['gelora', 'ranks']}) against uniform LoRA: {said('gelora')}. "
    if same:
        words += f"Same ranks as uniform, so the same runs: {', '.join(same)}. "
    if trained:
        words += "Trained allocators against uniform: " + "; ".join(f"{a} {said(a)}" for a in trained) + ". "
    resolved = [a for a in [*(["gelora"] if "gelora" in rows.index else []), *trained]
                if rows.loc[a, "verdict"] in ("better", "worse")]
    rest = [a for a in resolved if rows.loc[a, "matched_verdict"] != rows.loc[a, "verdict"]]
    if rest:  # verdicts that change when uniform LoRA trains at the allocation's rate
        one = len(rest) == 1
        which = ("The resolved verdict does not survive" if len(resolved) == 1 else
                 f"None of the {len(resolved)} resolved verdicts survives" if len(rest) == len(resolved) else
                 f"Of the {len(resolved)} resolved verdicts, {', '.join(rest)} {'does' if one else 'do'} not survive")
        words += (f"{which} uniform LoRA trained at the same rate: at one rate the ranks' effect is not shown, so "
                  f"{'this verdict' if one else 'these verdicts'} cannot be credited to the ranks (the rates chosen "
                  f"for the two may carry {'it' if one else 'them'}). ")
    if not draws:
        return words + (f"No random allocation has been trained yet (`python -m gelora study --allocators {task}`), so "
                        "nothing here can be called better than chance: against uniform alone, geometry cannot be told "
                        "from any other non-uniform allocation.")
    above = [a for a in rows.index if not a.startswith("random_") and bool(rows.loc[a, "better_than_chance"])]
    return words + (f"Above every one of the {draws} random allocations: {', '.join(above) or 'none'}"
                    + (" (with so few draws a weak test: the band shows how far chance alone moves the result)."
                       if draws < 20 else "."))
