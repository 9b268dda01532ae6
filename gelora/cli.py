"""The `gelora` command: the kit's tools for people who never open the notebooks.

    gelora profile MODEL DATA        the per-layer intrinsic-dimension profile (CSV and figure)
    gelora recommend MODEL DATA      GeLoRA ranks at a budget, as a PEFT adapter_config.json
    gelora train ...                 one fine-tuning run
    gelora grid ...                  the runs of a profile's grid: shown, trained here, a jobs file, or submitit
    gelora compare DATA              which method on your data: rates tuned on validation, held-out seeds, one table
    gelora job FILE --index N        run job N of a jobs file (argv lists: no shell ever parses them)
    gelora run ...                   the notebook pipeline
    gelora predict ADAPTER DATA      score a CSV/JSONL/.txt file with an adapter saved by `train --save-adapter`
    gelora runs [FOLDER]             the finished runs under a folder, as Markdown, LaTeX or CSV
    gelora export ADAPTER MODEL OUT  a saved LoRA-SB / LoRA-XS adapter as a plain PEFT LoRA adapter
    gelora study ...                 the study's verdicts, the README's answer, the benchmark, the rate protocol
    gelora book ...                  the reference runs as a book
    gelora exercises ...             check or rewrite the notebooks' exercises
    gelora migrate FOLDER [--apply]  rename records made under an earlier identity rule
    gelora --version                 the kit's version

`python -m gelora ...` is the same command without its entry point on PATH. A user error is one line on
stderr and exit status 1; add --debug anywhere to see the traceback.

MODEL: minilm, tiny-bert, tiny-deberta, tiny-llama, a Hugging Face id (org/model@commit pins a revision) or a local folder.
DATA: a shipped dataset (movie-sentiment, trec6, sms-spam), a local CSV/TSV/JSONL file or folder,
a plain .txt file (one text per line), or hf:<name>.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path

from gelora import __version__

# One spelling per concept across the commands: --precision as `gelora train` spells it, --task as its
# data settings do, --output-dir for the folder a command writes, --id-profile for an ID-profile CSV
# (--profile is a YAML preset, in `gelora run`, `grid` and `exercises`).
WEIGHTS = {"fp32": "float32", "fp64": "float64", "bf16": "bfloat16", "fp16": "float16"}
PEFT_TASKS = {"classification": "SEQ_CLS", "generation": "CAUSAL_LM"}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?")  # org/name[@revision], as `gelora train` takes it


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name, hub id (id@commit pins a revision) or local folder")
    parser.add_argument("data", help="dataset name, CSV/TSV/JSONL file or folder, .txt file, or hf:<name>")
    parser.add_argument("--n-texts", type=int, default=1000, help="texts probed (a seeded subset)")
    parser.add_argument("--pooling", default="mean", choices=("cls", "mean", "last", "tokens"),
                        help="how a text's token states become one point (last: decoders)")
    parser.add_argument("--text-column", default="text", help="text column of a table (GLUE names are found)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens kept per text")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (bounds GPU memory)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    parser.add_argument("--precision", default="auto", choices=("auto", *WEIGHTS),
                        help="the model's weights (auto: bf16 on a GPU that supports it, fp16 on another GPU, else fp32; "
                             "fp64: profiles that agree across machines to many digits)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the subset of texts and the bootstrap")
    parser.add_argument("--output-dir", default="gelora-out", help="folder of the outputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_probe_arguments(args) -> None:
    """Everything a user can get wrong, checked before a model loads (loading and probing take
    minutes on a large model)."""
    import os

    import torch

    from gelora.core.checks import check_whole

    for name in ("n_texts", "max_length", "batch_size"):
        check_whole(f"--{name.replace('_', '-')}", getattr(args, name), 3 if name == "n_texts" else 1)
    check_whole("--seed", args.seed, 0)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but this machine has no CUDA device: use --device cpu (or auto)")
    _check_out(args.output_dir)
    if not (Path(args.model).is_dir() or os.sep not in args.model or HUB_ID.fullmatch(args.model)):
        raise ValueError(f"model {args.model!r} is neither a known name, a hub id (org/name, org/name@commit) "
                         "nor an existing folder")


def _check_out(out: str) -> None:
    """The output folder can be made and written, before any work (it is made here)."""
    import tempfile

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output-dir {out!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"--output-dir {out!r} cannot be written: {error.strerror or error}") from None


def _load(args):
    import torch
    import transformers

    from gelora.models.loading import load_model

    transformers.utils.logging.disable_progress_bar()  # the weight-loading bar: the probe has its own

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    precision = args.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device == "cuda" else "fp32"
    if device == "cpu" and precision == "fp16":
        raise ValueError("--precision fp16 needs CUDA; use fp32 or bf16 on CPU")
    model, tokenizer = load_model(args.model, "features", seed=args.seed, dtype=WEIGHTS[precision])
    return model.to(device).eval(), tokenizer


def _profile(args, model, tokenizer):
    from gelora.allocation.recommend import read_texts
    from gelora.geometry.twonn import TwoNN
    from gelora.probing.probe import id_profile

    texts = read_texts(args.data, args.n_texts, args.seed, args.text_column)
    return id_profile(model, tokenizer, texts, pooling=args.pooling, estimator=TwoNN(random_state=args.seed),
                      max_length=args.max_length, batch_size=args.batch_size, seed=args.seed,
                      progress=not args.no_progress)


def profile_command(args) -> int:
    from gelora.kit import plots
    from gelora.probing.probe import save_profile

    _check_probe_arguments(args)
    model, tokenizer = _load(args)
    profile = _profile(args, model, tokenizer)
    out = Path(args.output_dir)
    save_profile(profile, out / "profile.csv")
    plots.set_style()
    plots.save(plots.id_profile(profile, title=f"Intrinsic dimension per layer ({args.model})"), "profile", out,
               formats=("png",))
    print(profile[["layer", "dimension", "ci_low", "ci_high", "n_distinct"]].round(2).to_string(index=False))
    print(f"wrote {out / 'profile.csv'} and {out / 'profile.png'}")
    return 0


def recommend_command(args) -> int:
    from gelora.allocation.recommend import _task_type_of, recommend_ranks, study_findings_text
    from gelora.core.checks import check_real, check_whole
    from gelora.probing.probe import load_profile, save_profile

    start = time.perf_counter()
    _check_probe_arguments(args)
    check_whole("--budget", args.budget, 1, optional=True)
    check_whole("--rank", args.rank, 1, optional=True)
    check_whole("--min-rank", args.min_rank, 0)
    check_whole("--max-rank", args.max_rank, 1, optional=True)
    check_real("--offset", args.offset, 0)
    if args.target_modules is not None and not all(args.target_modules):
        raise ValueError(f"--target-modules must name modules, got {args.target_modules!r}")
    given = load_profile(args.id_profile) if args.id_profile else None
    model, tokenizer = _load(args)
    task_type = None if args.task is None else PEFT_TASKS[args.task]
    if task_type is not None and task_type != _task_type_of(model):
        own = {v: k for k, v in PEFT_TASKS.items()}[_task_type_of(model)]
        raise ValueError(f"--task {args.task} does not fit {args.model} (a {own} model): "
                         "PEFT could not apply the config; leave --task out to use the model's own")
    profile = given if given is not None else _profile(args, model, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank-0 blocks are printed below, with the allocation
        rec = recommend_ranks(model, None, budget=args.budget, rank=args.rank, target_modules=args.target_modules,
                              tokenizer=tokenizer, offset=args.offset, min_rank=args.min_rank, max_rank=args.max_rank,
                              task_type=task_type, profile=profile)
    out = Path(args.output_dir)
    rec.config.save_pretrained(str(out))
    save_profile(profile, out / "profile.csv")
    print("block  bound  rank")
    for block, (bound, rank) in enumerate(zip(rec.allocation.bounds, rec.allocation.ranks)):
        print(f"{block:>5}  {bound:5.2f}  {rank:>4}")
    print(f"{len(rec.module_ranks)} modules, {rec.params:,} trainable adapter parameters "
          f"(budget {rec.budget:,}); {time.perf_counter() - start:.1f} s with loading and probing")
    for note in rec.allocation.notes:
        print("note:", note)
    if rec.unresolved_blocks:
        print(f"warning: the bound of block(s) {rec.unresolved_blocks} lies inside the overlapping 95 % intervals "
              "of its two layers: those ranks are decided by noise (probe more texts, or read them as a guess)")
    print(f"wrote {out / 'adapter_config.json'} and {out / 'profile.csv'}\n\n{rec.snippet(str(out))}")
    print(f"\n{study_findings_text()}")
    return 0


def predict_command(args) -> int:
    from gelora.core.checks import check_whole
    from gelora.training.saved import predict

    check_whole("--batch-size", args.batch_size, 1)
    if not Path(args.data).exists():
        raise FileNotFoundError(f"no file or folder {args.data!r} to predict on")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {args.out!r} is a folder: give the path of the CSV to write")
    _check_out(str(out.parent) if str(out.parent) else ".")
    table, scored = predict(args.adapter, args.data, args.text_column, args.label_column, args.batch_size)
    table.to_csv(out, index=False, float_format="%.9g")
    quality = (f", accuracy {scored['accuracy']:.4f} on its labels" if "accuracy" in scored else
               f", mean squared error {scored['mse']:.4f} on its labels" if "mse" in scored else "")
    print(f"{scored['examples']} rows scored by {scored['method']} run {scored['run_id']}{quality}; wrote {out}")
    return 0


def runs_command(args) -> int:
    """Every finished run under a folder (its records, checked as every reader checks them)."""
    from gelora.analysis.results import load_records

    root = Path(args.folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {args.folder!r} to list runs from")
    folders = sorted({p.parent for p in root.rglob("*__seed*.json")})
    rows = []
    for folder in folders:
        for r in load_records(folder):
            metric = r.get("metric", "accuracy")
            rows.append({"method": r["method"], "data": r.get("dataset"), "model": r.get("model"), "seed": r["seed"],
                         "lr": r.get("lr"), "test": r["test"].get(metric),
                         "metric": metric, "minutes (self-reported)": round(r.get("wall_time_s", float("nan")) / 60, 1),
                         "finished": str(r.get("finished_at", ""))[:19], "folder": str(folder)})
    if not rows:
        print(f"no finished runs under {root}")
        return 0
    import pandas as pd

    table = pd.DataFrame(rows).sort_values(["folder", "data", "method", "seed"])
    print(table.to_markdown(index=False, floatfmt=".4g") if args.format == "markdown" else
          table.to_latex(index=False, float_format="%.4g") if args.format == "latex" else table.to_csv(index=False))
    print(f"{len(table)} run(s) in {len(folders)} folder(s)", file=sys.stderr)
    return 0


def export_command(args) -> int:
    import transformers

    from gelora.adapters.files import export_peft_lora, load_adapter
    from gelora.models.loading import load_model

    transformers.utils.logging.disable_progress_bar()
    model, _ = load_model(args.model, args.task, args.num_labels if args.task == "classification" else None)
    load_adapter(model, args.adapter, check_base=not args.skip_base_check)
    export_peft_lora(model, args.out, base_model_name_or_path=args.model)
    print(f"wrote a PEFT LoRA adapter to {args.out}: PeftModel.from_pretrained(base_model, {args.out!r})")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="gelora", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    profile = commands.add_parser("profile", help="intrinsic dimension per layer of any model",
                                  description="The per-layer TwoNN profile of a model's hidden states.")
    _add_probe_arguments(profile)
    profile.set_defaults(handler=profile_command)
    recommend = commands.add_parser("recommend", help="GeLoRA ranks as a PEFT LoraConfig",
                                    description="GeLoRA ranks at a budget, written as a PEFT adapter_config.json.")
    _add_probe_arguments(recommend)
    size = recommend.add_mutually_exclusive_group(required=True)
    size.add_argument("--budget", type=int, help="trainable adapter parameters (head excluded)")
    size.add_argument("--rank", type=int, help="the budget of uniform LoRA at this rank")
    recommend.add_argument("--target-modules", nargs="+", default=None, help="adapted matrices (default: PEFT's)")
    recommend.add_argument("--offset", type=float, default=1.0, help="added to every bound before scaling")
    recommend.add_argument("--min-rank", type=int, default=0, help="smallest rank of a block")
    recommend.add_argument("--max-rank", type=int, default=None, help="largest rank of a block")
    recommend.add_argument("--task", default=None, choices=tuple(PEFT_TASKS),
                           help="the PEFT task type written (default: generation for decoders, else classification)")
    recommend.add_argument("--id-profile", default=None, help="an ID profile CSV to use instead of probing")
    recommend.set_defaults(handler=recommend_command)
    predict = commands.add_parser("predict", help="score a file with an adapter saved by train --save-adapter",
                                  description="Predictions of a saved run on a CSV/TSV/JSONL file (read whole) or a "
                                              ".txt file (one text per line), with the accuracy where it has labels.")
    predict.add_argument("adapter", help="folder written by `gelora train --save-adapter`")
    predict.add_argument("data", help="CSV/TSV/JSONL file, a folder (its test split), or .txt file")
    predict.add_argument("--out", default="predictions.csv", help="CSV of texts, predictions and logits")
    predict.add_argument("--text-column", default=None, help="text column (default: the one the run trained on)")
    predict.add_argument("--label-column", default=None, help="label column, scored when present (default: the run's)")
    predict.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    predict.set_defaults(handler=predict_command)
    runs = commands.add_parser("runs", help="list the finished runs under a folder (method, data, metric, time)",
                               description="Every run record under FOLDER, checked as every reader checks them.")
    runs.add_argument("folder", nargs="?", default="runs", help="a results folder or a folder of them (default: runs)")
    runs.add_argument("--format", default="markdown", choices=("markdown", "latex", "csv"), help="how the table is printed")
    runs.set_defaults(handler=runs_command)
    export = commands.add_parser("export", help="a LoRA-SB / LoRA-XS adapter as a plain PEFT LoRA adapter",
                                 description="Load a folder written by gelora.adapters.files.save_adapter onto its base "
                                             "model and write it as a PEFT LoRA adapter.")
    export.add_argument("adapter", help="folder written by save_adapter")
    export.add_argument("model", help="the base model the adapter was trained on")
    export.add_argument("out", help="folder of the PEFT adapter")
    export.add_argument("--task", default="classification", choices=tuple(PEFT_TASKS),
                        help="the base model's head: a classifier or a language model")
    export.add_argument("--num-labels", type=int, default=2, help="classes of the head (classification)")
    export.add_argument("--skip-base-check", action="store_true", help="load onto other base weights anyway")
    export.set_defaults(handler=export_command)
    main.add_argument("--version", action="version", version=f"gelora {__version__}")
    for name, target, text in FORWARDED:
        sub = commands.add_parser(name, help=f"{text} (python -m {target}; --help for its flags)", add_help=False)
        sub.set_defaults(handler=None, module=target)
    return main


USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError, KeyError)
# Subcommands whose flags live in their own module (one definition): (name, module, help).
FORWARDED = (("train", "gelora.training.train", "one fine-tuning run"),
             ("grid", "gelora.study.grid", "a profile's grid: command lines, local jobs, a jobs file or submitit"),
             ("compare", "gelora.study.compare", "compare methods on your data: rates tuned, held-out seeds, one table"),
             ("job", "gelora.study.jobs", "run one job of a jobs file written by grid --write-jobs, without a shell"),
             ("run", "gelora.kit.pipeline", "the notebook pipeline"),
             ("study", "gelora.study.command", "the study and the benchmark: verdicts, the README's answer, rate protocol"),
             ("book", "gelora.kit.book", "the reference runs as a book"),
             ("exercises", "gelora.kit.exercises", "check or rewrite the notebooks' exercises"),
             ("migrate", "gelora.training.migrate", "rename records written under an earlier identity rule, checked"))


def main(argv=None) -> int:
    """One error path for every subcommand: a user error is one line on stderr and exit 1;
    `--debug` (anywhere on the line) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:  # a warning is a sentence for the user, not a source line of the kit
        warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    argv = [a for a in argv if a != "--debug"]
    forwarded = {name: module for name, module, _ in FORWARDED}
    command = argv[0] if argv else None
    try:
        if command in forwarded:  # the modules' own entry points, with all their flags, under this name
            import importlib

            module = importlib.import_module(forwarded[command])
            module.PROG = f"gelora {command}"
            return module.main(argv[1:])
        args = parser().parse_args(argv)
        return args.handler(args)
    except USER_ERRORS as err:
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"gelora {command}: {message} (--debug shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gelora {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # anything else is still one line, named by its kind; --debug shows where
        if debug:
            raise
        print(f"gelora {command}: {type(err).__name__}: {err} (an unexpected error: --debug shows the traceback; "
              "please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
