"""The benchmark (docs/PREREGISTRATION.md): the primary claims on many tasks, rates chosen on
selection seeds, every comparison on held-out seeds, pooled across tasks.

Per task, every primary point (uniform LoRA, GeLoRA, AdaLoRA, LoRA-XS and LoRA-SB at LoRA r = 8's
budget, LoRA-SB at r = 15 and r = 8) has its rate chosen by the study's full-length protocol
(`gelora.study.rates`, validation of seeds 0-2 only). Then three stages train on the held-out
seeds: `heldout` (every point at its chosen rate and at both neighbouring grid rates, the
sensitivity rows) and `null` (uniform LoRA's chosen rate with GeLoRA's allocation, its inversion,
and 20 random allocations at the same budget). The study's two tasks keep their folders, so their
committed full-length runs are the same computations and are read back, never retrained.

    python -m gelora study --benchmark --plan                       # runs and hours per task and stage
    python -m gelora study --benchmark sms-spam --stage select --jobs 2
"""
from __future__ import annotations

import dataclasses
import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gelora.kit.paths import repo_root

PROFILE = Path(__file__).resolve().parent.parent / "profiles" / "benchmark" / "nine-tasks.yaml"
PREREGISTRATION = "docs/PREREGISTRATION.md"
STAGES = ("select", "heldout", "null")
# label -> (method, rank, at the budget?): the primary family's points
POINTS = {"lora": ("lora", 8, True), "gelora": ("gelora", 8, True), "adalora": ("adalora", 8, True),
          "lora_xs": ("lora_xs", 8, True), "lora_sb": ("lora_sb", 8, True),
          "lora_sb@15": ("lora_sb", 15, False), "lora_sb@8": ("lora_sb", 8, False)}
HELDOUT_DIR, NULL_DIR = "heldout", "null"
NEIGHBOUR = 2.0  # the sensitivity rows: each point at its chosen rate / 2 and x 2


@dataclass(frozen=True)
class Task:
    name: str
    data: str  # a shipped dataset name or a folder of train/validation/test CSVs
    folder: Path  # where its runs live
    n_train: int | None
    max_length: int
    from_study: bool  # the study's task: bases and runs read from its committed folder


@dataclass(frozen=True)
class Benchmark:
    tasks: tuple
    model: str
    budget_rank: int
    selection_seeds: tuple
    heldout_seeds: tuple
    random_draws: int
    margin: float
    alpha: float


def _whole(name: str, value, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"benchmark setting {name} must be a whole number >= {low}, got {value!r}")
    return value


