"""`gelora study`: print the verdicts, write the README's section, and train what the study still
needs (every method's rate by the protocol, the efficiency curve, the allocators, the per-block
sweep), resumably: finished runs are read back.

    make study                          # trains what is missing (gelora/profiles/study*.yaml)
    python -m gelora study              # every task's verdicts, printed
    python -m gelora study --readme     # rewrite the README's study section (and the package's findings) from them
    python -m gelora study --check      # exit 1 if the README's section differs from the results
    python -m gelora study --efficiency trec6 --plan       # the efficiency curve's rate protocol: what is left
    python -m gelora study --efficiency trec6 --points lora_sb@8 lora_sb@15   # tune and train those points
    python -m gelora study --block-sweep trec6 --jobs 2    # the per-block rank sweep (7 ranks x 3 seeds x 6 blocks)
    python -m gelora study --decoder-need  # bound vs need on SmolLM2-135M (gelora.study.decoder_need)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gelora.study.findings import FINDINGS_PATH, findings_json, write_findings
from gelora.study.readme import readme_block, readme_section, update_readme
from gelora.study.verdicts import (
    BLOCK_DIR,
    EFFICIENCY_DIR,
    EFFICIENCY_POINTS,
    EFFICIENCY_SEEDS,
    STUDY_DIR,
    block_sweep_configs,
    efficiency_track,
    task_folders,
)
from gelora.training.identity import run_id

PROG = "python -m gelora.study.command"  # `gelora study` sets its own name in help and errors


def _train_missing(args) -> int:
    from gelora.study.grid import run_jobs

    def missing(configs):
        return [c for c in configs if not (Path(c.output_dir) / f"{run_id(c)}.json").exists()]

    failed = 0
    for task, folder in task_folders(args.study_dir).items():
        if args.block_sweep is not None and (not args.block_sweep or task in args.block_sweep):
            runs = missing(block_sweep_configs(folder))
            print(f"{task}: {len(runs)} per-block sweep run(s) to train", flush=True)
            failed += run_jobs(runs, args.jobs, folder / BLOCK_DIR / "logs")
    return 1 if failed else 0


def _decoder_need(args) -> int:
    """Probe the decoder, then train its missing full fine-tuning seeds (--plan: say what is missing)."""
    from gelora.study.decoder_need import DecoderNeed, decoder_text, full_configs, probe
    from gelora.study.grid import run_jobs

    settings = DecoderNeed()
    planned = full_configs(settings)
    configs = [c for c in planned if not (Path(c.output_dir) / f"{run_id(c)}.json").exists()]
    print(f"{settings.model} on {settings.dataset}: {len(configs)} of {len(planned)} full fine-tuning run(s) to train "
          f"(each {settings.n_train // planned[0].batch_size} steps at batch {planned[0].batch_size})", flush=True)
    if args.plan:
        return 0
    probe(settings)
    failed = run_jobs(configs, min(args.jobs, max(1, len(configs))), settings.folder() / "logs")
    print(decoder_text(settings))
    return 1 if failed else 0


COMPARISON_SEEDS = (0, 1, 2, 3, 4)


def _tune(args) -> int:
    """Rounds of the rate protocol per task until every method is settled, then the comparison;
    with --efficiency, the same for the parameter-efficiency curve's points."""
    folders = task_folders(args.study_dir)
    tasks = next(t for t in (args.tune, args.efficiency, args.allocators) if t is not None)
    unknown = sorted(set(tasks) - set(folders))
    if unknown:
        print(f"{PROG}: unknown task(s) {unknown}; the study has {sorted(folders)}", file=sys.stderr)
        return 1
    for task in tasks or list(folders):  # in the order given
        folder = folders[task]
        if args.tune is not None:
            code = _tune_track(folder, task, args, COMPARISON_SEEDS, folder / "rates.csv", folder / "logs")
        elif args.allocators is not None:
            from gelora.study.allocators import ALLOCATOR_DIR, allocation_track

            track = allocation_track(folder, args.points)
            for label, config in track.points:
                print(f"  {label:>24}: ranks per block {config.block_ranks}", flush=True)
            code = _tune_track(track, f"{task} allocators", args, COMPARISON_SEEDS, folder / ALLOCATOR_DIR / "rates.csv",
                               folder / ALLOCATOR_DIR / "logs")
        else:
            points = _points(args.points)
            code = _tune_track(efficiency_track(folder, points), f"{task} efficiency", args, EFFICIENCY_SEEDS,
                               folder / EFFICIENCY_DIR / "rates.csv", folder / EFFICIENCY_DIR / "logs")
        if code:
            return code
    return 0


