"""Every setting of a fine-tuning run, its help text and its checks (no I/O: the run's identity,
which reads files and weights, is gelora.training.identity).

Each field carries a one-line help and a group (data, model, method, optimisation, output), shown
by `python -m gelora train --help`. The identity of a run is every setting that decides its
numbers; a record is named by a hash of it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gelora.core.checks import check_real, check_whole
from gelora.core.plan import world_size
from gelora.methods.registry import get_method

GROUPS = ("data", "model", "method", "optimisation", "output")
def setting(default, group: str, help: str):
    """A config field with its help text and its group on the command line."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}")
    return field(default=default, metadata={"group": group, "help": help})


@dataclass
class FinetuneConfig:
    """Every setting of a run; all of it is written to the result record."""

    method: str = setting(None, "method", "the method (see gelora.methods.registry.names()); required")
    dataset: str = setting("movie-sentiment", "data", "shipped dataset, local .csv/.jsonl file or folder, or hf:glue/<task>")
    task: str | None = setting(None, "data", "None: the dataset's own task; 'generation' turns labels into responses")
    text_column: str = setting("text", "data", "text column of your own table (GLUE's names are found when it is 'text')")
    label_column: str = setting("label", "data", "label column of your own table: class names or ids, or numbers (regression)")
    n_train: int | None = setting(None, "data", "training examples, a seeded subset (None: the whole split)")
    n_eval: int | None = setting(None, "data", "validation examples scored during training (None: all)")
    n_test: int | None = setting(None, "data", "test examples scored at the end (None: all)")
    test_split: str = setting("test", "data", "split scored at the end ('validation' for GLUE, whose test labels are hidden)")
    max_length: int = setting(64, "data", "tokens kept per text")
    generation_template: str = setting("Text: {text}\nLabel:", "data", "prompt of the generation view of a classification task")
    prompt_format: str = setting("auto", "data", "generation: auto (the model's chat template if it has one) | chat | plain")
    max_new_tokens: int = setting(48, "data", "generation: tokens generated per answer when exact match is scored")
    model: str = setting("minilm", "model", "'minilm' (packaged), 'tiny-bert', 'tiny-deberta', 'tiny-llama', "
                         "a hub id (id@commit pins the revision), a local folder")
    seed: int = setting(0, "model", "seeds the data subset, the head, the adapter and the training order")
    target_modules: list[str] | None = setting(None, "method", "adapted matrices by name (None: PEFT's default for the architecture)")
    rank: int = setting(8, "method", "rank of the uniform methods (AdaLoRA: target_r) when no budget is given")
    budget: int | None = setting(None, "method", "trainable adapter parameters to match, head excluded (overrides rank)")
    block_ranks: list[int] | None = setting(None, "method", "lora only: the rank of every block, block 0 first (0: not adapted; "
                                            "None: rank everywhere); the per-block rank sweep")
    profile: str | None = setting(None, "method", "ID profile CSV for gelora / gelora_sb (None: probe the training texts now)")
    probe_examples: int = setting(1000, "method", "texts probed when the ID profile is computed here")
    probe_pooling: str = setting("mean", "method", "pooling of that probe: cls | mean | last | tokens")
    gelora_offset: float = setting(1.0, "method", "added to every GeLoRA bound before scaling to the budget")
    gelora_min_rank: int = setting(0, "method", "smallest GeLoRA rank of a block (0: a block may stay unadapted)")
    gelora_max_rank: int | None = setting(None, "method", "largest GeLoRA rank (None: the smaller side of the matrix)")
    gelora_rounding: str = setting("ceil", "method", "rounding of the bounds without a budget: ceil | round | floor")
    lora_scale: float = setting(2.0, "method", "LoRA scaling alpha / r (alpha = scale * r)")
    dropout: float = setting(0.0, "method", "dropout on the adapter input")
    sb_num_samples: int = setting(64, "method", "examples in the gradient estimate of LoRA-SB, GeLoRA-SB, LoRA-GA (at most; recorded)")
    sb_init_lr: float | None = setting(None, "method", "first-step lr that scales the LoRA-SB update (None: lr / warm-up steps)")
    eva_examples: int = setting(256, "method", "examples in EVA's activation pass (at most: the training set if smaller; recorded)")
    adalora_orth_reg: float = setting(0.1, "method", "AdaLoRA's orthogonality penalty (its paper's GLUE value; PEFT: 0.5)")
    epochs: float = setting(1.0, "optimisation", "passes over the training examples")
    batch_size: int = setting(16, "optimisation", "examples per optimiser step: the global batch, over all processes and accumulation")
    group_by_length: bool = setting(True, "optimisation", "batches of similar lengths, evaluation sorted by length (little padding)")
    gradient_accumulation: int = setting(1, "optimisation", "micro-batches per optimiser step (batch_size stays the global batch)")
    lr: float | None = setting(None, "optimisation", "peak learning rate (None: the method's default in the registry)")
    weight_decay: float = setting(0.0, "optimisation", "AdamW weight decay")
    warmup_ratio: float = setting(0.06, "optimisation", "fraction of the steps with a linear warm-up")
    evals: int = setting(4, "optimisation", "evaluations on the validation split during training")
    processes: int | None = setting(None, "optimisation", "processes of the run (None: as launched; given: collect such records)")
    device: str = setting("auto", "optimisation", "auto | cpu | cuda")
    precision: str = setting("auto", "optimisation", "auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")
    output_dir: str = setting("runs/results", "output", "folder of the JSON records")
    cache_dir: str | None = setting(None, "output", "cache of probed hidden states (None: no cache)")
    save_adapter: str | None = setting(None, "output", "folder to write the trained adapter and head to (PEFT format "
                                       "where the method has one; `gelora predict` reads it); a finished run is "
                                       "retrained once to save it")
    force: bool = setting(False, "output", "rerun even if the record of this run exists")
    progress: bool = setting(True, "output", "show progress bars")

    def __post_init__(self):
        """Normalise types so that the same settings give the same run identity whether they
        come from Python, YAML (1) or the command line (1.0)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if str(f.type).startswith("float") and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif isinstance(value, tuple):
                setattr(self, f.name, list(value))
        if isinstance(self.target_modules, str):  # one module name, not a list of its letters
            self.target_modules = [self.target_modules]


def _check_whole(config, name: str, low: int, optional: bool = False) -> None:
    check_whole(name, getattr(config, name), low, optional)


def _check_real(config, name: str, low: float, high: float = math.inf, open_low: bool = False,
                optional: bool = False) -> None:
    check_real(name, getattr(config, name), low, high, open_low, optional)


def validate(config: FinetuneConfig) -> None:
    """Check every setting before any work: the argument, its value and what is allowed."""
    get_method(config.method)
    for name in ("dataset", "model", "test_split", "generation_template", "output_dir", "text_column", "label_column"):
        if not isinstance(getattr(config, name), str) or not getattr(config, name):
            raise ValueError(f"{name} must be a non-empty string, got {getattr(config, name)!r}")
    for name in ("max_length", "batch_size", "rank", "sb_num_samples", "probe_examples", "eva_examples", "evals",
                 "gradient_accumulation", "max_new_tokens"):
        _check_whole(config, name, 1)
    _check_whole(config, "seed", 0)
    _check_whole(config, "gelora_min_rank", 0)
    for name in ("n_train", "n_eval", "n_test", "budget", "gelora_max_rank", "processes"):
        _check_whole(config, name, 1, optional=True)
    _check_real(config, "epochs", 0, open_low=True)
    _check_real(config, "lr", 0, open_low=True, optional=True)
    _check_real(config, "sb_init_lr", 0, open_low=True, optional=True)
    _check_real(config, "lora_scale", 0, open_low=True)
    _check_real(config, "gelora_offset", 0)
    _check_real(config, "weight_decay", 0)
    _check_real(config, "adalora_orth_reg", 0)
    _check_real(config, "dropout", 0, 1)
    _check_real(config, "warmup_ratio", 0, 1)
    _check_block_ranks(config)
    tm = config.target_modules
    if tm is not None and (isinstance(tm, str) or not isinstance(tm, list) or not tm
                           or not all(isinstance(t, str) and t for t in tm)):
        raise ValueError(f"target_modules must be a non-empty list of module names or None, got {tm!r}")
    choices = {"task": (None, "classification", "regression", "generation"), "probe_pooling": ("cls", "mean", "last", "tokens"),
               "prompt_format": ("auto", "chat", "plain"),
               "gelora_rounding": ("ceil", "round", "floor"), "device": ("auto", "cpu", "cuda"),
               "precision": ("auto", "fp32", "bf16", "fp16")}
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")
    if config.profile is not None:
        if not isinstance(config.profile, str) or not Path(config.profile).is_file():
            raise ValueError(f"profile must be the path of an ID profile CSV or None, got {config.profile!r} (no such file)")
    if config.test_split not in ("validation", "test"):
        raise ValueError(f"test_split must be 'test' or 'validation', got {config.test_split!r}")
    if config.gelora_max_rank is not None and config.gelora_max_rank < max(config.gelora_min_rank, 1):
        raise ValueError(f"gelora_max_rank={config.gelora_max_rank} is below gelora_min_rank={config.gelora_min_rank}")
    processes = config.processes if config.processes is not None else world_size()
    split = processes * config.gradient_accumulation
    if config.batch_size % split:
        raise ValueError(f"batch_size={config.batch_size} (the global batch) does not split evenly over {processes} "
                         f"process(es) x gradient_accumulation={config.gradient_accumulation}: use a multiple of {split}")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")


def _check_block_ranks(config: FinetuneConfig) -> None:
    ranks = config.block_ranks
    if ranks is None:
        return
    if (not isinstance(ranks, list) or not ranks or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0
                                                             for r in ranks) or not any(ranks)):
        raise ValueError(f"block_ranks must be a list of whole numbers >= 0, one per block, at least one above 0, got {ranks!r}")
    if config.method != "lora":
        raise ValueError(f"block_ranks applies to method 'lora' only, got method={config.method!r}")
    if config.budget is not None:
        raise ValueError(f"block_ranks and budget={config.budget} both set the ranks: give one")


def resolve_device(device: str, precision: str) -> tuple[str, str]:
    """auto: CUDA when present, with bf16 where supported (else fp16); CPU in fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "auto":
        if device == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if device == "cpu" and precision == "fp16":
        raise ValueError("fp16 mixed precision needs CUDA; use fp32 or bf16 on CPU")
    return device, precision
