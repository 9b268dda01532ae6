"""The step plan of a run, from what the Trainer will really execute.

`batch_size` is the global batch: the examples behind one optimiser step, whatever the layout.
Under torchrun / accelerate with W processes and k accumulation steps every process takes
micro-batches of batch_size / (W k) examples, so a run on one process and a run on eight take the
same optimiser steps, the same warm-up, evaluate at the same steps, and give AdaLoRA and LoRA-SB
the same schedule. The Trainer is told `max_steps` so it cannot plan differently.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from gelora.core.checks import check_real, check_whole


def world_size() -> int:
    """Processes of a torchrun / accelerate launch (1 without a launcher)."""
    value = os.environ.get("WORLD_SIZE", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"the environment variable WORLD_SIZE must be a whole number >= 1, got {value!r}")
    return int(value)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@dataclass(frozen=True)
class StepPlan:
    global_batch: int
    per_device_batch: int
    world_size: int
    gradient_accumulation: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_steps: int
    logging_steps: int

    def as_dict(self) -> dict:
        return asdict(self)


def plan_steps(n_examples: int, batch_size: int, epochs: float, warmup_ratio: float, evals: int,
               gradient_accumulation: int = 1, processes: int | None = None) -> StepPlan:
    """The optimiser steps of a run: ceil(epochs x ceil(n / batch_size)), warm-up and evaluation
    steps from that count. batch_size must split evenly over processes x accumulation steps."""
    processes = world_size() if processes is None else processes
    for name, value in (("n_examples", n_examples), ("batch_size", batch_size), ("evals", evals),
                        ("gradient_accumulation", gradient_accumulation), ("processes", processes)):
        check_whole(name, value, 1)
    check_real("epochs", epochs, 0, open_low=True)
    check_real("warmup_ratio", warmup_ratio, 0, 1)
    split = processes * gradient_accumulation
    if batch_size % split:
        raise ValueError(f"batch_size={batch_size} (the global batch) does not split evenly over {processes} "
                         f"process(es) x gradient_accumulation={gradient_accumulation}: use a multiple of {split}")
    steps_per_epoch = math.ceil(n_examples / batch_size)
    total = max(1, math.ceil(epochs * steps_per_epoch))
    return StepPlan(global_batch=batch_size, per_device_batch=batch_size // split, world_size=processes,
                    gradient_accumulation=gradient_accumulation, steps_per_epoch=steps_per_epoch,
                    total_steps=total, warmup_steps=int(warmup_ratio * total), eval_steps=max(1, total // evals),
                    logging_steps=max(1, total // 50))
