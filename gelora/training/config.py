"""Every shared setting of a fine-tuning run, its help text and its checks (no I/O: the run's
identity, which reads files and weights, is gelora.training.identity).

Each field carries a one-line help and a group (data, model, method, optimisation, output), shown
by `python -m gelora train --help`. A method's own settings (LoRA-SB's `sb_num_samples`, GeLoRA's
`id_profile`, ...) are not fields here: each method declares them in its own module (its registry
entry's `settings`), and a config holds the ones given in `options`. They are read as attributes
all the same (`config.sb_num_samples`: the given value or the method's default), and given as
keywords: `FinetuneConfig("lora_sb", sb_num_samples=32)`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from gelora.core.checks import check_real, check_whole
from gelora.core.paths import from_record, portable
from gelora.core.plan import world_size
from gelora.methods.registry import REGISTRY, get_method, options

GROUPS = ("data", "model", "method", "optimisation", "output")
# settings that name the kit's own folders and files: records write them relative to the checkout
PATH_SETTINGS = ("output_dir", "cache_dir", "save_adapter", "id_profile")
# settings renamed since records were written: their old names, read as the new ones
RENAMED = {"profile": "id_profile"}
def setting(default, group: str, help: str):
    """A config field with its help text and its group on the command line."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}")
    return field(default=default, metadata={"group": group, "help": help})


@dataclass(init=False)
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
    lora_scale: float = setting(2.0, "method", "LoRA scaling alpha / r (alpha = scale * r)")
    dropout: float = setting(0.0, "method", "dropout on the adapter input")
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

    options: dict = setting(None, "method", "the methods' own settings given for this run, by name (see options())")

    def __init__(self, method: str | None = None, options: dict | None = None, **settings):
        """Shared settings by their field names; any other keyword is a method's own setting
        (kept in `options`) and must be declared by a registered method."""
        shared = {f.name for f in dataclasses.fields(self)}
        given = dict(options or {})
        given.update({k: settings.pop(k) for k in list(settings) if k not in shared})
        known = registered_options()
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise TypeError(f"unknown setting(s) {unknown}: neither a FinetuneConfig field nor a registered method's "
                            f"own setting ({sorted(known)})")
        for f in dataclasses.fields(self):
            if f.name not in ("method", "options"):
                object.__setattr__(self, f.name, settings.get(f.name, f.default))
        object.__setattr__(self, "method", method)
        given = {k: _normal(known[k], v) for k, v in given.items()}
        # a setting given at its method's default is the same run as one left out
        object.__setattr__(self, "options", {k: v for k, v in given.items() if v != known[k].default})
        self.__post_init__()

    def __getattr__(self, name: str):
        """A method's own setting: the given value, else its declared default."""
        known = registered_options() if name != "options" else {}
        if name not in known:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.__dict__.get("options", {}).get(name, known[name].default)

    def __setattr__(self, name: str, value):
        if name in registered_options():
            f = registered_options()[name]
            value = _normal(f, value)
            if value == f.default:
                self.options.pop(name, None)
            else:
                self.options[name] = value
        else:
            object.__setattr__(self, name, value)

    def __post_init__(self):
        """Normalise types so that the same settings give the same run identity whether they
        come from Python, YAML (1) or the command line (1.0)."""
        for f in dataclasses.fields(self):
            if f.name != "options":
                object.__setattr__(self, f.name, _normal(f, getattr(self, f.name)))
        if isinstance(self.target_modules, str):  # one module name, not a list of its letters
            self.target_modules = [self.target_modules]

    def flat(self) -> dict:
        """The shared settings and every own setting of the run's method (given or default), plus
        other methods' settings given to it, in one flat dict: what a record's `config` says (the
        kit's folders relative to the checkout: gelora.core.paths)."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if k != "options"}
        own = get_method(self.method).settings if self.method in REGISTRY else None
        defaults = {f.name: f.default for f in dataclasses.fields(own)} if own else {}
        flat = {**values, **defaults, **self.options}
        return {k: portable(v) if k in PATH_SETTINGS and isinstance(v, str) else v for k, v in flat.items()}


def registered_options() -> dict[str, dataclasses.Field]:
    """Every registered method's own settings by name (their fields)."""
    return {name: f for name, (f, _) in options().items()}


