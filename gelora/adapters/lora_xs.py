"""The LoRA-XS adapter structure, W0 x + B R A x, and its verbs.

B (out x r) and A (r x in) are frozen buffers, so no later call (`requires_grad_`, PEFT's
`set_adapter`, an optimiser over `model.parameters()`) can train them; only the r x r core R is a
parameter. The structure is shared by two initialisations: LoRA-XS (B, A from the SVD of W0, R
near 0; `init_lora_xs` here) and LoRA-SB (B R A = the best rank-r approximation of the first
full-fine-tuning step; `gelora.adapters.lora_sb.init_lora_sb`).

Verbs, in the spirit of minLoRA: `add_lora_xs` (wrap the targets, freeze the rest),
`init_lora_xs`, `enable_adapters` / `disable_adapters`, `merge_adapters` / `unmerge_adapters`,
`remove_lora_xs` (the original modules back), `merge_and_unload`; `save_adapter` /
`load_adapter` (strict, all-or-nothing) and `export_peft_lora` (a plain PEFT LoRA adapter).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load, save, save_file

from gelora.core.records import atomic_write
from gelora.models.targets import find_targets, module_ranks, uniform_module_ranks, unwrap, weight_shape

HEAD_NAMES = ("classifier", "score")  # PEFT's modules_to_save for sequence classification
CONFIG_FILE, WEIGHTS_FILE = "lora_xs_config.json", "lora_xs_adapter.safetensors"


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def base_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in), whatever the layer stores (GPT-2's Conv1D stores in x out)."""
    weight = unwrap(module).weight
    return weight.T if _is_conv1d(unwrap(module)) else weight


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
        delta = delta.T if _is_conv1d(base) else delta
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


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _trainable_names(model: nn.Module, trainable_modules) -> list[str]:
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


def _freeze(model: nn.Module, trainable: list[str]) -> None:
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
    trainable = _trainable_names(model, trainable_modules)
    targets = find_targets(model, list(chosen))
    layers = {name: LoraXSLayer(targets[name], r, dropout) for name, r in chosen.items()}  # all built, then set
    model._lora_xs_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, layer in layers.items():
        _set_module(model, name, layer)
    _freeze(model, trainable)
    model.lora_xs_config = LoraXSConfig(
        ranks=chosen, dropout=dropout, trainable_modules=trainable,
        base_model=getattr(getattr(model, "config", None), "_name_or_path", None))
    return model


def _layers_or_raise(model: nn.Module) -> dict[str, LoraXSLayer]:
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
    layers = _layers_or_raise(model)
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
    weights = {name: base_weight(layer.base_layer).detach() for name, layer in _layers_or_raise(model).items()}
    return set_factors(model, weights, "lora_xs", svd=svd, seed=seed, xs_std=xs_std, **svd_options,
                       core=lambda r, S: torch.randn(r, r, generator=generator, dtype=torch.float64) * xs_std)


def enable_adapters(model: nn.Module) -> nn.Module:
    for layer in _layers_or_raise(model).values():
        layer.disabled = False
    return model


def disable_adapters(model: nn.Module) -> nn.Module:
    """The base model's function back, layers kept (R keeps training state; enable_adapters undoes)."""
    for layer in _layers_or_raise(model).values():
        if layer.merged:
            raise ValueError("the adapter is merged into the weights: unmerge_adapters(model) first")
        layer.disabled = True
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """`with adapters_disabled(model): ...` runs the base model, then restores each layer's state."""
    states = {name: layer.disabled for name, layer in _layers_or_raise(model).items()}
    disable_adapters(model)
    try:
        yield model
    finally:
        for name, layer in adapter_layers(model).items():
            layer.disabled = states[name]


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold B R A into every base weight, keeping the layers (undo with unmerge_adapters)."""
    for layer in _layers_or_raise(model).values():
        layer.merge()
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    for layer in _layers_or_raise(model).values():
        layer.unmerge()
    return model


def remove_lora_xs(model: nn.Module) -> nn.Module:
    """Put the original modules back (unmerged, so the weights are W0 again) and restore every
    parameter's requires_grad flag as it was before add_lora_xs."""
    for name, layer in _layers_or_raise(model).items():
        layer.unmerge()
        _set_module(model, name, layer.base_layer)
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
    for name, layer in _layers_or_raise(model).items():
        layer.merge()
        _set_module(model, name, layer.base_layer)
    for attribute in ("lora_xs_config", "_lora_xs_requires_grad"):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model


def _adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {}
    for name, layer in adapter_layers(model).items():
        for key in ("lora_A", "lora_B", "lora_R"):
            state[f"{name}.{key}"] = getattr(layer, key).detach()
    for head in model.lora_xs_config.trainable_modules:
        for key, value in model.get_submodule(head).state_dict().items():
            state[f"{head}.{key}"] = value.detach()
    return state


