"""Which modules an adapter targets, and which transformer block each belongs to.

Shared by the GeLoRA rank allocation (ranks are per block) and the LoRA-SB adapters. Names follow
PEFT: a target `query` matches every module whose dotted name is `query` or ends in `.query`.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

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
    wrong = [t for t in target_modules if not isinstance(t, str) or not t]
    if wrong:
        raise ValueError(f"target_modules must be module names (non-empty strings), got {wrong[:5]}")
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


def _block_ranks(ranks) -> dict[int, int]:
    """Per-block ranks from a RankAllocation, a mapping block -> rank, or a list (index = block)."""
    if hasattr(ranks, "by_block"):
        ranks = ranks.by_block
    items = ranks.items() if isinstance(ranks, Mapping) else enumerate(ranks)
    out = {}
    for block, rank in items:
        if isinstance(rank, bool) or not float(rank).is_integer():
            raise ValueError(f"the rank of block {block} must be a whole number, got {rank!r}")
        if int(rank) < 0:
            raise ValueError(f"the rank of block {block} must be >= 0, got {rank}")
        out[int(block)] = int(rank)
    return out


def module_ranks(model, block_ranks, target_modules=None) -> dict[str, int]:
    """The one rule from per-block ranks to per-module ranks: every targeted matrix of block k
    gets rank r_k; rank 0 leaves the block unadapted (left out of the result).

    Raises when a targeted block has no rank, when a rank is given for a block that holds no
    target, when a rank exceeds the smaller side of its matrix, and when nothing is adapted.
    Used by the PEFT config, the LoRA-XS adapter and the realised-rank check alike."""
    ranks = _block_ranks(block_ranks)
    targets = find_targets(model, target_modules)
    chosen, blocks = {}, set()
    for name, module in targets.items():
        block = block_index(name)
        if block is None:
            raise ValueError(f"target {name!r} is not inside a numbered transformer block, "
                             "so a per-block rank cannot apply to it")
        blocks.add(block)
        if block not in ranks:
            raise ValueError(f"no rank given for block {block} (module {name!r}); ranks cover blocks {sorted(ranks)}")
        rank, shape = ranks[block], weight_shape(module)
        if rank > min(shape):
            raise ValueError(f"rank {rank} for {name!r} exceeds the smaller side of its {shape[0]} x {shape[1]} matrix")
        if rank > 0:
            chosen[name] = rank
    unknown = sorted(set(ranks) - blocks)
    if unknown:
        raise ValueError(f"ranks given for block(s) {unknown} that hold no target module")
    if not chosen:
        raise ValueError("every block has rank 0: nothing to adapt")
    return chosen


def uniform_module_ranks(model, rank: int, target_modules=None) -> dict[str, int]:
    """Every targeted matrix at the same rank (the rule above with r_k = rank for every block)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive whole number, got {rank!r}")
    targets = find_targets(model, target_modules)
    for name, module in targets.items():
        if rank > min(weight_shape(module)):
            shape = weight_shape(module)
            raise ValueError(f"rank {rank} for {name!r} exceeds the smaller side of its {shape[0]} x {shape[1]} matrix")
    return {name: rank for name in targets}
