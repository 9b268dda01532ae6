"""The study's learning rates under the protocol of `gelora.training.tuning`, task by task.

Every full-length run of a task lives in one of two folders: `rates/` (the runs that choose the
rates: each candidate rate x the selection seeds) and `results/` (the comparison: every method at
its chosen rate x the study's seeds). A run is the same computation wherever it lies (its record
name is its identity), so a selection run at the chosen rate is reused by the comparison (its
record and predictions copied, never retrained) and a comparison run at a rate no longer chosen
moves to `rates/`, where it still draws the method's curve.

    python -m gelora study --tune trec6 --jobs 2     # train until every rate is settled, then the seeds
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from gelora.analysis.results import load_records
from gelora.core.checks import check_real
from gelora.methods import registry
from gelora.training.identity import run_id
from gelora.training.tuning import SELECTION_SEEDS, RateChoice, choose, plateau_gain

RATES_DIR = "rates"
# the order runs are queued in: the methods the claims compare first
CLAIM_ORDER = ("lora", "gelora", "lora_sb", "lora_xs", "adalora", "eva", "gelora_sb", "full")


@dataclasses.dataclass(frozen=True)
class Track:
    """A set of points whose rates the protocol chooses: the task's comparison (one point per
    method, from the records in `results`), or given points (label -> base config, label ->
    the grid's anchor rate), such as the parameter-efficiency curve's (method, rank) points."""

    folder: Path
    results: str = "results"
    rates: str = RATES_DIR
    points: tuple = ()  # ((label, base config), ...): empty for the comparison
    anchors: tuple = ()  # ((label, rate), ...): empty for the registry's rates


def _track(where) -> Track:
    return where if isinstance(where, Track) else Track(Path(where))


def base_configs(where) -> dict:
    """Per point: its base config (every setting but the rate and the seed). The comparison's:
    per method, the config of its record with the lowest seed."""
    from gelora.training.config import config_from_record

    track = _track(where)
    if track.points:
        return dict(track.points)
    records = sorted(load_records(track.folder / track.results), key=lambda r: r["seed"])
    bases = {}
    for r in records:
        bases.setdefault(r["method"], config_from_record({**r["config"], "method": r["method"]}))
    return dict(sorted(bases.items(), key=lambda kv: _rank(kv[0])))


def anchor(track: Track, label: str, base) -> float:
    """The rate a point's grid is anchored at: given, else the registry's for its method."""
    return dict(track.anchors).get(label, registry.get_method(base.method).lr)


def _rank(method: str) -> int:
    method = method.split("@")[0]
    return CLAIM_ORDER.index(method) if method in CLAIM_ORDER else len(CLAIM_ORDER)


def at(base, folder: Path, sub: str, lr: float, seed: int):
    """`base` at rate `lr` and `seed`, written to folder/sub."""
    return dataclasses.replace(base, lr=float(lr), seed=seed, output_dir=str(folder / sub), force=False, progress=False)


def full_length_runs(where, base) -> dict[str, dict]:
    """run_id -> (record, folder) of every record in the track's results and rates folders that is
    `base` at some rate and seed (the same computation: its name equals that config's name)."""
    track = _track(where)
    folder = track.folder
    found = {}
    for sub in (track.results, track.rates):
        where = folder / sub
        if not where.is_dir():
            continue
        for record in load_records(where):
            if record["method"] != base.method:
                continue
            if run_id(at(base, folder, sub, record["lr"], record["seed"])) == record["run_id"]:
                found.setdefault(record["run_id"], (record, where))
    return found


def curve_of(runs: dict) -> dict:
    """rate -> {seed: final validation metric} from `full_length_runs`."""
    curve: dict = {}
    for record, _ in runs.values():
        curve.setdefault(float(record["lr"]), {})[record["seed"]] = record["final"][record["metric"]]
    return curve


def choices(where) -> dict[str, tuple[RateChoice, dict]]:
    """Per point (method): where its protocol stands and its full-length runs."""
    track = _track(where)
    out = {}
    for label, base in base_configs(track).items():
        runs = full_length_runs(track, base)
        out[label] = (choose(label, curve_of(runs), anchor(track, label, base)), runs)
    return out


def selection_configs(where, state=None) -> list:
    """The runs the protocol asks for next: every pending rate x every selection seed it lacks."""
    track = _track(where)
    state = state or choices(track)
    bases = base_configs(track)
    configs = []
    for label, (choice, runs) in state.items():
        have = {(float(r["lr"]), r["seed"]) for r, _ in runs.values()}
        configs += [(label, at(bases[label], track.folder, track.rates, rate, seed)) for rate in choice.to_train
                    for seed in SELECTION_SEEDS if (rate, seed) not in have]
    return [c for _, c in sorted(configs, key=lambda lc: (_rank(lc[0]), lc[0], lc[1].lr, lc[1].seed))]


def comparison_configs(where, seeds, state=None) -> list:
    """Every settled point at its chosen rate x `seeds`, in the track's results folder."""
    track = _track(where)
    state = state or choices(track)
    bases = base_configs(track)
    return [at(bases[m], track.folder, track.results, choice.rate, seed) for m, (choice, _) in state.items()
            if choice.settled for seed in seeds]


def arrange(where, seeds, state=None, log=print) -> list:
    """Make the results folder hold exactly the comparison: runs at a rate no longer chosen move to
    the rates folder, selection runs at the chosen rate are copied in. Returns the comparison runs
    still to train."""
    track = _track(where)
    state = state or choices(track)
    log = log or (lambda message: None)
    wanted = {run_id(c): c for c in comparison_configs(track, seeds, state)}
    settled = {m for m, (choice, _) in state.items() if choice.settled}
    results, rates = track.folder / track.results, track.folder / track.rates
    rates.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)  # a track whose runs were all selection runs so far
    for method, (_, runs) in state.items():
        if method not in settled:
            continue
        for name, (record, where) in runs.items():
            files = [where / f"{name}.json", where / record["predictions"]["file"]]
            if where == results and name not in wanted:
                for path in files:
                    shutil.move(path, rates / path.name)
                log(f"{name}: not at the chosen rate, moved to {rates}")
            elif where == rates and name in wanted and not (results / f"{name}.json").exists():
                for path in files:
                    shutil.copy2(path, results / path.name)
                log(f"{name}: selection run at the chosen rate, reused by the comparison")
    return [c for c in wanted.values() if not (results / f"{run_id(c)}.json").exists()]


def rate_table(where, state=None) -> pd.DataFrame:
    """Every point's validation-vs-rate curve (mean, std, min, max over the selection seeds) with
    the chosen rate, how it was settled and whether its runs reached a plateau."""
    state = state or choices(where)
    tables = []
    for method, (choice, runs) in state.items():
        table = choice.curve.assign(method=method, status=choice.status)
        gains = {}
        for record, _ in runs.values():
            if record["seed"] in SELECTION_SEEDS:
                gains.setdefault(float(record["lr"]), []).append(plateau_gain(record))
        table["gain_last_quarter"] = [float(np.nanmean(gains[r])) if r in gains else np.nan for r in table["rate"]]
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def cost(where, configs: list) -> float:
    """Estimated seconds of `configs` on this machine: each method's mean wall time over its runs."""
    track = _track(where)
    times: dict = {}
    for sub in dict.fromkeys((track.results, track.rates, "results", RATES_DIR)):  # the task's own runs too
        if (track.folder / sub).is_dir():
            for r in load_records(track.folder / sub):
                times.setdefault(r["method"], []).append(r["wall_time_s"])
    overall = float(np.mean([t for v in times.values() for t in v])) if times else 60.0
    return float(sum(np.mean(times.get(c.method, [overall])) for c in configs))


def step_drops(state: dict, factor: float = 2.0) -> dict[str, np.ndarray]:
    """Per settled point of `choices`: per selection seed, its validation at the chosen rate minus
    at the worse neighbour (the lower mean) within `factor`: what one grid step off the optimum
    costs, seed by seed (the same seed at both rates: a paired difference)."""
    check_real("factor", factor, 1, open_low=True)
    out = {}
    for method, (choice, runs) in state.items():
        if not choice.settled or choice.rate is None:
            continue
        curve = curve_of(runs)
        best = curve[choice.rate]
        near = [r for r in curve if r != choice.rate and choice.rate / factor * (1 - 1e-9) <= r <= choice.rate * factor * (1 + 1e-9)
                and all(s in curve[r] for s in SELECTION_SEEDS)]
        if not near or not all(s in best for s in SELECTION_SEEDS):
            continue
        worse = min(near, key=lambda r: np.mean([curve[r][s] for s in SELECTION_SEEDS]))
        out[method] = np.array([best[s] - curve[worse][s] for s in SELECTION_SEEDS])
    return out


def flatter(state: dict, method: str = "lora_sb", reference: str = "lora", confidence: float = 0.95) -> dict | None:
    """Does `method` lose less than `reference` one grid step off its chosen rate (LoRA-SB's "no
    tuning" claim at full length)? The difference of the mean step drops (reference minus method)
    with a t interval: the two methods' seeds are independent samples, the standard error combines
    their variances and the quantile takes the smaller sample's S - 1 degrees of freedom (3 seeds:
    4.30, so only a large difference resolves). None if either has no step drop."""
    check_real("confidence", confidence, 0, 1, open_low=True)
    drops = step_drops(state)
    if method not in drops or reference not in drops:
        return None
    a, b = drops[method], drops[reference]
    difference = float(b.mean() - a.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, min(len(a), len(b)) - 1)) * se
    low, high = difference - half, difference + half
    verdict = "flatter" if low > 0 else "less flat" if high < 0 else "not resolved"
    return {"method_drop": float(a.mean()), "reference_drop": float(b.mean()), "difference": difference,
            "low": low, "high": high, "verdict": verdict, "seeds": len(a),
            "confidence": confidence}


def flatter_words(result: dict | None, method: str = "LoRA-SB", reference: str = "LoRA") -> str:
    """One sentence part for `flatter`'s result."""
    if result is None:
        return f"no full-length rate curve of both {method} and {reference} with a neighbour one grid step away"
    return (f"one grid step (x2) from its full-length chosen rate, {method}'s mean validation drops by "
            f"{result['method_drop']:.3f}, {reference}'s by {result['reference_drop']:.3f} ({result['seeds']} seeds per "
            f"rate; {reference} minus {method} {result['difference']:+.3f}, {result['confidence'] * 100:g} % t interval "
            f"{result['low']:+.3f} to "
            f"{result['high']:+.3f}): "
            + (f"{method} is **{result['verdict']}** than {reference}" if result["verdict"] != "not resolved"
               else f"whether {method} is flatter than {reference}: **not resolved**"))
