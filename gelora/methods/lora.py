"""LoRA (Hu et al.) through PEFT: a uniform rank, or a rank per block (the per-block rank sweep
and the allocators); `lora_at` is the builder every LoRA-factor method shares."""
from __future__ import annotations

from dataclasses import dataclass

from peft import get_peft_model

from gelora.allocation.ranks import check_ranks, lora_params
from gelora.methods.registry import Method, option, register


@dataclass
class LoraSettings:
    block_ranks: list[int] | None = option(None, "lora only: the rank of every block, block 0 first (0: not adapted; "
                                                 "None: rank everywhere); the per-block rank sweep")

    def check(self, config) -> None:
        ranks = self.block_ranks
        if ranks is None:
            return
        if (not isinstance(ranks, list) or not ranks or not any(ranks)
                or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in ranks)):
            raise ValueError(f"block_ranks must be a list of whole numbers >= 0, one per block, at least one above 0, "
                             f"got {ranks!r}")
        if config.method != "lora":
            raise ValueError(f"block_ranks applies to method 'lora' only, got method={config.method!r}")
        if config.budget is not None:
            raise ValueError(f"block_ranks and budget={config.budget} both set the ranks: give one")


def lora_at(ctx, block_ranks, info=None, **lora_kwargs):
    """PEFT LoRA at `block_ranks` (block -> rank), checked on the built model."""
    model = get_peft_model(ctx.model, ctx.peft_lora(block_ranks, **lora_kwargs))
    check_ranks(model, block_ranks, ctx.targets)
    return model, {"ranks": block_ranks, **(info or {})}


def _lora(ctx):
    given = ctx.settings.block_ranks
    if given is None:
        return lora_at(ctx, {k: ctx.rank() for k in ctx.shapes})
    if len(given) != len(ctx.shapes):
        raise ValueError(f"block_ranks has {len(given)} entries but the model has {len(ctx.shapes)} blocks")
    return lora_at(ctx, dict(zip(ctx.shapes, given)))


register(Method("lora", "LoRA", "lora", 2e-3, "#de8f05", "s", _lora, lora_params, "lora", settings=LoraSettings,
                description="uniform rank, B = 0 at the start (Hu et al.)"))
