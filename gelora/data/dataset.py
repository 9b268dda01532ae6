"""The one shape every dataset takes: texts, labels (or responses) and the task, whatever the
source (shipped, your own file, the hub), so the probe, the trainer and the notebooks never care
where the text came from."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace

import numpy as np

TASKS = ("classification", "regression", "generation")


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




def is_number(text: str) -> bool:
    """A finite number written as text (a regression target, not a class name)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
