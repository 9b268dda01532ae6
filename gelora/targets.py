"""Which modules an adapter targets, and which transformer block each belongs to.

Shared by the GeLoRA rank allocation (ranks are per block) and the LoRA-SB adapters. Names follow
PEFT: a target `query` matches every module whose dotted name is `query` or ends in `.query`.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

import torch.nn as nn

# encoder.layer.N (BERT, RoBERTa, DeBERTa), model.layers.N (Llama, Mistral, Qwen), h.N (GPT-2), block(s).N
BLOCK_PATTERN = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")


def block_index(name: str) -> int | None:
    """The transformer block a module belongs to (0-based), or None outside the blocks."""
    matches = BLOCK_PATTERN.findall(name)
    return int(matches[-1]) if matches else None


def unwrap(module: nn.Module) -> nn.Module:
    """The plain layer under an adapter wrapper (PEFT's LoRA layers, ours), or the module itself."""
    while hasattr(module, "base_layer"):
        module = module.base_layer
    return module


def is_linear(module: nn.Module) -> bool:
    module = unwrap(module)
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def weight_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of a Linear or a GPT-2 style Conv1D (whose weight is in x out)."""
    module = unwrap(module)
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if type(module).__name__ == "Conv1D":
        return module.weight.shape[1], module.weight.shape[0]
    raise TypeError(f"{type(module).__name__} is not a linear layer")


def default_targets(model) -> list[str]:
    """PEFT's default LoRA targets for the model's architecture (query/value projections)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MAPPING:
        raise ValueError(f"no default target modules for model type {model_type!r}: pass target_modules")
    return list(MAPPING[model_type])


def find_targets(model, target_modules: Iterable[str] | str | None = None) -> dict[str, nn.Module]:
    """All linear modules matched by the target names, in model order. Raises naming every
    target that matches nothing, and every match that is not a linear layer."""
    if target_modules is None:
        target_modules = default_targets(model)
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    target_modules = list(target_modules)
    if not target_modules:
        raise ValueError("target_modules is empty")
    found, used, not_linear = {}, set(), []
    for name, module in model.named_modules():
        for target in target_modules:
            if name == target or name.endswith("." + target):
                used.add(target)
                if is_linear(module):
                    found[name] = module
                else:
                    not_linear.append(f"{name} ({type(module).__name__})")
    unused = [t for t in target_modules if t not in used]
    if unused:
        raise ValueError(f"target module name(s) {unused} match no module of {type(model).__name__}")
    if not_linear:
        raise ValueError(f"target(s) match modules that are not linear layers: {not_linear[:5]}")
    return found


def block_shapes(model, target_modules=None) -> dict[int, list[tuple[str, int, int]]]:
    """Per block: (name, in_features, out_features) of every targeted matrix. Raises for a
    target outside the numbered blocks, since a per-block rank cannot apply to it."""
    shapes: dict[int, list] = defaultdict(list)
    for name, module in find_targets(model, target_modules).items():
        block = block_index(name)
        if block is None:
            raise ValueError(f"target {name!r} is not inside a numbered transformer block")
        out_features, in_features = weight_shape(module)
        shapes[block].append((name, in_features, out_features))
    return dict(sorted(shapes.items()))
