"""The LoRA-XS adapter structure, W0 x + B R A x, and its verbs.

B (out x r) and A (r x in) are frozen buffers, so no later call (`requires_grad_`, PEFT's
`set_adapter`, an optimiser over `model.parameters()`) can train them; only the r x r core R is a
parameter. The structure is shared by two initialisations: LoRA-XS (B, A from the SVD of W0, R
near 0; `init_lora_xs` here) and LoRA-SB (B R A = the best rank-r approximation of the first
full-fine-tuning step; `gelora.adapters.lora_sb.init_lora_sb`).

Verbs, in the spirit of minLoRA: `add_lora_xs` (wrap the targets, freeze the rest),
`init_lora_xs`, `enable_adapters` / `disable_adapters`, `merge_adapters` / `unmerge_adapters`,
`remove_lora_xs` (the original modules back), `merge_and_unload`. Its files (`save_adapter` /
`load_adapter`, strict and all-or-nothing, and `export_peft_lora`) are gelora.adapters.files.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from gelora.models.targets import find_targets, module_ranks, uniform_module_ranks, unwrap, weight_shape

HEAD_NAMES = ("classifier", "score")  # PEFT's modules_to_save for sequence classification


def is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def base_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in), whatever the layer stores (GPT-2's Conv1D stores in x out)."""
    weight = unwrap(module).weight
    return weight.T if is_conv1d(unwrap(module)) else weight


class LoraXSLayer(nn.Module):
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
        return self.lora_B.to(dtype) @ self.lora_R.to(dtype) @ self.lora_A.to(dtype)

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
        delta = delta.T if is_conv1d(base) else delta
        base.weight.data += delta.to(base.weight.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, merged={self.merged}, disabled={self.disabled}"


@dataclass
class LoraXSConfig:
    """What is needed to rebuild an adapter on a fresh copy of the base model."""

    ranks: dict[str, int]
    init: str | None = None  # lora_xs | lora_sb once initialised
    dropout: float = 0.0
    trainable_modules: list[str] = field(default_factory=list)
    base_model: str | None = None
    settings: dict = field(default_factory=dict)
    weights_sha256: str | None = None  # of the weights file, written by save_adapter
    base_fingerprint: str | None = None  # of the base model's target weights the adapter was trained on


def adapter_layers(model: nn.Module) -> dict[str, LoraXSLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraXSLayer)}


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def trainable_names(model: nn.Module, trainable_modules) -> list[str]:
    if trainable_modules == "auto":
        if not type(model).__name__.endswith("ForSequenceClassification"):
            return []
        return [n for n, _ in model.named_children() if n in HEAD_NAMES]
    if isinstance(trainable_modules, str):
        raise ValueError(f"trainable_modules must be 'auto' or a list of module names, got {trainable_modules!r}")
    names = list(trainable_modules or [])
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"trainable module(s) {missing} not found in {type(model).__name__}")
    return names


def freeze(model: nn.Module, trainable: list[str]) -> None:
    model.requires_grad_(False)
    for layer in adapter_layers(model).values():
        layer.lora_R.requires_grad_(True)
    for name in trainable:
        model.get_submodule(name).requires_grad_(True)


