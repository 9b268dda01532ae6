"""Result records (one JSON per run) as tables: per run, per method (mean and spread over seeds),
and the training curves, for notebooks 04 and 05."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from gelora.methods import registry as methods
from gelora.models.targets import block_index


def load_records(results_dir: str | os.PathLike, run_ids=None) -> list[dict]:
    """Every run record under a folder (temporary files of interrupted writes are ignored), or
    only those of `run_ids` (the runs of one grid: older records of other settings stay out)."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no results folder {folder}")
    paths = sorted(folder.glob("*.json"))
    if run_ids is not None:
        wanted = set(run_ids)
        missing = sorted(wanted - {p.stem for p in paths})
        if missing:
            raise FileNotFoundError(f"{folder} lacks the record(s) {missing[:4]}{' ...' if len(missing) > 4 else ''}: "
                                    "rerun notebook 04")
        paths = [p for p in paths if p.stem in wanted]
    records = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a valid record ({error}): delete it and rerun that run") from None
        if not isinstance(record, dict) or not {"run_id", "method", "seed", "test"} <= set(record):
            raise ValueError(f"{path} is not a gelora run record: move it out of {folder}")
        check_record(record, path)
        records.append(record)
    return records


_CHECKED: dict = {}  # (path, size, mtime) of a record and its sidecar -> checked


def check_record(record: dict, path: Path) -> None:
    """A record read back must be the run its name says: its name is its file's, its identity
    hashes to the name's last part, the identity's dataset, model, method and seed are the record's
    own, its prediction sidecar has the sha256 it names, and (classification) the sidecar's
    per-example scores average to the test metric it reports. An edited record is an error naming
    what differs, never a number in a table."""
    from gelora.training.identity import identity_digest

    sidecar = path.parent / record["predictions"]["file"] if isinstance(record.get("predictions"), dict) else None
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (path, sidecar) if p is not None and p.exists())
    if key in _CHECKED:
        return
    problem = None
    identity = record.get("identity")
    if record["run_id"] != path.stem:
        problem = f"its run_id {record['run_id']!r} is not its file name"
    elif not isinstance(identity, dict) or identity_digest(identity) != str(record["run_id"]).rsplit("__", 1)[-1]:
        problem = "its identity does not hash to its name (edited after the run?)"
    else:
        settings = identity.get("settings", {})
        differ = [k for k in ("dataset", "model", "method", "seed") if settings.get(k) != record.get(k)]
        if differ:
            problem = f"its {', '.join(differ)} differ from the identity it was trained under"
    if problem is None and sidecar is not None:
        problem = _sidecar_problem(record, sidecar)
    if problem is not None:
        raise ValueError(f"{path}: {problem}; a record is read only as its run wrote it (rerun the run, or restore "
                         "the file from git)")
    _CHECKED[key] = True


def _sidecar_problem(record: dict, sidecar: Path) -> str | None:
    from gelora.data.tasks import file_sha256

    if not sidecar.is_file():
        return f"its prediction file {sidecar.name} is missing"
    if file_sha256(sidecar) != record["predictions"].get("sha256"):
        return f"its prediction file {sidecar.name} does not have the sha256 the record names"
    if record.get("task") == "classification":
        with np.load(sidecar) as data:
            mean = float(data["score"].mean())
        reported = record["test"].get(record.get("metric"))
        if reported is None or abs(mean - reported) > 1e-6:
            return (f"its test {record.get('metric')} {reported} is not the mean of its per-example scores "
                    f"({mean:.6f})")
    return None


def runs_table(records: list[dict]) -> pd.DataFrame:
    """One row per run: method, seed, validation and test metric, parameters, time, memory."""
    if not records:
        raise ValueError("no result records to tabulate")
    runs: dict = {}
    for r in records:
        runs.setdefault((r["dataset"], r["model"], r["method"], r["seed"]), []).append(r["run_id"])
    mixed = {key: ids for key, ids in runs.items() if len(ids) > 1}
    if mixed:
        (dataset, model, method, seed), ids = next(iter(mixed.items()))
        raise ValueError(f"{len(ids)} runs of {method} seed {seed} ({dataset}, {model}) with different settings: "
                         f"{ids[:4]}; tabulating them together would mix results. Keep one run per method and "
                         "seed in the folder (move older records away, or use a new run_dir)")
    rows = []
    for r in records:
        metric = r["metric"]
        rows.append({
            "method": r["method"], "seed": r["seed"], "dataset": r["dataset"], "model": r["model"],
            "metric": metric, "validation": r["final"][metric], "best_validation": r["best"][metric],
            "test": r["test"].get(metric, np.nan), "adapter_params": r["adapter_params"],
            "head_params": r["head_params"], "trainable_params": r["trainable_params"],
            "effective_adapter_params": r.get("effective_adapter_params", r["adapter_params"]),
            "total_params": r["total_params"], "train_time_s": r["train_time_s"], "wall_time_s": r["wall_time_s"],
            "init_time_s": r.get("init_time_s", 0.0), "peak_memory_mb": r["peak_memory_mb"], "lr": r["lr"],
            "steps": r["steps"], "device": r["device"], "run_id": r["run_id"],
        })
    return pd.DataFrame(rows)