def _points(names) -> tuple:
    """--points lora_sb@8 lora_sb@15 -> those (method, rank) points of the curve (none: all)."""
    if not names:
        return EFFICIENCY_POINTS
    known = {f"{m}@{r}": (m, r) for m, r in EFFICIENCY_POINTS}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown point(s) {unknown}; the curve has {sorted(known)}")
    return tuple(known[n] for n in names)


def _tune_track(track, name: str, args, seeds, table: Path, logs: Path) -> int:
    from gelora.study.grid import run_jobs
    from gelora.study.rates import arrange, choices, cost, rate_table, selection_configs

    for round_ in range(1, 100):
        state = choices(track)
        todo = selection_configs(track, state)
        pending = [m for m, (c, _) in state.items() if not c.settled]
        print(f"{name}: round {round_}: {len(todo)} selection run(s) for {', '.join(pending) or 'no point'} "
              f"(about {cost(track, todo) / 3600 / args.jobs:.2f} h at {args.jobs} jobs)", flush=True)
        for label, (choice, _) in state.items():
            print(f"  {label:>10}: best so far {choice.rate}, {choice.status}, to train {choice.to_train}", flush=True)
        if not todo or args.plan:
            break
        if run_jobs(todo, args.jobs, logs):
            print(f"{name}: a selection run failed (see {logs}); stopping", file=sys.stderr)
            return 1
    if args.plan:
        return 0
    state = choices(track)
    rate_table(track, state).to_csv(table, index=False)
    todo = arrange(track, seeds, state)
    print(f"{name}: {len(todo)} comparison run(s) at the chosen rates (about {cost(track, todo) / 3600 / args.jobs:.2f} h)",
          flush=True)
    return 1 if run_jobs(todo, args.jobs, logs) else 0


def main(argv=None) -> int:
    from gelora.kit.paths import repo_root

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--study-dir", default=STUDY_DIR, help="folder of the task folders")
    parser.add_argument("--readme", action="store_true", help="rewrite the README's study section")
    parser.add_argument("--check", action="store_true", help="exit 1 when the README's section is out of date")
    parser.add_argument("--efficiency", nargs="*", metavar="TASK", default=None,
                        help="choose the rate of every point of the parameter-efficiency curve by the protocol and "
                             "train its seeds (none named: every task; --plan: print the cost only)")
    parser.add_argument("--allocators", nargs="*", metavar="TASK", default=None,
                        help="every rank allocator (gelora.allocation.allocators) as LoRA at the comparison's budget, its rate by "
                             "the protocol, seeds 0-4 (none named: every task; --plan: the allocations and the cost)")
    parser.add_argument("--points", nargs="*", default=None, metavar="POINT",
                        help="with --efficiency: only these points (e.g. lora_sb@8 lora_sb@15); with --allocators: "
                             "only these allocations (e.g. alloc:inverted_gelora alloc:random_0)")
    parser.add_argument("--block-sweep", nargs="*", metavar="TASK", default=None,
                        help="train the missing runs of the per-block rank sweep of these tasks (none named: every task)")
    parser.add_argument("--tune", nargs="*", metavar="TASK", default=None,
                        help="choose every method's rate by the protocol of gelora.training.tuning (training what it asks for), "
                             "then train the comparison's seeds at the chosen rates (none named: every task)")
    parser.add_argument("--decoder-need", action="store_true",
                        help="bound vs need on SmolLM2-135M (trec6, 30 blocks): probe, then train full fine-tuning's "
                             "missing seeds (--plan: print what is missing)")
    parser.add_argument("--plan", action="store_true",
                        help="with --tune, --efficiency, --allocators or --decoder-need: print what would be trained, train nothing")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side for --tune, --efficiency and --block-sweep")
    args = parser.parse_args(argv)
    if args.tune is not None:
        return _tune(args)
    if args.tune is None and (args.efficiency is not None or args.allocators is not None):
        return _tune(args)
    if args.block_sweep is not None:
        return _train_missing(args)
    if args.decoder_need:
        return _decoder_need(args)
    try:
        section = readme_section(args.study_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    readme = repo_root() / "README.md"
    if args.check:
        stale = [] if readme_block(readme) == section else [str(readme)]
        if not FINDINGS_PATH.is_file() or FINDINGS_PATH.read_text() != findings_json(args.study_dir):
            stale.append(str(FINDINGS_PATH))
        if stale:
            print(f"{' and '.join(stale)} differ from {args.study_dir}: run python -m gelora study --readme", file=sys.stderr)
            return 1
        print("README study section and the package's study findings are up to date")
        return 0
    if args.readme:
        print(f"{readme}: {'updated' if update_readme(section, readme) else 'already up to date'}")
        print(f"{FINDINGS_PATH}: {'updated' if write_findings(args.study_dir) else 'already up to date'}")
        return 0
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
