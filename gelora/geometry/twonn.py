"""The TwoNN intrinsic-dimension estimator (Facco et al. 2017), scikit-learn style.

For each point, mu = r2 / r1 (second over first nearest-neighbour distance) follows the Pareto law
F(mu) = 1 - mu^(-d) whatever the density, so -log(1 - F) = d log(mu). The neighbour search is
exact: blocked matrix products over the upper triangle of the distance matrix (each pair computed
once), a few float32 candidates per row, then the winners' distances recomputed in float64 so
that cancellation never corrupts a small r1.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from scipy import stats
from sklearn.base import BaseEstimator

METHODS = ("linear", "mle")


def check_device(device) -> torch.device:
    """A device TwoNN can compute on (cpu, or cuda / mps where present), as one error naming it."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'mps' (or a torch.device), got {device!r}") from None
    if found.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'mps', got {device!r} (a {found.type} tensor has no values "
                         "to measure)" if found.type == "meta" else f"device must be 'cpu', 'cuda' or 'mps', got {device!r}")
    if found.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine has no CUDA device (use 'cpu')")
    if found.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: this machine has no MPS device (use 'cpu')")
    return found


def _as_tensor(X, device=None) -> torch.Tensor:
    """Validate the input: 2-D, numeric, finite. Returns a float32 or float64 tensor (float64
    input stays float64, everything else becomes float32) on the chosen device."""
    if isinstance(X, torch.Tensor):
        tensor = X.detach()
        if tensor.is_meta:
            raise ValueError("TwoNN needs data, got a meta tensor (it has a shape but no values)")
        if tensor.dtype == torch.bool or tensor.is_complex() or not (tensor.is_floating_point() or tensor.dtype in (
                torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise TypeError(f"TwoNN needs real numeric data, got dtype {tensor.dtype}")
    else:
        array = np.asarray(X)
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise TypeError(f"TwoNN needs real numeric data, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim != 2:
        raise ValueError(f"TwoNN needs a 2-D array (points x features), got shape {tuple(tensor.shape)}")
    if tensor.shape[1] == 0:
        raise ValueError(f"TwoNN needs at least one feature, got shape {tuple(tensor.shape)}")
    if device is not None:
        tensor = tensor.to(check_device(device))
    if tensor.dtype != torch.float64:
        tensor = tensor.to(torch.float32)
    bad = ~torch.isfinite(tensor).all(dim=1)
    if bad.any():
        rows = torch.nonzero(bad).flatten()
        raise ValueError(f"data contains NaN or inf in {len(rows)} row(s), first at row {int(rows[0])}")
    return tensor


def deduplicate(X: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Remove exact duplicate rows (they give r1 = 0, mu = inf), keeping first occurrences in
    order. Returns (distinct rows, number removed). Rows are sorted by their first two columns
    (cheap); only rows that tie there are compared in full, so distinct data costs one sort."""
    array = (X + 0.0).cpu().numpy()  # + 0.0 turns -0.0 into 0.0
    keys = array[:, : min(2, array.shape[1])]
    order = np.lexsort(keys.T[::-1])
    sorted_keys = keys[order]
    ties = np.flatnonzero((sorted_keys[1:] == sorted_keys[:-1]).all(axis=1))
    if len(ties) == 0:
        return X, 0
    drop = np.zeros(len(array), dtype=bool)
    starts = ties[np.r_[True, np.diff(ties) > 1]]  # first index of each run of equal keys
    for start in starts:
        end = start + 1
        while end < len(order) and (sorted_keys[end] == sorted_keys[start]).all():
            end += 1
        members = np.sort(order[start:end])  # original positions, earliest first
        _, first = np.unique(np.ascontiguousarray(array[members]), axis=0, return_index=True)
        keep = np.zeros(len(members), dtype=bool)
        keep[first] = True
        drop[members[~keep]] = True
    if not drop.any():
        return X, 0
    kept = torch.from_numpy(np.flatnonzero(~drop)).to(X.device)
    return X[kept], int(drop.sum())


def _merge(best_d, best_i, d, i, k):
    """Keep the k smallest of two candidate lists, row by row."""
    all_d = torch.cat([best_d, d], dim=1)
    all_i = torch.cat([best_i, i], dim=1)
    d, pos = torch.topk(all_d, k, dim=1, largest=False)
    return d, torch.gather(all_i, 1, pos)


def two_nearest_neighbors(X, block_size: int = 2048, candidates: int = 3,
                          device=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact distances and indices of the two nearest neighbours of every row (itself excluded).

    Rows must be distinct. Memory is bounded by `block_size`^2 floats plus the data. Candidates
    come from float32 products of the centred data (upper-triangle blocks only: each block gives
    the row-wise and the column-wise minima); the `candidates` best per row are then measured
    directly (differences in the data's precision, sums accumulated in float64), never through
    the cancellation-prone expansion. Returns (r1, r2, idx) with idx of shape (n, 2).
    """
    X = _as_tensor(X, device)
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"need at least 3 distinct points for two neighbours each, got {n}")
    if not _is_whole(block_size) or block_size < 1 or not _is_whole(candidates) or candidates < 2:
        raise ValueError(f"block_size must be a whole number >= 1 and candidates >= 2, got {block_size!r}, {candidates!r}")
    k = min(candidates, n - 1)
    # Centre (any shift: distances do not move) and scale by a power of two (exact in floating
    # point) so the float32 search neither overflows (data around 1e19) nor underflows (around
    # 1e-22): the dimension is the same for X and c X. No full float64 copy of the data is made.
    span = float((X.amax(dim=0).to(torch.float64) - X.amin(dim=0).to(torch.float64)).max())
    if span == 0.0:
        raise ValueError("all points are identical: no neighbour distances")
    scale = 2.0 ** round(math.log2(span))
    X32 = (X - X.mean(dim=0, keepdim=True)).div_(scale).to(torch.float32)
    sq = (X32 * X32).sum(dim=1)
    best_d = torch.full((n, k), float("inf"), device=X.device)
    best_i = torch.zeros((n, k), dtype=torch.long, device=X.device)
    size = -(-n // -(-n // block_size))  # blocks of equal size (at most block_size): no thin last block
    starts = list(range(0, n, size))
    for a in starts:
        rows = slice(a, min(a + size, n))
        for b in starts:
            if b < a:
                continue
            cols = slice(b, min(b + size, n))
            d2 = torch.addmm(sq[None, cols], X32[rows], X32[cols].T, alpha=-2.0).add_(sq[rows, None])
            if a == b:
                d2.fill_diagonal_(float("inf"))
            d, i = torch.topk(d2, min(k, d2.shape[1]), dim=1, largest=False)
            best_d[rows], best_i[rows] = _merge(best_d[rows], best_i[rows], d, i + b, k)
            if a != b:  # the column-wise minima: a contiguous copy selects 2x faster than a strided view
                d, i = torch.topk(d2.T.contiguous(), min(k, d2.shape[0]), dim=1, largest=False)
                best_d[cols], best_i[cols] = _merge(best_d[cols], best_i[cols], d, i + a, k)
    del X32, d2
    # the candidates measured directly: differences in the data's precision (scaled exactly, so
    # that squares never overflow), sums in float64
    exact = torch.empty((n, k), dtype=torch.float64, device=X.device)
    for c in range(k):
        exact[:, c] = torch.linalg.vector_norm((X[best_i[:, c]] - X).div_(scale), dim=1, dtype=torch.float64)
    exact = exact * scale
    exact, order = torch.sort(exact, dim=1)
    idx = torch.gather(best_i, 1, order)[:, :2]
    return exact[:, 0].cpu().numpy(), exact[:, 1].cpu().numpy(), idx.cpu().numpy()


def fit_mu(mu: np.ndarray, discard_fraction: float = 0.1, method: str = "linear") -> tuple[float, np.ndarray, np.ndarray]:
    """The dimension from the ratios mu (all points), and the log-log points used.

    linear: sort mu, keep the smallest floor(N (1 - discard)) values, F_i = i / N (i = 1..n, the
    denominator is the full N), least squares through the origin of -log(1 - F) on log(mu).
    mle: the maximum-likelihood estimate with the discarded largest values treated as censored at
    the largest kept one; (n - 1) / (sum log mu_kept + (N - n) log mu_n), which is (N - 1) / sum
    log mu when nothing is discarded.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if isinstance(mu, torch.Tensor):
        if mu.is_meta:
            raise ValueError("mu must hold values, got a meta tensor (it has a shape but no values)")
        mu = mu.detach().cpu().numpy()
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    mu = np.asarray(mu, dtype=float)
    if mu.ndim != 1 or not np.isfinite(mu).all() or (mu < 1).any():
        raise ValueError("mu must be a 1-D array of finite ratios r2 / r1 >= 1")
    N = len(mu)
    n_keep = min(int(math.floor(N * (1.0 - discard_fraction))), N - 1)  # F = 1 would give y = inf
    if n_keep < 2:
        raise ValueError(f"only {n_keep} point(s) left after discarding {discard_fraction:.0%} of {N}")
    log_mu = np.log(np.sort(mu)[:n_keep])
    if log_mu[-1] == log_mu[0]:
        raise ValueError(f"every fitted mu equals {np.exp(log_mu[0]):.6g} (first and second neighbours tie, as on a "
                         "regular grid): the TwoNN law cannot be fitted to these points")
    y = -np.log1p(-np.arange(1, n_keep + 1) / N)
    if method == "linear":
        d = float(np.dot(log_mu, y) / np.dot(log_mu, log_mu))
    else:
        d = float((n_keep - 1) / (log_mu.sum() + (N - n_keep) * log_mu[-1]))
    return d, log_mu, y


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class TwoNN(BaseEstimator):
    """TwoNN intrinsic dimension. `TwoNN().fit(X).dimension_`.

    Parameters: discard_fraction (largest mu dropped from the fit, 0.1 as in the paper and
    scikit-dimension), method (`linear` fit of the empirical CDF, or `mle`), n_bootstrap (resamples
    of the mu values for the linear method's interval), confidence (interval level), block_size
    (memory bound of the neighbour search), random_state (bootstrap seed; the global RNG is never
    used), device (None: where the tensor already is, or CPU).

    A scikit-learn estimator: `clone`, `get_params` / `set_params` and `Pipeline` work; `fit`
    validates the parameters and `transform` is not defined (the result is one number per set).

    Attributes after fit: dimension_, standard_error_, interval_ (low, high), mu_ (ratio per
    distinct point), r1_, r2_, log_mu_ and neg_log_survival_ (the fitted points, x and y),
    n_points_ (rows given), n_duplicates_ (exact duplicate rows removed), n_distinct_, n_used_
    (points in the fit after the discard).
    """

    def __init__(self, discard_fraction: float = 0.1, method: str = "linear", n_bootstrap: int = 200,
                 confidence: float = 0.95, block_size: int = 2048, random_state: int = 0, device=None):
        # scikit-learn convention: store the arguments untouched, validate in fit (so clone works)
        self.discard_fraction = discard_fraction
        self.method = method
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.block_size = block_size
        self.random_state = random_state
        self.device = device

    def _validate_params(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"TwoNN: unknown method {self.method!r}; expected one of {METHODS}")
        if not _is_real(self.discard_fraction) or not 0.0 <= self.discard_fraction < 1.0:
            raise ValueError(f"TwoNN: discard_fraction must be in [0, 1), got {self.discard_fraction!r}")
        if not _is_real(self.confidence) or not 0.0 < self.confidence < 1.0:
            raise ValueError(f"TwoNN: confidence must be in (0, 1), got {self.confidence!r}")
        for name, low in (("n_bootstrap", 0), ("block_size", 1)):
            value = getattr(self, name)
            if not _is_whole(value) or value < low:
                raise ValueError(f"TwoNN: {name} must be a whole number >= {low}, got {value!r}")
        if not _is_whole(self.random_state):
            raise ValueError(f"TwoNN: random_state must be a whole number (a seed), got {self.random_state!r}")

    def fit(self, X, y=None) -> TwoNN:
        self._validate_params()
        data = _as_tensor(X, self.device)
        self.n_points_ = data.shape[0]
        data, self.n_duplicates_ = deduplicate(data)
        self.n_distinct_ = data.shape[0]
        if self.n_duplicates_:
            warnings.warn(f"TwoNN: removed {self.n_duplicates_} duplicate point(s) of {self.n_points_}",
                          stacklevel=2)
        if self.n_distinct_ < 3:
            raise ValueError(f"TwoNN needs at least 3 distinct points, got {self.n_distinct_} "
                             f"({self.n_points_} given, {self.n_duplicates_} duplicates)")
        self.r1_, self.r2_, _ = two_nearest_neighbors(data, self.block_size)
        self.mu_ = self.r2_ / self.r1_
        self.dimension_, self.log_mu_, self.neg_log_survival_ = fit_mu(
            self.mu_, self.discard_fraction, self.method)
        self.n_used_ = len(self.log_mu_)
        self.standard_error_, self.interval_ = self._uncertainty()
        return self

    def _uncertainty(self) -> tuple[float, tuple[float, float]]:
        alpha = 1.0 - self.confidence
        if self.method == "mle":
            # 2 d S follows chi2(2n) for the censored Pareto sample: an exact interval.
            N, n = len(self.mu_), self.n_used_
            S = self.log_mu_.sum() + (N - n) * self.log_mu_[-1]
            low, high = stats.chi2.ppf([alpha / 2, 1 - alpha / 2], 2 * n) / (2 * S)
            return self.dimension_ / math.sqrt(n), (float(low), float(high))
        if self.n_bootstrap < 2:
            return float("nan"), (float("nan"), float("nan"))
        rng = np.random.default_rng(self.random_state)
        N = len(self.mu_)
        estimates = np.array([self._resample_fit(self.mu_[rng.integers(0, N, N)]) for _ in range(self.n_bootstrap)])
        failed = int(np.isnan(estimates).sum())
        if failed > 0.05 * len(estimates):
            warnings.warn(f"TwoNN: {failed} of {len(estimates)} bootstrap resamples could not be fitted; "
                          "no interval", stacklevel=3)
            return float("nan"), (float("nan"), float("nan"))
        low, high = np.nanquantile(estimates, [alpha / 2, 1 - alpha / 2])
        return float(np.nanstd(estimates, ddof=1)), (float(low), float(high))

    def _resample_fit(self, mu: np.ndarray) -> float:
        try:
            return fit_mu(mu, self.discard_fraction, "linear")[0]
        except ValueError:  # a resample of nearly tied ratios can have every kept mu equal
            return float("nan")


def twonn(X, **kwargs) -> float:
    """The TwoNN dimension of X in one call; keyword arguments go to `TwoNN`."""
    return TwoNN(**kwargs).fit(X).dimension_


def id_scaling(X, fractions=None, min_points: int = 20, repeats: int = 5, random_state: int = 0,
               **kwargs):
    """The estimate on decimated subsets of size N, N/2, N/4, ... (the plateau analysis).

    Each size below N is drawn `repeats` times without replacement (seeded, no global RNG).
    Returns a pandas DataFrame with one row per size: n_points, mean, std, min, max, repeats.
    """
    import pandas as pd

    for name, value, low in (("min_points", min_points, 3), ("repeats", repeats, 1)):
        if not _is_whole(value) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    data, _ = deduplicate(_as_tensor(X))
    N = data.shape[0]
    if N < min_points:
        raise ValueError(f"id_scaling needs at least {min_points} distinct points, got {N}")
    sizes = [N]
    while sizes[-1] // 2 >= min_points:
        sizes.append(sizes[-1] // 2)
    rng = np.random.default_rng(random_state)
    kwargs.setdefault("n_bootstrap", 0)
    rows = []
    for size in sizes:
        reps = 1 if size == N else repeats
        estimates = []
        for _ in range(reps):
            idx = torch.from_numpy(np.sort(rng.choice(N, size=size, replace=False)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                estimates.append(TwoNN(**kwargs).fit(data[idx]).dimension_)
        estimates = np.asarray(estimates)
        rows.append({"n_points": size, "mean": estimates.mean(),
                     "std": estimates.std(ddof=1) if reps > 1 else 0.0,
                     "min": estimates.min(), "max": estimates.max(), "repeats": reps})
    return pd.DataFrame(rows)
