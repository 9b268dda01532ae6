"""One fine-tuning entry point for every method, on the Hugging Face Trainer.

    finetune("lora_sb", model="minilm", dataset="movie-sentiment", budget=73_728, seed=0)
    python -m gelora.train --method lora_sb --model minilm --dataset movie-sentiment --seed 0

Methods: full, lora (uniform rank), gelora (ranks from the ID profile), adalora, eva (PEFT's
data-driven init), lora_xs, lora_sb, gelora_sb (GeLoRA ranks for the LoRA-SB cores). Give
`budget` (trainable adapter parameters, the head excluded) to compare at a matched budget, or
`rank` for the uniform methods. Every run writes one JSON record (atomically); a run whose record
exists is reused unless `force=True`, so an interrupted grid resumes where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside PEFT, not ours

METHODS = ("full", "lora", "gelora", "adalora", "eva", "lora_xs", "lora_sb", "gelora_sb")
DEFAULT_LR = {"full": 5e-5, "lora": 2e-3, "gelora": 2e-3, "adalora": 2e-3, "eva": 2e-3,
              "lora_xs": 5e-3, "lora_sb": 5e-3, "gelora_sb": 5e-3}
# Settings that do not change the numbers, left out of the run's identity.
NOT_IDENTITY = ("output_dir", "force", "progress", "cache_dir")


@dataclass
class FinetuneConfig:
    """Every setting of a run; all of it is written to the result record."""

    method: str
    model: str = "minilm"
    dataset: str = "movie-sentiment"
    seed: int = 0
    task: str | None = None  # None: the dataset's task; "generation" turns labels into responses
    target_modules: list[str] | None = None  # None: PEFT's default for the architecture
    rank: int = 8  # uniform methods; AdaLoRA's target_r
    budget: int | None = None  # trainable adapter parameters to match (overrides rank)
    profile: str | None = None  # ID profile CSV for gelora / gelora_sb (None: probe now)
    probe_examples: int = 1000
    probe_pooling: str = "mean"
    gelora_offset: float = 1.0
    gelora_min_rank: int = 0
    gelora_max_rank: int | None = None
    gelora_rounding: str = "ceil"
    lora_scale: float = 2.0  # alpha = scale * r
    dropout: float = 0.0
    n_train: int | None = None
    n_eval: int | None = None
    n_test: int | None = None
    test_split: str = "test"  # GLUE hides test labels: use "validation" there
    max_length: int = 64
    epochs: float = 1.0
    batch_size: int = 16
    lr: float | None = None  # None: DEFAULT_LR of the method
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    evals: int = 4  # evaluations on the validation split during training
    sb_num_samples: int = 64  # examples for the LoRA-SB update estimate
    sb_init_lr: float | None = None  # None: lr of the first warm-up step (lr / warmup steps)
    eva_examples: int = 256
    adalora_orth_reg: float = 0.1  # AdaLoRA's orthogonality penalty (its paper's GLUE value; PEFT's default is 0.5)
    generation_template: str = "Text: {text}\nLabel:"
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    output_dir: str = "runs/results"
    cache_dir: str | None = None
    force: bool = False
    progress: bool = True

    def __post_init__(self):
        """Normalise types so that the same settings give the same run identity whether they
        come from Python, YAML (1) or the command line (1.0)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if str(f.type).startswith("float") and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif isinstance(value, tuple):
                setattr(self, f.name, list(value))

    def identity(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_IDENTITY}

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]
        model = Path(self.model).name if os.sep in self.model else self.model
        return f"{self.dataset.replace('/', '-')}__{model.replace('/', '-')}__{self.method}__seed{self.seed}__{digest}"


def validate(config: FinetuneConfig) -> None:
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; expected one of {METHODS}")
    for name in ("epochs", "batch_size", "max_length", "rank", "sb_num_samples"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    if config.lr is not None and config.lr <= 0:
        raise ValueError(f"lr must be positive, got {config.lr}")
    if config.budget is not None and config.budget <= 0:
        raise ValueError(f"budget must be positive, got {config.budget}")
    if config.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {config.device!r}; expected auto, cpu or cuda")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")
    if config.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {config.precision!r}")
    if not 0 <= config.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {config.warmup_ratio}")


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


