"""Hidden states of any Hugging Face model, per layer, and the intrinsic-dimension profile.

The probe runs the frozen backbone once over the texts (sorted by length so batches carry little
padding), pools each layer's states into one point cloud per layer, and caches the result on
disk keyed by the model's weights and every setting, so a rerun is instant.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gelora.core.checks import check_real, check_whole
from gelora.core.records import atomic_write
from gelora.geometry.twonn import TwoNN

POOLINGS = ("cls", "mean", "last", "tokens")
PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64}  # the forward's precision when not the model's own
PROFILE_COLUMNS = ["layer", "dimension", "std_error", "ci_low", "ci_high", "n_points", "n_distinct",
                   "n_duplicates", "n_used", "pooling", "method", "discard_fraction", "note"]


def backbone(model):
    """The transformer under any head (or PEFT wrapper): what produces the hidden states."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, "base_model", model)


def fingerprint(model, full: bool = False) -> str:
    """A hash of a model: its config and every parameter's name and shape, with a slice of 64
    values of each (cheap, changes with training) or, with full=True, every value."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, param in model.named_parameters():
        digest.update(name.encode() + str(tuple(param.shape)).encode())
        values = param.detach().flatten() if full else param.detach().flatten()[:64]
        digest.update(values.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError("texts must be a list of strings")
    if len(texts) == 0:
        raise ValueError("texts is empty: nothing to probe")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"{len(bad)} text(s) are empty or not strings, first at index {bad[0]}")
    return list(texts)


def _token_choice(lengths: np.ndarray, max_points: int, seed: int) -> list[np.ndarray]:
    """For `tokens` pooling: which positions of each text to keep, a seeded subsample of all
    non-padding tokens capped at max_points (the same positions for every layer)."""
    total = int(lengths.sum())
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(max_points, total), replace=False))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    text_of = np.searchsorted(offsets, chosen, side="right") - 1
    return [chosen[text_of == i] - offsets[i] for i in range(len(lengths))]


def hidden_states(model, tokenizer, texts: Sequence[str], pooling: str = "mean", max_length: int = 128,
                  batch_size: int = 32, max_points: int = 5000, seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True,
                  text_pairs: Sequence[str] | None = None, padding_side: str = "right",
                  precision: str | None = None) -> list[np.ndarray]:
    """Pooled hidden states per layer: a list of L + 1 float32 arrays (embedding output first).

    pooling: `cls` (first token), `mean` (average of non-padding tokens), `last` (last
    non-padding token, for decoders), `tokens` (every non-padding token, subsampled to
    `max_points` with `seed`). text_pairs: second sentences of a pair task, tokenised with their
    first sentences as the model sees them in fine-tuning. padding_side: where a batch pads its
    shorter texts ('left', as decoders generate, gets explicit position ids so every token keeps its
    position); the pooled states do not depend on it. precision: None runs the model as loaded;
    'fp64' runs the forward in float64 (the states are stored as float32): TwoNN's nearest
    neighbours include near-duplicate tokens whose distances float32 rounding moves by percents,
    so float32 forwards on two machines give profiles that differ in the 4th digit, float64 ones
    agree. The model's dtypes, like its mode, are restored. Gradients are off.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if pooling == "cls" and padding_side == "left":
        raise ValueError("cls pooling reads the first position, which left padding fills with padding: use 'right'")
    for name, value, low in (("max_length", max_length, 2), ("batch_size", batch_size, 1),
                             ("max_points", max_points, 3), ("seed", seed, 0)):
        check_whole(name, value, low)
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be None (the model's own) or one of {sorted(PRECISIONS)}, got {precision!r}")
    texts = _check_texts(texts)
    if text_pairs is not None and len(_check_texts(text_pairs)) != len(texts):
        raise ValueError(f"text_pairs has {len(text_pairs)} texts for {len(texts)} first sentences")
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps({
            "model": fingerprint(model), "texts": hashlib.sha256("\x00".join(texts).encode()).hexdigest(),
            "pairs": None if text_pairs is None else hashlib.sha256("\x00".join(text_pairs).encode()).hexdigest(),
            "pooling": pooling, "max_length": max_length, "max_points": max_points if pooling == "tokens" else None,
            "seed": seed if pooling == "tokens" else None, **({"padding": "left"} if padding_side == "left" else {}),
            **({"precision": precision} if precision is not None else {}),
        }, sort_keys=True).encode()).hexdigest()[:24]
        cache_file = Path(cache_dir) / f"hidden-{pooling}-{key}.npz"
        if cache_file.exists():
            cached = _read_cache(cache_file, len(texts) if pooling != "tokens" else None)
            if cached is not None:
                return cached
    encoded = tokenizer(texts, None if text_pairs is None else list(text_pairs), truncation=True,
                        max_length=max_length)["input_ids"]
    lengths = np.array([len(ids) for ids in encoded])
    picks = _token_choice(lengths, max_points, seed) if pooling == "tokens" else None
    row_of = np.concatenate([[0], np.cumsum([len(p) for p in picks])]) if picks else None
    order = np.argsort(-lengths, kind="stable")
    net = backbone(model)
    device = next(net.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    outputs: list[np.ndarray] | None = None
    n_rows = int(row_of[-1]) if picks else len(texts)
    was_training = net.training
    dtypes = _float_dtypes(net)
    net.eval()
    try:
        if precision is not None:
            net.to(PRECISIONS[precision])
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), desc=f"probe ({pooling})", disable=not progress):
                batch = order[start:start + batch_size]
                width = int(lengths[batch].max())
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                start_of = width - lengths[batch] if padding_side == "left" else np.zeros(len(batch), dtype=int)
                for row, i in enumerate(batch):
                    ids[row, start_of[row]:start_of[row] + lengths[i]] = torch.tensor(encoded[i])
                    mask[row, start_of[row]:start_of[row] + lengths[i]] = 1
                extra = {"position_ids": (mask.cumsum(1) - 1).clamp(min=0).to(device)} if padding_side == "left" else {}
                out = net(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True, **extra)
                states = out.hidden_states
                if outputs is None:
                    outputs = [np.empty((n_rows, h.shape[-1]), dtype=np.float32) for h in states]
                m = mask.to(device).unsqueeze(-1)
                for j, h in enumerate(states):
                    h = h if h.dtype == torch.float64 else h.float()  # pooled before rounding to float32
                    if not torch.isfinite(h).all():
                        raise ValueError(f"layer {j} hidden states contain NaN or inf")
                    if pooling == "cls":
                        pooled = h[:, 0]
                    elif pooling == "mean":
                        pooled = (h * m).sum(1) / m.sum(1)
                    elif pooling == "last":
                        pooled = h[torch.arange(len(batch)), torch.as_tensor(start_of + lengths[batch] - 1)]
                    if pooling == "tokens":
                        for row, i in enumerate(batch):
                            positions = torch.as_tensor(start_of[row] + picks[i])
                            outputs[j][row_of[i]:row_of[i + 1]] = h[row, positions].cpu().numpy()
                    else:
                        outputs[j][batch] = pooled.cpu().numpy()
    finally:
        net.train(was_training)
        if precision is not None:
            _restore_dtypes(net, dtypes)
    if cache_file is not None:
        _write_cache(cache_file, outputs)
    return outputs


