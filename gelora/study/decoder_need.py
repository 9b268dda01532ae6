"""Bound vs need on a decoder: SmolLM2-135M with a classification head on trec6, 30 blocks,
last-token pooling, the seven projections of every block.

On MiniLM the ID increment is 0 in most blocks, so "the bound stays below the need" cannot fail
there. This puts the same test on a deeper model: the bound per block with its bootstrap interval
(the probe resampled), against the rank full fine-tuning's update used per block (energy ranks and
stable rank of every projection's W_ft - W_0, `rank_need.update_needs`), and Spearman across the 30
blocks with its interval. Everything lands in `results/decoder_need/<task>/` (not under the
study's folder: this is no comparison of methods), resumably: finished runs are read back.

    python -m gelora study --decoder-need            # probe, then train the missing full fine-tuning seeds
    python -m gelora study --decoder-need --plan     # what is missing, and its cost
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pandas as pd

DECODER_DIR = "results/decoder_need"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class DecoderNeed:
    """The probe and the full fine-tuning runs of the test; every field is part of what is reused."""

    model: str = "smollm2"
    dataset: str = "trec6"
    pooling: str = "last"  # a decoder's summary of a text is its last token
    n_examples: int = 500  # texts probed (as the cpu-llm profile)
    max_length: int = 64
    precision: str = "fp64"  # the probe's forward: profiles that agree across machines
    min_distinct: float = 0.5  # a layer with fewer distinct points has no dimension (the embedding: 5 of 500 on trec6)
    reference_rank: int = 8  # GeLoRA's ranks are scaled to uniform LoRA r = 8's budget
    offset: float = 1.0
    n_resamples: int = 1000  # bootstrap resamples of the probed texts
    seeds: tuple = (0, 1, 2)  # full fine-tuning seeds: 100 steps of a 135M model each (815 s on a shared 2-core CPU)
    n_train: int = 1600  # the per-block sweep's training-set size (100 steps at batch 16)
    seed: int = 0

    def folder(self, root: str | Path = DECODER_DIR) -> Path:
        from gelora.kit.paths import resolve

        return resolve(root) / f"{self.model}-{self.dataset}"


def _probe_settings(s: DecoderNeed) -> dict:
    return {k: getattr(s, k) for k in ("model", "dataset", "pooling", "n_examples", "max_length", "precision", "min_distinct",
                                       "reference_rank", "offset", "n_resamples", "seed")} | {"targets": list(PROJECTIONS)}


def probe(s: DecoderNeed = DecoderNeed(), root: str | Path = DECODER_DIR, log=print) -> pd.DataFrame:
    """The bound per block with its interval (`rank_uncertainty.profile_intervals`), written to
    <folder>/rank_intervals.csv with the profile and the settings that made them; read back when
    those settings are the same, refused when they differ (a stale file would be a wrong number)."""
    from gelora.allocation.ranks import gelora_ranks, uniform_budget
    from gelora.data.tasks import load_dataset
    from gelora.geometry.twonn import TwoNN
    from gelora.models.loading import load_model
    from gelora.models.targets import block_shapes
    from gelora.probing.probe import hidden_states, profile_from_states, save_profile
    from gelora.probing.rank_uncertainty import profile_intervals

    folder = s.folder(root)
    settings, stamp = _probe_settings(s), folder / "probe.json"
    if (folder / "rank_intervals.csv").is_file() and stamp.is_file():
        if json.loads(stamp.read_text()) != settings:
            raise ValueError(f"{folder} was probed with other settings ({stamp}): delete it to probe again with {settings}")
        return pd.read_csv(folder / "rank_intervals.csv")
    folder.mkdir(parents=True, exist_ok=True)
    data = load_dataset(s.dataset, "train")
    net, tokenizer = load_model(s.model, "classification", data.num_labels, seed=s.seed)
    subset = data.subset(s.n_examples, seed=s.seed)
    states = hidden_states(net, tokenizer, subset.texts, pooling=s.pooling, max_length=s.max_length, seed=s.seed,
                           progress=False, precision=s.precision)
    with warnings.catch_warnings():  # the embedding layer holds one point per distinct last token: no dimension, by design
        warnings.filterwarnings("ignore", message="layer 0: no intrinsic dimension")
        profile = profile_from_states(states, TwoNN(random_state=s.seed), pooling=s.pooling, min_distinct=s.min_distinct)
    save_profile(profile, folder / "id_profile.csv")
    shapes = block_shapes(net, list(PROJECTIONS))
    budget = uniform_budget(shapes, s.reference_rank)
    with warnings.catch_warnings():  # a resample that switches a block off is counted in the table
        warnings.simplefilter("ignore")
        intervals = profile_intervals(profile, states, lambda d: gelora_ranks(d, offset=s.offset, budget=budget, shapes=shapes,
                                                                              undefined="zero").ranks, s.n_resamples, s.seed)
    intervals.to_csv(folder / "rank_intervals.csv", index=False)
    stamp.write_text(json.dumps(settings, indent=1) + "\n")
    if log:
        log(f"probed {s.n_examples} {s.dataset} texts with {s.model} ({s.pooling} pooling): bound at most "
            f"{intervals['bound_high'].max():.2f}, wrote {folder / 'rank_intervals.csv'}")
    return intervals


def full_configs(s: DecoderNeed = DecoderNeed(), root: str | Path = DECODER_DIR) -> list:
    """Full fine-tuning per seed, its update spectra recorded on the seven projections."""
    from gelora.training.config import FinetuneConfig, validate

    configs = [FinetuneConfig(method="full", model=s.model, dataset=s.dataset, seed=seed, n_train=s.n_train,
                              max_length=s.max_length, evals=1, target_modules=list(PROJECTIONS),
                              output_dir=str(s.folder(root) / "results"), progress=False) for seed in s.seeds]
    for c in configs:
        validate(c)
    return configs


def bound_need_table(s: DecoderNeed = DecoderNeed(), root: str | Path = DECODER_DIR, need: str = "energy_rank_90"):
    """(table, verdict) of `rank_need.bound_vs_need` from the committed probe and runs; a missing
    run is an error naming the command that trains it."""
    from gelora.analysis.rank_need import bound_vs_need, update_needs
    from gelora.analysis.results import load_records
    from gelora.training.identity import run_id

    folder = s.folder(root)
    configs = full_configs(s, root)
    missing = [run_id(c) for c in configs if not (folder / "results" / f"{run_id(c)}.json").is_file()]
    if missing or not (folder / "rank_intervals.csv").is_file():
        raise FileNotFoundError(f"{folder}: {len(missing)} full fine-tuning run(s) or the probe missing: "
                                "python -m gelora study --decoder-need")
    records = load_records(folder / "results", run_ids=[run_id(c) for c in configs])
    return bound_vs_need(pd.read_csv(folder / "rank_intervals.csv"), update_needs(records), need)


def decoder_text(s: DecoderNeed = DecoderNeed(), root: str | Path = DECODER_DIR, need: str = "energy_rank_90") -> str:
    """The README's line on the decoder test, generated from its results."""
    from gelora.methods import registry
    from gelora.study.verdicts import bound_words, correlation_words

    try:
        table, v = bound_need_table(s, root, need)
    except FileNotFoundError as missing:
        return f"- **{s.model} on {s.dataset}**: not trained yet ({missing})"
    seeds = ", ".join(map(str, s.seeds))
    return (f"- **{s.model} on {s.dataset}** ({len(table)} blocks, {s.pooling}-token pooling, {s.n_examples} texts probed; "
            f"full fine-tuning on {s.n_train:,} examples at the registry's untuned rate {registry.get_method('full').lr:g}, "
            f"seed(s) {seeds}). *Bound vs need*: the bound's interval reaches "
            f"at most {table['bound_high'].max():.2f} ranks (above 1 in {int((table['bound_high'] > 1).sum())} blocks); "
            f"full fine-tuning's updates used {table[need].min():.0f}-{table[need].max():.0f} ({need}; stable rank "
            f"{table['stable_rank'].min():.1f}-{table['stable_rank'].max():.1f}; "
            + bound_words(table, need) + "; " + correlation_words(v)
            + "). *Against the stable rank*, the smallest of the needs: "
            + bound_words(table, "stable_rank")
            + ".")
