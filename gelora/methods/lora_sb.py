"""The LoRA-XS family: W + B R A with only the r x r core R trained. LoRA-XS (Balazy et al.)
takes B, A from the SVD of W0; LoRA-SB (Ponkshe et al.) from the first full fine-tuning step,
estimated over a few examples; GeLoRA-SB puts LoRA-SB cores at GeLoRA's per-block ranks."""
from __future__ import annotations

from dataclasses import dataclass

from gelora.adapters.lora_sb import apply_lora_sb, estimate_update
from gelora.allocation.ranks import lora_sb_params
from gelora.core.checks import check_real, check_whole
from gelora.methods.gelora import GeLoRASettings
from gelora.methods.registry import Method, option, register


@dataclass
class GradientSamples:
    sb_num_samples: int = option(64, "examples in the gradient estimate of LoRA-SB, GeLoRA-SB, LoRA-GA (at most; recorded)")

    def check(self, config) -> None:
        check_whole("sb_num_samples", self.sb_num_samples, 1)


@dataclass
class FirstStep(GradientSamples):
    sb_init_lr: float | None = option(None, "first-step lr that scales the LoRA-SB update (None: lr / warm-up steps)")

    def check(self, config) -> None:
        super().check(config)
        check_real("sb_init_lr", self.sb_init_lr, 0, open_low=True, optional=True)


@dataclass
class GeLoRASBSettings(GeLoRASettings, FirstStep):
    def check(self, config) -> None:
        GeLoRASettings.check(self, config)
        FirstStep.check(self, config)


def first_step_update(ctx):
    """The estimated first full fine-tuning update of the targets, and the rate that scales it."""
    settings = ctx.settings
    init_lr = settings.sb_init_lr or (ctx.lr / max(1, ctx.warmup_steps))
    ctx.model.to(ctx.device)
    update = estimate_update(ctx.model, ctx.batches(), ctx.targets, settings.sb_num_samples, init_lr)
    return update, {"sb_init_lr": init_lr, "data_pass_examples": min(settings.sb_num_samples, len(ctx.train_tokens))}


def _lora_xs(ctx):
    rank = ctx.rank()
    apply_lora_sb(ctx.model, rank=rank, target_modules=ctx.targets, init="lora_xs", dropout=ctx.config.dropout,
                  seed=ctx.config.seed)
    return ctx.model, {"ranks": {k: rank for k in ctx.shapes}}


def _lora_sb(ctx):
    rank = ctx.rank()
    update, info = first_step_update(ctx)
    apply_lora_sb(ctx.model, update, rank=rank, target_modules=ctx.targets, dropout=ctx.config.dropout,
                  seed=ctx.config.seed)
    return ctx.model, {**info, "ranks": {k: rank for k in ctx.shapes}}


def _gelora_sb(ctx):
    allocation = ctx.allocation()
    update, info = first_step_update(ctx)
    apply_lora_sb(ctx.model, update, ranks=allocation.by_block, target_modules=ctx.targets,
                  dropout=ctx.config.dropout, seed=ctx.config.seed)
    return ctx.model, {"allocation": allocation.as_dict(), "unresolved_blocks": ctx.unresolved_blocks,
                       **info, "ranks": allocation.by_block}


register(Method("lora_xs", "LoRA-XS", "lora_xs", 5e-3, "#ca9161", "P", _lora_xs, lora_sb_params, "lora_xs",
                description="B, A from the SVD of W0, only R trains (Balazy et al.)"))
register(Method("lora_sb", "LoRA-SB", "lora_xs", 5e-3, "#fbafe4", "X", _lora_sb, lora_sb_params, "lora_sb",
                settings=FirstStep,
                description="LoRA-XS initialised from the first full fine-tuning step (Ponkshe et al.)"))
register(Method("gelora_sb", "GeLoRA-SB", "lora_xs", 5e-3, "#949494", "*", _gelora_sb, lora_sb_params,
                uses_profile=True, ranks_adapter="lora_sb", settings=GeLoRASBSettings,
                description="LoRA-SB cores with GeLoRA's per-block ranks"))