def _float_dtypes(net) -> dict:
    """Each floating parameter's and buffer's dtype, by where it lives (casting replaces buffers)."""
    return {(module, kind, key): tensor.dtype for module in net.modules()
            for kind in ("_parameters", "_buffers") for key, tensor in getattr(module, kind).items()
            if tensor is not None and tensor.is_floating_point()}


def _restore_dtypes(net, dtypes: dict) -> None:
    for (module, kind, key), dtype in dtypes.items():
        tensor = getattr(module, kind)[key]
        if kind == "_parameters":
            tensor.data = tensor.data.to(dtype)
        else:
            module._buffers[key] = tensor.to(dtype)


def _read_cache(path: Path, n_rows: int | None) -> list[np.ndarray] | None:
    """The cached states, or None (with a warning; the caller recomputes and overwrites) when
    the file is damaged or does not hold one finite float32 array of n_rows per layer."""
    try:
        with np.load(path) as stored:
            layers = [stored[f"layer_{j}"] for j in range(len(stored.files))]
        ok = layers and all(x.ndim == 2 and x.dtype == np.float32 and np.isfinite(x).all() for x in layers)
        ok = ok and len({x.shape for x in layers}) == 1 and (n_rows is None or layers[0].shape[0] == n_rows)
    except Exception as error:  # a truncated zip, a missing key, bad bytes
        ok, layers = False, error
    if ok:
        return layers
    warnings.warn(f"probe cache {path} is damaged ({layers if isinstance(layers, Exception) else 'bad arrays'}): "
                  "recomputing it", stacklevel=3)
    return None


def _write_cache(path: Path, outputs: list[np.ndarray]) -> None:
    """Atomically, under a unique temporary name: two processes probing the same texts never write
    into one file, and a reader never sees half a file."""
    atomic_write(path, lambda handle: np.savez(handle, **{f"layer_{j}": x for j, x in enumerate(outputs)}), binary=True)


