"""AdaLoRA (Zhang et al.) through PEFT: SVD-form adapters that start at 1.5x the target rank and
are pruned to the budget during training, with a schedule scaled to the run's length."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from peft import AdaLoraConfig, get_peft_model
from transformers import TrainerCallback

from gelora.allocation.ranks import adalora_params
from gelora.core.checks import check_real
from gelora.methods.registry import Method, option, register


@dataclass
class AdaLoraSettings:
    adalora_orth_reg: float = option(0.1, "AdaLoRA's orthogonality penalty (its paper's GLUE value; PEFT: 0.5)")

    def check(self, config) -> None:
        check_real("adalora_orth_reg", self.adalora_orth_reg, 0)


def _adalora(ctx):
    uniform, config = ctx.uniform(), ctx.config
    target_r = uniform.get("target_r", config.rank)
    init_r = uniform.get("init_r", int(math.ceil(1.5 * target_r)))
    tinit, tfinal = int(0.1 * ctx.total_steps), int(0.2 * ctx.total_steps)
    if ctx.total_steps - tinit - tfinal < 1:
        raise ValueError(f"AdaLoRA needs more training steps than {ctx.total_steps} for its schedule")
    model = get_peft_model(ctx.model, AdaLoraConfig(
        init_r=init_r, target_r=target_r, tinit=tinit, tfinal=tfinal, deltaT=max(1, ctx.total_steps // 50),
        total_step=ctx.total_steps, orth_reg_weight=ctx.settings.adalora_orth_reg,
        lora_alpha=config.lora_scale * target_r, lora_dropout=config.dropout,
        target_modules=list(ctx.targets), task_type=ctx.task_type))
    return model, {"ranks": {"init_r": init_r, "target_r": target_r},
                   "expected_adapter_params": adalora_params(ctx.shapes, init_r),
                   "budget_params": adalora_params(ctx.shapes, target_r)}


class AdaLoraAllocation(TrainerCallback):
    """AdaLoRA reallocates ranks from the gradients: after every optimiser step, before the
    gradients are zeroed (the Trainer calls on_optimizer_step exactly there)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


def _adalora_final(model) -> dict:
    """AdaLoRA after training: the rank each module kept (non-zero singular values) and the
    parameters those ranks amount to, r (in + out + 1) per module."""
    from peft.tuners.adalora import AdaLoraLayer

    ranks, total = {}, 0
    for name, module in model.named_modules():
        if isinstance(module, AdaLoraLayer) and "default" in module.lora_E:
            kept = int((module.lora_E["default"] != 0).sum())
            ranks[re.sub(r"^(base_model\.model\.)+", "", name)] = kept
            total += kept * (module.in_features + module.out_features + 1)
    return {"final_ranks": ranks, "effective_adapter_params": total}


register(Method("adalora", "AdaLoRA", "lora", 2e-3, "#d55e00", "^", _adalora, None, "adalora",
                callbacks=lambda: [AdaLoraAllocation()], finish=_adalora_final, settings=AdaLoraSettings,
                description="SVD-form adapters pruned to the budget during training (Zhang et al.)"))
