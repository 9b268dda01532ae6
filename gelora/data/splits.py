"""One file that holds every split, divided once by a seeded, stratified rule (so training
never sees the test part), and the check that two splits share no text."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from gelora.data.dataset import TextDataset, is_number

# One file holds every split: it is divided once, by this seeded rule, stratified by its label
# column (so training never sees the test part); the rule is part of every such run's identity.
FILE_SPLIT = {"fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}, "seed": 0,
              "how": "sklearn train_test_split, stratified by the label column when it has classes"}
WHOLE_FILE = "all"  # the split name that reads a single file whole (no division)


def strata(frame: pd.DataFrame, label_column: str | None) -> list[str] | None:
    """The classes a single file is stratified by: its label column (`label` when the caller asks
    for no labels, so probing and training divide a file alike), unless that column is missing
    or holds non-whole numbers (a regression target: no classes)."""
    column = label_column or "label"
    if column not in frame.columns:
        return None
    values = [str(v).strip() for v in frame[column].tolist()]
    if all(is_number(v) for v in values) and not all(float(v).is_integer() for v in values):
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

