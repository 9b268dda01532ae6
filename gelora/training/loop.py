"""A plain PyTorch loop for the first steps of adapters outside the Trainer (notebook 03's
side-by-side first steps), the head on its own rate so methods differ only in their adapters."""
from __future__ import annotations

import copy

import pandas as pd
import torch

from gelora.adapters.lora_xs import HEAD_NAMES
from gelora.allocation.ranks import count_trainable
from gelora.core.checks import check_real, check_whole
from gelora.methods import registry as methods
from gelora.training.apply import adapt


def default_lr(method: str) -> float:
    return methods.get_method(method).lr



def is_head(name: str) -> bool:
    return any(f"{h}." in name or name.startswith(f"{h}.") for h in HEAD_NAMES)


def train_steps(model, batches, steps: int, lr: float, weight_decay: float = 0.0, device=None,
                evaluate_first: bool = True, head_lr: float | None = None) -> list[float]:
    """A plain PyTorch loop (AdamW over the trainable parameters, constant lr), for the first
    steps of an adapter outside the Trainer. head_lr: the classification head's rate (None: lr),
    so that methods compared side by side differ only in their adapters. Returns the loss of
    every step; with evaluate_first, element 0 is the loss at initialisation on the first batch."""
    check_whole("steps", steps, 0)
    check_real("lr", lr, 0, open_low=True)
    check_real("head_lr", head_lr, 0, open_low=True, optional=True)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameter")
    device = device or next(model.parameters()).device
    head = [p for n, p in named if is_head(n)]
    body = [p for n, p in named if not is_head(n)]
    groups = [{"params": body, "lr": lr}] if body else []
    groups += [{"params": head, "lr": lr if head_lr is None else head_lr}] if head else []
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    batches = list(batches)
    if not batches:
        raise ValueError("no batches to train on")
    losses = []
    if evaluate_first:
        model.eval()
        with torch.no_grad():
            first = {k: v.to(device) for k, v in batches[0].items()}
            losses.append(float(model(**first).loss))
    model.train()
    for step in range(steps):
        batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
        loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss.detach())} at step {step}: the run diverged (try a lower lr)")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def first_steps(names, model, tokenizer, data, batches, steps: int, lrs: dict | None = None, seed: int = 0,
                head_lr: float | None = None, **settings):
    """The first `steps` optimiser steps of each method on the same batches, each adapter built by
    the registry on a copy of `model` and trained by `train_steps` at its learning rate (`lrs`
    overrides the registry's), the head at `head_lr` for every method (None: the method's rate).
    Returns (losses: method, step, loss; trainable parameters; lrs)."""
    curves, trainable, used = [], {}, {}
    for name in names:
        adapted, _ = adapt(name, copy.deepcopy(model), tokenizer, data, steps=steps, seed=seed, **settings)
        trainable[name] = count_trainable(adapted)
        used[name] = (lrs or {}).get(name, default_lr(name))
        torch.manual_seed(seed)  # the same dropout masks for every method
        losses = train_steps(adapted, batches, steps, used[name], head_lr=head_lr)
        curves += [{"method": name, "step": i, "loss": loss} for i, loss in enumerate(losses)]
    return pd.DataFrame(curves), trainable, used


