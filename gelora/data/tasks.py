"""Datasets: the shipped ones under data/, any local CSV/JSONL file, or a Hugging Face dataset.

Everything comes back as a `TextDataset` (texts, labels, task), so the probe, the trainer and the
notebooks never care where the text came from.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import numbers
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

TASKS = ("classification", "regression", "generation")
PROMPT_FORMATS = ("auto", "chat", "plain")
SPLITS = ("train", "validation", "test")
# One file holds every split: it is divided once, by this seeded rule, stratified by its label
# column (so training never sees the test part); the rule is part of every such run's identity.
FILE_SPLIT = {"fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}, "seed": 0,
              "how": "sklearn train_test_split, stratified by the label column when it has classes"}
WHOLE_FILE = "all"  # the split name that reads a single file whole (no division)
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
# Views of a shipped dataset under another name: (files, label column, task).
ALIASES = {"movie-rating": ("movie-sentiment", "rating", "regression")}


def data_dir() -> Path:
    """The folder holding the shipped datasets (override with GELORA_DATA_DIR)."""
    path = Path(os.environ.get("GELORA_DATA_DIR", Path(__file__).resolve().parents[2] / "data"))
    if not (path / "manifest.json").exists():
        raise FileNotFoundError(
            f"no shipped data at {path} (manifest.json missing): run from a clone of the "
            "repository, install it with `pip install -e .`, or set GELORA_DATA_DIR"
        )
    return path


def shipped_datasets() -> list[str]:
    """Names accepted by `load_dataset` for the data shipped with the kit."""
    manifest = json.loads((data_dir() / "manifest.json").read_text())
    return sorted(list(manifest["datasets"]) + list(ALIASES))


@dataclass
class TextDataset:
    """Texts with labels for one split. For `generation`, `texts` are prompts and `responses`
    the targets the loss is computed on."""

    name: str
    split: str
    texts: list[str]
    labels: np.ndarray | None
    task: str
    label_names: list[str] | None = None
    responses: list[str] | None = None
    text_pairs: list[str] | None = None  # second sentence of pair tasks (GLUE MRPC, RTE, ...)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if len(self.texts) == 0:
            raise ValueError(f"dataset {self.name!r} split {self.split!r} is empty")
        bad = [i for i, t in enumerate(self.texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"dataset {self.name!r} split {self.split!r}: {len(bad)} empty or non-string "
                             f"text(s), first at index {bad[0]}")
        if self.task == "classification" and self.labels is not None:
            if not self.label_names or not (0 <= self.labels.min() and self.labels.max() < len(self.label_names)):
                raise ValueError(f"dataset {self.name!r} split {self.split!r}: class labels must index label_names")
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError("texts and labels differ in length")
        if self.task == "generation" and (self.responses is None or len(self.responses) != len(self.texts)):
            raise ValueError("a generation dataset needs one response per prompt")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Output size of the head: classes for classification, 1 for regression."""
        if self.task == "classification":
            return len(self.label_names)
        return 1

    def subset(self, n: int | None, seed: int = 0) -> TextDataset:
        """A seeded random subset of n examples (all of them when n is None or len). Asking for
        more examples than the split holds is an error, not a silent cap."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise ValueError(f"subset size n must be a whole number >= 1 or None, got {n!r}")
        if n is not None and n > len(self):
            raise ValueError(f"asked for {n} examples but {self.name!r} split {self.split!r} has only {len(self)}")
        if n is None or n == len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return replace(
            self,
            texts=[self.texts[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            responses=None if self.responses is None else [self.responses[i] for i in idx],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
            meta={**self.meta, "indices": [int(i) for i in idx]},  # positions in the split, for paired scores
        )

    @property
    def indices(self) -> np.ndarray:
        """Positions of these examples in their split (0..n-1 for a whole split)."""
        return np.asarray(self.meta.get("indices", range(len(self))), dtype=np.int64)


def _row_error(source: str, rows: list[int], what: str) -> ValueError:
    shown = ", ".join(str(r + 1) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
    return ValueError(f"{source}: {len(rows)} {what}, at data row(s) {shown} (1 = first row after the header)")


def _label_order(values: list[str]) -> list[str]:
    """Label names in a stable order: numerically when every label is a whole number (so "10"
    comes after "9"), else alphabetically."""
    distinct = set(values)
    try:
        numbers = {v: float(v) for v in distinct}
    except ValueError:
        return sorted(distinct)
    if all(x.is_integer() for x in numbers.values()):
        return sorted(distinct, key=lambda v: (numbers[v], v))
    return sorted(distinct)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _from_frame(frame: pd.DataFrame, name: str, split: str, text_column: str,
                label_column: str | None, task: str | None, label_names: list[str] | None,
                source: str | None = None) -> TextDataset:
    """A TextDataset from a table read as text. `task` and `label_names`, when given (from the
    training split, or declared), are applied as they are: nothing is re-decided per split."""
    source = source or f"dataset {name!r} split {split!r}"
    missing = [c for c in (text_column, label_column) if c is not None and c not in frame.columns]
    if missing:
        raise KeyError(f"{source} has no column(s) {missing}; columns are {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError(f"{source} is empty")
    texts = frame[text_column].tolist()
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise _row_error(source, bad, f"empty or missing text(s) in column {text_column!r}")
    if label_column is None:
        return TextDataset(name, split, texts, None, task or "classification", label_names)
    raw = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
           for v in frame[label_column].tolist()]
    bad = [i for i, v in enumerate(raw) if not v]
    if bad:
        raise _row_error(source, bad, f"missing label(s) in column {label_column!r}")
    if task is None:
        numeric = all(_is_number(v) for v in raw)
        whole = numeric and all(float(v).is_integer() for v in raw)
        task = "regression" if numeric and not whole else "classification"
    if task == "regression":
        bad = [i for i, v in enumerate(raw) if not _is_number(v)]
        if bad:
            raise _row_error(source, bad, f"label(s) in {label_column!r} that are not finite numbers (regression)")
        return TextDataset(name, split, texts, np.array([float(v) for v in raw], dtype=np.float32), task)
    if task != "classification":
        raise ValueError(f"{source}: task must be 'classification' or 'regression' for labelled data, got {task!r}")
    if label_names is not None:
        if len(set(label_names)) != len(label_names) or len(label_names) < 2:
            raise ValueError(f"label_names must be at least 2 distinct names, got {label_names!r}")
        names = [str(n) for n in label_names]
    else:
        names = _label_order(raw)
    index = {label: i for i, label in enumerate(names)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        raise ValueError(f"{source} has label(s) {unknown[:10]} outside {names[:20]} "
                         "(the labels of the training split, or the declared label_names)")
    labels = np.array([index[v] for v in raw], dtype=np.int64)
    return TextDataset(name, split, texts, labels, task, names)


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg}, column {err.colno})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    return pd.DataFrame(rows)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A local CSV or TSV (every cell read as text: "NA", "None" and "null" stay texts) or JSONL
    file (one object per line). Errors name the file, and the line for JSONL."""
    path = Path(path)
    if path.suffix in (".csv", ".tsv"):  # TSV is GLUE's own format: tab-separated, quotes are text
        tsv = path.suffix == ".tsv"
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", sep="\t" if tsv else ",",
                               quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path} is empty") from None
        except pd.errors.ParserError as err:
            raise ValueError(f"{path}: not a readable {path.suffix[1:].upper()} file ({err})") from None
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    raise ValueError(f"unsupported file type {path.suffix!r} for {path}: use .csv, .tsv or .jsonl")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shipped_file(files: str, split: str, manifest: dict) -> Path:
    """A shipped split, checked against the sha256 in data/manifest.json (an edited or damaged
    file would silently change every number computed from it)."""
    path = data_dir() / files / f"{split}.csv"
    expected = manifest["datasets"][files]["splits"][split]["sha256"]
    if not path.is_file():
        raise FileNotFoundError(f"shipped file {path} is missing: restore it with git checkout")
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(f"shipped file {path} does not match data/manifest.json (sha256 {actual[:12]}..., "
                         f"expected {expected[:12]}...): restore it with `git checkout {path}` or "
                         "regenerate with data/build_datasets.py")
    return path


