"""Spectral views of weight updates: singular values, rank-r truncation error, and how similar
two estimates' top-r subspaces are (used to judge the LoRA-SB initialisation)."""
from __future__ import annotations

import numpy as np
import torch


def singular_values(matrix: torch.Tensor) -> np.ndarray:
    """All singular values, in float64, largest first."""
    return torch.linalg.svdvals(matrix.detach().to(torch.float64).cpu()).numpy()


def truncation_error(values: np.ndarray, ranks) -> np.ndarray:
    """Relative Frobenius error of the best rank-r approximation, ||M - M_r|| / ||M||, for each r
    (Eckart-Young: the energy of the dropped singular values)."""
    energy = np.asarray(values, dtype=float) ** 2
    total = energy.sum()
    if total == 0:
        raise ValueError("the matrix is zero: its truncation error is undefined")
    tail = total - np.concatenate([[0.0], np.cumsum(energy)])
    return np.sqrt(np.clip(tail[np.asarray(ranks)], 0, None) / total)


def subspace_similarity(first: torch.Tensor, second: torch.Tensor, rank: int) -> float:
    """Similarity of the top-r singular subspaces of two matrices, in [0, 1]: the mean of
    ||U1^T U2||_F^2 / r (left) and ||V1^T V2||_F^2 / r (right). 1: the same subspaces."""
    U1, _, V1 = torch.linalg.svd(first.detach().to(torch.float64).cpu(), full_matrices=False)
    U2, _, V2 = torch.linalg.svd(second.detach().to(torch.float64).cpu(), full_matrices=False)
    left = torch.linalg.matrix_norm(U1[:, :rank].T @ U2[:, :rank]) ** 2 / rank
    right = torch.linalg.matrix_norm(V1[:rank] @ V2[:rank].T) ** 2 / rank
    return float((left + right) / 2)