def base_fingerprint(model: nn.Module, names) -> str:
    """sha256 of the base (unmerged) weights of the named target modules: what an adapter's
    B, A and R were computed for. Another checkpoint, seed or merged model gives another hash."""
    digest = hashlib.sha256()
    modules = dict(model.named_modules())
    for name in sorted(names):
        module = modules[name]
        if isinstance(module, LoraXSLayer) and module.merged:
            raise ValueError("the adapter is merged into the weights: unmerge_adapters(model) first")
        weight = unwrap(module.base_layer if isinstance(module, LoraXSLayer) else module).weight
        digest.update(name.encode() + str(tuple(weight.shape)).encode())
        digest.update(weight.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def save_adapter(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapter (B, A, R of every layer, the trained head) and its config to a folder.
    The config carries the sha256 of the weights file and a fingerprint of the base weights, so
    `load_adapter` can refuse a damaged file or another base model."""
    layers = _layers_or_raise(model)
    if any(layer.merged for layer in layers.values()):
        raise ValueError("unmerge the adapter before saving it")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = save(_adapter_state_cpu(model))
    config = replace(model.lora_xs_config, weights_sha256=hashlib.sha256(weights).hexdigest(),
                     base_fingerprint=base_fingerprint(model, layers))
    atomic_write(path / WEIGHTS_FILE, lambda handle: handle.write(weights), binary=True)
    atomic_write(path / CONFIG_FILE, lambda handle: handle.write(json.dumps(asdict(config), indent=2) + "\n"))
    return path


def _adapter_state_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous().cpu() for k, v in _adapter_state(model).items()}


def _read_adapter(path: Path) -> tuple[LoraXSConfig, dict[str, torch.Tensor]]:
    """The config and tensors of a saved adapter, the weights checked against their checksum."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} does not exist: not a folder written by save_adapter")
    try:
        config = LoraXSConfig(**json.loads((path / CONFIG_FILE).read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path / CONFIG_FILE} is not a valid adapter config: {error}") from error
    if not isinstance(config.ranks, dict) or not config.ranks or not all(
            isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in config.ranks.values()):
        raise ValueError(f"{path / CONFIG_FILE}: ranks must map module names to positive whole numbers, "
                         f"got {config.ranks!r}")
    known = ("lora_xs", "lora_sb", None)
    if config.init not in known:
        raise ValueError(f"{path / CONFIG_FILE}: unknown init {config.init!r}; expected one of {known[:2]} "
                         "(an adapter saved by this kit, or edited by hand?)")
    if config.weights_sha256 is None or config.base_fingerprint is None:
        raise ValueError(f"{path / CONFIG_FILE} has no weights checksum or base fingerprint: save the adapter again")
    data = (path / WEIGHTS_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != config.weights_sha256:
        raise ValueError(f"{path / WEIGHTS_FILE} does not match the checksum in {CONFIG_FILE}: the file is damaged "
                         "or was changed after saving")
    try:
        return config, load(data)
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(f"{path / WEIGHTS_FILE} is not a readable safetensors file: {error}") from None


def load_adapter(model: nn.Module, path: str | os.PathLike, check_base: bool = True) -> nn.Module:
    """Rebuild a saved adapter on a fresh base model. Every key and shape must match, the weights
    file must match its checksum and, unless check_base=False, the model's target weights must be
    the ones the adapter was saved with. Any failure raises, naming what, and leaves the model
    exactly as it was."""
    path = Path(path)
    config, stored = _read_adapter(path)
    if adapter_layers(model):
        raise ValueError("the model already has LoRA-XS layers: load onto a fresh base model")
    targets = find_targets(model, list(config.ranks))
    if check_base and base_fingerprint(model, config.ranks) != config.base_fingerprint:
        raise ValueError(f"the adapter in {path} was saved on other base weights (another checkpoint or seed): "
                         "load it onto the model it was trained from, or pass check_base=False to override")
    layers = {name: LoraXSLayer(targets[name], r, config.dropout) for name, r in config.ranks.items()}
    trainable = _trainable_names(model, config.trainable_modules)
    expected = {f"{name}.{key}": getattr(layer, key) for name, layer in layers.items()
                for key in ("lora_A", "lora_B", "lora_R")}
    for head in trainable:
        expected.update({f"{head}.{k}": v for k, v in model.get_submodule(head).state_dict().items()})
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or extra:
        raise KeyError(f"adapter file does not match its config: missing {missing[:5]}, unexpected {extra[:5]}")
    wrong = [k for k in expected if tuple(stored[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f"tensor shapes differ from the model for {wrong[:5]}")
    head_before = {k: v.detach().clone() for k, v in expected.items() if k.rsplit(".", 1)[0] not in layers}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        with torch.no_grad():
            for key, target in expected.items():
                target.copy_(stored[key].to(target.dtype))
        for name, layer in layers.items():
            _set_module(model, name, layer)
        _freeze(model, trainable)
    except BaseException:
        for name, layer in layers.items():  # put back what was there: nothing half-wrapped
            if isinstance(model.get_submodule(name), LoraXSLayer):
                _set_module(model, name, layer.base_layer)
        with torch.no_grad():
            for key, value in head_before.items():
                expected[key].copy_(value)
        for name, param in model.named_parameters():
            param.requires_grad_(flags.get(name, param.requires_grad))
        raise
    model._lora_xs_requires_grad = flags
    model.lora_xs_config = replace(config)
    return model


def export_peft_lora(model: nn.Module, path: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write the adapter as a standard PEFT LoRA adapter that plain `peft` loads:
    lora_A = A, lora_B = B R, lora_alpha = r (scale 1), the head as modules_to_save."""
    from peft import LoraConfig

    from gelora.allocation.ranks import _task_type

    layers = _layers_or_raise(model)
    config = model.lora_xs_config
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