def data_files(name_or_path: str, split: str) -> list[Path]:
    """The local files a split is read from (empty for hub datasets), for the run identity."""
    if name_or_path.startswith("hf:"):
        return []
    path = Path(name_or_path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return [path / f"{split}{suffix}" for suffix in TABLE_SUFFIXES if (path / f"{split}{suffix}").exists()][:1]
    files = ALIASES.get(name_or_path, (name_or_path, None, None))[0]
    return [data_dir() / files / f"{split}.csv"]


def load_dataset(name_or_path: str, split: str = "train", *, text_column: str = "text",
                 label_column: str | None = "label", task: str | None = None,
                 label_names: list[str] | None = None) -> TextDataset:
    """Load one split of a shipped dataset, a local file or folder, or a Hugging Face dataset.

    - shipped: `movie-sentiment`, `movie-rating` (the same sentences, rating as regression target),
      `trec6`, `sms-spam` (see data/README.md), checked against data/manifest.json;
    - a local `.csv` / `.tsv` / `.jsonl` file, divided into train/validation/test by FILE_SPLIT
      (seeded, stratified; `split="all"` reads it whole), or a folder holding `<split>.csv` /
      `.tsv` / `.jsonl`; the text column is `text_column`, else GLUE's names
      (`sentence`, or `sentence1` + `sentence2` and the other GLUE pairs, tokenised together);
    - `hf:<name>[/<config>]`, for example `hf:glue/sst2` (needs `datasets` and a network).

    task and label_names: decide them once (from the training split, or declared) and pass them
    for the other splits, so every split is scored with the same label mapping. Without them a
    numeric label column with a non-whole value is regression, anything else classification.
    """
    for argument, value in (("name_or_path", name_or_path), ("split", split), ("text_column", text_column)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{argument} must be a non-empty string, got {value!r}")
    if label_column is not None and (not isinstance(label_column, str) or not label_column):
        raise ValueError(f"label_column must be a non-empty string or None, got {label_column!r}")
    if task not in (None, "classification", "regression", "generation"):
        raise ValueError(f"task must be None, 'classification', 'regression' or 'generation', got {task!r}")
    if label_names is not None and (isinstance(label_names, str) or not isinstance(label_names, (list, tuple))):
        raise ValueError(f"label_names must be a list of names or None, got {label_names!r}")
    single_file = Path(name_or_path).is_file() and not name_or_path.startswith("hf:")
    if split not in SPLITS + ((WHOLE_FILE,) if single_file else ()) and not name_or_path.startswith("hf:"):
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}"
                         + (f" or {WHOLE_FILE!r} (the whole file)" if single_file else ""))
    if name_or_path.startswith("hf:"):
        return _load_hub(name_or_path[3:], split, text_column, label_column, task, label_names)
    path = Path(name_or_path)
    if path.is_file() or path.is_dir():
        files = [path] if path.is_file() else data_files(name_or_path, split)
        if not files:
            raise FileNotFoundError(f"folder {path} has no {' or '.join(split + s for s in TABLE_SUFFIXES)}")
        frame = read_table(files[0])
        name = path.stem if path.is_file() else path.name
        if task == "generation" or (task is None and {"prompt", "response"} <= set(frame.columns)):
            dataset = generation_from_frame(frame, name, split, "prompt", "response", str(files[0]))
        else:
            column, pair = text_columns(frame, text_column)
            dataset = _from_frame(frame, name, split, column, label_column, task, label_names, str(files[0]))
            dataset = _with_pairs(dataset, frame, pair, str(files[0]))
        return part_of_file(dataset, split, _strata(frame, label_column)) if path.is_file() else dataset
    files, label_column_override, alias_task = ALIASES.get(name_or_path, (name_or_path, None, None))
    manifest = json.loads((data_dir() / "manifest.json").read_text())
    if files not in manifest["datasets"]:
        raise ValueError(
            f"unknown dataset {name_or_path!r}: not a shipped name ({', '.join(shipped_datasets())}), "
            "not an existing file or folder, and not 'hf:<name>'"
        )
    meta = manifest["datasets"][files]
    own_task = alias_task or meta["task"]
    if task is not None and task != own_task:
        raise ValueError(f"dataset {name_or_path!r} is a {own_task} task, not {task!r}"
                         + (" (its generation view: data.as_generation)" if task == "generation" else ""))
    file = _shipped_file(files, split, manifest)
    frame = pd.read_csv(file, keep_default_na=False, dtype=str)
    if meta["task"] == "generation":
        dataset = generation_from_frame(frame, name_or_path, split, meta["text_column"], meta["response_column"], str(file))
        dataset.meta.update(source=meta["source"], licence=meta["licence"])
        return dataset
    dataset = _from_frame(
        frame, name_or_path, split, meta["text_column"], label_column_override or meta["label_column"],
        alias_task or meta["task"], None if alias_task == "regression" else meta["label_names"], str(file),
    )
    dataset.meta = {"source": meta["source"], "licence": meta["licence"]}
    return dataset