class PeakMemory:
    """Peak memory of the run: CUDA allocator peak on GPU; on CPU the peak resident set size
    above the level at the start, sampled every 50 ms by a thread."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        self._process = psutil.Process()
        self._start = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.05):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, self._process.memory_info().rss) - self._start) / 2**20
        return False


def versions() -> dict:
    import peft
    import transformers

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "numpy": np.__version__, "gelora": __version__}


def atomic_write_json(path: Path, payload: dict) -> None:
    """Write JSON through a temporary file in the same folder and an atomic rename, so a crash
    never leaves a half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, default=_jsonable)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a record is for everyone who reads the run
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


# ---------------------------------------------------------------- data and metrics

def _load_data(config: FinetuneConfig):
    from .data import as_generation, load_dataset

    splits = {}
    for split, n in (("train", config.n_train), ("validation", config.n_eval), ("test", config.n_test)):
        data = load_dataset(config.dataset, config.test_split if split == "test" else split)
        if config.task is not None and config.task != data.task:
            if config.task == "generation" and data.task == "classification":
                data = as_generation(data, config.generation_template)
            else:
                raise ValueError(f"dataset {config.dataset!r} is a {data.task} task, but task={config.task!r} "
                                 "was asked for (only classification data can become generation)")
        splits[split] = data.subset(n, seed=config.seed)
    return splits


def task_metrics(task: str, predictions: np.ndarray, labels: np.ndarray, num_labels: int = 2) -> dict:
    """Accuracy, F1 (binary or macro) and Matthews correlation for classification; Pearson,
    Spearman and MSE for regression; response-token accuracy for generation."""
    from scipy import stats
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if task == "regression":
        pred = np.asarray(predictions).reshape(-1)
        return {"pearson": float(stats.pearsonr(pred, labels)[0]), "spearman": float(stats.spearmanr(pred, labels)[0]),
                "mse": float(np.mean((pred - labels) ** 2))}
    if task == "generation":
        mask = labels != -100
        return {"accuracy": float((predictions[mask] == labels[mask]).mean())}
    pred = np.asarray(predictions)
    return {"accuracy": float(accuracy_score(labels, pred)),
            "f1": float(f1_score(labels, pred, average="binary" if num_labels == 2 else "macro")),
            "mcc": float(matthews_corrcoef(labels, pred))}


PRIMARY = {"classification": "accuracy", "regression": "pearson", "generation": "accuracy"}


def _metric_fns(task: str, num_labels: int):
    def preprocess(logits, labels):
        logits = logits[0] if isinstance(logits, tuple) else logits
        if task == "classification":
            return logits.argmax(-1)
        if task == "generation":  # the prediction for position t is the logit at t - 1
            shifted = torch.full_like(labels, -100)
            shifted[:, 1:] = logits[:, :-1].argmax(-1)
            return shifted
        return logits.squeeze(-1)

    def compute(eval_pred):
        return task_metrics(task, eval_pred.predictions, eval_pred.label_ids, num_labels)

    return preprocess, compute


# ---------------------------------------------------------------- methods

def _profile_for(config: FinetuneConfig, model, tokenizer, train):
    from .probe import id_profile, load_profile

    if config.profile is not None:
        if not Path(config.profile).exists():
            raise FileNotFoundError(f"ID profile {config.profile} does not exist")
        return load_profile(config.profile)
    texts = train.subset(config.probe_examples, seed=config.seed).texts
    return id_profile(model, tokenizer, texts, pooling=config.probe_pooling, max_length=config.max_length,
                      cache_dir=config.cache_dir, progress=config.progress)


def _gelora_allocation(config, model, tokenizer, train, targets, adapter):
    from .ranks import gelora_ranks
    from .targets import block_shapes

    profile = _profile_for(config, model, tokenizer, train)
    shapes = block_shapes(model, targets)
    if len(profile) - 1 != len(shapes):
        raise ValueError(f"the ID profile has {len(profile) - 1} blocks but the model has {len(shapes)}")
    return gelora_ranks(profile, min_rank=config.gelora_min_rank, max_rank=config.gelora_max_rank,
                        rounding=config.gelora_rounding, offset=config.gelora_offset, budget=config.budget,
                        shapes=shapes, adapter=adapter)


def _batches(dataset, tokenizer, task, batch_size, seed, drop_labels=False):
    from .data import collator

    collate = collator(tokenizer, task)

    def collate_fn(features):
        if drop_labels:
            features = [{k: v for k, v in f.items() if k != "labels"} for f in features]
        return dict(collate(features))

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                                       collate_fn=collate_fn)


