"""Datasets: the shipped ones under data/, any local CSV/JSONL file, or a Hugging Face dataset.

Everything comes back as a `TextDataset` (texts, labels, task), so the probe, the trainer and the
notebooks never care where the text came from.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from gelora.data.dataset import TextDataset, is_number
from gelora.data.splits import FILE_SPLIT, WHOLE_FILE, part_of_file, shared_texts, split_positions, strata  # noqa: F401

# tokenising lives in gelora.data.tokens; its names stay importable from here (notebooks read them here)
from gelora.data.tokens import (  # noqa: F401
    PROMPT_FORMATS,
    ResponseLogits,
    TokenizedDataset,
    by_length,
    collator,
    disjoint_halves,
    format_prompt,
    prompt_format,
    seeded_loader,
    tokenize,
)

SPLITS = ("train", "validation", "test")
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



STRAY_SHARE = 0.9  # whole-number labels at least this share of rows: a non-whole one is a stray, not a score


def _whole_name(value: str) -> str:
    return str(int(float(value)))


def _decide_task(raw: list[str], numeric: bool, source: str, label_column: str) -> str:
    """Classification unless the labels are clearly a continuous score: whole numbers (as text or
    numbers) are class ids; a few non-whole values among whole ones are an error naming their rows
    (declare task='regression' when the column really is a score)."""
    if not numeric:
        return "classification"
    stray = [i for i, v in enumerate(raw) if not float(v).is_integer()]
    if not stray:
        return "classification"
    if len(stray) <= (1 - STRAY_SHARE) * len(raw):
        raise _row_error(source, stray, f"non-whole label(s) in {label_column!r} among whole-number class ids "
                         "(a typo?); if the column is a score, declare task='regression' (--task regression)")
    return "regression"


def _from_frame(frame: pd.DataFrame, name: str, split: str, text_column: str,
                label_column: str | None, task: str | None, label_names: list[str] | None,
                source: str | None = None) -> TextDataset:
    """A TextDataset from a table read as text. `task` and `label_names`, when given (from the
    training split, or declared), are applied as they are: nothing is re-decided per split."""
    source = source or f"dataset {name!r} split {split!r}"
    missing = [c for c in (text_column, label_column) if c is not None and c not in frame.columns]
    if missing:
        raise KeyError(f"{source} has no column(s) {missing}; columns are {list(frame.columns)} (choose them with "
                       "--text-column and --label-column, or text_column= / label_column=)")
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
    numeric = all(is_number(v) for v in raw)
    if task is None:
        task = _decide_task(raw, numeric, source, label_column)
    if task == "classification" and numeric and all(float(v).is_integer() for v in raw):
        raw = [_whole_name(v) for v in raw]  # "1", "1.0" and " 1" are one class
    if task == "regression":
        bad = [i for i, v in enumerate(raw) if not is_number(v)]
        if bad:
            raise _row_error(source, bad, f"label(s) in {label_column!r} that are not finite numbers (regression)")
        return TextDataset(name, split, texts, np.array([float(v) for v in raw], dtype=np.float32), task)
    if task != "classification":
        raise ValueError(f"{source}: task must be 'classification' or 'regression' for labelled data, got {task!r}")
    if label_names is not None:
        if len(set(label_names)) != len(label_names) or len(label_names) < 2:
            raise ValueError(f"label_names must be at least 2 distinct names, got {label_names!r}")
        names = [str(n) for n in label_names]
        if all(is_number(n) and float(n).is_integer() for n in names) and numeric:
            names = [_whole_name(n) for n in names]
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
        return part_of_file(dataset, split, strata(frame, label_column)) if path.is_file() else dataset
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
        raise KeyError(f"{source} has no column(s) {missing}; columns are {list(frame.columns)} (choose them with "
                       "--text-column and --label-column, or text_column= / label_column=)")
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
