"""Training-step time and peak memory of the LoRA-SB adapter against PEFT LoRA on the packaged
MiniLM, and the cost of the LoRA-SB initialisation against one training epoch.

    python benchmarks/adapter_speed.py [--steps 30] [--batch-size 16] [--max-length 64]

Adapters on query and value, batch 16 x 64 tokens of real movie sentences. Compared: PEFT LoRA
r = 8, LoRA-SB at the same r = 8, and LoRA-SB at r = 78 (about the trainable parameters of LoRA
r = 8). Step = forward + backward + AdamW step, median over --steps after 3 warm-up steps.
Memory: on CUDA the allocator's peak; on CPU the peak resident set above the level before the
steps (sampled every 50 ms), which is coarse. Each adapter is measured in a fresh process, so no
adapter inherits another's allocations. Initialisation = the gradient pass over 64 examples plus
the SVDs; the epoch is that of the `cpu` profile (1,600 examples, batch 16) and, for scale, one
over the whole movie-sentiment training split (8,453 examples).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time

import torch
from peft import get_peft_model

from gelora.adapters.lora_sb import apply_lora_sb, estimate_update
from gelora.allocation.ranks import count_trainable, lora_config
from gelora.data.tasks import collator, load_dataset, tokenize
from gelora.models.loading import load_model
from gelora.training.train import PeakMemory

TARGETS = ["query", "value"]


def step_stats(model, batches, steps, device):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    with PeakMemory(device.type) as memory:
        for i in range(steps + 3):
            batch = {k: v.to(device) for k, v in batches[i % len(batches)].items()}
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak_mb


def setup(name, base, update):
    if name == "lora8":
        return get_peft_model(base, lora_config(base, {k: 8 for k in range(6)}, TARGETS))
    rank = {"sb8": 8, "sb78": 78}[name]
    return apply_lora_sb(base, update, rank=rank, target_modules=TARGETS)


LABELS = {"lora8": "PEFT LoRA r=8", "sb8": "LoRA-SB r=8 (same rank)", "sb78": "LoRA-SB r=78 (same params)"}


def prepare_inputs(args, device):
    base, tokenizer = load_model("minilm", "classification", 2, seed=0)
    base.to(device)
    data = load_dataset("movie-sentiment", "train").subset(max(args.batch_size * 8, 64), seed=0)
    tokens = tokenize(data, tokenizer, args.max_length)
    collate = collator(tokenizer, "classification")
    order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]["input_ids"]))
    batches = [dict(collate([tokens[i] for i in order[s:s + args.batch_size]]))
               for s in range(0, len(tokens), args.batch_size)]
    return base, batches


def measure_one(args, device):
    """Child process: one adapter, printed as a tab-separated line."""
    base, batches = prepare_inputs(args, device)
    update = estimate_update(base, batches, TARGETS, num_samples=64, lr=1e-4)
    model = setup(args.only, base, update)
    trainable = count_trainable(model)
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" in n)
    step, peak = step_stats(model, batches, args.steps, device)
    print(f"RESULT\t{trainable}\t{trainable - head}\t{step}\t{peak}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epoch-examples", type=int, default=1600)
    parser.add_argument("--only", choices=list(LABELS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.only:
        return measure_one(args, device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, batch {args.batch_size} x up to "
          f"{args.max_length} tokens, median of {args.steps} steps, each adapter in a fresh process")
    print(f"{'adapter':>28} {'trainable':>10} {'adapter':>9} {'step (ms)':>10} {'peak mem (MB)':>14}")
    steps = {}
    for name, label in LABELS.items():
        out = subprocess.run([sys.executable, __file__, "--only", name, "--steps", str(args.steps), "--batch-size",
                              str(args.batch_size), "--max-length", str(args.max_length)],
                             capture_output=True, text=True, check=True).stdout
        _, trainable, adapter, step, peak = next(line for line in out.splitlines() if line.startswith("RESULT")).split("\t")
        steps[name] = float(step)
        print(f"{label:>28} {int(trainable):>10,} {int(adapter):>9,} {1000 * float(step):>10.1f} {float(peak):>14.1f}",
              flush=True)

    base, batches = prepare_inputs(args, device)
    start = time.perf_counter()
    update = estimate_update(base, batches, TARGETS, num_samples=64, lr=1e-4)
    t_grad = time.perf_counter() - start
    start = time.perf_counter()
    apply_lora_sb(copy.deepcopy(base), update, rank=8, target_modules=TARGETS)
    t_svd = time.perf_counter() - start
    total = t_grad + t_svd
    print(f"\nLoRA-SB initialisation: gradient pass over 64 examples {t_grad:.2f} s + SVDs and wrapping {t_svd:.2f} s "
          f"= {total:.2f} s")
    for examples in (args.epoch_examples, 8453):
        n_steps = -(-examples // args.batch_size)
        epoch = n_steps * steps["sb8"]
        print(f"one epoch of {examples:,} examples ({n_steps} steps at the LoRA-SB r=8 step time): {epoch:.1f} s; "
              f"initialisation = {100 * total / epoch:.1f}% of it")


if __name__ == "__main__":
    main()
