"""GeLoRA: LoRA ranks per block from the intrinsic-dimension profile, as a PEFT config.

The rule (Ed-dib et al., GeLoRA): block i maps a manifold of intrinsic dimension d_{i-1} to one of
d_i, so adapting it needs at least max(d_i - d_{i-1}, 0) degrees of freedom. What the paper leaves
open is a parameter here, with a documented default: rounding (ceil, since it is a lower bound),
an offset added to every bound, a minimum and a maximum rank, and optional scaling of the whole
allocation to a trainable-parameter budget (largest-remainder rounding, never over the budget).

Blocks are 0-based like the module names: block k is `encoder.layer.k` / `model.layers.k`, whose
input is profile layer k and output profile layer k + 1 (layer 0 is the embedding output).
"""
from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from gelora.core.checks import check_real, check_whole
from gelora.models.targets import module_ranks
from gelora.probing.probe import check_profile

ROUNDING = {"ceil": math.ceil, "round": lambda x: int(math.floor(x + 0.5)), "floor": math.floor}
ADAPTERS = ("lora", "lora_sb")


@dataclass
class RankAllocation:
    """Ranks per block (index k = block k) and how they were obtained."""

    ranks: list[int]
    bounds: list[float]
    dimensions: list[float]
    adapter: str = "lora"
    params: int | None = None
    budget: int | None = None
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def by_block(self) -> dict[int, int]:
        return dict(enumerate(self.ranks))


def _dimensions(profile) -> np.ndarray:
    if isinstance(profile, pd.DataFrame):
        if "dimension" not in profile.columns or "layer" not in profile.columns:
            raise ValueError("the profile needs 'layer' and 'dimension' columns")
        check_profile(profile)
        profile = profile.sort_values("layer")["dimension"]
    try:
        dims = np.asarray(profile, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"a profile is a DataFrame or a sequence of dimensions, got {profile!r}") from None
    if dims.ndim != 1 or len(dims) < 2:
        raise ValueError(f"a profile needs the dimension of at least 2 layers, got shape {dims.shape}")
    if (dims[np.isfinite(dims)] < 0).any() or np.isinf(dims).any():
        raise ValueError(f"dimensions must be finite numbers >= 0 (NaN: no dimension), got {dims.tolist()}")
    return dims


def geometric_bounds(profile, undefined: str = "raise") -> tuple[np.ndarray, list[str]]:
    """The GeLoRA lower bounds max(d_{k+1} - d_k, 0) for blocks k = 0..L-1.

    undefined: what a block next to a layer without a dimension (NaN in the profile, such as the
    [CLS] embedding, identical for every sentence) gets: `raise` (default) or `zero` (bound 0,
    recorded in the notes)."""
    if undefined not in ("raise", "zero"):
        raise ValueError(f"undefined must be 'raise' or 'zero', got {undefined!r}")
    dims = _dimensions(profile)
    bounds = np.maximum(np.diff(dims), 0.0)
    notes = []
    bad = [k for k in range(len(bounds)) if not (np.isfinite(dims[k]) and np.isfinite(dims[k + 1]))]
    if bad:
        if undefined == "raise":
            layers = [j for j in range(len(dims)) if not np.isfinite(dims[j])]
            raise ValueError(
                f"profile layer(s) {layers} have no intrinsic dimension, so the bound of block(s) {bad} "
                "is undefined: probe with another pooling (mean, tokens) or pass undefined='zero'")
        bounds[bad] = 0.0
        notes.append(f"blocks {bad} border a layer without a dimension: bound set to 0")
    return bounds, notes


def _shapes_in_order(shapes: Mapping[int, list], n_blocks: int, adapter: str) -> list:
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; expected one of {ADAPTERS}")
    missing = [k for k in range(n_blocks) if k not in shapes]
    if missing:
        raise ValueError(f"the profile has {n_blocks} blocks but the model has no targets in block(s) {missing}")
    return [shapes[k] for k in range(n_blocks)]


def adapter_params(shapes: Mapping[int, list], ranks: Mapping[int, int] | Sequence[int], adapter: str = "lora") -> int:
    """Trainable adapter parameters for per-block ranks: LoRA r (in + out) per matrix,
    LoRA-SB / LoRA-XS r^2 per matrix (only the r x r core trains)."""
    ranks = dict(enumerate(ranks)) if not isinstance(ranks, Mapping) else ranks
    total = 0
    for block, mats in shapes.items():
        r = int(ranks.get(block, 0))
        for _, fan_in, fan_out in mats:
            total += r * (fan_in + fan_out) if adapter == "lora" else r * r
    return total


