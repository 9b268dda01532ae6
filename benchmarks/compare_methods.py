"""The method comparison of a profile's notebook 04: its methods, its seeds, the matched budget.

    python benchmarks/compare_methods.py [--profile cpu] [--run-dir results/cpu] [--methods lora_ga pissa]
                                         [--small-cores 8]

It calls gelora.study.grid.run_grid with exactly the settings of the profile's notebook 04, so runs
that the pipeline already finished are read back, not retrained. --methods restricts the grid to
some registered methods. With --small-cores R it adds LoRA-XS and LoRA-SB at rank R without budget
matching (R = 8: 768 trainable adapter parameters, 96x fewer than LoRA r = 8), the setting of
LoRA-SB's "as good as LoRA with far fewer parameters" claim. Prints the table (trainable adapter
parameters, seeds, mean ± std of the metric, time per run) and writes it as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from gelora.analysis.results import runs_table, summary_table, to_markdown
from gelora.kit.paths import resolve
from gelora.methods import registry as methods
from gelora.study.grid import notebook_grid, profile_parameters, run_grid
from gelora.training.train import run_configs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="pipeline profile whose notebook-04 settings are used")
    parser.add_argument("--run-dir", default=None, help="results folder (default: the profile's run_dir)")
    parser.add_argument("--methods", nargs="+", default=None, choices=methods.names(),
                        help="methods to run (default: the profile's list)")
    parser.add_argument("--small-cores", type=int, default=None, help="also run lora_xs / lora_sb at this rank")
    args = parser.parse_args()
    params = profile_parameters(args.profile, run_dir=args.run_dir)
    if args.methods:
        params["methods"] = args.methods
    configs, budget = notebook_grid(**params)
    records = run_configs(configs, log=lambda line: print(line, flush=True))
    order = list(params["methods"])
    if args.small_cores:
        settings = {k: v for k, v in dataclasses.asdict(configs[0]).items()
                    if k not in ("method", "seed", "budget", "lr", "rank")}
        for method in ("lora_xs", "lora_sb"):
            label = f"{method} r={args.small_cores}"
            small = run_grid([method], params["seeds"], budget=None, rank=args.small_cores, log=None, **settings)
            for record in small:
                record["method"] = label
            records += small
            order.append(label)
    summary = summary_table(runs_table(records), order=order)
    print(f"\n{params['model']} on {params['dataset']}, budget {budget:,} trainable adapter parameters (uniform LoRA r="
          f"{params['reference_rank']}), seeds {params['seeds']}\n")
    print(to_markdown(summary, records[0]["metric"]))
    (resolve(params["run_dir"]) / "compare_methods.json").write_text(json.dumps(summary.to_dict(orient="records"), indent=2))


if __name__ == "__main__":
    main()
