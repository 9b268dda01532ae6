"""`gelora study`: print the verdicts, write the README's answer and the study page, and train what the study still
needs (every method's rate by the protocol, the efficiency curve, the allocators, the per-block
sweep), resumably: finished runs are read back.

    make study                          # trains what is missing (gelora/profiles/study*.yaml)
    python -m gelora study              # every task's verdicts, printed
    python -m gelora study --readme     # rewrite the README's answer, docs/STUDY.md and the package's findings from them
    python -m gelora study --check      # exit 1 if any of them differs from the results
    python -m gelora study --efficiency trec6 --plan       # the efficiency curve's rate protocol: what is left
    python -m gelora study --efficiency trec6 --points lora_sb@8 lora_sb@15   # tune and train those points
    python -m gelora study --block-sweep trec6 --jobs 2    # the per-block rank sweep (7 ranks x 3 seeds x 6 blocks)
    python -m gelora study --decoder-need  # bound vs need on SmolLM2-135M (gelora.study.decoder_need)
    python -m gelora study --benchmark --plan                  # the benchmark: runs and hours per task and stage
    python -m gelora study --benchmark sms-spam --stage select --jobs 2   # choose its rates (seeds 0-2)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gelora.study.answer import ANSWER_END, ANSWER_START, answer_block
from gelora.study.findings import FINDINGS_PATH, findings_json, write_findings
from gelora.study.readme import STUDY_PAGE, readme_block, readme_section, update_readme
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


def _benchmark(args) -> int:
    """The benchmark's plan, or one stage of it for the named tasks (gelora.study.benchmark)."""
    from gelora.study import benchmark as bm
    from gelora.study.grid import run_jobs
    from gelora.study.rates import cost

    bench = bm.load_benchmark(args.benchmark_profile)
    tasks = {t.name: t for t in bench.tasks}
    unknown = sorted(set(args.benchmark) - set(tasks))
    if unknown:
        print(f"{PROG}: unknown task(s) {unknown}; the benchmark has {sorted(tasks)}", file=sys.stderr)
        return 1
    chosen = [tasks[n] for n in args.benchmark] or list(tasks.values())
    if args.answer:
        return _benchmark_answer(bench, list(tasks.values()))
    stages = bm.STAGES if args.stage == "all" else (args.stage,)
    if not args.plan and set(stages) & {"heldout", "null"}:
        print(f"held-out runs under the pre-registration of commit {bm.preregistered()[:12]}", flush=True)
    total_runs, total_s = 0, 0.0
    for task in chosen:
        for stage in stages:
            for _round in range(1, 100):
                current = bm.state(bench, task)
                track = next(iter(current.values()))[3]
                if stage == "select":
                    todo = bm.selection_runs(bench, task)
                    pending = [label for label, (c, *_) in current.items() if not c.settled]
                    note = f"pending: {', '.join(pending)}" if pending else "every rate settled"
                else:
                    planned = (bm.heldout_runs if stage == "heldout" else bm.null_runs)(bench, task, current)
                    todo = [c for c in planned if not (Path(c.output_dir) / f"{run_id(c)}.json").exists()]
                    settled = all(c.settled for c, *_ in current.values())
                    note = f"{len(planned) - len(todo)} of {len(planned)} done" if settled else "waits for the rates"
                    if not settled:  # what it will need, counted at this task's (or a default) run time
                        todo = [next(iter(current.values()))[2]] * bm.projected(bench, stage)
                        note += f"; {len(todo)} projected"
                seconds = cost(track, todo)
                print(f"{task.name:>17} {stage:>8}: {len(todo):4d} run(s), about {seconds / 3600 / args.jobs:5.2f} h "
                      f"at {args.jobs} jobs ({note})", flush=True)
                if args.plan or not todo or (stage != "select" and not settled):
                    total_runs, total_s = total_runs + len(todo), total_s + seconds
                    break
                if run_jobs(todo, args.jobs, task.folder / "logs"):
                    print(f"{task.name}: a run failed (see {task.folder / 'logs'}); stopping", file=sys.stderr)
                    return 1
                if stage != "select":
                    break
    if args.plan:
        times = [json.loads(path.read_text()).get("wall_time_s") for task in chosen
                 for sub in ("rates", bm.HELDOUT_DIR, bm.NULL_DIR) for path in (task.folder / sub).glob("*__seed*.json")]
        times = [t for t in times if isinstance(t, (int, float))]
        if times:
            print(f"measured: {len(times)} finished run(s), {sum(times) / len(times):.0f} s each on average (self-reported), "
                  f"so about {3600 / (sum(times) / len(times)) * args.jobs:.0f} runs per hour at {args.jobs} jobs")
        print(f"in all: {total_runs} run(s) known now, about {total_s / 3600 / args.jobs:.1f} h at {args.jobs} jobs "
              "(selection: this round only, more rounds follow until every rate is settled; time: each task's mean run "
              "time so far, 60 s before its first run)")
    return 0