def _max_ranks(shapes_list, max_rank):
    caps = [min(min(i, o) for _, i, o in mats) for mats in shapes_list]
    return caps if max_rank is None else [min(c, max_rank) for c in caps]


def gelora_ranks(profile, min_rank: int = 0, max_rank: int | None = None, rounding: str = "ceil",
                 offset: float = 0.0, budget: int | None = None, shapes: Mapping[int, list] | None = None,
                 adapter: str = "lora", undefined: str = "raise") -> RankAllocation:
    """Per-block ranks from an ID profile (DataFrame with `layer`, `dimension`, or d_0..d_L).

    Without a budget: r_k = clip(rounding(bound_k + offset), min_rank, max_rank).
    With `budget` (trainable adapter parameters) and `shapes` (from `targets.block_shapes`): the
    ranks are proportional to bound_k + offset, scaled so that the count comes as close to the
    budget as integers allow without exceeding it (the shortfall is below one rank-step of one
    block), clipped to [min_rank, max_rank] (max_rank None: the smallest matrix side).
    A profile whose bounds are all zero (ID falling with depth) has no shape to scale: give
    offset > 0 or min_rank > 0, or it raises.
    """
    if rounding not in ROUNDING:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {tuple(ROUNDING)}")
    check_whole("min_rank", min_rank, 0)
    check_whole("max_rank", max_rank, 1, optional=True)
    check_whole("budget", budget, 1, optional=True)
    check_real("offset", offset, 0)
    if max_rank is not None and max_rank < max(min_rank, 1):
        raise ValueError(f"max_rank={max_rank} is below min_rank={min_rank} (or 1)")
    dims = _dimensions(profile)
    bounds, notes = geometric_bounds(dims, undefined)
    if shapes is not None and sorted(shapes) != list(range(len(bounds))):
        raise ValueError(f"the ID profile has {len(dims)} layers, so {len(bounds)} blocks, but the model has "
                         f"{len(shapes)} blocks: a profile must cover every block (probe this model's own layers)")
    weights = bounds + offset
    settings = dict(min_rank=min_rank, max_rank=max_rank, rounding=rounding, offset=offset,
                    undefined=undefined)
    if (bounds == 0).all():
        notes.append("the ID never grows from one layer to the next: every GeLoRA bound is 0")
    if budget is None:
        ranks = [int(ROUNDING[rounding](w)) for w in weights]
        ranks = [max(min_rank, r if max_rank is None else min(r, max_rank)) for r in ranks]
        params = adapter_params(shapes, ranks, adapter) if shapes is not None else None
        return RankAllocation(ranks, bounds.tolist(), dims.tolist(), adapter, params, None, settings,
                              _note_switched_off(ranks, notes))
    if shapes is None:
        raise ValueError("budget matching needs the model's target shapes: shapes=block_shapes(model, targets)")
    mats = _shapes_in_order(shapes, len(bounds), adapter)
    if (weights == 0).all():
        raise ValueError("every GeLoRA bound is 0 and offset is 0: there is no profile shape to spread "
                         "a budget over; pass offset > 0 (ranks follow bound + offset) or use min_rank")
    ranks = scale_to_budget(weights, mats, budget, min_rank, max_rank, adapter)

    def cost(ranks) -> int:
        return adapter_params(dict(enumerate(mats)), ranks, adapter)

    params = cost(ranks)
    notes.append(f"scaled to a budget of {budget}: {params} parameters ({params / budget:.2%})")
    return RankAllocation(ranks, bounds.tolist(), dims.tolist(), adapter, params, budget, settings,
                          _note_switched_off(ranks, notes))