def _strata(frame: pd.DataFrame, label_column: str | None) -> list[str] | None:
    """The classes a single file is stratified by: its label column (`label` when the caller asks
    for no labels, so probing and training divide a file alike), unless that column is missing
    or holds non-whole numbers (a regression target: no classes)."""
    column = label_column or "label"
    if column not in frame.columns:
        return None
    values = [str(v).strip() for v in frame[column].tolist()]
    if all(_is_number(v) for v in values) and not all(float(v).is_integer() for v in values):
        return None
    return values


def split_positions(n: int, strata: list[str] | None, source: str) -> dict[str, np.ndarray]:
    """Rows of each split of one file of `n` rows, by FILE_SPLIT (seeded; stratified by `strata`
    when given). A file too small for every split to hold each class is refused, saying how to
    split it by hand."""
    from sklearn.model_selection import train_test_split

    fractions, seed = FILE_SPLIT["fractions"], FILE_SPLIT["seed"]
    n_test, n_validation = max(1, round(n * fractions["test"])), max(1, round(n * fractions["validation"]))
    rows = np.arange(n)
    labels = None if strata is None else np.asarray(strata)
    try:
        rest, test = train_test_split(rows, test_size=n_test, random_state=seed, stratify=labels)
        train, validation = train_test_split(rest, test_size=n_validation, random_state=seed,
                                             stratify=None if labels is None else labels[rest])
    except ValueError as err:
        classes = "" if labels is None else f" and {len(set(strata))} classes"
        raise ValueError(f"{source} ({n} rows{classes}) cannot be divided into train/validation/test "
                         f"({fractions['train']:.0%}/{fractions['validation']:.0%}/{fractions['test']:.0%}, each "
                         f"holding every class): {err}. Give a folder with train.csv, validation.csv and "
                         "test.csv instead") from None
    return {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}


