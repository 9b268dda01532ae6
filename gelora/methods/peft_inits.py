"""LoRA with a data- or weight-driven start, both from PEFT: LoRA-GA (Wang et al.: the factors
from the SVD of the average first gradient) and PiSSA (Meng et al.: the principal singular
vectors of W0)."""
from __future__ import annotations

import warnings

from peft import LoraGAConfig, get_peft_model
from peft.tuners.lora.loraga import preprocess_loraga

from gelora.allocation.ranks import check_ranks, lora_params
from gelora.methods.lora import lora_at
from gelora.methods.lora_sb import GradientSamples
from gelora.methods.registry import Method, register


def _lora_ga(ctx):
    block_ranks = {k: ctx.rank() for k in ctx.shapes}
    config = ctx.peft_lora(block_ranks, init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())
    ctx.model.to(ctx.device)
    sample = ctx.first_examples(ctx.settings.sb_num_samples)
    loader = ctx.batches(sample)

    def train_step():
        for batch in loader:
            ctx.model(**{k: v.to(ctx.device) for k, v in batch.items()}).loss.backward()

    with warnings.catch_warnings():  # PEFT counts backward passes with full hooks on frozen inputs: harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        preprocess_loraga(ctx.model, config, train_step)
    model = get_peft_model(ctx.model, config)
    check_ranks(model, block_ranks, ctx.targets)
    return model, {"ranks": block_ranks, "data_pass_examples": len(sample)}


def _pissa(ctx):
    return lora_at(ctx, {k: ctx.rank() for k in ctx.shapes}, init_lora_weights="pissa")


register(Method("lora_ga", "LoRA-GA", "lora", 2e-3, "#56b4e9", "<", _lora_ga, lora_params, "lora",
                settings=GradientSamples,
                description="LoRA factors from the SVD of the first gradient (Wang et al.; PEFT)"))
register(Method("pissa", "PiSSA", "lora", 2e-3, "#7f3c8d", ">", _pissa, lora_params, "lora",
                description="LoRA factors from the principal singular vectors of W0 (Meng et al.; PEFT)"))
