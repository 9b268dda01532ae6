"""GeLoRA (Ed-dib et al.): LoRA with per-block ranks from the intrinsic-dimension profile, read
from a CSV or probed from the training texts; its settings are shared with GeLoRA-SB."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gelora.allocation.ranks import lora_params
from gelora.core.checks import check_real, check_whole
from gelora.methods.lora import lora_at
from gelora.methods.registry import Method, option, register

POOLINGS = ("cls", "mean", "last", "tokens")
ROUNDINGS = ("ceil", "round", "floor")


@dataclass
class GeLoRASettings:
    id_profile: str | None = option(None, "ID profile CSV for gelora / gelora_sb (None: probe the training texts now)")
    probe_examples: int = option(1000, "texts probed when the ID profile is computed here")
    probe_pooling: str = option("mean", "pooling of that probe: cls | mean | last | tokens")
    gelora_offset: float = option(1.0, "added to every GeLoRA bound before scaling to the budget")
    gelora_min_rank: int = option(0, "smallest GeLoRA rank of a block (0: a block may stay unadapted)")
    gelora_max_rank: int | None = option(None, "largest GeLoRA rank (None: the smaller side of the matrix)")
    gelora_rounding: str = option("ceil", "rounding of the bounds without a budget: ceil | round | floor")

    def check(self, config) -> None:
        if self.id_profile is not None and (not isinstance(self.id_profile, str) or not Path(self.id_profile).is_file()):
            raise ValueError(f"id_profile must be the path of an ID profile CSV or None, got {self.id_profile!r} (no such file)")
        check_whole("probe_examples", self.probe_examples, 1)
        check_whole("gelora_min_rank", self.gelora_min_rank, 0)
        check_whole("gelora_max_rank", self.gelora_max_rank, 1, optional=True)
        check_real("gelora_offset", self.gelora_offset, 0)
        for name, allowed in (("probe_pooling", POOLINGS), ("gelora_rounding", ROUNDINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.gelora_max_rank is not None and self.gelora_max_rank < max(self.gelora_min_rank, 1):
            raise ValueError(f"gelora_max_rank={self.gelora_max_rank} is below gelora_min_rank={self.gelora_min_rank}")


def _gelora(ctx):
    allocation = ctx.allocation()
    return lora_at(ctx, allocation.by_block, {"allocation": allocation.as_dict(),
                                              "unresolved_blocks": ctx.unresolved_blocks})


register(Method("gelora", "GeLoRA", "lora", 2e-3, "#029e73", "D", _gelora, lora_params, uses_profile=True,
                settings=GeLoRASettings,
                description="per-block ranks from the intrinsic-dimension profile (Ed-dib et al.)"))
