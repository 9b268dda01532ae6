"""How sure is a GeLoRA allocation? The ID estimate is noisy, and the bound max(d_{k+1} - d_k, 0)
is the difference of two noisy estimates, so a rank can be decided by noise.

The probed points are resampled with replacement, the same points at every layer (a block's
bound compares two layers of one sample: resampling them together keeps that pairing), each
layer's TwoNN dimension is refitted from the resampled neighbour ratios (the neighbours are found
once, as TwoNN's own interval does), and the bounds and the budgeted ranks are recomputed for
every resample. The result per block: the bound and the rank with 95 % intervals, the probability
that the bound is above 0, and how often the resampled rank equals the allocated one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from gelora.core.checks import check_real, check_whole
from gelora.geometry.twonn import _as_tensor, fit_mu, two_nearest_neighbors


def neighbour_ratios(states: Sequence[np.ndarray], skip: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """mu = r2 / r1 of every point at every layer, for the points distinct at every layer (a
    duplicate has no ratio). Returns (ratios: points x layers, the points' row numbers); a layer
    with fewer than 3 distinct points (the [CLS] embedding), or named in `skip` (a layer the
    profile left without a dimension), gets a column of NaN and does not restrict the points of
    the others. Fewer than half the points distinct at every layer is an error: the intervals would
    describe those few points, not the sample (a decoder's embedding layer under last-token pooling
    has one point per distinct last token: leave it out of the profile)."""
    if len(states) < 2:
        raise ValueError(f"need the states of at least 2 layers, got {len(states)}")
    n = len(states[0])
    if any(len(X) != n for X in states):
        raise ValueError(f"every layer needs one point per probed text: got {[len(X) for X in states]} points")
    bad = [j for j in skip if not isinstance(j, (int, np.integer)) or not 0 <= j < len(states)]
    if bad:
        raise ValueError(f"skip must name layers 0-{len(states) - 1}, got {list(skip)}")
    columns, usable, distinct_counts = [], np.ones(n, dtype=bool), {}
    for j, X in enumerate(states):
        column = np.full(n, np.nan)
        if j not in set(skip):
            array = _as_tensor(X).cpu().numpy()
            _, first = np.unique(array, axis=0, return_index=True)
            if len(first) >= 3:
                kept = np.sort(first)
                distinct = np.zeros(n, dtype=bool)
                distinct[kept] = True
                r1, r2, _ = two_nearest_neighbors(array[kept])
                column[kept] = r2 / r1
                usable &= distinct
                distinct_counts[j] = len(first)
        columns.append(column)
    rows = np.flatnonzero(usable)
    if len(rows) < 3:
        raise ValueError(f"only {len(rows)} points are distinct at every layer: too few to resample")
    if len(rows) < n / 2:
        worst = min(distinct_counts, key=distinct_counts.get)
        raise ValueError(f"only {len(rows)} of {n} points are distinct at every layer (layer {worst} has "
                         f"{distinct_counts[worst]} distinct): intervals from them would describe those points, not the "
                         "sample; leave such a layer out of the profile (its dimension NaN) or name it in skip")
    return np.stack(columns, axis=1)[rows], rows


def bootstrap_dimensions(states: Sequence[np.ndarray], n_resamples: int = 1000, seed: int = 0,
                         discard_fraction: float = 0.1, skip: Sequence[int] = ()) -> np.ndarray:
    """TwoNN dimensions (linear fit) of every layer for `n_resamples` paired resamples of the
    points: an array resamples x layers (NaN where a resample cannot be fitted, and for the layers
    in `skip`)."""
    check_whole("n_resamples", n_resamples, 2)
    check_whole("seed", seed, 0)
    check_real("discard_fraction", discard_fraction, 0, 1)
    ratios, _ = neighbour_ratios(states, skip)
    rng = np.random.default_rng(seed)
    n, layers = ratios.shape
    out = np.full((n_resamples, layers), np.nan)
    for b in range(n_resamples):
        sample = ratios[rng.integers(0, n, n)]
        for j in range(layers):
            if np.isnan(sample[0, j]):
                continue
            try:
                out[b, j] = fit_mu(sample[:, j], discard_fraction, "linear")[0]
            except ValueError:  # every kept ratio tied: this resample gives no dimension
                pass
    return out


def allocation_intervals(dimensions: Sequence[float], resampled: np.ndarray, allocate: Callable[[np.ndarray], list[int]],
                         confidence: float = 0.95) -> pd.DataFrame:
    """Per block k (layer k -> k + 1): the bound and rank from `dimensions` (the profile), their
    intervals over the resampled dimensions, P(bound > 0) and the share of resamples that give
    the same rank. `allocate(dims) -> ranks` is the allocation rule (`gelora_ranks` at a budget)."""
    check_real("confidence", confidence, 0, 1, open_low=True)
    dims = np.asarray(dimensions, dtype=float)
    resampled = np.asarray(resampled, dtype=float)
    if resampled.ndim != 2 or resampled.shape[1] != len(dims):
        raise ValueError(f"resampled must be resamples x {len(dims)} layers, got shape {resampled.shape}")
    defined = np.isfinite(dims)
    complete = np.isfinite(resampled[:, defined]).all(axis=1)
    if complete.mean() < 0.95:
        raise ValueError(f"only {complete.sum()} of {len(resampled)} resamples give every layer a dimension: "
                         "too few for an interval (probe more texts)")
    resampled = resampled[complete]
    bounds = np.maximum(np.diff(np.nan_to_num(dims)), 0.0)
    bounds[~(defined[1:] & defined[:-1])] = 0.0
    sampled_bounds = np.maximum(np.diff(np.nan_to_num(resampled), axis=1), 0.0)
    sampled_bounds[:, ~(defined[1:] & defined[:-1])] = 0.0
    ranks = np.asarray(allocate(dims))
    sampled_ranks = np.array([allocate(np.where(defined, row, np.nan)) for row in resampled])
    alpha = (1 - confidence) / 2
    rows = []
    for k in range(len(bounds)):
        rows.append({"block": k, "bound": bounds[k],
                     "bound_low": np.quantile(sampled_bounds[:, k], alpha),
                     "bound_high": np.quantile(sampled_bounds[:, k], 1 - alpha),
                     "p_bound_positive": float((sampled_bounds[:, k] > 0).mean()),
                     "rank": int(ranks[k]), "rank_low": int(np.floor(np.quantile(sampled_ranks[:, k], alpha))),
                     "rank_high": int(np.ceil(np.quantile(sampled_ranks[:, k], 1 - alpha))),
                     "p_same_rank": float((sampled_ranks[:, k] == ranks[k]).mean())})
    table = pd.DataFrame(rows)
    table.attrs["resamples"] = int(len(resampled))
    return table


def decided_by_noise(table: pd.DataFrame, threshold: float = 0.95) -> dict[str, list[int]]:
    """Blocks whose bound is uncertain in sign (P(bound > 0) between 1 - threshold and
    threshold) and blocks whose rank changes in more than 1 - threshold of the resamples."""
    sign = table[(table["p_bound_positive"] > 1 - threshold) & (table["p_bound_positive"] < threshold)]["block"]
    rank = table[table["p_same_rank"] < threshold]["block"]
    return {"bound_sign": [int(b) for b in sign], "rank": [int(b) for b in rank]}


def profile_intervals(profile: pd.DataFrame, states: Sequence[np.ndarray], allocate: Callable[[np.ndarray], list[int]],
                      n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """`allocation_intervals` for a saved ID profile and the hidden states it was computed from
    (their point counts must agree: intervals of another sample would be wrong, not noisy). A layer
    the profile has no dimension for is left out of the resampling too."""
    counts = sorted(set(profile["n_points"].astype(int)))
    if counts != [len(states[0])] or len(profile) != len(states):
        raise ValueError(f"the profile was computed from {counts} point(s) on {len(profile)} layers, the states have "
                         f"{len(states[0])} points on {len(states)} layers: probe the same texts (n_examples, seed) "
                         "as the profile")
    discard = float(profile["discard_fraction"].iloc[0]) if "discard_fraction" in profile else 0.1
    ordered = profile.sort_values("layer")
    undefined = [int(j) for j, d in zip(ordered["layer"], ordered["dimension"]) if not np.isfinite(d)]
    resampled = bootstrap_dimensions(states, n_resamples, seed, discard, skip=undefined)
    return allocation_intervals(profile.sort_values("layer")["dimension"].to_numpy(), resampled, allocate)
