"""SmolLM2-135M-Instruct on the arithmetic set: training-step time and peak memory of LoRA against
LoRA-SB at the same budget, the output layer on response positions only against every position,
and zero-shot exact match against the fine-tuned runs of the cpu-llm profile.

    python benchmarks/smollm2.py [--steps 6] [--batch-size 16] [--zero-shot 200] [--run results/cpu-llm]

Adapters on the seven projections of every block (q, k, v, o, gate, up, down). LoRA r = 8 and
LoRA-SB at the rank whose r x r cores come closest to LoRA r = 8's trainable parameters. Batches
of 16 real chat-formatted problems (the loss on the response). Step = forward + backward + AdamW
step, median over --steps after 2 warm-up steps; memory: the peak resident set above the level
before the steps (CPU, sampled every 50 ms) or the CUDA allocator's peak. All figures of one
table come from one invocation, side by side, so their ratios hold even where this machine's
speed drifts from hour to hour.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq

from gelora.allocation.ranks import count_trainable
from gelora.data.tasks import ResponseLogits, load_dataset, prompt_format, tokenize
from gelora.models.loading import load_model
from gelora.training.apply import adapt
from gelora.training.generate import score
from gelora.training.train import PeakMemory

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def step_stats(model, batches, steps):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    with PeakMemory("cpu") as memory:
        for i in range(steps + 2):
            start = time.perf_counter()
            model(**batches[i % len(batches)]).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--zero-shot", type=int, default=200, help="test problems scored zero-shot (0: skip)")
    parser.add_argument("--run", default="results/cpu-llm", help="the cpu-llm run whose fine-tuned exact match is shown")
    args = parser.parse_args()
    torch.manual_seed(0)
    train = load_dataset("arithmetic", "train").subset(args.batch_size * 4, seed=0)
    _, tokenizer = load_model("smollm2", "generation")
    form = prompt_format(tokenizer)
    tokens = tokenize(train, tokenizer, args.max_length, form)
    features = [tokens[i] for i in range(len(tokens))]
    chunks = [features[i:i + args.batch_size] for i in range(0, len(features), args.batch_size)]
    kept = [ResponseLogits(tokenizer)(c) for c in chunks]
    every = [dict(DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)(c)) for c in chunks]
    print(f"torch threads {torch.get_num_threads()}; batch {args.batch_size} x {every[0]['input_ids'].shape[1]} tokens "
          f"(padded); response positions through the output layer: {kept[0]['logits_to_keep'].numel()} of "
          f"{every[0]['input_ids'].shape[1]}")

    rows = []
    for name, settings in (("lora", {"rank": 8}), ("lora_sb", {"budget": None})):
        model, _ = load_model("smollm2", "generation")
        if name == "lora_sb":  # the rank of LoRA r = 8's budget
            from gelora.allocation.ranks import matched_baselines
            from gelora.models.targets import block_shapes

            lora_budget = rows[0][2]  # LoRA r = 8's trainable parameters, measured above, not typed
            settings = {"rank": matched_baselines(block_shapes(model, TARGETS), lora_budget)["lora_sb"].setting["r"]}
        model, _ = adapt(name, model, tokenizer, train, steps=args.steps + 2, target_modules=TARGETS,
                         sb_num_samples=args.batch_size, max_length=args.max_length, **settings)
        for batches, label in ((kept, "response positions"), (every, "every position")):
            seconds, peak = step_stats(model, batches, args.steps)
            rows.append((name, settings["rank"], count_trainable(model), label, seconds, peak))
    print("\n| adapter | r | trainable | output layer on | step (s) | peak memory above start (MB) |")
    print("|:--|--:|--:|:--|--:|--:|")
    for name, r, trainable, label, seconds, peak in rows:
        print(f"| {name} | {r} | {trainable:,} | {label} | {seconds:.2f} | {peak:.0f} |")
    for name in ("lora", "lora_sb"):
        mine = [row for row in rows if row[0] == name]
        print(f"{name}: every position / response positions = {mine[1][4] / mine[0][4]:.2f}x step time")
    lora, sb = rows[0], rows[2]
    print(f"response positions: LoRA-SB / LoRA step time {sb[4] / lora[4]:.2f}x, peak memory {sb[5]:.0f} vs {lora[5]:.0f} MB")

    if args.zero_shot:
        model, _ = load_model("smollm2", "generation")
        test = load_dataset("arithmetic", "test").subset(args.zero_shot, seed=0)
        start = time.perf_counter()
        matches, responses = score(model, tokenizer, test, form, max_new_tokens=48, max_length=args.max_length)
        print(f"\nzero-shot exact match on {len(test)} test problems: {matches.mean():.3f} "
              f"({time.perf_counter() - start:.0f} s); first answer: {responses[0]!r}")
        records = [json.loads(p.read_text()) for p in sorted(Path(args.run, "results").glob("*.json"))]
        for r in records:
            print(f"fine-tuned {r['method']:>10} (seed {r['seed']}, {r['adapter_params']:,} adapter params, "
                  f"{r['steps']} steps): exact match {r['test']['exact_match']:.3f} on {r['predictions']['examples']} test problems")


if __name__ == "__main__":
    main()
