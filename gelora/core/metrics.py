"""Task metrics: accuracy, F1 and MCC for classification; Pearson, Spearman and MSE for
regression; response-token accuracy for generation, and the Trainer hooks that compute them."""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def task_metrics(task: str, predictions: np.ndarray, labels: np.ndarray, num_labels: int = 2) -> dict:
    """Accuracy, F1 (binary or macro) and Matthews correlation for classification; Pearson,
    Spearman and MSE for regression; response-token accuracy for generation."""
    if task == "regression":
        pred = np.asarray(predictions).reshape(-1)
        return {"pearson": float(stats.pearsonr(pred, labels)[0]), "spearman": float(stats.spearmanr(pred, labels)[0]),
                "mse": float(np.mean((pred - labels) ** 2))}
    if task == "generation":
        mask = labels != -100
        return {"accuracy": float((predictions[mask] == labels[mask]).mean())}
    pred = np.asarray(predictions)
    return {"accuracy": float(accuracy_score(labels, pred)),
            "f1": float(f1_score(labels, pred, average="binary" if num_labels == 2 else "macro")),
            "mcc": float(matthews_corrcoef(labels, pred))}


# generation: exact match of the greedy answer (gelora.training.generate), scored once training ends; the
# evaluations during training report the response tokens predicted right (accuracy), which is cheap
PRIMARY = {"classification": "accuracy", "regression": "pearson", "generation": "exact_match"}


def metric_fns(task: str, num_labels: int):
    def preprocess(logits, labels):
        logits = logits[0] if isinstance(logits, tuple) else logits
        if task == "classification":
            return logits.argmax(-1)
        if task == "generation":  # data.ResponseLogits: logits and labels are aligned, kept positions only
            return logits.argmax(-1)
        return logits.squeeze(-1)

    def compute(eval_pred):
        return task_metrics(task, eval_pred.predictions, eval_pred.label_ids, num_labels)

    return preprocess, compute