def summary_table(runs: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """Per method: trainable parameters, seeds, and mean / std over seeds of the metric, time and
    memory, in `order` (default: the registry's). Parameter counts must agree across seeds (they
    do unless a config changed)."""
    grouped = runs.groupby("method")
    table = pd.DataFrame({
        "adapter_params": grouped["adapter_params"].median().astype(int),
        "effective_adapter_params": grouped["effective_adapter_params"].median().astype(int),
        "trainable_params": grouped["trainable_params"].median().astype(int),
        "seeds": grouped["seed"].apply(lambda s: ",".join(str(x) for x in sorted(s))),
        "n_seeds": grouped.size(),
        "validation_mean": grouped["validation"].mean(), "validation_std": grouped["validation"].std(ddof=1),
        "test_mean": grouped["test"].mean(), "test_std": grouped["test"].std(ddof=1),
        "train_time_s": grouped["train_time_s"].mean(), "init_time_s": grouped["init_time_s"].mean(),
        "peak_memory_mb": grouped["peak_memory_mb"].mean(),
    })
    order = order or methods.order(table.index)
    if order:
        table = table.reindex([m for m in order if m in table.index] + [m for m in table.index if m not in order])
    return table.reset_index()


def to_markdown(summary: pd.DataFrame, metric: str = "accuracy") -> str:
    """The summary as a Markdown table (mean ± std over seeds)."""
    view = pd.DataFrame({
        "method": summary["method"],
        "trainable adapter params": [f"{a:,}" if a == e else f"{a:,} ({e:,} after pruning)"
                                     for a, e in zip(summary["adapter_params"], summary["effective_adapter_params"])],
        "seeds": summary["seeds"],
        f"validation {metric}": [f"{m:.4f} ± {s:.4f}" if np.isfinite(s) else f"{m:.4f}"
                                 for m, s in zip(summary["validation_mean"], summary["validation_std"])],
        f"test {metric}": [f"{m:.4f} ± {s:.4f}" if np.isfinite(s) else f"{m:.4f}"
                           for m, s in zip(summary["test_mean"], summary["test_std"])],
        "train time (s)": summary["train_time_s"].map("{:.1f}".format),
        "peak memory (MB)": summary["peak_memory_mb"].map("{:.0f}".format),
    })
    return view.to_markdown(index=False)


def curves(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long tables of the training loss and the validation metric per step, method and seed (for
    generation: the response tokens predicted right, what the evaluations during training compute;
    exact match is scored at the end only)."""
    loss = pd.DataFrame([{"method": r["method"], "seed": r["seed"], **point}
                         for r in records for point in r["train_loss"]])
    tracked = {r["run_id"]: "accuracy" if r.get("task") == "generation" else r["metric"] for r in records}
    evals = pd.DataFrame([{"method": r["method"], "seed": r["seed"], "step": e["step"],
                           "value": e[tracked[r["run_id"]]], "metric": tracked[r["run_id"]]}
                          for r in records for e in r["evals"]])
    return loss, evals


def ranks_by_block(records: list[dict]) -> pd.DataFrame:
    """Rank per block for each method (its lowest seed): the allocation for LoRA, GeLoRA and the
    LoRA-SB family, the realised ranks for EVA and the ranks AdaLoRA kept after pruning (both
    averaged over the modules of a block). Full fine-tuning has no rank and is left out."""
    first: dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        first.setdefault(r["method"], r)
    rows = []
    for method, r in first.items():
        ranks = r.get("final_ranks") or r.get("ranks")  # AdaLoRA: the ranks kept after pruning
        if not ranks or (method in methods.REGISTRY and methods.get_method(method).family == "full"):
            continue
        per_block: dict[int, list] = {}
        for key, value in ranks.items():
            block = int(key) if str(key).isdigit() else block_index(key)
            if block is not None:
                per_block.setdefault(block, []).append(value)
        rows += [{"method": method, "block": b, "rank": float(np.mean(v))} for b, v in sorted(per_block.items())]
    return pd.DataFrame(rows, columns=["method", "block", "rank"])


# The papers' comparisons, each as (claim, method, reference, what the paper reports).
CLAIMS = [
    ("GeLoRA vs uniform LoRA, equal budget", "gelora", "lora",
     "GeLoRA: ahead of LoRA baselines, up to +1.0 point (DeBERTaV3-base, GLUE)"),
    ("GeLoRA vs AdaLoRA, equal budget", "gelora", "adalora",
     "GeLoRA: up to +1.0 point over adaptive LoRA (DeBERTaV3-base, GLUE)"),
    ("GeLoRA vs EVA, equal budget", "gelora", "eva", "not compared in either paper: the kit's own question"),
    ("LoRA-SB vs LoRA-XS, equal parameters", "lora_sb", "lora_xs",
     "LoRA-SB: better than LoRA-XS (RoBERTa-large GLUE, Mistral-7B GSM8K)"),
    ("LoRA-SB vs LoRA, equal budget", "lora_sb", "lora",
     "LoRA-SB: better than LoRA with 27-90x fewer parameters"),
]


SCORED_AS_MEAN = ("accuracy", "exact_match")  # metrics that are the mean of the per-example 0/1 scores


def paired_scores(records: list[dict], results_dir: str | os.PathLike) -> dict[str, dict[int, pd.Series]]:
    """Per method and seed, the per-example test scores of its prediction sidecar (checked
    against the sha256 in the record, and against the record's own metric where that is the mean
    score), indexed by (split, example position, label), so that only the same examples pair."""
    from gelora.data.tasks import file_sha256

    out: dict = {}
    for r in records:
        entry = r.get("predictions")
        if not entry:
            raise ValueError(f"record {r['run_id']} has no predictions: rerun it with this version of gelora")
        path = Path(results_dir) / entry["file"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
            raise ValueError(f"{path} is missing or does not match the sha256 in its record: rerun {r['run_id']}")
        with np.load(path) as stored:
            score, index, label = stored["score"], stored["index"], stored["label"]
        metric = r.get("metric")
        if metric in SCORED_AS_MEAN and metric in r.get("test", {}) and abs(float(score.mean()) - r["test"][metric]) > 1e-6:
            raise ValueError(f"record {r['run_id']} says test {metric} {r['test'][metric]:.6f} but its predictions "
                             f"give {score.mean():.6f}: the record was edited after its predictions; rerun it")
        if r["seed"] in out.get(r["method"], {}):
            raise ValueError(f"two records of {r['method']} seed {r['seed']} in {results_dir}: keep one")
        split = (r.get("config") or {}).get("test_split", "test")
        keys = pd.MultiIndex.from_arrays([np.full(len(index), split), index, label.astype(str)],
                                         names=["split", "example", "label"])
        out.setdefault(r["method"], {})[r["seed"]] = pd.Series(score, index=keys)
    return out


def paired_arrays(first: dict[int, pd.Series], second: dict[int, pd.Series]):
    """Two methods' per-example scores (seed -> Series by example) on the seeds both have and the
    test examples every one of those runs scored (the same split, position and label): (a, b as
    seeds x examples, seeds, examples). Examples that share a position but not a split or a label
    are different examples: an error, never a pair."""
    seeds = sorted(set(first) & set(second))
    if not seeds:
        return None, None, [], []
    runs = [runs[s] for runs in (first, second) for s in seeds]
    positions = [set(run.index.get_level_values("example") if isinstance(run.index, pd.MultiIndex) else run.index)
                 for run in runs]
    keys = [set(run.index) for run in runs]
    common = sorted(set.intersection(*keys))
    if len(common) < len(set.intersection(*positions)):
        raise ValueError(f"the runs compared score different examples at the same positions (another split or other "
                         f"labels: {len(set.intersection(*positions)) - len(common)} position(s) differ); compare runs "
                         "scored on the same test split")
    a = np.stack([first[s].loc[common].to_numpy() for s in seeds])
    b = np.stack([second[s].loc[common].to_numpy() for s in seeds])
    return a, b, seeds, common


def claims_table(records: list[dict], results_dir: str | os.PathLike, confidence: float = 0.95) -> pd.DataFrame:
    """Each claim of CLAIMS whose two methods were run: the paired difference on the seeds both
    have and the test examples both scored, its `stats.paired_interval`, the verdict, the smallest
    difference these seeds and examples detect (80 % power), the seeds a 1-point difference would
    need, and the seeds one method has and the other lacks (left out, named)."""
    from gelora.analysis.stats import paired_interval

    scores = paired_scores(records, results_dir)
    rows = []
    for claim, method, reference, paper in CLAIMS:
        if method not in scores or reference not in scores:
            continue
        a, b, seeds, common = paired_arrays(scores[method], scores[reference])
        if not seeds:
            continue
        result = paired_interval(a, b, confidence)
        left_out = sorted(set(scores[method]) ^ set(scores[reference]))
        rows.append({"claim": claim, "method": method, "reference": reference, "difference": result.difference,
                     "low": result.low, "high": result.high, "resolution": result.resolution,
                     "verdict": result.verdict, "detectable": result.detectable, "floor": result.floor,
                     "seeds_for_1pt": result.seeds_for(0.01), "seed_part": result.seed_part,
                     "example_part": result.example_part, "seeds": ",".join(map(str, seeds)),
                     "seeds_left_out": ",".join(map(str, left_out)), "examples": len(common), "paper": paper})
    return pd.DataFrame(rows)
