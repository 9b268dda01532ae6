"""What every notebook does before its first result: the style, the folders, quiet libraries,
and the task's data and model, so a notebook's cells hold only what it teaches."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import transformers

from gelora.allocation.ranks import uniform_budget
from gelora.data.tasks import load_dataset
from gelora.geometry.twonn import TwoNN
from gelora.kit import plots
from gelora.kit.paths import resolve, shown
from gelora.models.loading import load_model
from gelora.models.targets import block_shapes, default_targets
from gelora.probing.probe import load_profile, probe_dataset, save_profile


def say(text: str) -> None:
    """A result's sentence as prose: rendered Markdown in the notebook and the book, not print
    output in monospace that wraps mid-word."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def setup(run_dir: str, figures_dir: str) -> tuple[Path, Path]:
    """Seaborn style, quiet libraries (no load reports or progress bars in executed notebooks),
    and the run and figures folders (relative paths start at the repository root; no figures
    folder: `<run_dir>/figures`, so a run writes only into its own folder)."""
    plots.set_style()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # A layer without a dimension ([CLS] at the embedding layer is one point repeated) is reported in
    # the profile's note column and in the notebooks' text; the library's warning would repeat it.
    warnings.filterwarnings("ignore", message=r"layer \d+: no intrinsic dimension")
    run = resolve(run_dir)
    figs = resolve(figures_dir) if figures_dir else run / "figures"
    run.mkdir(parents=True, exist_ok=True)
    figs.mkdir(parents=True, exist_ok=True)  # tables are written beside the figures before any figure
    return run, figs


def task_model(model: str, dataset: str, seed: int = 0):
    """The training split of `dataset` and the model fine-tuning starts from (its
    classification, regression or causal-LM variant). Returns (data, model, tokenizer)."""
    data = load_dataset(dataset, "train")
    net, tokenizer = load_model(model, data.task, data.num_labels if data.task == "classification" else None,
                                seed=seed)
    return data, net, tokenizer


def profile_for(run: Path, model: str, dataset: str, n_examples: int, pooling: str = "mean",
                max_length: int = 64, seed: int = 0, log=print, precision: str | None = None):
    """The run's ID profile: read from run/id_profile.csv (notebook 01 writes it), else probed
    now on a seeded subset of the training texts (the forward in `precision`, as `hidden_states`
    takes it) and written there."""
    path = Path(run) / "id_profile.csv"
    if path.exists():
        if log:
            log(f"read {shown(path)}")
        return load_profile(path), path
    profile = probe_dataset(model, dataset, n_examples, pooling=pooling, max_length=max_length, seed=seed,
                            cache_dir=Path(run) / "cache", estimator=TwoNN(random_state=seed), progress=False,
                            precision=precision)
    save_profile(profile, path)
    if log:
        log(f"computed the profile ({pooling} pooling, {n_examples} texts) and wrote {shown(path)}")
    return profile, path


def budget_for(net, target_modules, reference_rank: int, budget: int | None = None) -> tuple[list[str], int]:
    """The targets (PEFT's default when None) and the budget: `budget` if given, else what
    uniform LoRA of `reference_rank` trains on them."""
    targets = list(target_modules or default_targets(net))
    if budget is None:
        budget = uniform_budget(block_shapes(net, targets), reference_rank)
    return targets, budget


def require(run: Path, needed: dict[str, str]) -> None:
    """Raise, naming what is missing, unless every file or folder of `needed` (name -> the notebook
    that writes it) exists in the run folder."""
    missing = [f"{name} (notebook {nb})" for name, nb in needed.items() if not (Path(run) / name).exists()]
    if missing:
        raise FileNotFoundError(f"{run} lacks {missing}: run those notebooks first")
