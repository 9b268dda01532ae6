"""The per-example sidecar of a record: what gelora.analysis.stats pairs across methods."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gelora.core.records import atomic_write
from gelora.data.tasks import file_sha256


def example_scores(task: str, predictions, labels, order=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per test example, in the split's order: (prediction, label, score). Score: 1/0 correct for
    classification, the negative squared error for regression, the share of correct response
    tokens for generation (what gelora.analysis.stats pairs across methods)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task == "classification":
        scores = (predictions == labels).astype(np.float32)
    elif task == "regression":
        predictions = predictions.reshape(-1)
        scores = -((predictions - labels) ** 2).astype(np.float32)
    else:
        mask = labels != -100
        scores = ((predictions == labels) & mask).sum(1) / np.maximum(mask.sum(1), 1)
        predictions = labels = np.zeros(len(scores), dtype=np.int64)  # token arrays are not kept
    if order is not None:  # undo the length sort
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        predictions, labels, scores = predictions[inverse], labels[inverse], scores[inverse]
    return predictions, labels, scores.astype(np.float32)


def write_predictions(path: Path, indices, predictions, labels, scores) -> dict:
    """The compact sidecar of a record: per test example its position in the split, prediction,
    label and score; written atomically, named in the record with its sha256."""
    atomic_write(path, lambda handle: np.savez_compressed(handle, index=np.asarray(indices, dtype=np.int32),
                                                          prediction=predictions, label=labels, score=scores),
                 binary=True)
    return {"file": path.name, "sha256": file_sha256(path), "examples": int(len(scores))}