def scale_to_budget(weights, mats: list, budget: int, min_rank: int = 0, max_rank: int | None = None,
                    adapter: str = "lora") -> list[int]:
    """Whole ranks proportional to `weights` (one per block, >= 0), clipped to [min_rank, max_rank]
    (None: the smallest matrix side), whose parameter count comes as close to `budget` as integers
    allow without exceeding it (the shortfall is below one rank-step of one block): a bisection on
    the scale, then one rank at a time where the continuous target is furthest ahead."""
    weights = np.asarray(weights, dtype=float)
    caps = _max_ranks(mats, max_rank)

    def cost(ranks) -> int:
        return adapter_params(dict(enumerate(mats)), ranks, adapter)

    def continuous(scale):
        return [min(max(scale * w, min_rank), cap) for w, cap in zip(weights, caps)]

    if (weights < 0).any() or not np.isfinite(weights).all() or (weights == 0).all():
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights.tolist()}")
    smallest = cost([max(min_rank, 1 if w > 0 else 0) for w in weights])
    if budget < smallest:
        raise ValueError(f"budget {budget} is below the smallest allocation: {smallest} parameters "
                         f"(rank max(min_rank, 1) wherever bound + offset > 0)")
    if budget > cost(caps):
        raise ValueError(f"budget {budget} exceeds what the targets can hold at their maximal ranks "
                         f"({cost(caps)} parameters)")
    low, high = 0.0, max(cap / w for w, cap in zip(weights, caps) if w > 0)  # high: every rank at its cap
    for _ in range(100):
        mid = (low + high) / 2
        if cost([math.floor(x) for x in continuous(mid)]) <= budget:
            low = mid
        else:
            high = mid
    target = continuous(low)
    ranks = [int(math.floor(x)) for x in target]
    while True:  # largest remainder: add one rank where the profile shape is furthest ahead
        options = [k for k in range(len(ranks)) if weights[k] > 0 and ranks[k] < caps[k]
                   and cost(ranks[:k] + [ranks[k] + 1] + ranks[k + 1:]) <= budget]
        if not options:
            break
        best = max(options, key=lambda k: (target[k] - ranks[k], weights[k]))
        ranks[best] += 1
    return ranks


def _note_switched_off(ranks: list[int], notes: list[str]) -> list[str]:
    """A block at rank 0 is not adapted at all: say so in the notes and as a warning, never silently."""
    off = [k for k, r in enumerate(ranks) if r == 0]
    if off:
        message = (f"block(s) {off} get rank 0 and are not adapted (bound + offset is 0, or the budget does "
                   "not reach rank 1 there); pass offset > 0, min_rank >= 1 or a larger budget to adapt every block")
        notes.append(message)
        warnings.warn(f"GeLoRA: {message}", stacklevel=3)
    return notes


def _task_type(model) -> str | None:
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    if name.endswith("ForCausalLM"):
        return "CAUSAL_LM"
    return None


def lora_config(model, ranks, target_modules=None, scale: float = 2.0, alpha: float | None = None,
                **lora_kwargs):
    """A `peft.LoraConfig` that realises per-block ranks on this model.

    Every adapted module is listed by its full name (PEFT ignores pattern keys that match nothing,
    so nothing is left to pattern luck), with its rank in `rank_pattern`. Rank-0 blocks are left
    out. Alpha rule: by default alpha_k = scale * r_k, so every block has the same scaling
    alpha / r = `scale` (as PEFT's EVA does after redistributing ranks); pass `alpha` for one
    constant alpha (then the scaling alpha / r differs per block). The task type (sequence
    classification or causal LM, which makes PEFT train the head) is inferred from the model.
    """
    from peft import LoraConfig

    chosen = module_ranks(model, ranks, target_modules)
    default_r = Counter(chosen.values()).most_common(1)[0][0]
    alpha_of = (lambda r: alpha) if alpha is not None else (lambda r: scale * r)
    lora_kwargs.setdefault("task_type", _task_type(model))
    return LoraConfig(
        r=default_r, lora_alpha=alpha_of(default_r), target_modules=list(chosen),
        rank_pattern={re.escape(n): r for n, r in chosen.items()},
        alpha_pattern={re.escape(n): alpha_of(r) for n, r in chosen.items()},
        **lora_kwargs,
    )


