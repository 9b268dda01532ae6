"""What each exercise should show, as a check on its outputs against the profile's own run.

An exercise reruns one notebook with a changed parameter; its answer is a claim about how the
outputs move. Each function here reads the exercise's folder and the unchanged run's folder,
measures that movement and says whether the claim holds, so SOLUTIONS.md states measured numbers
(`python -m gelora exercises --measure`) and a wrong answer fails a test instead of misleading a
class.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Check:
    """One exercise measured: the numbers, the sentence that states them, the claim and its result."""

    values: dict
    observed: str
    claim: str
    holds: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _read(folder: Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the exercise (and the profile's own run) first")
    return path


def _json(folder: Path, name: str) -> dict:
    return json.loads(_read(folder, name).read_text())


def fewer_texts(folder: Path, baseline: Path) -> Check:
    """Halving the probed texts widens the intervals by about sqrt(2), not 2."""
    ex, base = (pd.read_csv(_read(f, "id_profile.csv")) for f in (folder, baseline))
    width = lambda t: float((t["ci_high"] - t["ci_low"]).mean())
    ratio, points = width(ex) / width(base), float(base["n_points"].iloc[0] / ex["n_points"].iloc[0])
    rises = lambda t: [k for k in range(len(t) - 1) if t["dimension"].iloc[k + 1] > t["dimension"].iloc[k]]
    holds = 1 < ratio < points and abs(ratio - points ** 0.5) < abs(ratio - points)
    return Check({"width_ratio": ratio, "points_ratio": points, "rises": rises(ex), "rises_before": rises(base)},
                 f"with {points:.2f} times fewer points the mean interval of the profile widened {ratio:.2f} times "
                 f"(square root of the ratio: {points ** 0.5:.2f}); the ID rises after layer(s) {rises(ex) or 'none'} "
                 f"(before: {rises(base) or 'none'})",
                 "the intervals widen, by a factor nearer the square root of the ratio of sample sizes than the ratio",
                 bool(holds))


def _width(interval: str) -> float:
    low, high = (float(x) for x in interval.split(" to "))
    return high - low


def small_manifolds(folder: Path, baseline: Path) -> Check:
    """With fewer points the 20-dimensional Gaussian still reads well below 20, with a wider
    interval; the 2-dimensional manifolds stay near 2."""
    ex, base = (pd.read_csv(_read(f, "synthetic_ids.csv")).set_index("manifold") for f in (folder, baseline))
    gauss = "Gaussian d=20 in R^100"
    flat = [m for m in ex.index if ex.loc[m, "true d"] == 2 and "noise" not in m]
    low, high = float(ex.loc[flat, "linear fit"].min()), float(ex.loc[flat, "linear fit"].max())
    now, before = float(ex.loc[gauss, "linear fit"]), float(base.loc[gauss, "linear fit"])
    width, width_before = _width(ex.loc[gauss, "95% interval"]), _width(base.loc[gauss, "95% interval"])
    holds = max(now, before) < 19 and width > width_before and 1.7 <= low and high <= 2.3
    return Check({"gaussian20": now, "gaussian20_before": before, "interval_width": width,
                  "interval_width_before": width_before, "two_d_low": low, "two_d_high": high},
                 f"the 20-dimensional Gaussian reads {now:.2f} (interval {ex.loc[gauss, '95% interval']}; before "
                 f"{before:.2f}, interval {base.loc[gauss, '95% interval']}); the noise-free 2-dimensional manifolds "
                 f"read {low:.2f} to {high:.2f}",
                 "the 20-dimensional Gaussian reads more than 1 below 20 with both numbers of points and its interval "
                 "is wider with fewer; the 2-d manifolds read within 0.3 of 2", bool(holds))


def _distance_to_uniform(payload: dict) -> int:
    return int(sum(abs(r - payload["reference_rank"]) for r in payload["allocation"]["ranks"]))


def large_offset(folder: Path, baseline: Path) -> Check:
    """A larger offset pulls the budgeted ranks towards uniform LoRA."""
    ex, base = _json(folder, "ranks.json"), _json(baseline, "ranks.json")
    now, before = _distance_to_uniform(ex), _distance_to_uniform(base)
    return Check({"ranks": ex["allocation"]["ranks"], "ranks_before": base["allocation"]["ranks"],
                  "distance": now, "distance_before": before},
                 f"ranks {ex['allocation']['ranks']} (before {base['allocation']['ranks']}); summed distance from "
                 f"uniform r = {ex['reference_rank']}: {now} (before {before})",
                 "the ranks are no further from uniform than before", now <= before)


def _noise_decided(folder: Path) -> int:
    return int((pd.read_csv(_read(folder, "rank_intervals.csv"))["p_same_rank"] < 0.95).sum())


def small_budget(folder: Path, baseline: Path) -> Check:
    """A quarter of the budget: ranks shrink about fourfold (whole numbers), noise still decides some."""
    ex, base = _json(folder, "ranks.json"), _json(baseline, "ranks.json")
    shrink = sum(base["allocation"]["ranks"]) / max(sum(ex["allocation"]["ranks"]), 1)
    budgets = base["budget"] / ex["budget"]
    noisy, noisy_before = _noise_decided(folder), _noise_decided(baseline)
    return Check({"ranks": ex["allocation"]["ranks"], "ranks_before": base["allocation"]["ranks"], "shrink": shrink,
                  "budget_ratio": budgets, "noise_decided": noisy, "noise_decided_before": noisy_before},
                 f"ranks {ex['allocation']['ranks']} (before {base['allocation']['ranks']}): their sum shrank "
                 f"{shrink:.2f} times for a {budgets:.0f} times smaller budget; blocks whose rank changes in more "
                 f"than 5 % of the resamples: {noisy} (before {noisy_before})",
                 "the summed rank shrinks by the budget's factor within 25 %", abs(shrink / budgets - 1) <= 0.25)


def _error_at(payload: dict) -> tuple[int, float]:
    errors = pd.DataFrame(payload["truncation_error"])
    grid = np.array(sorted(errors["rank"].unique()))
    used = int(grid[np.abs(grid - payload["rank"]).argmin()])
    return used, float(errors[errors["rank"] == used]["error"].mean())


def larger_core(folder: Path, baseline: Path) -> Check:
    """A rank-32 core keeps more of the first step, and trains (32/8)^2 = 16 times the core parameters."""
    ex, base = _json(folder, "lora_sb_init.json"), _json(baseline, "lora_sb_init.json")
    (rank, error), (rank_before, error_before) = _error_at(ex), _error_at(base)
    matrices = len(ex["singular_values"])
    added = ex["trainable_params"]["lora_sb"] - base["trainable_params"]["lora_sb"]
    expected = matrices * (ex["rank"] ** 2 - base["rank"] ** 2)
    return Check({"error": error, "rank": rank, "error_before": error_before, "rank_before": rank_before,
                  "core_params_per_matrix": ex["rank"] ** 2, "added_params": added},
                 f"relative truncation error {error:.3f} at r = {rank} (before {error_before:.3f} at r = {rank_before}); "
                 f"the core trains {ex['rank'] ** 2:,} parameters per matrix, {added:,} more over {matrices} matrices",
                 "the error falls but stays above 0, and the trainable count grows by matrices x (r^2 - 8^2) exactly",
                 bool(0 < error < error_before and added == expected))


def longer_start(folder: Path, baseline: Path) -> Check:
    """LoRA-SB's start is ahead at step 0; after more steps its lead over LoRA-XS shrinks."""
    curves = pd.DataFrame(_json(folder, "lora_sb_init.json")["first_steps"]).pivot(index="step", columns="method",
                                                                                    values="loss")
    lead = lambda row: float(row["lora_xs"] - row["lora_sb"])  # positive: LoRA-SB's loss is lower
    first, last = curves.iloc[0], curves.iloc[-1]
    order = lambda row: list(row.sort_values().index)
    return Check({"steps": int(curves.index[-1]), "lead_at_start": lead(first), "lead_at_end": lead(last),
                  "order_at_start": order(first), "order_at_end": order(last)},
                 f"LoRA-SB's loss is {lead(first):+.4f} below LoRA-XS's at step 0 and {lead(last):+.4f} at step "
                 f"{int(curves.index[-1])}; order by loss at step 0: {', '.join(order(first))}; at the end: "
                 f"{', '.join(order(last))}",
                 "LoRA-SB starts ahead of LoRA-XS, and its lead at the last step is smaller than at step 0",
                 bool(lead(first) > 0 and lead(last) < lead(first)))


