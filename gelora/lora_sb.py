"""LoRA-XS adapters with the LoRA-SB initialisation (Ponkshe et al., 2024).

An adapted layer computes W0 x + B R A x. B (out x r) and A (r x in) are frozen buffers, so no
later call (`requires_grad_`, PEFT's `set_adapter`, an optimiser over `model.parameters()`) can
train them; only the r x r core R is a parameter. LoRA-SB sets B R A to the best rank-r
approximation of the first full-fine-tuning step: Adam's first update is -lr * sign(g), so
Delta W = -lr * sign(sum of gradients over a few examples), and B = U_r, R = S_r, A = V_r^T from its
exact SVD. With B and A orthonormal the gradient on R is the projection of the full gradient,
whatever the scale, so the scale is 1. Unlike the official code this module never touches the
global RNG, keeps the factors in the layer's precision (orthonormal in float32), and checks every
key on load.
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .targets import block_index, find_targets, unwrap, weight_shape

INITS = ("lora_sb", "lora_xs")
HEAD_NAMES = ("classifier", "score")  # PEFT's modules_to_save for sequence classification
CONFIG_FILE, WEIGHTS_FILE = "lora_sb_config.json", "lora_sb_adapter.safetensors"


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in), whatever the layer stores."""
    weight = unwrap(module).weight
    return weight.T if _is_conv1d(unwrap(module)) else weight


class LoraSBLayer(nn.Module):
    """y = base(x) + B R A dropout(x), with B and A frozen buffers and R the only parameter."""

    def __init__(self, base_layer: nn.Module, rank: int, dropout: float = 0.0):
        super().__init__()
        out_features, in_features = weight_shape(base_layer)
        if not 0 < rank <= min(out_features, in_features):
            raise ValueError(f"rank {rank} is impossible for a {out_features} x {in_features} matrix")
        weight = unwrap(base_layer).weight
        factory = dict(dtype=weight.dtype, device=weight.device)
        self.base_layer = base_layer
        self.rank = rank
        self.register_buffer("lora_B", torch.zeros(out_features, rank, **factory))
        self.register_buffer("lora_A", torch.zeros(rank, in_features, **factory))
        self.lora_R = nn.Parameter(torch.zeros(rank, rank, **factory))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False

    def delta_weight(self) -> torch.Tensor:
        """B R A as an (out, in) matrix, computed in float32 or better."""
        dtype = torch.promote_types(self.lora_R.dtype, torch.float32)
        return (self.lora_B.to(dtype) @ self.lora_R.to(dtype) @ self.lora_A.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged or self.disabled:
            return result
        h = F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A)
        return result + F.linear(F.linear(h, self.lora_R), self.lora_B).to(result.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold B R A into the base weight (the layer then costs nothing extra)."""
        if not self.merged:
            self._add_to_weight(self.delta_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._add_to_weight(-self.delta_weight())
            self.merged = False

    def _add_to_weight(self, delta: torch.Tensor) -> None:
        base = unwrap(self.base_layer)
        delta = delta.T if _is_conv1d(base) else delta
        base.weight.data += delta.to(base.weight.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, merged={self.merged}"


@dataclass
class LoraSBConfig:
    """What is needed to rebuild an adapter on a fresh copy of the base model."""

    ranks: dict[str, int]
    init: str = "lora_sb"
    dropout: float = 0.0
    trainable_modules: list[str] = field(default_factory=list)
    base_model: str | None = None
    settings: dict = field(default_factory=dict)


def adapter_layers(model: nn.Module) -> dict[str, LoraSBLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraSBLayer)}


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


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
    return {k: (v[:n] if isinstance(v, torch.Tensor) and v.ndim > 0 else v) for k, v in batch.items()}


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
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
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
        if _is_conv1d(unwrap(module)):
            sums[name] = sums[name].T.contiguous()
    updates = {name: -lr * torch.sign(g) for name, g in sums.items()}
    return (updates, sums) if return_gradients else updates


def truncated_svd(matrix: torch.Tensor, rank: int, method: str = "exact", oversample: int = 10,
                  n_iter: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U_r, S_r, V_r^T of a matrix: exact (float64 on CPU, float32 on GPU) or randomised with
    oversampling and power iterations under its own seed (the global RNG is left untouched)."""
    dtype = torch.float64 if matrix.device.type == "cpu" else torch.float32
    m = matrix.to(dtype)
    if method == "exact":
        U, S, Vh = torch.linalg.svd(m, full_matrices=False)
        return U[:, :rank], S[:rank], Vh[:rank]
    if method == "randomized":
        q = min(rank + oversample, *m.shape)
        with torch.random.fork_rng(devices=[m.device] if m.device.type == "cuda" else []):
            torch.manual_seed(seed)
            U, S, V = torch.svd_lowrank(m, q=q, niter=n_iter)
        return U[:, :rank], S[:rank], V[:, :rank].T
    raise ValueError(f"unknown svd method {method!r}; expected 'exact' or 'randomized'")


def _module_ranks(targets: Mapping[str, nn.Module], rank, ranks) -> dict[str, int]:
    if (rank is None) == (ranks is None):
        raise ValueError("give exactly one of rank (uniform) or ranks (per block)")
    if rank is not None:
        return {name: int(rank) for name in targets}
    if hasattr(ranks, "by_block"):
        ranks = ranks.by_block
    block_ranks = dict(ranks) if isinstance(ranks, Mapping) else dict(enumerate(ranks))
    out = {}
    for name in targets:
        block = block_index(name)
        if block is None or block not in block_ranks:
            raise ValueError(f"no per-block rank for target {name!r} (block {block})")
        if block_ranks[block] > 0:
            out[name] = int(block_ranks[block])
    if not out:
        raise ValueError("every block has rank 0: nothing to adapt")
    return out


def _trainable_names(model: nn.Module, trainable_modules) -> list[str]:
    if trainable_modules == "auto":
        if not type(model).__name__.endswith("ForSequenceClassification"):
            return []
        names = [n for n, _ in model.named_children() if n in HEAD_NAMES]
        return names
    names = list(trainable_modules or [])
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"trainable module(s) {missing} not found in {type(model).__name__}")
    return names


