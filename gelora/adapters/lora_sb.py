"""LoRA-SB (Ponkshe et al., 2024): the LoRA-XS structure initialised from the first step of
full fine-tuning.

Adam's first update is -lr * sign(g), so Delta W = -lr * sign(sum of gradients over a few
examples) (`estimate_update`), and B = U_r, R = S_r, A = V_r^T from its exact SVD
(`init_lora_sb`): the model starts as if one step of full fine-tuning had been taken, projected on
the subspace. With B and A orthonormal the gradient on R is the projection of the full gradient,
whatever the scale, so the scale is 1. Unlike the official code this module never touches the
global RNG, keeps the factors in the layer's precision (orthonormal in float32), and checks every
key on load. The structure and its verbs (add, enable, merge, remove, save) are in `lora_xs`.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn

from gelora.adapters.lora_xs import adapter_layers, add_lora_xs, init_lora_xs, is_conv1d, remove_lora_xs, set_factors
from gelora.core.checks import check_real, check_whole
from gelora.models.targets import find_targets, unwrap

INITS = ("lora_sb", "lora_xs")


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda, random.getstate(), np.random.get_state()


def _restore_rng(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])
    random.setstate(state[2])
    np.random.set_state(state[3])


def _truncate(batch: Mapping, n: int) -> dict:
    """The first n examples of a batch (`logits_to_keep` lists positions, not examples: kept whole)."""
    return {k: (v[:n] if isinstance(v, torch.Tensor) and v.ndim > 0 and k != "logits_to_keep" else v)
            for k, v in batch.items()}


def estimate_update(model: nn.Module, batches: Iterable[Mapping], target_modules=None, num_samples: int = 16,
                    lr: float = 1e-3, train_mode: bool = False, return_gradients: bool = False):
    """The first step of full fine-tuning with Adam, Delta W = -lr * sign(sum of gradients over
    the first `num_samples` examples), for every target weight, as (out, in) float32 tensors.

    Gradients are taken only on the target weights (memory), summed over examples (each batch's
    mean loss times its size) in float32, with autocast off. The model is left exactly as it was:
    weights, `requires_grad` flags, existing `.grad`s, train/eval mode, and the torch, CUDA, numpy
    and Python RNG states. train_mode=False (default) computes the gradients without dropout, so
    the same examples always give the same update. lr is the learning rate of the first
    (warm-up) optimiser step.
    """
    check_whole("num_samples", num_samples, 1)
    check_real("lr", lr, 0, open_low=True)
    targets = find_targets(model, target_modules)
    weights = {name: unwrap(module).weight for name, module in targets.items()}
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    saved_grads = {name: w.grad for name, w in weights.items()}
    was_training, rng = model.training, _rng_state()
    device = next(iter(weights.values())).device
    sums = {name: torch.zeros(w.shape, dtype=torch.float32, device=device) for name, w in weights.items()}
    seen = 0
    try:
        for p in params:
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
            w.grad = None
        model.train(train_mode)
        for batch in batches:
            if seen >= num_samples:
                break
            _check_batch(model, batch)
            size = len(batch["input_ids"])
            batch = _truncate(batch, num_samples - seen) if seen + size > num_samples else dict(batch)
            size = len(batch["input_ids"])
            if "labels" not in batch:
                raise ValueError("estimate_update needs batches with labels (the loss of the task)")
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with torch.autocast(device_type=device.type, enabled=False):
                loss = model(**batch).loss
            (loss * size).backward()
            for name, w in weights.items():
                sums[name] += w.grad.float()
                w.grad = None
            seen += size
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for name, w in weights.items():
            w.grad = saved_grads[name]
        model.train(was_training)
        _restore_rng(rng)
    if seen < num_samples:
        raise ValueError(f"the batches held only {seen} examples, fewer than num_samples={num_samples}")
    for name, module in targets.items():
        if is_conv1d(unwrap(module)):
            sums[name] = sums[name].T.contiguous()
    bad = sorted(name for name, g in sums.items() if not torch.isfinite(g).all())
    if bad:
        raise ValueError(f"the gradients of {len(bad)} target(s) hold NaN or inf (first: {bad[0]}): the model's loss "
                         "on these batches is not finite; check the inputs and the labels")
    if all(not g.any() for g in sums.values()):
        raise ValueError("every target's gradient is zero on these batches: the loss does not depend on the targets "
                         f"({', '.join(list(sums)[:3])}, ...), so LoRA-SB would start from nothing")
    updates = {name: -lr * torch.sign(g) for name, g in sums.items()}
    return (updates, sums) if return_gradients else updates


def _check_batch(model: nn.Module, batch) -> None:
    """A batch the estimate can use: a mapping with input_ids and labels that fit the model's
    head (whole class ids in range for a classifier)."""
    if not isinstance(batch, Mapping):
        raise ValueError(f"estimate_update needs batches that are mappings (input_ids, attention_mask, labels), got "
                         f"{type(batch).__name__}: a DataLoader over a tokenised dataset with a data collator yields them")
    if "input_ids" not in batch or "labels" not in batch:
        raise ValueError(f"estimate_update needs batches with input_ids and labels, got keys {sorted(batch)}")
    labels = batch["labels"]
    num_labels = getattr(model.config, "num_labels", None) if hasattr(model, "config") else None
    is_classifier = hasattr(model, "config") and getattr(model.config, "problem_type", None) != "regression" and \
        type(model).__name__.endswith("ForSequenceClassification") and num_labels not in (None, 1)
    if is_classifier and isinstance(labels, torch.Tensor):
        if labels.is_floating_point():
            raise ValueError(f"labels are floats ({labels.dtype}) but the model is a {num_labels}-class classifier: "
                             "give class ids (torch.long)")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
            raise ValueError(f"labels range over {int(labels.min())}..{int(labels.max())} but the head has {num_labels} "
                             "classes (0..num_labels-1)")


def init_lora_sb(model: nn.Module, update: Mapping[str, torch.Tensor], svd: str = "exact", seed: int = 0,
                 **svd_options) -> nn.Module:
    """B R A = the best rank-r approximation of `update` (from `estimate_update`) in every
    LoRA-XS layer of the model. The update must cover every layer; entries for targets left
    unadapted (rank-0 blocks) are ignored."""
    layers = adapter_layers(model)
    missing = sorted(set(layers) - set(update))
    if missing:
        raise ValueError(f"the update has no matrix for adapter layer(s) {missing[:5]}")
    for name in layers:
        matrix = update[name]
        if not isinstance(matrix, torch.Tensor) or matrix.is_meta:
            raise ValueError(f"update[{name!r}] must be a tensor with values (from estimate_update), got "
                             f"{'a meta tensor' if isinstance(matrix, torch.Tensor) else type(matrix).__name__}")
        if not torch.isfinite(matrix).all():
            raise ValueError(f"update[{name!r}] holds NaN or inf: check the loss and the labels of the batches "
                             "it was estimated on (estimate_update refuses such gradients)")
        if not matrix.any():
            raise ValueError(f"update[{name!r}] is all zeros: its best rank-r approximation is nothing, so LoRA-SB "
                             "would start from no direction; estimate it on batches whose loss depends on that layer")
    return set_factors(model, {name: update[name] for name in layers}, "lora_sb", svd=svd, seed=seed, **svd_options)


def apply_lora_sb(model: nn.Module, update: Mapping[str, torch.Tensor] | None = None, rank: int | None = None,
                  ranks=None, target_modules=None, init: str = "lora_sb", dropout: float = 0.0,
                  trainable_modules="auto", seed: int = 0, **init_options) -> nn.Module:
    """Add LoRA-XS layers and initialise them in one call: `add_lora_xs` then `init_lora_sb`
    (init `lora_sb`, needs `update`) or `init_lora_xs` (init `lora_xs`). Give `rank` (uniform) or
    `ranks` (per block: list, dict or a `RankAllocation`, so GeLoRA ranks can drive the cores).
    trainable_modules: the head to train as well (`auto`: the classification head, none for
    causal LMs). Nothing is changed if an argument is wrong. Returns the model, changed in place."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
    if init == "lora_sb" and update is None:
        raise ValueError("init='lora_sb' needs the update from estimate_update")
    if init == "lora_sb":
        extra = sorted(set(update) - set(find_targets(model, target_modules)))
        if extra:
            raise ValueError(f"update does not match the targets: extra {extra[:5]}")
    add_lora_xs(model, rank=rank, ranks=ranks, target_modules=target_modules, dropout=dropout,
                trainable_modules=trainable_modules)
    try:
        if init == "lora_sb":
            return init_lora_sb(model, update, seed=seed, **init_options)
        return init_lora_xs(model, seed=seed, **init_options)
    except Exception:
        remove_lora_xs(model)
        raise