def profile_from_states(states: Sequence[np.ndarray], estimator: TwoNN | None = None,
                        pooling: str = "", min_distinct: float = 0.0) -> pd.DataFrame:
    """The ID profile of given point clouds (one per layer). A layer whose points cannot give a
    dimension (fewer than 3 distinct, as the [CLS] embedding of every sentence, or a share of
    distinct points below `min_distinct`, as a decoder's embedding of the last token, one point per
    distinct token) gets NaN and a note saying why, with a warning: it is never dropped or filled
    in silently."""
    estimator = estimator or TwoNN()
    check_real("min_distinct", min_distinct, 0, 1)
    rows = []
    for j, X in enumerate(states):
        fitted = TwoNN(**estimator.get_params())
        row = {"layer": j, "pooling": pooling, "method": estimator.method,
               "discard_fraction": estimator.discard_fraction, "n_points": len(X), "note": ""}
        try:
            if min_distinct:
                distinct = len(np.unique(np.asarray(X), axis=0))
                if distinct < min_distinct * len(X):
                    raise ValueError(f"only {distinct} of {len(X)} points are distinct, below the {min_distinct:.0%} "
                                     "asked for: a lookup of few values, not a manifold")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted.fit(X)
        except ValueError as err:
            distinct = len(np.unique(np.asarray(X), axis=0))
            warnings.warn(f"layer {j}: no intrinsic dimension ({err})", stacklevel=2)
            row.update(dimension=np.nan, std_error=np.nan, ci_low=np.nan, ci_high=np.nan,
                       n_distinct=distinct, n_duplicates=len(X) - distinct, n_used=0, note=str(err))
        else:
            row.update(dimension=fitted.dimension_, std_error=fitted.standard_error_,
                       ci_low=fitted.interval_[0], ci_high=fitted.interval_[1],
                       n_distinct=fitted.n_distinct_, n_duplicates=fitted.n_duplicates_, n_used=fitted.n_used_)
            if fitted.n_duplicates_:
                row["note"] = f"{fitted.n_duplicates_} duplicate point(s) removed"
        rows.append(row)
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def id_profile(model, tokenizer, texts: Sequence[str], pooling: str = "mean", estimator: TwoNN | None = None,
               **probe_kwargs) -> pd.DataFrame:
    """One row per layer (0 = embedding output, then every block): layer, dimension, std_error,
    ci_low/ci_high, n_points, n_distinct, n_duplicates, n_used, pooling, method, note.
    Keyword arguments go to `hidden_states` (max_length, batch_size, cache_dir, ...)."""
    states = hidden_states(model, tokenizer, texts, pooling=pooling, **probe_kwargs)
    return profile_from_states(states, estimator, pooling)


def save_profile(profile: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile.to_csv(path, index=False)
    return path


def load_profile(path: str | os.PathLike) -> pd.DataFrame:
    """Read a profile CSV written by `save_profile`, checking it is one."""
    try:
        profile = pd.read_csv(path, keep_default_na=True, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"{path} is not a readable ID profile CSV: {error}") from None
    missing = [c for c in ("layer", "dimension") if c not in profile.columns]
    if missing:
        raise ValueError(f"{path} is not an ID profile: missing column(s) {missing}")
    check_profile(profile, str(path))
    profile["note"] = profile.get("note", pd.Series([""] * len(profile))).fillna("")
    return profile


def check_profile(profile: pd.DataFrame, source: str = "the profile") -> None:
    """A profile has layers 0..L, each once (in any order), and dimensions that are numbers >= 0 (NaN
    only where a layer has no dimension, which the rank rule then refuses or notes)."""
    layers = pd.to_numeric(profile["layer"], errors="coerce")
    if layers.isna().any() or not (layers == layers.round()).all():
        raise ValueError(f"{source}: every layer must be a whole number, got {profile['layer'].tolist()[:10]}")
    expected = list(range(len(profile)))
    if sorted(layers.astype(int).tolist()) != expected:
        seen = layers.astype(int).tolist()
        duplicated = sorted({x for x in seen if seen.count(x) > 1})
        absent = sorted(set(expected) - set(seen))
        raise ValueError(f"{source}: layers must be 0..{len(profile) - 1}, each once; duplicated {duplicated}, "
                         f"missing {absent}, out of range {sorted(x for x in set(seen) if x not in expected)}")
    dims = pd.to_numeric(profile["dimension"], errors="coerce")
    bad = [int(j) for j, d, raw in zip(layers, dims, profile["dimension"]) if (pd.isna(d) and not pd.isna(raw))
           or (not pd.isna(d) and (not np.isfinite(d) or d < 0))]
    if bad:
        raise ValueError(f"{source}: the dimension of layer(s) {bad} is not a number >= 0")


def probe_dataset(model_name: str, dataset: str, n_examples: int, pooling: str = "mean", max_length: int = 64,
                  seed: int = 0, estimator: TwoNN | None = None, **probe_kwargs) -> pd.DataFrame:
    """The ID profile of a named model on a seeded subset of a dataset's training texts, probing
    the very model that fine-tuning starts from (its classification or regression variant)."""
    from gelora.data.tasks import load_dataset
    from gelora.models.loading import load_model

    data = load_dataset(dataset, "train")
    task = data.task if data.task != "generation" else "features"
    model, tokenizer = load_model(model_name, task, data.num_labels if task == "classification" else None, seed=seed)
    subset = data.subset(n_examples, seed=seed)
    return id_profile(model, tokenizer, subset.texts, pooling=pooling, estimator=estimator, max_length=max_length,
                      seed=seed, text_pairs=subset.text_pairs, **probe_kwargs)