def _freeze(model: nn.Module, trainable: list[str]) -> None:
    model.requires_grad_(False)
    for layer in adapter_layers(model).values():
        layer.lora_R.requires_grad_(True)
    for name in trainable:
        model.get_submodule(name).requires_grad_(True)


def apply_lora_sb(model: nn.Module, update: Mapping[str, torch.Tensor] | None = None, rank: int | None = None,
                  ranks=None, target_modules=None, init: str = "lora_sb", dropout: float = 0.0,
                  trainable_modules="auto", svd: str = "exact", oversample: int = 10, n_iter: int = 4,
                  seed: int = 0, xs_std: float = 1e-5) -> nn.Module:
    """Replace every target linear layer by a `LoraSBLayer` and freeze everything else.

    init `lora_sb`: B R A = the best rank-r approximation of `update` (from `estimate_update`);
    the model then starts as if one step of full fine-tuning had been taken, projected on the
    subspace. init `lora_xs`: B, A from the SVD of W0 and R ~ N(0, xs_std^2) (seeded), the
    LoRA-XS baseline (nearly a no-op at step 0). Give `rank` (uniform) or `ranks` (per block:
    list, dict or a `RankAllocation`, so GeLoRA ranks can drive the cores). trainable_modules:
    the head to train as well (`auto`: the classification head, none for causal LMs).
    Returns the model, changed in place, with its `lora_sb_config`.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
    if adapter_layers(model):
        raise ValueError("the model already has LoRA-SB layers")
    targets = find_targets(model, target_modules)
    module_ranks = _module_ranks(targets, rank, ranks)
    if init == "lora_sb":
        if update is None:
            raise ValueError("init='lora_sb' needs the update from estimate_update")
        missing = sorted(set(module_ranks) - set(update))
        extra = sorted(set(update) - set(targets))
        if missing or extra:
            raise ValueError(f"update does not match the targets: missing {missing[:5]}, extra {extra[:5]}")
    generator = torch.Generator().manual_seed(seed)
    for name, r in module_ranks.items():
        module = targets[name]
        layer = LoraSBLayer(module, r, dropout)
        source = update[name] if init == "lora_sb" else _weight(module).detach()
        if tuple(source.shape) != weight_shape(module):
            raise ValueError(f"update for {name!r} has shape {tuple(source.shape)}, expected {weight_shape(module)}")
        U, S, Vh = truncated_svd(source.to(layer.lora_A.device), r, svd, oversample, n_iter, seed)
        with torch.no_grad():
            layer.lora_B.copy_(U)
            layer.lora_A.copy_(Vh)
            if init == "lora_sb":
                layer.lora_R.copy_(torch.diag(S))
            else:
                layer.lora_R.copy_(torch.randn(r, r, generator=generator, dtype=torch.float64) * xs_std)
        _set_module(model, name, layer)
    trainable = _trainable_names(model, trainable_modules)
    _freeze(model, trainable)
    model.lora_sb_config = LoraSBConfig(
        ranks=module_ranks, init=init, dropout=dropout, trainable_modules=trainable,
        base_model=getattr(getattr(model, "config", None), "_name_or_path", None),
        settings=dict(svd=svd, oversample=oversample, n_iter=n_iter, seed=seed, xs_std=xs_std))
    return model


def _adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {}
    for name, layer in adapter_layers(model).items():
        for key in ("lora_A", "lora_B", "lora_R"):
            state[f"{name}.{key}"] = getattr(layer, key).detach()
    for head in model.lora_sb_config.trainable_modules:
        for key, value in model.get_submodule(head).state_dict().items():
            state[f"{head}.{key}"] = value.detach()
    return state


def save_lora_sb(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapter (B, A, R of every layer, the trained head) and its config to a folder."""
    if not adapter_layers(model):
        raise ValueError("the model has no LoRA-SB layers to save")
    if any(layer.merged for layer in adapter_layers(model).values()):
        raise ValueError("unmerge the adapter before saving it")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in _adapter_state(model).items()}, str(path / WEIGHTS_FILE))
    (path / CONFIG_FILE).write_text(json.dumps(asdict(model.lora_sb_config), indent=2) + "\n")
    return path


