"""One fine-tuning entry point for every registered method, on the Hugging Face Trainer.

    finetune("lora_sb", model="minilm", dataset="movie-sentiment", budget=73_728, seed=0)
    python -m gelora train --method lora_sb --model minilm --dataset movie-sentiment --seed 0

The methods are those of `gelora.methods.registry` (full, lora, gelora, adalora, eva, lora_xs, lora_sb,
gelora_sb, lora_ga, pissa). Give `budget` (trainable adapter parameters, the head excluded) to
compare at a matched budget, or `rank` for the uniform methods. Every run writes one JSON record
(atomically); a run whose record exists is reused unless `force=True`, so an interrupted grid
resumes where it stopped. `run_configs` runs a list of configs (`gelora.study.grid.run_grid`: methods x seeds).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import transformers
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from gelora.allocation.ranks import count_parameters, count_trainable
from gelora.core.metrics import PRIMARY, metric_fns
from gelora.core.plan import local_rank, plan_steps, world_size
from gelora.core.records import PeakMemory, atomic_write_json, check_writable, jsonable, read_record, versions
from gelora.data.tasks import as_generation, by_length, collator, load_dataset, prompt_format, shared_texts, tokenize
from gelora.methods import registry as methods
from gelora.methods.context import BuildContext, build
from gelora.models.loading import load_model
from gelora.training.config import GROUPS, FinetuneConfig, resolve_device, type_name, validate
from gelora.training.generate import score
from gelora.training.identity import run_id, run_identity

# the plain loop lives in gelora.training.loop; notebook 03 reads first_steps from here
from gelora.training.loop import default_lr, first_steps, is_head, train_steps  # noqa: F401
from gelora.training.predictions import example_scores, write_predictions
from gelora.training.saved import check_save_target, initial_adapter, save_trained, saved_run_id

PROG = "python -m gelora.training.train"  # `gelora train` sets its own name in help and errors


# ---------------------------------------------------------------- data

def _load_data(config: FinetuneConfig):
    """The three splits, with the task and the label mapping decided once, from the training
    split, and applied to validation and test (a label training never saw is an error here,
    before any training). Subset sizes larger than their split are errors."""
    columns = {"text_column": config.text_column, "label_column": config.label_column}
    train = load_dataset(config.dataset, "train", **columns)
    splits = {"train": train}
    for split in ("validation", "test"):
        splits[split] = load_dataset(config.dataset, config.test_split if split == "test" else split,
                                     task=train.task, label_names=train.label_names, **columns)
    check_no_leak(config.dataset, splits)
    for split, n, argument in (("train", config.n_train, "n_train"), ("validation", config.n_eval, "n_eval"),
                               ("test", config.n_test, "n_test")):
        data = splits[split]
        if n is not None and n > len(data):
            raise ValueError(f"{argument}={n} exceeds the {len(data)} examples of {config.dataset!r} split {data.split!r}")
        if config.task is not None and config.task != data.task:
            if config.task == "generation" and data.task == "classification":
                data = as_generation(data, config.generation_template)
            else:
                raise ValueError(f"dataset {config.dataset!r} is a {data.task} task, but task={config.task!r} "
                                 "was asked for (only classification data can become generation)")
        splits[split] = data.subset(n, seed=config.seed)
    return splits


def check_no_leak(dataset: str, splits: dict) -> None:
    """Texts that training sees must not be scored as held out: a held-out split made only of
    training texts is refused, a few shared texts (duplicates in real data) are warned about with
    their count (a single file is divided by a rule, so only duplicate rows can be shared)."""
    train = splits["train"]
    for split in ("validation", "test"):
        data = splits[split]
        shared = shared_texts(train, data)
        if shared == len(data):
            raise ValueError(f"every text of {dataset!r} split {data.split!r} is also a training text: its score would "
                             "not be held out (give separate train/validation/test files, or one file to be divided)")
        if shared:
            warnings.warn(f"{shared} of the {len(data)} texts of {dataset!r} split {data.split!r} also appear in the "
                          "training split: those examples are not held out (remove the duplicates to score "
                          "unseen text only)", stacklevel=2)


class DivergenceGuard(TrainerCallback):
    """Stops the run at the first logged loss that is NaN or infinite: an error, never a record."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "train_loss", "eval_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise FloatingPointError(f"{key} is {value} at step {state.global_step}: the run diverged "
                                         "(try a lower lr, fp32 precision, or gradient clipping)")


class InOrderEvaluation(Trainer):
    """The Trainer, evaluating in the order of the dataset. Its `group_by_length` strategy would
    also shuffle evaluation batches; ours are already sorted by length, and predictions must come
    back in a known order to be stored per example."""

    def _get_eval_sampler(self, eval_dataset):
        return torch.utils.data.SequentialSampler(eval_dataset)