def _runs(folder: Path) -> pd.DataFrame:
    return pd.read_csv(_read(folder, "runs.csv"))


def sweep_two(folder: Path, baseline: Path) -> Check:
    """LoRA and GeLoRA share a parametrisation, so their best rates (by validation) lie close."""
    runs = pd.read_csv(_read(folder, "lr_sweep.csv"))  # the sweep's runs, one per method and rate
    best = {m: float(g.loc[g["validation"].idxmax(), "lr"]) for m, g in runs.groupby("method")}
    table = {m: {f"{r:g}": float(v) for r, v in g.set_index("lr")["validation"].items()} for m, g in runs.groupby("method")}
    steps = abs(np.log(best["gelora"] / best["lora"])) / np.log(5)
    return Check({"best_rate": best, "validation": table},
                 "best rate by validation: " + ", ".join(f"{m} {r:g}" for m, r in best.items())
                 + "; validation per rate: " + "; ".join(f"{m} " + ", ".join(f"{r}: {v:.3f}" for r, v in t.items())
                                                         for m, t in table.items()),
                 "the two methods' best rates are the same or neighbours on the x5 grid", bool(steps <= 1 + 1e-9))


def quarter_budget(folder: Path, baseline: Path) -> Check:
    """At a quarter of the budget LoRA drops to r = 2 and LoRA-SB's core to about half its width."""
    records = {m: json.loads((Path(folder) / "results" / f"{i}.json").read_text())
               for m, i in _runs(folder).set_index("method")["run_id"].items()}
    before = {m: json.loads((Path(baseline) / "results" / f"{i}.json").read_text())
              for m, i in _runs(baseline).set_index("method")["run_id"].items() if m in records}
    core = lambda r: max(r["ranks"].values())  # the rank per block the budget gave (uniform for both)
    ratio = core(records["lora_sb"]) / core(before["lora_sb"])
    tests = {m: float(r["test"][r["metric"]]) for m, r in records.items()}
    tests_before = {m: float(r["test"][r["metric"]]) for m, r in before.items()}
    return Check({"core": core(records["lora_sb"]), "core_before": core(before["lora_sb"]), "lora_rank":
                  core(records["lora"]), "test": tests, "test_before": tests_before},
                 f"LoRA-SB's core r = {core(records['lora_sb'])} (before {core(before['lora_sb'])}), LoRA r = "
                 f"{core(records['lora'])}; test " + ", ".join(f"{m} {v:.4f} (before {tests_before[m]:.4f})"
                                                               for m, v in tests.items()),
                 "the core shrinks to between 0.4 and 0.6 of its width (the square root of a quarter is 0.5)",
                 bool(0.4 <= ratio <= 0.6 and core(records["lora"]) == 2))


