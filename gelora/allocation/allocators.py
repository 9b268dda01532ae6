"""Rank allocators at one budget: the control question for GeLoRA. Does any non-uniform allocation
at the same budget do as well as the geometry's?

Every allocator takes the block shapes (`targets.block_shapes`) and a budget (trainable adapter
parameters, the head excluded) and returns an `Allocation`: one rank per block (every target
matrix of a block gets it) and where it came from. Ranks follow the allocator's weights through
the same rule GeLoRA uses (`ranks.scale_to_budget`), so the allocators differ only in their
weights. An allocation trains as uniform LoRA with `block_ranks` (`gelora.training.train`).

    uniform            every block the same weight
    gelora             the ID increment + offset (Ed-dib et al., with the kit's budget scaling)
    gelora_bound       ceil(ID increment) alone, unscaled: its own, smaller parameter count
    inverted_gelora    GeLoRA's ranks reversed over depth (a sharp control)
    random             weights drawn from a flat Dirichlet, seeded: the null distribution
    weight_spectrum    each block's pretrained weights' energy rank (PEFT's float-rank rule,
                       applied to W0 instead of an adapter's delta)
    gradient_spectrum  the energy rank of the first-step update LoRA-SB estimates
    read_back          the final ranks of a finished run (EVA, AdaLoRA), rescaled to the budget
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from gelora.allocation.ranks import _shapes_in_order, adapter_params, gelora_ranks, scale_to_budget
from gelora.core.checks import check_real, check_whole
from gelora.models.spectra import energy_rank, singular_values

ENERGY = 0.9  # the energy fraction of the spectrum rules


@dataclass
class Allocation:
    """Ranks per block (block 0 first), their parameter count against the budget, and provenance."""

    name: str
    ranks: list[int]
    params: int
    budget: int
    provenance: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _mats(shapes: dict) -> list:
    return _shapes_in_order(shapes, len(shapes), "lora")


def from_weights(name: str, weights, shapes: dict, budget: int, provenance: dict | None = None,
                 min_rank: int = 0, max_rank: int | None = None) -> Allocation:
    """Ranks proportional to `weights` (one per block) at `budget`, by GeLoRA's scaling rule."""
    check_whole("budget", budget, 1)
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(shapes),):
        raise ValueError(f"{name}: {weights.size} weights for {len(shapes)} blocks")
    ranks = scale_to_budget(weights, _mats(shapes), budget, min_rank, max_rank)
    return Allocation(name, ranks, adapter_params(shapes, ranks), budget,
                      {"weights": [float(w) for w in weights], **(provenance or {})})


def uniform(shapes: dict, budget: int) -> Allocation:
    return from_weights("uniform", np.ones(len(shapes)), shapes, budget, {"rule": "equal weights"})


def gelora(profile, shapes: dict, budget: int, offset: float = 1.0) -> Allocation:
    allocation = gelora_ranks(profile, offset=offset, budget=budget, shapes=shapes, undefined="zero")
    return Allocation("gelora", allocation.ranks, allocation.params, budget,
                      {"rule": "ID increment + offset, scaled", "bounds": allocation.bounds, "offset": offset})


def gelora_bound(profile, shapes: dict, budget: int) -> Allocation:
    """The paper's bound alone (ceil, no offset, no scaling), at least rank 1 per block so every
    block is adapted; its parameter count is its own (usually far below the budget)."""
    allocation = gelora_ranks(profile, min_rank=1, rounding="ceil", offset=0.0, undefined="zero")
    return Allocation("gelora_bound", allocation.ranks, adapter_params(shapes, allocation.ranks), budget,
                      {"rule": "ceil(ID increment), at least 1, unscaled", "bounds": allocation.bounds})


def inverted(allocation: Allocation, shapes: dict) -> Allocation:
    """The ranks reversed over depth (blocks of equal shapes keep the parameter count)."""
    ranks = allocation.ranks[::-1]
    params = adapter_params(shapes, ranks)
    if params > allocation.budget:
        raise ValueError(f"reversing {allocation.name} costs {params} parameters, over the budget {allocation.budget} "
                         "(blocks of unequal shapes)")
    return Allocation(f"inverted_{allocation.name}", ranks, params, allocation.budget,
                      {"rule": f"{allocation.name}'s ranks reversed over depth", "source": allocation.ranks})


def random(shapes: dict, budget: int, draws: int = 5, seed: int = 0, min_rank: int = 1) -> list[Allocation]:
    """`draws` allocations whose weights come from a flat Dirichlet (every split of the budget
    equally likely), each block at least `min_rank`: the null distribution at this budget."""
    check_whole("draws", draws, 1)
    check_whole("seed", seed, 0)
    rng = np.random.default_rng(seed)
    return [from_weights(f"random_{i}", rng.dirichlet(np.ones(len(shapes))), shapes, budget,
                         {"rule": "flat Dirichlet weights", "seed": seed, "draw": i}, min_rank=min_rank)
            for i in range(draws)]


def spectrum_weights(matrices: dict, blocks: dict, fraction: float = ENERGY) -> np.ndarray:
    """Per block, the sum over its matrices of the energy rank at `fraction` (`matrices`: module
    name -> tensor; `blocks`: module name -> block index)."""
    check_real("fraction", fraction, 0, 1, open_low=True)
    weights = np.zeros(max(blocks.values()) + 1)
    for name, matrix in matrices.items():
        weights[blocks[name]] += energy_rank(singular_values(matrix), fraction)
    return weights


def weight_spectrum(model, targets, shapes: dict, budget: int, fraction: float = ENERGY) -> Allocation:
    """Each block's weight: the energy ranks of its pretrained target matrices W0."""
    from gelora.models.targets import block_index, find_targets

    modules = find_targets(model, targets)
    weights = spectrum_weights({n: m.weight for n, m in modules.items()}, {n: block_index(n) for n in modules}, fraction)
    return from_weights("weight_spectrum", weights, shapes, budget,
                        {"rule": f"energy rank {fraction:g} of the pretrained weights", "fraction": fraction})


def gradient_spectrum(update: dict, shapes: dict, budget: int, fraction: float = ENERGY) -> Allocation:
    """Each block's weight: the energy ranks of the first-step update (`lora_sb.estimate_update`:
    module name -> matrix)."""
    from gelora.models.targets import block_index

    weights = spectrum_weights(update, {n: block_index(n) for n in update}, fraction)
    return from_weights("gradient_spectrum", weights, shapes, budget,
                        {"rule": f"energy rank {fraction:g} of the estimated first-step update", "fraction": fraction})


def read_back(name: str, ranks_by_block, shapes: dict, budget: int) -> Allocation:
    """A finished run's final ranks per block (EVA's redistribution, AdaLoRA's pruning), rescaled
    to the budget so that only their shape is compared."""
    weights = np.asarray([float(r) for r in ranks_by_block])
    return from_weights(name, weights, shapes, budget, {"rule": "a finished run's final ranks, rescaled",
                                                        "read": [float(r) for r in ranks_by_block]})