def load_benchmark(path: str | Path = PROFILE) -> Benchmark:
    """Read and check a benchmark profile (every value checked here, once)."""
    from gelora.kit.profiles import read_yaml

    profile = read_yaml(Path(path), "benchmark profile")
    if not isinstance(profile, dict):
        raise ValueError(f"benchmark profile {path} must be a mapping of settings")
    root = repo_root()
    expected = {"description", "model", "budget_rank", "selection_seeds", "heldout_seeds", "random_draws", "margin", "alpha",
                "results_dir", "tasks", "task_folders"}
    unknown = sorted(set(profile) - expected)
    if unknown:
        raise ValueError(f"{path}: unknown benchmark setting(s) {unknown}; allowed: {sorted(expected)}")
    selection = tuple(_whole("selection_seeds", s, 0) for s in profile["selection_seeds"])
    heldout = tuple(_whole("heldout_seeds", s, 0) for s in profile["heldout_seeds"])
    from gelora.training.tuning import SELECTION_SEEDS

    if selection != SELECTION_SEEDS:  # the rate protocol chooses on its own seeds: the profile must say them
        raise ValueError(f"{path}: selection_seeds must be the rate protocol's {list(SELECTION_SEEDS)} "
                         f"(gelora.training.tuning), got {list(selection)}")
    if set(selection) & set(heldout) or len(heldout) < 3:
        raise ValueError(f"{path}: heldout_seeds {list(heldout)} must be at least 3 seeds, none of them a selection seed "
                         f"{list(selection)}")
    tasks = []
    for name, spec in (profile.get("tasks") or {}).items():
        spec = dict(spec or {})
        bad = sorted(set(spec) - {"folder", "n_train", "max_length", "data"})
        if bad:
            raise ValueError(f"{path}: task {name}: unknown setting(s) {bad}")
        folder = spec.get("folder")
        tasks.append(Task(name, spec.get("data", name), root / (folder or f"{profile['results_dir']}/{name}"),
                          None if spec.get("n_train") is None else _whole(f"{name}.n_train", spec["n_train"], 1),
                          _whole(f"{name}.max_length", spec.get("max_length", 64), 8), folder is not None))
    if profile.get("task_folders"):
        extra = root / profile["task_folders"]
        for sub in sorted(p for p in extra.iterdir() if p.is_dir()):
            tasks.append(Task(sub.name, str(sub), root / profile["results_dir"] / sub.name, 3000, 128, False))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{path}: task names must be given and distinct, got {names}")
    margin, alpha = profile["margin"], profile["alpha"]
    if not (isinstance(margin, float) and 0 < margin < 1 and isinstance(alpha, float) and 0 < alpha < 1):
        raise ValueError(f"{path}: margin and alpha must be numbers in (0, 1), got {margin!r} and {alpha!r}")
    return Benchmark(tuple(tasks), str(profile["model"]), _whole("budget_rank", profile["budget_rank"], 1), selection, heldout,
                     _whole("random_draws", profile["random_draws"], 20), margin, alpha)


@functools.lru_cache(maxsize=4)
def budget(bench: Benchmark) -> int:
    """Uniform LoRA's trainable adapter parameters at `budget_rank` on query and value of every block
    (the allocation layer's own count, on the benchmark's model)."""
    from gelora.allocation.ranks import uniform_budget
    from gelora.models.loading import load_model
    from gelora.models.targets import block_shapes

    net, _ = load_model(bench.model, "features", seed=0)
    return uniform_budget(block_shapes(net, ["query", "value"]), bench.budget_rank)


def tracks(bench: Benchmark, task: Task) -> list:
    """The task's rate-protocol tracks covering every primary point: for a study task its
    comparison and its efficiency curve's LoRA-SB points (their committed runs), else one track."""
    from gelora.study.plans import efficiency_track
    from gelora.study.rates import Track, base_configs

    if task.from_study:
        comparison = Track(task.folder)
        bases = base_configs(comparison)
        chosen = tuple((label, bases[label]) for label in POINTS if label in bases)
        curve = efficiency_track(task.folder, [(m, r) for label, (m, r, _) in POINTS.items() if "@" in label])
        return [Track(task.folder, points=chosen), curve]
    from gelora.training.config import FinetuneConfig, validate

    total = budget(bench)
    anchors = study_anchors(bench)
    points = []
    for label, (method, rank, at_budget) in POINTS.items():
        config = FinetuneConfig(method=method, dataset=task.data, n_train=task.n_train, max_length=task.max_length,
                                model=bench.model, seed=0, target_modules=["query", "value"], rank=rank,
                                budget=total if at_budget else None, epochs=1.0, batch_size=16, evals=4,
                                output_dir=str(task.folder / "rates"), cache_dir=str(task.folder / "cache"), progress=False)
        validate(config)
        points.append((label, config))
    return [Track(task.folder, results=HELDOUT_DIR, points=tuple(points), anchors=tuple(anchors.items()))]