LOSS_ROSE_FACTOR = 2.0


def loss_trend(losses: list[dict]) -> dict:
    """First and last logged training loss, and whether the loss ended above LOSS_ROSE_FACTOR
    times its start (a run that trained away from its data: flagged, and warned about)."""
    if not losses:
        return {"loss_start": None, "loss_end": None, "loss_rose": False}
    start, end = losses[0]["loss"], losses[-1]["loss"]
    return {"loss_start": start, "loss_end": end, "loss_rose": bool(end > LOSS_ROSE_FACTOR * start and end > 0)}


def _lr(config: FinetuneConfig) -> float:
    return config.lr if config.lr is not None else default_lr(config.method)


def _head_params(model) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and is_head(name))


# ---------------------------------------------------------------- entry point

def finetune(method: str | None = None, config: FinetuneConfig | None = None, **kwargs) -> dict:
    """Fine-tune with one method and return its result record (also written as JSON under
    `output_dir`). Keyword arguments are the fields of `FinetuneConfig` and the methods' own settings."""
    if config is None:
        unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(FinetuneConfig)} - set(methods.options()))
        if unknown:
            raise TypeError(f"unknown finetune argument(s) {unknown}")
        config = FinetuneConfig(method=method, **kwargs)
    validate(config)
    identity = run_identity(config)
    path = check_writable(config.output_dir) / f"{run_id(config)}.json"
    if path.exists() and not config.force:
        record = read_record(path, identity)
        if config.save_adapter is None or saved_run_id(config.save_adapter) == run_id(config):
            record["reused"] = True
            return record
        print(f"{run_id(config)}: the record exists but no adapter of it was saved; training it again to save one "
              f"in {config.save_adapter}", flush=True)
    if config.save_adapter is not None:  # before training: a finished adapter is never overwritten by accident
        check_save_target(config.save_adapter, run_id(config), config.output_dir, config.force)
    if config.processes is not None and config.processes != world_size():
        raise ValueError(f"no record of this run with processes={config.processes} in {config.output_dir}, and this "
                         f"launch has {world_size()} process(es): train it with `torchrun --nproc-per-node "
                         f"{config.processes} -m gelora.training.train ...` (python -m gelora grid prints the command)")
    return _run(config, path, identity)