def realised_ranks(peft_model, adapter_name: str = "default") -> dict[str, int]:
    """The rank PEFT actually gave every adapted module, keyed by the base model's module name."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.r:
            out[re.sub(r"^(base_model\.model\.)+", "", name)] = int(module.r[adapter_name])
    return out


def check_ranks(peft_model, ranks, target_modules=None, adapter_name: str = "default") -> dict[str, int]:
    """Raise, listing the differences, unless PEFT realised exactly the per-block ranks on exactly
    the targeted modules (rank 0: not adapted). Returns the realised ranks."""
    config = peft_model.peft_config[adapter_name]
    if target_modules is None:  # the config lists adapted modules only: look at their siblings too
        target_modules = sorted({str(name).split(".")[-1] for name in config.target_modules})
    expected = module_ranks(peft_model.get_base_model(), ranks, target_modules)
    realised = realised_ranks(peft_model, adapter_name)
    problems = []
    for name in sorted(set(expected) | set(realised)):
        want, got = expected.get(name, 0), realised.get(name, 0)
        if want != got:
            problems.append(f"{name}: expected rank {want}, realised {got}")
    if problems:
        raise ValueError(f"PEFT did not realise the allocation ({len(problems)} module(s)):\n  "
                         + "\n  ".join(problems[:20]))
    return realised


def count_trainable(model) -> int:
    """Parameters that receive gradients (unique tensors)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def count_parameters(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def lora_params(shapes, ranks) -> int:
    """LoRA: r (in + out) per adapted matrix."""
    return adapter_params(shapes, ranks, "lora")


def lora_sb_params(shapes, ranks) -> int:
    """LoRA-SB / LoRA-XS: r^2 per adapted matrix."""
    return adapter_params(shapes, ranks, "lora_sb")


def adalora_params(shapes, rank: int) -> int:
    """AdaLoRA: lora_A (r x in), lora_B (out x r) and the singular values lora_E (r): r (in + out + 1)."""
    return sum(rank * (i + o + 1) for mats in shapes.values() for _, i, o in mats)


def _uniform(shapes, rank):
    return {k: rank for k in shapes}


def uniform_budget(shapes, rank: int) -> int:
    """The trainable adapter parameters of uniform LoRA at `rank`: the usual reference budget."""
    return lora_params(shapes, _uniform(shapes, rank))


@dataclass
class Baseline:
    method: str
    setting: dict
    params: int
    note: str = ""


def matched_baselines(shapes, budget: int) -> dict[str, Baseline]:
    """The settings of the uniform baselines whose trainable adapter parameters come closest to
    `budget`, each with its realised count: LoRA rank, LoRA-XS/SB rank, AdaLoRA target_r (init_r
    = ceil(1.5 target_r), PEFT's default ratio), EVA rank (its budget is rank x modules,
    redistributed; exact when every target has the same shape)."""
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    per_rank = lora_params(shapes, _uniform(shapes, 1))
    if budget < per_rank / 2:
        raise ValueError(f"budget {budget} is below half of one uniform LoRA rank ({per_rank} parameters)")
    n_mats = sum(len(m) for m in shapes.values())
    r_lora = max(1, int(round(budget / per_rank)))
    r_sb = max(1, int(round(math.sqrt(budget / n_mats))))
    per_ada = adalora_params(shapes, 1)
    r_ada = max(1, int(round(budget / per_ada)))
    init_r = int(math.ceil(1.5 * r_ada))
    same_shape = len({(i, o) for m in shapes.values() for _, i, o in m}) == 1
    return {
        "lora": Baseline("lora", {"r": r_lora}, lora_params(shapes, _uniform(shapes, r_lora))),
        "lora_xs": Baseline("lora_xs", {"r": r_sb}, lora_sb_params(shapes, _uniform(shapes, r_sb))),
        "lora_sb": Baseline("lora_sb", {"r": r_sb}, lora_sb_params(shapes, _uniform(shapes, r_sb))),
        "adalora": Baseline("adalora", {"target_r": r_ada, "init_r": init_r}, adalora_params(shapes, r_ada),
                            f"{adalora_params(shapes, init_r)} parameters are allocated at the start "
                            f"(init_r={init_r}) and pruned to the budget during training"),
        "eva": Baseline("eva", {"r": r_lora}, lora_params(shapes, _uniform(shapes, r_lora)),
                        "" if same_shape else "targets differ in shape: EVA's redistribution changes the count"),
    }


def unresolved(profile: pd.DataFrame) -> list[int]:
    """Blocks whose bound max(d_{k+1} - d_k, 0) is decided by noise: the two layers' intervals
    overlap, so an independent sample could give the opposite sign (none for a profile that
    carries no intervals)."""
    if not {"ci_low", "ci_high"} <= set(profile.columns):  # a profile without intervals cannot say
        return []
    rows = profile.sort_values("layer")
    low, high = rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy()
    return [k for k in range(len(rows) - 1)
            if not (math.isnan(low[k]) or math.isnan(low[k + 1])) and low[k + 1] <= high[k] and low[k] <= high[k + 1]]