def validation_split(folder: Path, baseline: Path) -> Check:
    """The order of the methods by their mean on one split against the other."""
    table = pd.read_csv(_read(Path(folder) / "figures", "results_table.csv"))
    means = {s: table.set_index("method")[f"{s}_mean"] for s in ("validation", "test")}
    methods = list(means["test"].index)
    pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
    swapped = [(a, b) for a, b in pairs if np.sign(means["test"][a] - means["test"][b])
               != np.sign(means["validation"][a] - means["validation"][b])]
    adapters = [m for m in methods if m != "full"]
    span = {s: float(means[s][adapters].max() - means[s][adapters].min()) for s in means}
    return Check({"swapped_pairs": [list(p) for p in swapped], "pairs": len(pairs), "span": span},
                 f"{len(swapped)} of {len(pairs)} pairs of methods change order from test to validation"
                 + (f" ({', '.join(f'{a}/{b}' for a, b in swapped)})" if swapped else "")
                 + f"; the adapters span {span['test']:.3f} on test and {span['validation']:.3f} on validation",
                 "the adapters lie within 0.05 of each other on both splits (one seed cannot order them)",
                 bool(max(span.values()) < 0.05))


def fewer_formats(folder: Path, baseline: Path) -> Check:
    """Only PNG figures are written into the exercise's own folder."""
    figures = Path(folder) / "figures"
    suffixes = sorted({p.suffix for p in _read(folder, "figures").iterdir() if p.is_file()})
    pngs = len(list(figures.glob("*.png")))
    return Check({"suffixes": suffixes, "png": pngs},
                 f"the folder holds {pngs} PNG figure(s) and files of kinds {', '.join(suffixes)}",
                 "at least one PNG and no PDF", bool(pngs > 0 and ".pdf" not in suffixes))


