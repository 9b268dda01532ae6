"""Tokens computed against real tokens, random against length-grouped batches, and the time of one
cpu-profile fine-tuning run both ways, measured side by side in one invocation.

    python benchmarks/padding.py [--profile cpu] [--method lora] [--no-run]

A batch costs its size x its longest text; real tokens are the texts' own lengths. The ratio is
that cost over the real tokens: 1.0 means no padding computed.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np

from gelora.data.tasks import by_length, seeded_loader, tokenize
from gelora.kit.notebook import task_model
from gelora.study.grid import notebook_grid, profile_parameters
from gelora.training.train import finetune


def ratio(batches) -> float:
    computed = real = 0
    for batch in batches:
        computed += batch["attention_mask"].numel()
        real += int(batch["attention_mask"].sum())
    return computed / real


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--no-run", action="store_true", help="only the token ratios")
    args = parser.parse_args()
    params = profile_parameters(args.profile)
    data, _, tokenizer = task_model(params["model"], params["dataset"])
    train = tokenize(data.subset(params["n_train"], seed=0), tokenizer, params["max_length"])
    size = params["batch_size"]
    for grouped in (False, True):
        loader = seeded_loader(train, tokenizer, data.task, size, seed=0, group_by_length=grouped)
        print(f"training batches of {size}, {'length-grouped' if grouped else 'random'}: "
              f"{ratio(loader):.2f} x the real tokens")
    evaluation = tokenize(data, tokenizer, params["max_length"])
    for name, tokens in (("unsorted", evaluation), ("sorted by length", by_length(evaluation)[0])):
        loader = seeded_loader(tokens, tokenizer, data.task, 32, seed=0, group_by_length=False)
        loader = [loader.collate_fn([tokens[j] for j in range(i, min(i + 32, len(tokens)))])
                  for i in range(0, len(tokens), 32)]
        print(f"evaluation batches of 32, {name}: {ratio(loader):.2f} x the real tokens")
    if args.no_run:
        return
    params["methods"], params["seeds"] = [args.method], [0]
    (config,), _ = notebook_grid(**params)
    times = {}
    with tempfile.TemporaryDirectory() as out:
        for grouped in (False, True, False, True):  # interleaved: the machine's speed drifts
            run = dataclasses.replace(config, group_by_length=grouped, output_dir=out, force=True)
            start = time.perf_counter()
            record = finetune(config=run)
            times.setdefault(grouped, []).append(time.perf_counter() - start)
            print(f"{args.method}, {'grouped' if grouped else 'random '}: {times[grouped][-1]:.1f} s, "
                  f"test {record['metric']} {record['test'][record['metric']]:.4f}", flush=True)
    before, after = np.mean(times[False]), np.mean(times[True])
    print(f"one {args.profile}-profile run of {args.method}: {before:.1f} s random, {after:.1f} s grouped "
          f"({before / after:.2f}x faster; means of 2, interleaved)")


if __name__ == "__main__":
    main()
