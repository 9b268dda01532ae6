"""The method comparison of the `cpu` profile: every method, 3 seeds, matched trainable budget.

    python benchmarks/compare_methods.py [--profile cpu] [--run-dir runs/cpu] [--small-cores 8]

It calls gelora.train.finetune with exactly the settings of the profile's notebook 04, so runs
that the pipeline already finished are read back, not retrained. With --small-cores R it adds
LoRA-XS and LoRA-SB at rank R without budget matching (R = 8: 768 trainable adapter parameters,
96x fewer than LoRA r = 8), the setting of LoRA-SB's "as good as LoRA with far fewer parameters"
claim. Prints the table (trainable adapter parameters, seeds, mean ± std of the metric, time per
run) and writes it as JSON.
"""
from __future__ import annotations

import argparse
import json

from gelora.data import load_dataset
from gelora.models import load_model
from gelora.pipeline import load_profile, resolve
from gelora.probe import probe_dataset, save_profile
from gelora.ranks import uniform_budget
from gelora.results import runs_table, summary_table, to_markdown
from gelora.targets import block_shapes, default_targets
from gelora.train import finetune
from gelora.twonn import TwoNN


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--small-cores", type=int, default=None, help="also run lora_xs / lora_sb at this rank")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    common, grid = profile["common"], profile["notebooks"]["04_fine_tuning"]
    run = resolve(args.run_dir or common["run_dir"])
    model, dataset = common["model"], common["dataset"]
    profile_path = run / "id_profile.csv"
    if not profile_path.exists():
        save_profile(probe_dataset(model, dataset, 2000, max_length=common["max_length"], cache_dir=run / "cache",
                                   estimator=TwoNN(random_state=0)), profile_path)
    data = load_dataset(dataset, "train")
    net, _ = load_model(model, data.task, data.num_labels)
    targets = grid.get("target_modules") or default_targets(net)
    budget = uniform_budget(block_shapes(net, targets), grid["reference_rank"])
    records = []
    plan = [(m, None if m == "full" else budget, 8, m) for m in grid["methods"]]  # 8: the default rank
    if args.small_cores:
        plan += [(m, None, args.small_cores, f"{m} r={args.small_cores}") for m in ("lora_xs", "lora_sb")]
    for method, run_budget, rank, label in plan:
        for seed in grid["seeds"]:
            record = finetune(method, model=model, dataset=dataset, seed=seed, budget=run_budget,
                              rank=rank, target_modules=targets, profile=str(profile_path), n_train=grid["n_train"],
                              n_eval=grid["n_eval"], n_test=grid["n_test"], test_split=grid.get("test_split", "test"),
                              epochs=float(grid["epochs"]), batch_size=grid["batch_size"],
                              max_length=common["max_length"], output_dir=str(run / "results"),
                              cache_dir=str(run / "cache"), progress=False)
            record.pop("model_object", None)
            record["method"] = label
            records.append(record)
            print(f"{label:>14} seed {seed}: {record['test'][record['metric']]:.4f}", flush=True)
    summary = summary_table(runs_table(records), order=[label for *_, label in plan])
    print(f"\n{model} on {dataset}, budget {budget:,} trainable adapter parameters (uniform LoRA r="
          f"{grid['reference_rank']}), seeds {grid['seeds']}\n")
    print(to_markdown(summary, records[0]["metric"]))
    (run / "compare_methods.json").write_text(json.dumps(summary.to_dict(orient="records"), indent=2))


if __name__ == "__main__":
    main()