def attach_lora_sb(model: nn.Module, batches: Iterable[Mapping], init_lr: float, rank: int | None = None,
                   ranks=None, target_modules=None, num_samples: int = 64, dropout: float = 0.0,
                   trainable_modules="auto") -> nn.Module:
    """LoRA-SB in your own training code (a plain `transformers.Trainer`, TRL, a loop) in one call:
    estimate the first full-fine-tuning step on `batches` (dicts of tensors with labels, or a
    DataLoader yielding them), attach the adapters at `rank` (or per-block `ranks`, such as a
    GeLoRA allocation) and return the model with only the r x r cores and the head trainable.

    init_lr: the learning rate of your run's first optimiser step, which scales the update (with
    a linear warm-up of w steps to a peak lr, that is lr / w). Save with `files.save_adapter`,
    reload with `files.load_adapter`, hand to plain PEFT with `files.export_peft_lora`."""
    from gelora.models.targets import default_targets

    check_real("init_lr", init_lr, 0, open_low=True)
    check_whole("num_samples", num_samples, 1)
    check_whole("rank", rank, 1, optional=True)
    check_real("dropout", dropout, 0, 1)
    if (rank is None) == (ranks is None):
        raise ValueError("give exactly one of rank (uniform) or ranks (per block)")
    targets = list(target_modules or default_targets(model))
    find_targets(model, targets)  # unknown module names fail here, before the gradient pass
    update = estimate_update(model, batches, targets, num_samples, init_lr)
    return apply_lora_sb(model, update, rank=rank, ranks=ranks, target_modules=targets, dropout=dropout,
                         trainable_modules=trainable_modules)
