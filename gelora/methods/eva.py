"""EVA (Paischer et al.) through PEFT: LoRA initialised from the SVD of the targets' input
activations over a few batches, with ranks redistributed by explained variance."""
from __future__ import annotations

from dataclasses import dataclass

from peft import EvaConfig, LoraConfig, get_peft_model, initialize_lora_eva_weights

from gelora.allocation.ranks import realised_ranks
from gelora.core.checks import check_whole
from gelora.methods.registry import Method, option, register


@dataclass
class EvaSettings:
    eva_examples: int = option(256, "examples in EVA's activation pass (at most: the training set if smaller; recorded)")

    def check(self, config) -> None:
        check_whole("eva_examples", self.eva_examples, 1)


def _eva(ctx):
    config, rank = ctx.config, ctx.rank()
    peft_config = LoraConfig(r=rank, lora_alpha=config.lora_scale * rank, target_modules=list(ctx.targets),
                             lora_dropout=config.dropout, init_lora_weights="eva", eva_config=EvaConfig(rho=2.0),
                             task_type=ctx.task_type)
    model = get_peft_model(ctx.model.to(ctx.device), peft_config, low_cpu_mem_usage=True)
    subset = ctx.first_examples(ctx.settings.eva_examples)
    initialize_lora_eva_weights(model, ctx.batches(subset, drop_labels=config.task != "generation"),
                                gather_distributed_inputs=False,  # every process already sees the same batches
                                show_progress_bar=config.progress)
    realised = realised_ranks(model)
    return model, {"ranks": realised, "data_pass_examples": len(subset), "expected_adapter_params": sum(
        realised.get(n, 0) * (i + o) for mats in ctx.shapes.values() for n, i, o in mats)}


register(Method("eva", "EVA", "lora", 2e-3, "#cc78bc", "v", _eva, None, "eva", settings=EvaSettings,
                description="data-driven init from activation SVD, ranks redistributed (Paischer et al.)"))