def part_of_file(dataset: TextDataset, split: str, strata: list[str] | None) -> TextDataset:
    """One split of a dataset read whole from a single file (`WHOLE_FILE`: all of it); its meta
    records the rule and the sizes of all three parts."""
    if split == WHOLE_FILE:
        return dataset
    positions = split_positions(len(dataset), strata, f"{dataset.name} (one file)")
    rows = positions[split]
    part = replace(
        dataset, split=split,
        texts=[dataset.texts[i] for i in rows],
        labels=None if dataset.labels is None else dataset.labels[rows],
        responses=None if dataset.responses is None else [dataset.responses[i] for i in rows],
        text_pairs=None if dataset.text_pairs is None else [dataset.text_pairs[i] for i in rows],
    )
    part.meta = {**dataset.meta, "file_split": {**FILE_SPLIT, "stratified": strata is not None,
                                                "sizes": {k: len(v) for k, v in positions.items()}}}
    return part


def shared_texts(train: TextDataset, other: TextDataset) -> int:
    """How many examples of `other` have a text (with its second sentence) that training has."""
    seen = set(zip(train.texts, train.text_pairs or [None] * len(train)))
    return sum(pair in seen for pair in zip(other.texts, other.text_pairs or [None] * len(other)))


# Text columns of the GLUE tasks: one sentence, or a pair tokenised together.
HUB_TEXT_COLUMNS = [("sentence1", "sentence2"), ("question1", "question2"), ("question", "sentence"),
                    ("premise", "hypothesis"), ("sentence", None), ("text", None)]


def _load_hub(spec: str, split: str, text_column: str, label_column: str | None, task: str | None,
              label_names: list[str] | None = None) -> TextDataset:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("hub datasets need the `datasets` package: pip install -e '.[hub]'") from err
    name, _, config = spec.partition("/")
    hub = datasets.load_dataset(name, config or None, split=split)
    return _from_hub_frame(hub.to_pandas(), hub.features, spec, split, text_column, label_column, task, label_names)


def text_columns(frame: pd.DataFrame, text_column: str) -> tuple[str, str | None]:
    """(text column, second-sentence column or None): `text_column` when the table has it; for the
    default name `text` only, GLUE's names (sentence, sentence1 + sentence2, premise + hypothesis,
    ...). A column named by the caller is never replaced by a guess."""
    if text_column in frame.columns or text_column != "text":
        return text_column, None
    for first, second in HUB_TEXT_COLUMNS:
        if first in frame.columns and (second is None or second in frame.columns):
            return first, second
    return text_column, None  # missing: _from_frame names the columns there are


