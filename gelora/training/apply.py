"""Any registered method on a model outside the harness: a notebook's plain loop, your own Trainer.

    model, info = adapt("lora_sb", model, tokenizer, train_data, rank=8, steps=200)

The same builder as `gelora.training.train.finetune`, settings as FinetuneConfig fields (rank, budget,
target_modules, sb_num_samples, ...). It lives above `config` and `methods` (both of which it
uses), so neither imports the other back.
"""
from __future__ import annotations

from gelora.data.tasks import prompt_format, tokenize
from gelora.methods.context import BuildContext, build
from gelora.methods.registry import get_method
from gelora.training.config import FinetuneConfig, validate


def adapt(name: str, model, tokenizer, train, steps: int = 100, lr: float | None = None, device: str = "cpu",
          **settings):
    """Put method `name` on `model`. `steps` is the planned number of optimiser steps (AdaLoRA's
    schedule, LoRA-SB's first-step lr). Returns (model, info)."""
    config = FinetuneConfig(name, **settings)
    validate(config)
    lr = lr if lr is not None else get_method(name).lr
    form = prompt_format(tokenizer, config.prompt_format) if train.task == "generation" else "plain"
    tokens = tokenize(train, tokenizer, config.max_length, form)  # as finetune tokenises it
    warmup = int(config.warmup_ratio * steps)
    return build(BuildContext(config, model, tokenizer, train, tokens, steps, warmup, lr, device))