def add_lora_xs(model: nn.Module, rank: int | None = None, ranks=None, target_modules=None,
                dropout: float = 0.0, trainable_modules="auto") -> nn.Module:
    """Wrap every target linear layer in a `LoraXSLayer` (B = A = R = 0: the model computes what
    it did) and freeze everything but the cores and the head. Give `rank` (uniform) or `ranks`
    (per block: list, dict or a `RankAllocation`, by `targets.module_ranks`). Initialise next
    with `init_lora_xs` or `gelora.adapters.lora_sb.init_lora_sb`. Returns the model, changed in place."""
    if (rank is None) == (ranks is None):
        raise ValueError("give exactly one of rank (uniform) or ranks (per block)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if adapter_layers(model):
        raise ValueError("the model already has LoRA-XS layers: remove_lora_xs(model) first")
    chosen = (uniform_module_ranks(model, rank, target_modules) if ranks is None
              else module_ranks(model, ranks, target_modules))
    trainable = trainable_names(model, trainable_modules)
    targets = find_targets(model, list(chosen))
    layers = {name: LoraXSLayer(targets[name], r, dropout) for name, r in chosen.items()}  # all built, then set
    model._lora_xs_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, layer in layers.items():
        set_module(model, name, layer)
    freeze(model, trainable)
    model.lora_xs_config = LoraXSConfig(
        ranks=chosen, dropout=dropout, trainable_modules=trainable,
        base_model=getattr(getattr(model, "config", None), "_name_or_path", None))
    return model


def layers_or_raise(model: nn.Module) -> dict[str, LoraXSLayer]:
    layers = adapter_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA-XS layers (add them with add_lora_xs)")
    return layers


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


def set_factors(model: nn.Module, sources: dict[str, torch.Tensor], init: str, core=None, svd: str = "exact",
                oversample: int = 10, n_iter: int = 4, seed: int = 0, **settings) -> nn.Module:
    """B = U_r, A = V_r^T from the truncated SVD of each layer's source matrix (out x in); R =
    diag(S_r) when `core` is None, else core(r, S_r). The shared step of both initialisations."""
    layers = layers_or_raise(model)
    missing, extra = sorted(set(layers) - set(sources)), sorted(set(sources) - set(layers))
    if missing or extra:
        raise ValueError(f"the matrices do not match the adapter layers: missing {missing[:5]}, extra {extra[:5]}")
    for name, layer in layers.items():
        source = sources[name]
        if tuple(source.shape) != weight_shape(layer.base_layer):
            raise ValueError(f"matrix for {name!r} has shape {tuple(source.shape)}, "
                             f"expected {weight_shape(layer.base_layer)}")
        if layer.merged:
            raise ValueError("unmerge the adapter before initialising it")
    for name, layer in layers.items():
        U, S, Vh = truncated_svd(sources[name].to(layer.lora_A.device), layer.rank, svd, oversample, n_iter, seed)
        with torch.no_grad():
            layer.lora_B.copy_(U)
            layer.lora_A.copy_(Vh)
            layer.lora_R.copy_(torch.diag(S) if core is None else core(layer.rank, S))
    model.lora_xs_config.init = init
    model.lora_xs_config.settings = dict(svd=svd, oversample=oversample, n_iter=n_iter, seed=seed, **settings)
    return model


def init_lora_xs(model: nn.Module, svd: str = "exact", seed: int = 0, xs_std: float = 1e-5, **svd_options) -> nn.Module:
    """LoRA-XS (Balazy et al.): B, A from the SVD of W0, R ~ N(0, xs_std^2) under its own seed:
    nearly a no-op at step 0, so training starts from the pretrained function."""
    if xs_std < 0:
        raise ValueError(f"xs_std must be >= 0, got {xs_std}")
    generator = torch.Generator().manual_seed(seed)
    weights = {name: base_weight(layer.base_layer).detach() for name, layer in layers_or_raise(model).items()}
    return set_factors(model, weights, "lora_xs", svd=svd, seed=seed, xs_std=xs_std, **svd_options,
                       core=lambda r, S: torch.randn(r, r, generator=generator, dtype=torch.float64) * xs_std)


def enable_adapters(model: nn.Module) -> nn.Module:
    for layer in layers_or_raise(model).values():
        layer.disabled = False
    return model


def disable_adapters(model: nn.Module) -> nn.Module:
    """The base model's function back, layers kept (R keeps training state; enable_adapters undoes)."""
    for layer in layers_or_raise(model).values():
        if layer.merged:
            raise ValueError("the adapter is merged into the weights: unmerge_adapters(model) first")
        layer.disabled = True
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """`with adapters_disabled(model): ...` runs the base model, then restores each layer's state."""
    states = {name: layer.disabled for name, layer in layers_or_raise(model).items()}
    disable_adapters(model)
    try:
        yield model
    finally:
        for name, layer in adapter_layers(model).items():
            layer.disabled = states[name]


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold B R A into every base weight, keeping the layers (undo with unmerge_adapters)."""
    for layer in layers_or_raise(model).values():
        layer.merge()
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    for layer in layers_or_raise(model).values():
        layer.unmerge()
    return model


def remove_lora_xs(model: nn.Module) -> nn.Module:
    """Put the original modules back (unmerged, so the weights are W0 again) and restore every
    parameter's requires_grad flag as it was before add_lora_xs."""
    for name, layer in layers_or_raise(model).items():
        layer.unmerge()
        set_module(model, name, layer.base_layer)
    flags = getattr(model, "_lora_xs_requires_grad", {})
    for name, param in model.named_parameters():
        if name in flags:
            param.requires_grad_(flags[name])
    for attribute in ("lora_xs_config", "_lora_xs_requires_grad"):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain layers back: a model with no
    trace of the adapter, computing the same function (the head keeps what it learned)."""
    for name, layer in layers_or_raise(model).items():
        layer.merge()
        set_module(model, name, layer.base_layer)
    for attribute in ("lora_xs_config", "_lora_xs_requires_grad"):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model
