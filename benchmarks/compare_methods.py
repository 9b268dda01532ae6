"""The method comparison of a profile's notebook 04: its methods, its seeds, the matched budget.

    python benchmarks/compare_methods.py [--profile cpu] [--run-dir runs/cpu] [--methods lora_ga pissa]
                                         [--small-cores 8]

It calls gelora.train.run_grid with exactly the settings of the profile's notebook 04, so runs
that the pipeline already finished are read back, not retrained. --methods restricts the grid to
some registered methods. With --small-cores R it adds LoRA-XS and LoRA-SB at rank R without budget
matching (R = 8: 768 trainable adapter parameters, 96x fewer than LoRA r = 8), the setting of
LoRA-SB's "as good as LoRA with far fewer parameters" claim. Prints the table (trainable adapter
parameters, seeds, mean ± std of the metric, time per run) and writes it as JSON.
"""
from __future__ import annotations

import argparse
import json

from gelora import methods
from gelora.notebook import budget_for, profile_for, task_model
from gelora.pipeline import load_profile, resolve
from gelora.results import runs_table, summary_table, to_markdown
from gelora.train import run_grid


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="pipeline profile whose notebook-04 settings are used")
    parser.add_argument("--run-dir", default=None, help="results folder (default: the profile's run_dir)")
    parser.add_argument("--methods", nargs="+", default=None, choices=methods.names(),
                        help="methods to run (default: the profile's list)")
    parser.add_argument("--small-cores", type=int, default=None, help="also run lora_xs / lora_sb at this rank")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    common, grid = profile["common"], profile["notebooks"]["04_fine_tuning"]
    run = resolve(args.run_dir or common["run_dir"])
    model, dataset, seeds = common["model"], common["dataset"], grid["seeds"]
    chosen = args.methods or grid["methods"]
    if any(methods.get_method(m).uses_profile for m in chosen):
        profile_for(run, model, dataset, 2000, max_length=common["max_length"], seed=min(seeds))
    _, net, _ = task_model(model, dataset)
    targets, budget = budget_for(net, grid.get("target_modules"), grid["reference_rank"])
    settings = dict(model=model, dataset=dataset, target_modules=targets, profile=str(run / "id_profile.csv"),
                    n_train=grid["n_train"], n_eval=grid["n_eval"], n_test=grid["n_test"],
                    test_split=grid.get("test_split", "test"), epochs=float(grid["epochs"]),
                    batch_size=grid["batch_size"], max_length=common["max_length"], output_dir=str(run / "results"),
                    cache_dir=str(run / "cache"), progress=False)
    if "sb_num_samples" in grid:
        settings["sb_num_samples"] = grid["sb_num_samples"]
    records = run_grid(chosen, seeds, budget=budget, log=lambda line: print(line, flush=True), **settings)
    order = list(chosen)
    if args.small_cores:
        for method in ("lora_xs", "lora_sb"):
            label = f"{method} r={args.small_cores}"
            small = run_grid([method], seeds, budget=None, rank=args.small_cores, log=None, **settings)
            for record in small:
                record["method"] = label
            records += small
            order.append(label)
    summary = summary_table(runs_table(records), order=order)
    print(f"\n{model} on {dataset}, budget {budget:,} trainable adapter parameters (uniform LoRA r="
          f"{grid['reference_rank']}), seeds {seeds}\n")
    print(to_markdown(summary, records[0]["metric"]))
    (run / "compare_methods.json").write_text(json.dumps(summary.to_dict(orient="records"), indent=2))


if __name__ == "__main__":
    main()