def _with_pairs(dataset: TextDataset, frame: pd.DataFrame, pair: str | None, source: str) -> TextDataset:
    if pair is not None:
        pairs = frame[pair].tolist()
        bad = [i for i, t in enumerate(pairs) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise _row_error(source, bad, f"empty or missing second sentence(s) in column {pair!r}")
        dataset.text_pairs = pairs
    return dataset


def _from_hub_frame(frame: pd.DataFrame, features, spec, split, text_column, label_column, task,
                    label_names=None) -> TextDataset:
    """A hub split as a TextDataset: GLUE's text columns found by name, class names taken from
    the features, and a split without labels (GLUE hides its test labels as -1) refused."""
    text_column, pair = text_columns(frame, text_column)
    if label_column and label_column in frame.columns:
        if pd.api.types.is_integer_dtype(frame[label_column]) and (frame[label_column] < 0).any():
            raise ValueError(f"split {split!r} of {spec} has no labels (label -1): GLUE hides its test labels, "
                             "evaluate on 'validation' instead")
        feature = features.get(label_column) if features is not None else None
        if feature is not None and hasattr(feature, "names"):
            label_names = list(feature.names)
            frame = frame.assign(**{label_column: [label_names[i] for i in frame[label_column]]})
    dataset = _from_frame(frame, spec, split, text_column, label_column, task, label_names)
    return _with_pairs(dataset, frame, pair, f"{spec} split {split!r}")


def generation_from_frame(frame: pd.DataFrame, name: str, split: str, prompt_column: str, response_column: str,
                          source: str) -> TextDataset:
    """Prompt / response pairs (a shipped generation dataset, or a local file with `prompt` and
    `response` columns); `generate.exact_match` says how a generated response is scored."""
    missing = [c for c in (prompt_column, response_column) if c not in frame.columns]
    if missing:
        raise KeyError(f"{source} has no column(s) {missing}; columns are {list(frame.columns)}")
    prompts, responses = frame[prompt_column].tolist(), frame[response_column].tolist()
    bad = [i for i, r in enumerate(responses) if not isinstance(r, str) or not r.strip()]
    if bad:
        raise _row_error(source, bad, f"empty or missing response(s) in column {response_column!r}")
    return TextDataset(name, split, prompts, None, "generation", responses=responses)


def as_generation(dataset: TextDataset, template: str = "Text: {text}\nLabel:") -> TextDataset:
    """Turn a classification dataset into prompt/response pairs for causal-LM fine-tuning:
    the prompt is the filled template, the response a space and the label name."""
    if dataset.task != "classification":
        raise ValueError(f"as_generation needs a classification dataset, got task {dataset.task!r}")
    prompts = [template.format(text=t) for t in dataset.texts]
    responses = [" " + dataset.label_names[i] for i in dataset.labels]
    return replace(dataset, texts=prompts, responses=responses, task="generation")


class TokenizedDataset(torch.utils.data.Dataset):
    """Tokenised examples as dicts of lists, padded later by a collator (dynamic padding)."""

    def __init__(self, features: list[dict]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.features[i]


def disjoint_halves(tokens: TokenizedDataset, first: int, second: int) -> tuple[TokenizedDataset, TokenizedDataset]:
    """The examples cut into two halves that share none, the first holding at least `first`
    examples and the second `second`: an estimate is judged against a reference made from other
    examples (shared examples would inflate their agreement)."""
    half = len(tokens) // 2
    if first > half or second > len(tokens) - half:
        raise ValueError(f"two disjoint halves of {first} and {second} examples need {2 * max(first, second)} "
                         f"examples; there are {len(tokens)}")
    return TokenizedDataset(tokens.features[:half]), TokenizedDataset(tokens.features[half:])


def prompt_format(tokenizer, requested: str = "auto") -> str:
    """'chat' (the model's chat template) or 'plain' (the prompt as it is): `auto` takes the chat
    template when the tokenizer has one. Asking for 'chat' without a template is an error."""
    if requested not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {requested!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if requested == "chat" and not has_template:
        raise ValueError("prompt_format='chat' but the tokenizer has no chat template: use 'plain' or 'auto'")
    return requested if requested != "auto" else ("chat" if has_template else "plain")


def format_prompt(tokenizer, prompt: str, form: str) -> str:
    """The text the model reads before its response: the user turn and the assistant header of the
    chat template, or the prompt itself."""
    if form == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
    return prompt


def tokenize(dataset: TextDataset, tokenizer, max_length: int = 128, form: str = "plain") -> TokenizedDataset:
    """Tokenise for a model. Classification gets integer labels, regression float labels; for
    generation the labels are the response tokens (then the end-of-sequence token), with the
    prompt (in `form`: 'plain' or 'chat', see `prompt_format`) masked out (-100)."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if dataset.task == "generation":
        return TokenizedDataset(_tokenize_generation(dataset, tokenizer, max_length, form))
    encoded = tokenizer(dataset.texts, dataset.text_pairs, truncation=True, max_length=max_length)
    features = []
    for i in range(len(dataset)):
        item = {k: encoded[k][i] for k in encoded.keys()}
        if dataset.labels is not None:
            label = dataset.labels[i]
            item["labels"] = float(label) if dataset.task == "regression" else int(label)
        features.append(item)
    return TokenizedDataset(features)


def _tokenize_generation(dataset: TextDataset, tokenizer, max_length: int, form: str) -> list[dict]:
    if form not in ("chat", "plain"):
        raise ValueError(f"form must be 'chat' or 'plain', got {form!r}")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    features = []
    for prompt, response in zip(dataset.texts, dataset.responses):
        prompt_ids = tokenizer(format_prompt(tokenizer, prompt, form), add_special_tokens=False)["input_ids"]
        response = response.strip() if form == "chat" else response  # the template ends the header with a newline
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + eos
        if len(response_ids) >= max_length:
            raise ValueError(f"a response of {len(response_ids)} tokens does not fit max_length={max_length}")
        prompt_ids = prompt_ids[-(max_length - len(response_ids)):]  # keep the end of a long prompt
        ids = prompt_ids + response_ids
        features.append({
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "labels": [-100] * len(prompt_ids) + response_ids,
        })
    return features


class ResponseLogits:
    """Pads a causal-LM batch (label-aware) and keeps the output layer to the positions that
    predict a response token: `logits_to_keep` lists the positions t whose next token is a response
    token in some row, and `labels` / `shift_labels` are those next tokens (-100 elsewhere), so the
    model computes the vocabulary-sized output and the loss only there. The loss is the same as on
    every position (the others are masked out of it anyway); on a 49k-word vocabulary the output
    layer is most of a step's work."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        self.pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    def __call__(self, features):
        batch = dict(self.pad(features))
        shifted = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)  # position t predicts t + 1
        keep = (shifted != -100).any(0).nonzero().squeeze(1)
        batch["logits_to_keep"] = keep
        batch["labels"] = batch["shift_labels"] = shifted[:, keep].contiguous()
        return batch


def collator(tokenizer, task: str):
    """The batch collator that fits the task: for generation, label-aware padding and the output
    layer on response positions only (`ResponseLogits`)."""
    from transformers import DataCollatorWithPadding

    if task == "generation":
        return ResponseLogits(tokenizer)
    return DataCollatorWithPadding(tokenizer)


def by_length(tokens: TokenizedDataset) -> tuple[TokenizedDataset, np.ndarray]:
    """The examples sorted by length, longest first (evaluation batches then hold little padding),
    and the order: sorted[k] is tokens[order[k]]."""
    order = np.argsort([-len(f["input_ids"]) for f in tokens.features], kind="stable")
    return TokenizedDataset([tokens.features[i] for i in order]), order


def seeded_loader(tokens, tokenizer, task: str, batch_size: int, seed: int, drop_labels: bool = False,
                  group_by_length: bool = True):
    """Shuffled batches in one seeded order (the global RNG is not used), so a pass over the first
    n examples always sees the same n. group_by_length: batches of similar lengths (the Trainer's
    LengthGroupedSampler: shuffled mega-batches sorted by length), so little padding is computed.
    drop_labels: for passes that need inputs only (EVA)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    collate = collator(tokenizer, task)

    def collate_fn(features):
        batch = dict(collate(features))
        if drop_labels:  # the inputs only (for generation also the kept positions' targets)
            batch = {k: v for k, v in batch.items() if k not in ("labels", "shift_labels", "logits_to_keep")}
        return batch

    generator = torch.Generator().manual_seed(seed)
    if group_by_length:
        lengths = [len(tokens[i]["input_ids"]) for i in range(len(tokens))]
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
        return torch.utils.data.DataLoader(tokens, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn)
    return torch.utils.data.DataLoader(tokens, batch_size=batch_size, shuffle=True, generator=generator,
                                       collate_fn=collate_fn)