def _needs(folder: Path) -> pd.DataFrame:
    return pd.read_csv(_read(Path(folder) / "figures", "bound_vs_need.csv"))


def stricter_need(folder: Path, baseline: Path) -> Check:
    """The 99 % energy rank is at least the 90 % one in every block, so the bound's verdict stays."""
    table = _needs(folder)
    grows = bool((table["energy_rank_99"] >= table["energy_rank_90"]).all())
    below = lambda need: int((table["bound_high"] <= table[need]).sum())
    return Check({"blocks": len(table), "below_90": below("energy_rank_90"), "below_99": below("energy_rank_99"),
                  "max_bound": float(table["bound_high"].max()), "min_need_90": float(table["energy_rank_90"].min())},
                 f"in all {len(table)} blocks of both tasks the 99 % need is at least the 90 % one "
                 f"({table['energy_rank_99'].min():.0f} to {table['energy_rank_99'].max():.0f} against "
                 f"{table['energy_rank_90'].min():.0f} to {table['energy_rank_90'].max():.0f}); the bound's upper end "
                 f"is below the need in {below('energy_rank_99')} blocks at 99 % and {below('energy_rank_90')} at 90 %; "
                 f"the largest bound is {table['bound_high'].max():.2f}",
                 "the need grows in every block (so a bound below the 90 % need is below the 99 % one too)", grows)


def stable_rank(folder: Path, baseline: Path) -> Check:
    """The stable rank is far below the energy ranks: the one need a small bound could exceed."""
    table = _needs(folder)
    above = int((table["bound_high"] > table["stable_rank"]).sum())
    smaller = bool((table["stable_rank"] < table["energy_rank_90"]).all())
    return Check({"blocks": len(table), "bound_above_stable_rank": above,
                  "stable_rank_low": float(table["stable_rank"].min()), "stable_rank_high": float(table["stable_rank"].max())},
                 f"stable ranks {table['stable_rank'].min():.1f} to {table['stable_rank'].max():.1f} against 90 % "
                 f"energy ranks {table['energy_rank_90'].min():.0f} to {table['energy_rank_90'].max():.0f}; the "
                 f"bound's upper end exceeds the stable rank in {above} of {len(table)} blocks",
                 "the stable rank is below the 90 % energy rank in every block", smaller)


CHECKS = {"01-fewer-texts": fewer_texts, "01-small-manifolds": small_manifolds, "02-large-offset": large_offset,
          "02-small-budget": small_budget, "03-larger-core": larger_core, "03-longer-start": longer_start,
          "04-sweep-two": sweep_two, "04-quarter-budget": quarter_budget, "05-validation-split": validation_split,
          "05-fewer-formats": fewer_formats, "06-stricter-need": stricter_need, "06-stable-rank": stable_rank}
