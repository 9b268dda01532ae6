"""Point clouds of known intrinsic dimension, for teaching TwoNN and for testing it.

Manifolds without boundary (sphere, torus) are the cleanest checks; uniform data in a cube
and Gaussians are underestimated at high dimension (METHODS.md lists what TwoNN really does)."""
from __future__ import annotations

import numpy as np


def _rotate(points: np.ndarray, ambient: int, rng: np.random.Generator) -> np.ndarray:
    """Embed points linearly into `ambient` dimensions with a random orthonormal map."""
    if ambient < points.shape[1]:
        raise ValueError(f"ambient dimension {ambient} is below the data's {points.shape[1]}")
    if ambient == points.shape[1]:
        return points
    basis, _ = np.linalg.qr(rng.normal(size=(ambient, points.shape[1])))
    return points @ basis.T


def gaussian(n: int, dim: int, ambient: int | None = None, seed: int = 0) -> np.ndarray:
    """n points of a standard Gaussian in `dim` dimensions, embedded linearly in `ambient`."""
    rng = np.random.default_rng(seed)
    return _rotate(rng.normal(size=(n, dim)), ambient or dim, rng)


def sphere(n: int, dim: int = 2, ambient: int | None = None, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """n points uniform on the unit `dim`-sphere (in dim + 1 coordinates), optionally with
    isotropic Gaussian noise of scale `noise` in the ambient space."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, dim + 1))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    points = _rotate(points, ambient or dim + 1, rng)
    return points + noise * rng.normal(size=points.shape) if noise else points


def torus(n: int, major: float = 2.0, minor: float = 1.0, seed: int = 0) -> np.ndarray:
    """n points uniform (in area) on a 2-torus in 3-D: intrinsic dimension 2, no boundary."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0, 2 * np.pi, size=4 * n)
    v = rng.uniform(0, 2 * np.pi, size=4 * n)
    keep = rng.uniform(0, major + minor, size=4 * n) < major + minor * np.cos(v)  # area-uniform
    u, v = u[keep][:n], v[keep][:n]
    if len(u) < n:
        raise RuntimeError("rejection sampling fell short; increase the oversampling")
    return np.stack([(major + minor * np.cos(v)) * np.cos(u), (major + minor * np.cos(v)) * np.sin(u),
                     minor * np.sin(v)], axis=1)


def swiss_roll(n: int, seed: int = 0) -> np.ndarray:
    """scikit-learn's swiss roll (a rolled-up rectangle): intrinsic dimension 2."""
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(n, random_state=seed)
    return points


def pareto_ratios(n: int, dim: float, seed: int = 0) -> np.ndarray:
    """n ratios mu drawn from the Pareto law F(mu) = 1 - mu^(-dim) that TwoNN assumes."""
    return np.random.default_rng(seed).pareto(dim, size=n) + 1.0