@functools.lru_cache(maxsize=4)
def study_anchors(bench: Benchmark) -> dict:
    """label -> where a new task's grid starts: the registry's grid rate nearest the geometric mean
    of the rates the study's tasks chose (the grid is the same, only fewer rounds are needed)."""
    import math

    from gelora.methods import registry
    from gelora.training.tuning import grid_rate

    chosen: dict = {}
    for task in bench.tasks:
        if task.from_study:
            for label, (choice, *_) in state(bench, task).items():
                if choice.settled:
                    chosen.setdefault(label, []).append(choice.rate)
    out = {}
    for label, rates in chosen.items():
        default = registry.get_method(POINTS[label][0]).lr
        steps = sum(math.log2(r / default) for r in rates) / len(rates)
        out[label] = grid_rate(default, math.floor(steps + 0.5 - 1e-9))
    return out


def state(bench: Benchmark, task: Task) -> dict:
    """label -> (RateChoice, runs, base config, track) for every primary point of the task."""
    from gelora.study.rates import base_configs, choices

    out = {}
    for track in tracks(bench, task):
        bases = base_configs(track)
        for label, (choice, runs) in choices(track).items():
            if label in POINTS:
                out[label] = (choice, runs, bases[label], track)
    return out


def selection_runs(bench: Benchmark, task: Task) -> list:
    """The selection runs the protocol asks for next (seeds 0-2, validation only)."""
    from gelora.study.rates import selection_configs

    return [c for track in tracks(bench, task) for c in selection_configs(track)]


def heldout_plan(bench: Benchmark, task: Task, current: dict | None = None) -> list[tuple[str, str, object]]:
    """(label, which rate, config) of every held-out run: each settled point at its chosen rate
    ("chosen") and at half and twice it ("half", "double"), x the held-out seeds."""
    from gelora.study.rates import at

    current = current if current is not None else state(bench, task)
    plan = []
    for label, (choice, _, base, _) in current.items():
        if not choice.settled:
            continue
        for which, rate in (("chosen", choice.rate), ("half", choice.rate / NEIGHBOUR), ("double", choice.rate * NEIGHBOUR)):
            plan += [(label, which, at(base, task.folder, HELDOUT_DIR, float(f"{rate:.6g}"), seed)) for seed in bench.heldout_seeds]
    return plan


def heldout_runs(bench: Benchmark, task: Task, current: dict | None = None) -> list:
    """Every settled point at its chosen rate and both neighbouring grid rates x the held-out seeds."""
    return [config for *_, config in heldout_plan(bench, task, current)]


def allocations(bench: Benchmark, base, gelora_ranks: list[int]) -> dict:
    """name -> Allocation at the budget: uniform, GeLoRA's (the ranks its own run trained with),
    their reversal over depth, and `random_draws` random ones (seeded: the study's five draws are
    the first five here)."""
    import transformers

    from gelora.allocation import allocators
    from gelora.allocation.ranks import adapter_params
    from gelora.data.tasks import load_dataset
    from gelora.models.loading import load_model
    from gelora.models.targets import block_shapes

    transformers.utils.logging.disable_progress_bar()
    train = load_dataset(base.dataset, "train")
    model, _ = load_model(base.model, train.task, train.num_labels, seed=0)
    shapes = block_shapes(model, base.target_modules)
    total = budget(bench)
    found = {"uniform": allocators.uniform(shapes, total),
             "gelora": allocators.Allocation("gelora", list(gelora_ranks), adapter_params(shapes, gelora_ranks), total)}
    found["inverted_gelora"] = allocators.inverted(found["gelora"], shapes)
    found.update({a.name: a for a in allocators.random(shapes, total, draws=bench.random_draws, seed=0)})
    return found


def gelora_ranks(current: dict) -> list[int] | None:
    """The per-block ranks GeLoRA trained with on this task (every run of it allocates the same)."""
    import ast

    for record, _ in current["gelora"][1].values():
        allocation = record.get("allocation")
        allocation = ast.literal_eval(allocation) if isinstance(allocation, str) else allocation
        if isinstance(allocation, dict) and allocation.get("ranks"):
            return [int(r) for r in allocation["ranks"]]
    return None


