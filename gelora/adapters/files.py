"""The LoRA-XS adapter's files: `save_adapter` / `load_adapter` (strict, all-or-nothing: keys,
shapes, a checksum of the weights and a fingerprint of the base weights they were computed for)
and `export_peft_lora` (a plain PEFT LoRA adapter: lora_B = B R, lora_A = A)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load, save, save_file

from gelora.adapters.lora_xs import (
    LoraXSConfig,
    LoraXSLayer,
    adapter_layers,
    freeze,
    is_conv1d,
    layers_or_raise,
    set_module,
    trainable_names,
)
from gelora.core.records import atomic_write
from gelora.models.targets import find_targets, unwrap

CONFIG_FILE, WEIGHTS_FILE = "lora_xs_config.json", "lora_xs_adapter.safetensors"


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
    layers = layers_or_raise(model)
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
    trainable = trainable_names(model, config.trainable_modules)
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
            set_module(model, name, layer)
        freeze(model, trainable)
    except BaseException:
        for name, layer in layers.items():  # put back what was there: nothing half-wrapped
            if isinstance(model.get_submodule(name), LoraXSLayer):
                set_module(model, name, layer.base_layer)
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

    layers = layers_or_raise(model)
    config = model.lora_xs_config
    conv = any(is_conv1d(unwrap(layer.base_layer)) for layer in layers.values())
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