def type_name(f: dataclasses.Field) -> str:
    """A field's declared type as written ('float | None'), whether or not its module postpones annotations."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _normal(f: dataclasses.Field, value):
    """An int where a float is declared becomes a float, a tuple a list."""
    if type_name(f).startswith("float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return list(value) if isinstance(value, tuple) else value


def _check_whole(config, name: str, low: int, optional: bool = False) -> None:
    check_whole(name, getattr(config, name), low, optional)


def _check_real(config, name: str, low: float, high: float = math.inf, open_low: bool = False,
                optional: bool = False) -> None:
    check_real(name, getattr(config, name), low, high, open_low, optional)


# a prompt template may hold line breaks and tabs; no other setting may hold a control character
MULTILINE = ("generation_template",)


def check_no_control(name: str, value) -> None:
    """A text setting (or a list of them) without control characters: a newline in a dataset
    folder's name would split a job line in two, and a terminal escape rewrites what the user sees."""
    for text in value if isinstance(value, list) else [value]:
        if not isinstance(text, str):
            continue
        allowed = "\n\t" if name in MULTILINE else ""
        bad = sorted({c for c in text if (ord(c) < 32 or ord(c) == 127) and c not in allowed})
        if bad:
            raise ValueError(f"{name} must not contain control characters, got {text!r} (it holds "
                             f"{', '.join(repr(c) for c in bad)})")


def validate(config: FinetuneConfig) -> None:
    """Check every setting before any work: the argument, its value and what is allowed."""
    get_method(config.method)
    for f in dataclasses.fields(config):
        if f.name != "options":
            check_no_control(f.name, getattr(config, f.name))
    for name, value in config.options.items():
        check_no_control(name, value)
    for name in ("dataset", "model", "test_split", "generation_template", "output_dir", "text_column", "label_column"):
        if not isinstance(getattr(config, name), str) or not getattr(config, name):
            raise ValueError(f"{name} must be a non-empty string, got {getattr(config, name)!r}")
    for name in ("max_length", "batch_size", "rank", "evals", "gradient_accumulation", "max_new_tokens"):
        _check_whole(config, name, 1)
    _check_whole(config, "seed", 0)
    for name in ("n_train", "n_eval", "n_test", "budget", "processes"):
        _check_whole(config, name, 1, optional=True)
    _check_real(config, "epochs", 0, open_low=True)
    _check_real(config, "lr", 0, open_low=True, optional=True)
    _check_real(config, "lora_scale", 0, open_low=True)
    _check_real(config, "weight_decay", 0)
    _check_real(config, "dropout", 0, 1)
    _check_real(config, "warmup_ratio", 0, 1)
    tm = config.target_modules
    if tm is not None and (isinstance(tm, str) or not isinstance(tm, list) or not tm
                           or not all(isinstance(t, str) and t for t in tm)):
        raise ValueError(f"target_modules must be a non-empty list of module names or None, got {tm!r}")
    choices = {"task": (None, "classification", "regression", "generation"), "prompt_format": ("auto", "chat", "plain"),
               "device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16", "fp16")}
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")
    if config.test_split not in ("validation", "test"):
        raise ValueError(f"test_split must be 'test' or 'validation', got {config.test_split!r}")
    _check_method_settings(config)
    processes = config.processes if config.processes is not None else world_size()
    split = processes * config.gradient_accumulation
    if config.batch_size % split:
        raise ValueError(f"batch_size={config.batch_size} (the global batch) does not split evenly over {processes} "
                         f"process(es) x gradient_accumulation={config.gradient_accumulation}: use a multiple of {split}")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")


def _check_method_settings(config: FinetuneConfig) -> None:
    """The run's method's own settings by its checks, and every other method's setting given to
    this config (a profile's setting for some of its methods) by the checks of the method that
    declares it, so no value passes unchecked."""
    classes = {get_method(config.method).settings} if get_method(config.method).settings else set()
    classes |= {m.settings for m in REGISTRY.values()
                if m.settings and set(config.options) & {f.name for f in dataclasses.fields(m.settings)}}
    for cls in sorted(classes, key=lambda c: c.__name__):
        own = {f.name for f in dataclasses.fields(cls)}
        cls(**{k: v for k, v in config.options.items() if k in own}).check(config)


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


def config_from_record(values: dict) -> FinetuneConfig:
    """The config of a record's `config` section, from any version of the kit: shared settings
    and methods' own settings by name (flat, as records write them); names the kit no longer has
    are left out (the record's identity, not its config, decides whether it is reused). Paths
    written relative to the checkout come back as paths this process can open."""
    known = {f.name for f in dataclasses.fields(FinetuneConfig)} | set(registered_options())
    nested = values.get("options") or {}
    renamed = {RENAMED.get(k, k): v for k, v in {**values, **nested}.items() if k != "options"}
    given = {k: v for k, v in renamed.items() if k in known}
    return FinetuneConfig(**{k: from_record(v) if k in PATH_SETTINGS and isinstance(v, str) else v
                             for k, v in given.items()})