def load_lora_sb(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Rebuild a saved adapter on a fresh base model. Every key must match: a missing or an
    unexpected tensor raises, naming it (the official merge script's strict=False is not copied)."""
    path = Path(path)
    config = LoraSBConfig(**json.loads((path / CONFIG_FILE).read_text()))
    targets = find_targets(model, list(config.ranks))
    for name, r in config.ranks.items():
        _set_module(model, name, LoraSBLayer(targets[name], r, config.dropout))
    _freeze(model, _trainable_names(model, config.trainable_modules))
    model.lora_sb_config = config
    expected = _adapter_state(model)
    stored = load_file(str(path / WEIGHTS_FILE))
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or extra:
        raise KeyError(f"adapter file does not match its config: missing {missing[:5]}, unexpected {extra[:5]}")
    wrong = [k for k in expected if tuple(stored[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f"tensor shapes differ from the model for {wrong[:5]}")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(stored[key].to(target.dtype))
    return model


def merge_lora_sb(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain layers back: a model with no
    trace of the adapter, computing the same function."""
    for name, layer in adapter_layers(model).items():
        layer.merge()
        _set_module(model, name, layer.base_layer)
    if hasattr(model, "lora_sb_config"):
        del model.lora_sb_config
    return model


def export_peft_lora(model: nn.Module, path: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write the adapter as a standard PEFT LoRA adapter that plain `peft` loads:
    lora_A = A, lora_B = B R, lora_alpha = r (scale 1), the head as modules_to_save."""
    from peft import LoraConfig

    from .ranks import _task_type

    layers = adapter_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA-SB layers to export")
    config = model.lora_sb_config
    conv = any(_is_conv1d(unwrap(layer.base_layer)) for layer in layers.values())
    names = list(layers)
    peft_config = LoraConfig(
        r=layers[names[0]].rank, lora_alpha=layers[names[0]].rank, target_modules=names,
        rank_pattern={re.escape(n): layers[n].rank for n in names},
        alpha_pattern={re.escape(n): layers[n].rank for n in names},
        lora_dropout=config.dropout, fan_in_fan_out=conv, task_type=_task_type(model),
        modules_to_save=list(config.trainable_modules) or None,
        base_model_name_or_path=base_model_name_or_path or config.base_model,
    )
    tensors = {}
    for name, layer in layers.items():
        with torch.no_grad():
            tensors[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A.detach().contiguous().cpu()
            tensors[f"base_model.model.{name}.lora_B.weight"] = (layer.lora_B @ layer.lora_R).detach().contiguous().cpu()
    for head in config.trainable_modules:
        for key, value in model.get_submodule(head).state_dict().items():
            tensors[f"base_model.model.{head}.{key}"] = value.detach().contiguous().cpu()
    path = Path(path)
    peft_config.save_pretrained(str(path))
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path