def _benchmark_answer(bench, tasks: list) -> int:
    """The primary table, only once every held-out and null run of every task exists (no interim
    look: before that, only what is missing is said)."""
    from gelora.study import benchmark as bm
    from gelora.study.benchmark_answer import forest_figures, primary_table, sensitivity_table

    missing = {}
    for task in tasks:
        current = bm.state(bench, task)
        planned = bm.heldout_runs(bench, task, current) + bm.null_runs(bench, task, current)
        left = [c for c in planned if not (Path(c.output_dir) / f"{run_id(c)}.json").exists()]
        if not planned or left or not all(c.settled for c, *_ in current.values()):
            missing[task.name] = len(left) if planned else "rates not settled"
    if missing:
        print(f"{PROG}: the primary table waits for every held-out run (docs/PREREGISTRATION.md: no interim look); "
              f"missing: {missing}", file=sys.stderr)
        return 1
    scores, counts = {}, {}
    for task in tasks:
        scores[task.name], counts[task.name] = bm.task_scores(bench, task)
    table = primary_table(scores, counts, bench.random_draws, bench.margin, bench.alpha)
    sensitivity = sensitivity_table(scores)
    folder = bm.repo_root() / "results" / "benchmark"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "primary.csv", index=False)
    sensitivity.to_csv(folder / "sensitivity.csv", index=False)
    forest_figures(scores, table, folder / "figures", bench.margin)
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print()
    print(sensitivity.to_markdown(index=False, floatfmt=".4f"))
    return 0


def main(argv=None) -> int:
    from gelora.kit.paths import repo_root

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--study-dir", default=STUDY_DIR, help="folder of the task folders")
    parser.add_argument("--readme", action="store_true", help="rewrite the README's answer and docs/STUDY.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when the README's answer or docs/STUDY.md is out of date")
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
    parser.add_argument("--benchmark", nargs="*", metavar="TASK", default=None,
                        help="the benchmark (docs/PREREGISTRATION.md): with --plan its runs and hours per task and stage; "
                             "else train --stage for these tasks (none named: every task)")
    parser.add_argument("--stage", default="select", choices=("select", "heldout", "null", "all"),
                        help="with --benchmark: select (rates on seeds 0-2), heldout (every point and its neighbouring "
                             "rates on the held-out seeds), null (random allocations), all")
    parser.add_argument("--answer", action="store_true",
                        help="with --benchmark: the primary table and its sensitivity rows, once every held-out run exists")
    parser.add_argument("--benchmark-profile", default=None, metavar="YAML",
                        help="with --benchmark: another benchmark profile (default gelora/profiles/benchmark/nine-tasks.yaml)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be a whole number >= 1, got {args.jobs}")
    if args.benchmark is not None:
        from gelora.study.benchmark import PROFILE

        args.benchmark_profile = args.benchmark_profile or PROFILE
        try:
            return _benchmark(args)
        except (ValueError, RuntimeError, FileNotFoundError) as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            return 1
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
        answer = answer_block(args.study_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    readme, page = repo_root() / "README.md", repo_root() / STUDY_PAGE
    if args.check:
        stale = [] if readme_block(page) == section else [str(page)]
        if readme_block(readme, ANSWER_START, ANSWER_END) != answer:
            stale.append(str(readme))
        if not FINDINGS_PATH.is_file() or FINDINGS_PATH.read_text() != findings_json(args.study_dir):
            stale.append(str(FINDINGS_PATH))
        if stale:
            print(f"{' and '.join(stale)} differ from {args.study_dir}: run python -m gelora study --readme", file=sys.stderr)
            return 1
        print("the README's answer, the study page and the package's study findings are up to date")
        return 0
    if args.readme:
        print(f"{page}: {'updated' if update_readme(section, page) else 'already up to date'}")
        print(f"{readme}: {'updated' if update_readme(answer, readme, ANSWER_START, ANSWER_END) else 'already up to date'}")
        print(f"{FINDINGS_PATH}: {'updated' if write_findings(args.study_dir) else 'already up to date'}")
        return 0
    print(answer)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
