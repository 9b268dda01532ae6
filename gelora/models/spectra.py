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
    (Eckart-Young: the energy of the dropped singular values). The dropped energy is summed from
    the smallest value up, not taken as total minus kept: no cancellation, so keeping every value
    gives exactly 0 (the difference gave 1e-8 of float noise, another 1e-8 on another machine)."""
    energy = np.asarray(values, dtype=float) ** 2
    total = energy.sum()
    if total == 0:
        raise ValueError("the matrix is zero: its truncation error is undefined")
    tail = np.concatenate([np.cumsum(energy[::-1])[::-1], [0.0]])
    return np.sqrt(tail[np.asarray(ranks)] / total)


def subspace_similarity(first: torch.Tensor, second: torch.Tensor, rank: int) -> float:
    """Similarity of the top-r singular subspaces of two matrices, in [0, 1]: the mean of
    ||U1^T U2||_F^2 / r (left) and ||V1^T V2||_F^2 / r (right). 1: the same subspaces."""
    U1, _, V1 = torch.linalg.svd(first.detach().to(torch.float64).cpu(), full_matrices=False)
    U2, _, V2 = torch.linalg.svd(second.detach().to(torch.float64).cpu(), full_matrices=False)
    left = torch.linalg.matrix_norm(U1[:, :rank].T @ U2[:, :rank]) ** 2 / rank
    right = torch.linalg.matrix_norm(V1[:rank] @ V2[:rank].T) ** 2 / rank
    return float((left + right) / 2)


def energy_rank(values, fraction: float) -> int:
    """The smallest r whose top-r singular values hold `fraction` of the energy (sum of squares)."""
    energy = np.asarray(values, dtype=float) ** 2
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if energy.sum() == 0:
        return 0
    return int(np.searchsorted(np.cumsum(energy) / energy.sum(), fraction - 1e-12) + 1)


def stable_rank(values) -> float:
    """||M||_F^2 / ||M||_2^2: a rank that small singular values barely move."""
    values = np.asarray(values, dtype=float)
    return float((values ** 2).sum() / values[0] ** 2) if values.size and values[0] > 0 else 0.0


def snapshot(modules: dict) -> dict[str, torch.Tensor]:
    """A float32 CPU copy of each module's weight, before training (name -> matrix)."""
    return {name: module.weight.detach().float().cpu().clone() for name, module in modules.items()}


def update_spectra(modules: dict, start: dict[str, torch.Tensor], digits: int = 6) -> dict[str, list[float]]:
    """Singular values of each weight's update W_trained - W_start (name -> values, largest
    first, rounded to `digits` significant digits): the rank a full fine-tuning really used."""
    out = {}
    for name, module in modules.items():
        values = singular_values(module.weight.detach().float().cpu() - start[name])
        out[name] = [float(f"{v:.{digits}g}") for v in values]
    return out


def update_ranks(spectra: dict[str, list[float]], fractions=(0.9, 0.99)) -> list[dict]:
    """Per matrix of `update_spectra`: its energy ranks at `fractions` and its stable rank."""
    from gelora.models.targets import block_index

    return [{"module": name, "block": block_index(name), "rows": len(values),
             **{f"energy_rank_{round(f * 100)}": energy_rank(values, f) for f in fractions},
             "stable_rank": stable_rank(values)} for name, values in spectra.items()]