def prepare(config: FinetuneConfig, model, tokenizer, train, train_tokens, total_steps, warmup_steps, device):
    """Put the method's adapter on the model. Returns (model, info) where info records ranks,
    the expected adapter parameters by formula, and the time of any data pass."""
    from peft import AdaLoraConfig, EvaConfig, LoraConfig, get_peft_model, initialize_lora_eva_weights

    from .lora_sb import apply_lora_sb, estimate_update
    from .ranks import (adalora_params, check_ranks, lora_config, lora_params, lora_sb_params,
                        matched_baselines)
    from .targets import block_shapes, default_targets

    method = config.method
    info: dict = {"init_time_s": 0.0}
    if method == "full":
        info["note"] = "every parameter trains; budget ignored" if config.budget else "every parameter trains"
        return model, info
    targets = config.target_modules or default_targets(model)
    info["target_modules"] = list(targets)
    shapes = block_shapes(model, targets)
    uniform = {}
    if config.budget is not None and method in ("lora", "eva", "adalora", "lora_xs", "lora_sb"):
        uniform = matched_baselines(shapes, config.budget)[method].setting
    rank = uniform.get("r", config.rank)
    task_type = "CAUSAL_LM" if config.task == "generation" else "SEQ_CLS"
    start = time.perf_counter()
    if method in ("lora", "gelora"):
        if method == "lora":
            block_ranks = {k: rank for k in shapes}
        else:
            allocation = _gelora_allocation(config, model, tokenizer, train, targets, "lora")
            block_ranks = allocation.by_block
            info["allocation"] = allocation.as_dict()
        model = get_peft_model(model, lora_config(model, block_ranks, targets, scale=config.lora_scale,
                                                  lora_dropout=config.dropout, task_type=task_type))
        check_ranks(model, block_ranks, targets)
        info.update(ranks=block_ranks, expected_adapter_params=lora_params(shapes, block_ranks))
    elif method == "adalora":
        target_r = uniform.get("target_r", config.rank)
        init_r = uniform.get("init_r", int(math.ceil(1.5 * target_r)))
        tinit, tfinal = int(0.1 * total_steps), int(0.2 * total_steps)
        if total_steps - tinit - tfinal < 1:
            raise ValueError(f"AdaLoRA needs more training steps than {total_steps} for its schedule")
        model = get_peft_model(model, AdaLoraConfig(
            init_r=init_r, target_r=target_r, tinit=tinit, tfinal=tfinal, deltaT=max(1, total_steps // 50),
            total_step=total_steps, orth_reg_weight=config.adalora_orth_reg,
            lora_alpha=config.lora_scale * target_r, lora_dropout=config.dropout,
            target_modules=list(targets), task_type=task_type))
        info.update(ranks={"init_r": init_r, "target_r": target_r},
                    expected_adapter_params=adalora_params(shapes, init_r),
                    budget_params=adalora_params(shapes, target_r))
    elif method == "eva":
        peft_config = LoraConfig(r=rank, lora_alpha=config.lora_scale * rank, target_modules=list(targets),
                                 lora_dropout=config.dropout, init_lora_weights="eva", eva_config=EvaConfig(rho=2.0),
                                 task_type=task_type)
        model = get_peft_model(model.to(device), peft_config, low_cpu_mem_usage=True)
        subset = torch.utils.data.Subset(train_tokens, range(min(config.eva_examples, len(train_tokens))))
        loader = _batches(subset, tokenizer, train.task, config.batch_size, config.seed,
                          drop_labels=config.task != "generation")
        initialize_lora_eva_weights(model, loader, show_progress_bar=config.progress)
        from .ranks import realised_ranks

        realised = realised_ranks(model)
        info.update(ranks=realised, expected_adapter_params=sum(
            realised.get(n, 0) * (i + o) for mats in shapes.values() for n, i, o in mats))
    else:  # lora_xs, lora_sb, gelora_sb
        if method == "gelora_sb":
            allocation = _gelora_allocation(config, model, tokenizer, train, targets, "lora_sb")
            per_block, uniform_rank = allocation.by_block, None
            info["allocation"] = allocation.as_dict()
        else:
            per_block, uniform_rank = None, rank
        update = None
        if method in ("lora_sb", "gelora_sb"):
            init_lr = config.sb_init_lr or (_lr(config) / max(1, warmup_steps))
            info["sb_init_lr"] = init_lr
            model.to(device)
            loader = _batches(train_tokens, tokenizer, train.task, config.batch_size, config.seed)
            update = estimate_update(model, loader, targets, config.sb_num_samples, init_lr)
        apply_lora_sb(model, update, rank=uniform_rank, ranks=per_block, target_modules=targets,
                      init="lora_xs" if method == "lora_xs" else "lora_sb", dropout=config.dropout,
                      seed=config.seed)
        block_ranks = per_block or {k: uniform_rank for k in shapes}
        info.update(ranks=block_ranks, expected_adapter_params=lora_sb_params(shapes, block_ranks))
    info["init_time_s"] = time.perf_counter() - start
    return model, info


def _lr(config: FinetuneConfig) -> float:
    return config.lr if config.lr is not None else DEFAULT_LR[config.method]


def _head_params(model) -> int:
    from .lora_sb import HEAD_NAMES

    total = 0
    for name, p in model.named_parameters():
        if p.requires_grad and any(f"{h}." in name or name.startswith(f"{h}.") for h in HEAD_NAMES):
            total += p.numel()
    return total


def _adalora_callback():
    from transformers import TrainerCallback

    class AdaLoraAllocation(TrainerCallback):
        """AdaLoRA reallocates ranks from the gradients: after every optimiser step, before the
        gradients are zeroed (the Trainer calls on_optimizer_step exactly there)."""

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            model.base_model.update_and_allocate(state.global_step)

    return AdaLoraAllocation()


def _adalora_final(model) -> tuple[dict[str, int], int]:
    """AdaLoRA after training: the rank each module kept (non-zero singular values) and the
    parameters those ranks amount to, r (in + out + 1) per module."""
    import re

    from peft.tuners.adalora import AdaLoraLayer

    ranks, total = {}, 0
    for name, module in model.named_modules():
        if isinstance(module, AdaLoraLayer) and "default" in module.lora_E:
            kept = int((module.lora_E["default"] != 0).sum())
            ranks[re.sub(r"^(base_model\.model\.)+", "", name)] = kept
            total += kept * (module.in_features + module.out_features + 1)
    return ranks, total


def train_steps(model, batches, steps: int, lr: float, weight_decay: float = 0.0, device=None,
                evaluate_first: bool = True) -> list[float]:
    """A plain PyTorch loop (AdamW over the trainable parameters, constant lr), for the first
    steps of an adapter outside the Trainer. Returns the loss of every step; with
    evaluate_first, element 0 is the loss at initialisation on the first batch (no update)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    device = device or next(model.parameters()).device
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    batches = list(batches)
    if not batches:
        raise ValueError("no batches to train on")
    losses = []
    if evaluate_first:
        model.eval()
        with torch.no_grad():
            first = {k: v.to(device) for k, v in batches[0].items()}
            losses.append(float(model(**first).loss))
    model.train()
    for step in range(steps):
        batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses


# ---------------------------------------------------------------- entry point

def finetune(method: str | None = None, config: FinetuneConfig | None = None, **kwargs) -> dict:
    """Fine-tune with one method and return its result record (also written as JSON under
    `output_dir`). Keyword arguments are the fields of `FinetuneConfig`."""
    if config is None:
        unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(FinetuneConfig)})
        if unknown:
            raise TypeError(f"unknown finetune argument(s) {unknown}")
        config = FinetuneConfig(method=method, **kwargs)
    validate(config)
    path = Path(config.output_dir) / f"{config.run_id}.json"
    if path.exists() and not config.force:
        record = json.loads(path.read_text())
        record["reused"] = True
        return record
    return _run(config, path)


def _run(config: FinetuneConfig, path: Path) -> dict:
    """Train and evaluate one run, write its record to `path` (named by the run's identity)."""
    import transformers
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from .data import collator, tokenize
    from .models import load_model
    from .ranks import count_parameters, count_trainable

    transformers.utils.logging.set_verbosity_error()
    device, precision = resolve_device(config.device, config.precision)
    transformers.set_seed(config.seed)
    wall = time.perf_counter()
    data = _load_data(config)
    train, task = data["train"], data["train"].task
    model, tokenizer = load_model(config.model, task, train.num_labels if task == "classification" else None,
                                  seed=config.seed)
    tokens = {split: tokenize(d, tokenizer, config.max_length) for split, d in data.items()}
    steps_per_epoch = math.ceil(len(tokens["train"]) / config.batch_size)
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    warmup_steps = int(config.warmup_ratio * total_steps)
    lr = _lr(config)
    with PeakMemory(device) as memory:
        model, info = prepare(config, model, tokenizer, train, tokens["train"], total_steps, warmup_steps, device)
        preprocess, compute = _metric_fns(task, train.num_labels)
        eval_every = max(1, total_steps // max(1, config.evals))
        with tempfile.TemporaryDirectory() as scratch:
            args = TrainingArguments(
                output_dir=scratch, seed=config.seed, data_seed=config.seed, learning_rate=lr,
                num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
                per_device_eval_batch_size=max(32, config.batch_size), weight_decay=config.weight_decay,
                warmup_steps=warmup_steps, lr_scheduler_type="linear", logging_steps=max(1, total_steps // 50),
                eval_strategy="steps", eval_steps=eval_every, save_strategy="no", report_to=[],
                use_cpu=device == "cpu", bf16=precision == "bf16", fp16=precision == "fp16",
                disable_tqdm=not config.progress, label_names=["labels"], dataloader_num_workers=0,
                remove_unused_columns=False,
            )
            trainer = Trainer(model=model, args=args, train_dataset=tokens["train"],
                              eval_dataset=tokens["validation"], data_collator=collator(tokenizer, task),
                              compute_metrics=compute, preprocess_logits_for_metrics=preprocess,
                              callbacks=[_adalora_callback()] if config.method == "adalora" else None)
            if not config.progress:
                trainer.remove_callback(PrinterCallback)
            start = time.perf_counter()
            trainer.train()
            train_time = time.perf_counter() - start
            final = trainer.evaluate()
            test = trainer.evaluate(tokens["test"], metric_key_prefix="test")
    primary = PRIMARY[task]
    evals = [{k: v for k, v in entry.items()} for entry in trainer.state.log_history if f"eval_{primary}" in entry]
    if not evals or evals[-1].get("step") != trainer.state.global_step:
        evals.append(dict(final, step=trainer.state.global_step))
    trainable = count_trainable(model)
    head = _head_params(model)
    record = {
        "run_id": path.stem, "method": config.method, "model": config.model, "dataset": config.dataset,
        "seed": config.seed, "task": task, "metric": primary,
        "final": {primary: final[f"eval_{primary}"], **_strip(final, "eval_")},
        "best": {primary: max(e[f"eval_{primary}"] for e in evals), "step": max(evals, key=lambda e: e[f"eval_{primary}"])["step"]},
        "test": _strip(test, "test_"),
        "evals": [dict(step=e["step"], epoch=e.get("epoch"), **_strip(e, "eval_")) for e in evals],
        "train_loss": [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e],
        "trainable_params": trainable, "head_params": head, "adapter_params": trainable - head,
        "total_params": count_parameters(model), "steps": trainer.state.global_step,
        "train_examples": len(tokens["train"]), "lr": lr,
        "wall_time_s": time.perf_counter() - wall, "train_time_s": train_time,
        "peak_memory_mb": memory.peak_mb, "device": device, "precision": precision,
        "config": dataclasses.asdict(config), "versions": versions(), **info,
    }
    if config.method == "adalora":
        record["final_ranks"], record["effective_adapter_params"] = _adalora_final(model)
    record["ranks"] = {str(k): v for k, v in record.get("ranks", {}).items()}
    if trainer.is_world_process_zero():
        atomic_write_json(path, record)
    record["model_object"] = model  # for callers who want to inspect it; not written
    return record


TIMINGS = ("runtime", "samples_per_second", "steps_per_second")


def _strip(metrics: dict, prefix: str) -> dict:
    """Metrics without their prefix, timings left out (they belong to the run, not the model)."""
    return {k[len(prefix):]: v for k, v in metrics.items()
            if k.startswith(prefix) and not k.endswith(TIMINGS)}


# ---------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gelora.train", description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else str(f.type)
        if f.name == "method":
            parser.add_argument(flag, required=True, choices=METHODS)
        elif kind.startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif kind.startswith("list"):
            parser.add_argument(flag, nargs="+", default=None)
        else:
            caster = int if kind.startswith("int") else float if kind.startswith("float") else str
            parser.add_argument(flag, type=caster, default=f.default)
    return parser


def main(argv=None) -> int:
    args = vars(_parser().parse_args(argv))
    record = finetune(**args)
    record.pop("model_object", None)
    summary = {k: record[k] for k in ("run_id", "method", "metric", "final", "test", "trainable_params",
                                       "adapter_params", "wall_time_s")}
    print(json.dumps(summary, indent=2, default=_jsonable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
