"""How GeLoRA's ranks depend on the choices of the ID estimate: the fit (linear with 0, 10, 20 %
discarded, or MLE), the pooling, and the number of probed texts, at one budget."""
from __future__ import annotations

import warnings

import pandas as pd

from gelora.allocation.ranks import gelora_ranks
from gelora.geometry.twonn import TwoNN
from gelora.probing.probe import hidden_states, profile_from_states


def rank_sensitivity(model, tokenizer, data, shapes, budget: int, n_examples: int, sizes=(), pooling: str = "mean",
                     poolings=("cls", "mean", "tokens"), offset: float = 1.0, min_rank: int = 0,
                     max_rank: int | None = None, max_length: int = 64, seed: int = 0, cache_dir=None,
                     max_points: int = 5000, precision: str | None = None) -> pd.DataFrame:
    """One row per (variant, block): the GeLoRA rank and bound at `budget` when the profile is
    estimated another way. Variants: four TwoNN fits on `pooling` states of `n_examples` texts,
    the other `poolings`, and `pooling` on each of `sizes` texts."""
    probe = dict(max_length=max_length, seed=seed, cache_dir=cache_dir, progress=False, max_points=max_points,
                 precision=precision)
    subset = data.subset(n_examples, seed=seed)
    texts, pairs = subset.texts, subset.text_pairs
    variants = {}
    states = hidden_states(model, tokenizer, texts, pooling=pooling, text_pairs=pairs, **probe)
    for label, estimator in {"linear, discard 10% (default)": TwoNN(random_state=seed),
                             "linear, discard 0%": TwoNN(discard_fraction=0.0, random_state=seed),
                             "linear, discard 20%": TwoNN(discard_fraction=0.2, random_state=seed),
                             "MLE": TwoNN(method="mle")}.items():
        variants[f"{pooling}, {label}"] = profile_from_states(states, estimator, pooling)
    for other in poolings:
        if other != pooling:
            other_states = hidden_states(model, tokenizer, texts, pooling=other, text_pairs=pairs, **probe)
            variants[f"{other} pooling"] = profile_from_states(other_states, TwoNN(random_state=seed), other)
    for n in sizes:
        part = data.subset(n, seed=seed)
        sized = hidden_states(model, tokenizer, part.texts, pooling=pooling, text_pairs=part.text_pairs, **probe)
        variants[f"{n} examples"] = profile_from_states(sized, TwoNN(random_state=seed), pooling)
    rows = []
    for label, profile in variants.items():
        with warnings.catch_warnings():  # a variant that leaves a block at rank 0 is a row of the table (rank 0),
            warnings.simplefilter("ignore")  # not a warning about the run: small budgets do this by design
            allocation = gelora_ranks(profile, min_rank=min_rank, max_rank=max_rank, offset=offset, budget=budget,
                                      shapes=shapes, undefined="zero")
        rows += [{"variant": label, "block": b, "rank": r, "bound": bound}
                 for b, (r, bound) in enumerate(zip(allocation.ranks, allocation.bounds))]
    return pd.DataFrame(rows)