def null_plan(bench: Benchmark, task: Task, current: dict | None = None) -> list[tuple[str, object]]:
    """(allocation name, config): uniform LoRA's chosen rate with each allocation's per-block ranks
    x the held-out seeds (empty until LoRA's rate is settled and GeLoRA has a run)."""
    current = current if current is not None else state(bench, task)
    choice, _, base, _ = current["lora"]
    ranks = gelora_ranks(current)
    if not choice.settled or ranks is None:
        return []
    return [(name, dataclasses.replace(base, method="lora", budget=None, block_ranks=list(allocation.ranks),
                                       lr=float(choice.rate), seed=seed, output_dir=str(task.folder / NULL_DIR), force=False,
                                       progress=False))
            for name, allocation in allocations(bench, base, ranks).items() for seed in bench.heldout_seeds]


def null_runs(bench: Benchmark, task: Task, current: dict | None = None) -> list:
    return [config for _, config in null_plan(bench, task, current)]


def _scores(configs: list, folder: Path, seeds: tuple):
    """seeds x examples scores of these runs (one per seed, in `seeds` order), or None while one is missing."""
    import numpy as np

    from gelora.analysis.results import load_records, paired_scores
    from gelora.training.identity import run_id

    names = [run_id(c) for c in configs]
    if not all((folder / f"{name}.json").is_file() for name in names):
        return None
    records = load_records(folder, run_ids=names)
    (by_seed,) = paired_scores(records, folder).values()
    index = sorted(set.intersection(*(set(series.index) for series in by_seed.values())))
    return np.stack([by_seed[seed].loc[index].to_numpy() for seed in seeds])


def task_scores(bench: Benchmark, task: Task) -> tuple[dict, int | None]:
    """The task's held-out scores for the primary table ({(label, which rate): seeds x examples},
    finished groups only) and its null count (random allocations at least as good as GeLoRA's;
    None while any null run is missing)."""
    from gelora.study.benchmark_answer import rank_count

    current = state(bench, task)
    groups: dict = {}
    for label, which, config in heldout_plan(bench, task, current):
        groups.setdefault((label, which), []).append(config)
    scores = {key: found for key, configs in groups.items()
              if (found := _scores(configs, task.folder / HELDOUT_DIR, bench.heldout_seeds)) is not None}
    allocations_of: dict = {}
    for name, config in null_plan(bench, task, current):
        allocations_of.setdefault(name, []).append(config)
    null = {name: _scores(configs, task.folder / NULL_DIR, bench.heldout_seeds) for name, configs in allocations_of.items()}
    if not null or any(v is None for v in null.values()):
        return scores, None
    draws = [v for name, v in null.items() if name.startswith("random_")]
    return scores, rank_count(null["gelora"], draws)


def projected(bench: Benchmark, stage: str) -> int:
    """Runs a stage will need once a task's rates are settled (the plan's count before that)."""
    if stage == "heldout":
        return len(POINTS) * 3 * len(bench.heldout_seeds)
    if stage == "null":
        return (3 + bench.random_draws) * len(bench.heldout_seeds)
    raise ValueError(f"stage must be 'heldout' or 'null', got {stage!r}")


def preregistered() -> str:
    """The commit of docs/PREREGISTRATION.md; an error when it is missing or has uncommitted changes
    (held-out runs are trained only under a committed pre-registration)."""
    root = repo_root()
    if not (root / PREREGISTRATION).is_file():
        raise RuntimeError(f"{PREREGISTRATION} is missing: the held-out stages train only under a committed pre-registration")
    try:
        # a repository without commits makes `git log` fail: then nothing was committed
        commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", PREREGISTRATION], cwd=root, check=False,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", PREREGISTRATION], cwd=root, check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"cannot read {PREREGISTRATION}'s commit from git: {error}") from error
    if not commit or dirty:
        raise RuntimeError(f"{PREREGISTRATION} has uncommitted changes or was never committed: commit it before any "
                           "held-out run")
    return commit