def _run(config: FinetuneConfig, path: Path, identity: dict) -> dict:
    """Train and evaluate one run, write its record to `path` (named by the run's identity)."""
    transformers.utils.logging.set_verbosity_error()
    if not config.progress:  # no weight-loading bar either (jobs' logs, executed notebooks)
        transformers.utils.logging.disable_progress_bar()
    device, precision = resolve_device(config.device, config.precision)
    transformers.set_seed(config.seed)
    wall = time.perf_counter()
    data = _load_data(config)
    train, task = data["train"], data["train"].task
    model, tokenizer = load_model(config.model, task, train.num_labels if task == "classification" else None,
                                  seed=config.seed)
    form = prompt_format(tokenizer, config.prompt_format) if task == "generation" else "plain"
    tokens = {split: tokenize(d, tokenizer, config.max_length, form) for split, d in data.items()}
    plan = plan_steps(len(tokens["train"]), config.batch_size, config.epochs, config.warmup_ratio, config.evals,
                      config.gradient_accumulation)
    lr = _lr(config)
    build_device = f"cuda:{local_rank()}" if device == "cuda" else device  # each process its own GPU
    with PeakMemory(device) as memory:
        method = methods.get_method(config.method)
        model, info = build(BuildContext(config, model, tokenizer, train, tokens["train"],
                                         plan.total_steps, plan.warmup_steps, lr, build_device))
        preprocess, compute = metric_fns(task, train.num_labels)
        with tempfile.TemporaryDirectory() as scratch:
            initial = initial_adapter(model, config.method, scratch) if config.save_adapter else None
            args = TrainingArguments(
                output_dir=scratch, seed=config.seed, data_seed=config.seed, learning_rate=lr,
                max_steps=plan.total_steps, per_device_train_batch_size=plan.per_device_batch,
                gradient_accumulation_steps=plan.gradient_accumulation,
                per_device_eval_batch_size=max(32, plan.per_device_batch), weight_decay=config.weight_decay,
                warmup_steps=plan.warmup_steps, lr_scheduler_type="linear", logging_steps=plan.logging_steps,
                eval_strategy="steps", eval_steps=plan.eval_steps, save_strategy="no", report_to=[],
                train_sampling_strategy="group_by_length" if config.group_by_length else "random",
                use_cpu=device == "cpu", bf16=precision == "bf16", fp16=precision == "fp16",
                disable_tqdm=not config.progress, label_names=["labels"], dataloader_num_workers=0,
                remove_unused_columns=False, logging_nan_inf_filter=False,
                ddp_backend="gloo" if device == "cpu" and plan.world_size > 1 else None,
                ddp_find_unused_parameters=False,  # every trainable parameter takes part in every step
            )
            validation, test, test_order = tokens["validation"], tokens["test"], None
            if config.group_by_length:  # metrics do not depend on the order; predictions are put back
                validation, test, test_order = by_length(validation)[0], *by_length(test)
            trainer = InOrderEvaluation(model=model, args=args, train_dataset=tokens["train"], eval_dataset=validation,
                                        data_collator=collator(tokenizer, task), compute_metrics=compute,
                                        preprocess_logits_for_metrics=preprocess,
                                        callbacks=[DivergenceGuard(), *method.callbacks()])
            # The Trainer multiplies the loss by the number of processes for models that take loss
            # keyword arguments, assuming a loss summed over tokens and divided by the global count.
            # A classification head returns a per-device mean: that scaling would double the loss
            # (and the gradients) under 2 processes and sum, not average, accumulated micro-batches.
            trainer.model_accepts_loss_kwargs = task == "generation"
            if not config.progress:
                trainer.remove_callback(PrinterCallback)
            start = time.perf_counter()
            trainer.train()
            train_time = time.perf_counter() - start
            primary = PRIMARY[task]
            tracked = "accuracy" if task == "generation" else primary  # what the evaluations during training compute
            evals = [dict(e) for e in trainer.state.log_history if f"eval_{tracked}" in e]
            if evals and evals[-1].get("step") == trainer.state.global_step:
                final = evals[-1]  # the Trainer evaluated at the last step already: not twice
            else:
                final = trainer.evaluate()
                evals.append(dict(final, step=trainer.state.global_step))
            output = trainer.predict(test, metric_key_prefix="test")
            test_metrics = output.metrics
            if task == "generation":  # the answers themselves: greedy generation, exact match
                matches = {}
                for split in ("validation", "test"):
                    matches[split], _ = score(trainer.model, tokenizer, data[split], form, config.max_new_tokens,
                                              max_length=config.max_length)
                final["eval_exact_match"] = evals[-1]["eval_exact_match"] = float(matches["validation"].mean())
                test_metrics["test_exact_match"] = float(matches["test"].mean())
            if config.save_adapter and trainer.is_world_process_zero():
                trained = dict(run_id=path.stem, method=config.method, model=config.model, dataset=config.dataset,
                               seed=config.seed, task=task, label_names=train.label_names, metric=PRIMARY[task],
                               test=_strip(test_metrics, "test_"), config=config.flat(), identity=identity)
                save_trained(model, tokenizer, config.save_adapter, trained, initial)
    trainable = count_trainable(model)
    head = _head_params(model)
    record = {
        "run_id": path.stem, "method": config.method, "model": config.model, "dataset": config.dataset,
        "seed": config.seed, "task": task, "label_names": train.label_names, "metric": primary,
        "prompt_format": form if task == "generation" else None,
        "final": {primary: final[f"eval_{primary}"], **_strip(final, "eval_")},
        "best": _best(evals, primary),
        "test": _strip(test_metrics, "test_"),
        "evals": [dict(step=e["step"], epoch=e.get("epoch"), **_strip(e, "eval_")) for e in evals],
        "train_loss": [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e],
        "trainable_params": trainable, "head_params": head, "adapter_params": trainable - head,
        "total_params": count_parameters(model), "steps": trainer.state.global_step,
        "train_examples": len(tokens["train"]), "lr": lr, "plan": plan.as_dict(),
        "world_size": plan.world_size, "gradient_accumulation": plan.gradient_accumulation,
        "global_batch": plan.global_batch,
        "wall_time_s": time.perf_counter() - wall, "train_time_s": train_time,
        "peak_memory_mb": memory.peak_mb, "device": device, "precision": precision,
        "autocast_dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(precision),
        "config": config.flat(), "identity": identity, "versions": versions(), **info,
        "examples": {split: len(d) for split, d in data.items()},  # after the subsets: what was trained and scored
        "file_split": train.meta.get("file_split"),  # one file divided by FILE_SPLIT (None: the dataset's own splits)
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    record.update(loss_trend(record["train_loss"]))
    if record["loss_rose"]:
        warnings.warn(f"{path.stem}: the training loss rose from {record['loss_start']:.4g} to {record['loss_end']:.4g}; "
                      "the record is flagged (loss_rose)", stacklevel=2)
    record.update(method.finish(model))
    record["ranks"] = {str(k): v for k, v in record.get("ranks", {}).items()}
    if trainer.is_world_process_zero():
        scores = example_scores(task, output.predictions, output.label_ids, test_order)
        if task == "generation":  # per example: its exact match (what gelora.analysis.stats pairs across methods)
            scores = (*scores[:2], matches["test"])
        record["predictions"] = write_predictions(path.with_suffix(".predictions.npz"), data["test"].indices, *scores)
        atomic_write_json(path, record)
    record["model_object"] = model  # for callers who want to inspect it; not written
    return record


def _best(evals: list[dict], primary: str) -> dict:
    """The best evaluation of the primary metric (generation: exact match is scored at the end only)."""
    scored = [e for e in evals if f"eval_{primary}" in e]
    top = max(scored, key=lambda e: e[f"eval_{primary}"])
    return {primary: top[f"eval_{primary}"], "step": top["step"]}


TIMINGS = ("runtime", "samples_per_second", "steps_per_second")


def _strip(metrics: dict, prefix: str) -> dict:
    """Metrics without their prefix, timings left out (they belong to the run, not the model)."""
    return {k[len(prefix):]: v for k, v in metrics.items()
            if k.startswith(prefix) and not k.endswith(TIMINGS)}


def run_configs(configs, log=print) -> list[dict]:
    """Run (or read back) each config in turn; returns the records without the model objects."""
    records = []
    for config in configs:
        start = time.perf_counter()
        record = finetune(config=config)
        record.pop("model_object", None)
        records.append(record)
        if log is not None:
            status = "reused" if record.get("reused") else f"{time.perf_counter() - start:.0f} s"
            log(f"{config.method:>10} seed {config.seed}: {record['metric']} {record['test'][record['metric']]:.4f} "
                f"(test), {record['adapter_params']:>10,} adapter params  [{status}]")
    return records


# ---------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    """The shared settings by group, then every registered method's own settings (a flag is
    passed on only when given, so a method's default stays its own)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for f in dataclasses.fields(FinetuneConfig):
        if f.name == "options":
            continue
        group, help = groups[f.metadata["group"]], f.metadata["help"]
        if f.name == "method":
            group.add_argument("--method", required=True, choices=methods.names(), help=help)
        else:
            _add_flag(group, f, f.default, help)
    own = parser.add_argument_group("the methods' own settings (each read only by the methods named)")
    for f, readers in methods.options().values():
        _add_flag(own, f, argparse.SUPPRESS, f"{f.metadata['help']} [{', '.join(readers)}; default: {f.default}]")
    return parser


def _add_flag(group, f: dataclasses.Field, default, help: str) -> None:
    flag, kind = "--" + f.name.replace("_", "-"), type_name(f)
    if kind.startswith("bool"):
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
    elif kind.startswith("list"):
        group.add_argument(flag, nargs="+", type=int if "int" in kind else str, default=default, help=help)
    else:
        caster = int if kind.startswith("int") else float if kind.startswith("float") else str
        group.add_argument(flag, type=caster, default=default, help=help)


def describe(record: dict) -> list[str]:
    """What a user should read besides the numbers: whether the run was reused (and when it was
    trained), how the data was divided, the ranks it trained and whether noise decided them."""
    lines = []
    if record.get("reused"):
        when = record.get("finished_at") or "at a time this older record does not state"
        lines.append(f"reused {record['run_id']} (trained {when}); --force trains it again")
    split = record.get("file_split")
    if split:
        lines.append("one file, divided by a seeded stratified split: " + ", ".join(
            f"{k} {v}" for k, v in split["sizes"].items()) + f" rows (seed {split['seed']})")
    if record.get("allocation"):
        ranks = record["allocation"]["ranks"]
        lines.append(f"{record['method']} ranks per block: {ranks} ({record['adapter_params']:,} adapter parameters)")
        if record.get("unresolved_blocks"):
            lines.append(f"warning: the ranks of block(s) {record['unresolved_blocks']} are decided by noise (the "
                         "intervals of their two layers overlap): another sample of probed texts can move them")
    return lines


def main(argv=None) -> int:
    args = vars(_parser().parse_args(argv))
    record = finetune(**args)
    record.pop("model_object", None)
    summary = {k: record.get(k) for k in ("run_id", "method", "metric", "final", "test", "trainable_params",
                                           "adapter_params", "wall_time_s", "finished_at")}
    print(json.dumps(summary, indent=2, default=jsonable))
    for line in describe(record):
        print(line, file=sys.stderr if line.startswith("warning") else sys.stdout)
    if args.get("save_adapter"):
        print(f"adapter and head in {args['save_adapter']}: gelora predict {args['save_adapter']} FILE.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
