"""Local GLUE-format copies of the shipped data, so the gpu profile's data path runs offline.

GLUE's SST-2 is one sentence per example (`sentence`, `label`, `idx`); MRPC-style tasks are pairs
(`sentence1`, `sentence2`, `label`). These copies have the same columns and file format (TSV, as
GLUE ships them), made from the shipped movie sentences: `sst2` keeps each sentence and its
sentiment, `pairs` joins two sentences and asks whether they share their sentiment. Only
`train` and `validation` are written: GLUE hides its test labels, so the gpu profile scores
the validation split, as here.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from gelora.core.checks import check_whole
from gelora.data.tasks import load_dataset

TASKS = ("sst2", "pairs")


def write_glue_copy(folder: str | Path, task: str = "sst2", n_train: int = 400, n_validation: int = 100,
                    seed: int = 0) -> Path:
    """Write <folder>/train.tsv and validation.tsv for `task` (sst2 | pairs) and return the folder."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    check_whole("n_train", n_train, 2)
    check_whole("n_validation", n_validation, 2)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_validation)):
        data = load_dataset("movie-sentiment", split)
        positive = (np.asarray(data.label_names)[data.labels] == "positive").astype(int)
        rng = np.random.default_rng(seed)
        if task == "sst2":
            pick = rng.choice(len(data), size=n, replace=False)
            frame = pd.DataFrame({"sentence": [data.texts[i] for i in pick], "label": positive[pick]})
        else:
            first, second = (rng.choice(len(data), size=n, replace=False) for _ in range(2))
            frame = pd.DataFrame({"sentence1": [data.texts[i] for i in first], "sentence2": [data.texts[i] for i in second],
                                  "label": (positive[first] == positive[second]).astype(int)})
        frame.insert(len(frame.columns), "idx", range(n))
        frame.to_csv(folder / f"{split}.tsv", sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar=None)
    return folder
