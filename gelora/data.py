"""Datasets: the shipped ones under data/, any local CSV/JSONL file, or a Hugging Face dataset.

Everything comes back as a `TextDataset` (texts, labels, task), so the probe, the trainer and the
notebooks never care where the text came from.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

TASKS = ("classification", "regression", "generation")
SPLITS = ("train", "validation", "test")
# Views of a shipped dataset under another name: (files, label column, task).
ALIASES = {"movie-rating": ("movie-sentiment", "rating", "regression")}


def data_dir() -> Path:
    """The folder holding the shipped datasets (override with GELORA_DATA_DIR)."""
    path = Path(os.environ.get("GELORA_DATA_DIR", Path(__file__).resolve().parent.parent / "data"))
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
        """A seeded random subset of n examples (all of them when n is None or >= len)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise ValueError(f"subset size must be positive, got {n}")
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return replace(
            self,
            texts=[self.texts[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            responses=None if self.responses is None else [self.responses[i] for i in idx],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
        )


def _from_frame(frame: pd.DataFrame, name: str, split: str, text_column: str,
                label_column: str | None, task: str | None, label_names: list[str] | None) -> TextDataset:
    missing = [c for c in (text_column, label_column) if c is not None and c not in frame.columns]
    if missing:
        raise KeyError(f"dataset {name!r} has no column(s) {missing}; columns are {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError(f"dataset {name!r} split {split!r} is empty")
    texts = frame[text_column].astype(str).tolist()
    if label_column is None:
        return TextDataset(name, split, texts, None, task or "classification", label_names)
    raw = frame[label_column]
    if raw.isna().any():
        raise ValueError(f"dataset {name!r} has {int(raw.isna().sum())} missing labels in {label_column!r}")
    if task is None:
        numeric = pd.api.types.is_numeric_dtype(raw)
        task = "regression" if numeric and not np.allclose(raw, np.round(raw)) else "classification"
    if task == "regression":
        return TextDataset(name, split, texts, raw.to_numpy(np.float32), task)
    names = label_names or sorted(raw.astype(str).unique().tolist())
    index = {label: i for i, label in enumerate(names)}
    unknown = sorted(set(raw.astype(str)) - set(index))
    if unknown:
        raise ValueError(f"dataset {name!r} has labels {unknown} outside {names}")
    labels = raw.astype(str).map(index).to_numpy(np.int64)
    return TextDataset(name, split, texts, labels, task, names)


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=path.suffix == ".jsonl")
    raise ValueError(f"unsupported file type {path.suffix!r} for {path}: use .csv or .jsonl")


def load_dataset(name_or_path: str, split: str = "train", *, text_column: str = "text",
                 label_column: str | None = "label", task: str | None = None) -> TextDataset:
    """Load one split of a shipped dataset, a local file or folder, or a Hugging Face dataset.

    - shipped: `movie-sentiment`, `movie-rating` (the same sentences, rating as regression target),
      `trec6`, `sms-spam` (see data/README.md);
    - a local `.csv`/`.jsonl` file (then `split` is only a label), or a folder holding
      `<split>.csv` / `<split>.jsonl`;
    - `hf:<name>[/<config>]`, for example `hf:glue/sst2` (needs `datasets` and a network).
    """
    if split not in SPLITS and not name_or_path.startswith("hf:") and not Path(name_or_path).is_file():
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if name_or_path.startswith("hf:"):
        return _load_hub(name_or_path[3:], split, text_column, label_column, task)
    path = Path(name_or_path)
    if path.is_file():
        return _from_frame(_read_table(path), path.stem, split, text_column, label_column, task, None)
    if path.is_dir():
        for suffix in (".csv", ".jsonl"):
            if (path / f"{split}{suffix}").exists():
                frame = _read_table(path / f"{split}{suffix}")
                return _from_frame(frame, path.name, split, text_column, label_column, task, None)
        raise FileNotFoundError(f"folder {path} has no {split}.csv or {split}.jsonl")
    files, label_column_override, alias_task = ALIASES.get(name_or_path, (name_or_path, None, None))
    manifest = json.loads((data_dir() / "manifest.json").read_text())
    if files not in manifest["datasets"]:
        raise ValueError(
            f"unknown dataset {name_or_path!r}: not a shipped name ({', '.join(shipped_datasets())}), "
            "not an existing file or folder, and not 'hf:<name>'"
        )
    meta = manifest["datasets"][files]
    frame = pd.read_csv(data_dir() / files / f"{split}.csv", keep_default_na=False)
    dataset = _from_frame(
        frame, name_or_path, split, meta["text_column"], label_column_override or meta["label_column"],
        alias_task or meta["task"], None if alias_task == "regression" else meta["label_names"],
    )
    dataset.meta = {"source": meta["source"], "licence": meta["licence"]}
    return dataset


# Text columns of the GLUE tasks: one sentence, or a pair tokenised together.
HUB_TEXT_COLUMNS = [("sentence1", "sentence2"), ("question1", "question2"), ("question", "sentence"),
                    ("premise", "hypothesis"), ("sentence", None), ("text", None)]


def _load_hub(spec: str, split: str, text_column: str, label_column: str | None, task: str | None) -> TextDataset:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("hub datasets need the `datasets` package: pip install -e '.[hub]'") from err
    name, _, config = spec.partition("/")
    hub = datasets.load_dataset(name, config or None, split=split)
    return _from_hub_frame(hub.to_pandas(), hub.features, spec, split, text_column, label_column, task)


def _from_hub_frame(frame: pd.DataFrame, features, spec, split, text_column, label_column, task) -> TextDataset:
    """A hub split as a TextDataset: GLUE's text columns found by name, class names taken from
    the features, and a split without labels (GLUE hides its test labels as -1) refused."""
    pair = None
    if text_column not in frame.columns:
        for first, second in HUB_TEXT_COLUMNS:
            if first in frame.columns and (second is None or second in frame.columns):
                text_column, pair = first, second
                break
    label_names = None
    if label_column and label_column in frame.columns:
        if pd.api.types.is_integer_dtype(frame[label_column]) and (frame[label_column] < 0).any():
            raise ValueError(f"split {split!r} of {spec} has no labels (label -1): GLUE hides its test labels, "
                             "evaluate on 'validation' instead")
        feature = features.get(label_column) if features is not None else None
        if feature is not None and hasattr(feature, "names"):
            label_names = list(feature.names)
            frame = frame.assign(**{label_column: [label_names[i] for i in frame[label_column]]})
    dataset = _from_frame(frame, spec, split, text_column, label_column, task, label_names)
    if pair is not None:
        dataset.text_pairs = frame[pair].astype(str).tolist()
    return dataset


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


def tokenize(dataset: TextDataset, tokenizer, max_length: int = 128) -> TokenizedDataset:
    """Tokenise for a model. Classification gets integer labels, regression float labels; for
    generation the labels are the response tokens, with the prompt masked out (-100)."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if dataset.task == "generation":
        return TokenizedDataset(_tokenize_generation(dataset, tokenizer, max_length))
    encoded = tokenizer(dataset.texts, dataset.text_pairs, truncation=True, max_length=max_length)
    features = []
    for i in range(len(dataset)):
        item = {k: encoded[k][i] for k in encoded.keys()}
        if dataset.labels is not None:
            label = dataset.labels[i]
            item["labels"] = float(label) if dataset.task == "regression" else int(label)
        features.append(item)
    return TokenizedDataset(features)


def _tokenize_generation(dataset: TextDataset, tokenizer, max_length: int) -> list[dict]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    features = []
    for prompt, response in zip(dataset.texts, dataset.responses):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
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


def collator(tokenizer, task: str):
    """The batch collator that fits the task: label-aware padding for generation."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if task == "generation":
        return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return DataCollatorWithPadding(tokenizer)


def seeded_loader(tokens, tokenizer, task: str, batch_size: int, seed: int, drop_labels: bool = False):
    """Shuffled batches in one seeded order (the global RNG is not used), so a pass over the first
    n examples always sees the same n. drop_labels: for passes that need inputs only (EVA)."""
    collate = collator(tokenizer, task)

    def collate_fn(features):
        if drop_labels:
            features = [{k: v for k, v in f.items() if k != "labels"} for f in features]
        return dict(collate(features))

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(tokens, batch_size=batch_size, shuffle=True, generator=generator,
                                       collate_fn=collate_fn)
