"""Rank allocators at one budget, against hand computations: equal weights give uniform ranks, the
random null spends the same budget, the inverted control is GeLoRA reversed, and the spectrum
rules read ranks that are known by construction."""
import numpy as np
import pandas as pd
import pytest
import torch

from gelora.allocation import allocators
from gelora.allocation.ranks import gelora_ranks
from gelora.training.identity import run_id

SHAPES = {k: [(f"encoder.layer.{k}.attention.self.query", 384, 384), (f"encoder.layer.{k}.attention.self.value", 384, 384)]
          for k in range(6)}  # MiniLM's query and value
BUDGET = 73_728  # uniform LoRA r = 8: 6 blocks x 2 matrices x 8 x (384 + 384)
PROFILE = pd.DataFrame({"layer": range(7), "dimension": [10.0, 12.0, 11.0, 15.0, 14.0, 20.0, 13.0],
                        "ci_low": np.nan, "ci_high": np.nan})


def test_uniform_weights_give_rank_8_everywhere_at_the_budget():
    allocation = allocators.uniform(SHAPES, BUDGET)
    assert allocation.ranks == [8] * 6 and allocation.params == BUDGET


def test_gelora_and_its_inversion():
    ours = allocators.gelora(PROFILE, SHAPES, BUDGET)
    assert ours.ranks == gelora_ranks(PROFILE, offset=1.0, budget=BUDGET, shapes=SHAPES, undefined="zero").ranks
    assert ours.provenance["bounds"] == [2.0, 0.0, 4.0, 0.0, 6.0, 0.0]  # max(d_{k+1} - d_k, 0) by hand
    flipped = allocators.inverted(ours, SHAPES)
    assert flipped.ranks == ours.ranks[::-1] and flipped.params == ours.params <= BUDGET
    bound = allocators.gelora_bound(PROFILE, SHAPES, BUDGET)
    assert bound.ranks == [2, 1, 4, 1, 6, 1] and bound.params == 15 * 1536 < BUDGET  # its own, smaller budget


def test_random_allocations_spend_the_budget_differently_and_reproducibly():
    draws = allocators.random(SHAPES, BUDGET, draws=5, seed=0)
    assert len({tuple(d.ranks) for d in draws}) == 5  # five different splits
    for draw in draws:  # each within one rank-step (2 x 768 parameters) of the budget, every block adapted
        assert BUDGET - 1536 < draw.params <= BUDGET and min(draw.ranks) >= 1
    assert [d.ranks for d in allocators.random(SHAPES, BUDGET, draws=5, seed=0)] == [d.ranks for d in draws]
    assert [d.ranks for d in allocators.random(SHAPES, BUDGET, draws=5, seed=1)] != [d.ranks for d in draws]


def test_spectrum_rules_read_known_energy_ranks():
    """Block k's matrices have exactly k + 1 equal singular values: energy rank k + 1 at any fraction."""
    rng = np.random.default_rng(0)
    matrices, blocks = {}, {}
    for k in range(6):
        for name, _, _ in SHAPES[k]:
            q1, _ = np.linalg.qr(rng.normal(size=(384, k + 1)))
            q2, _ = np.linalg.qr(rng.normal(size=(384, k + 1)))
            matrices[name] = torch.tensor(q1 @ q2.T)
            blocks[name] = k
    weights = allocators.spectrum_weights(matrices, blocks, fraction=0.9)
    assert weights.tolist() == [2 * (k + 1) for k in range(6)]
    allocation = allocators.gradient_spectrum(matrices, SHAPES, BUDGET)
    assert allocation.ranks == sorted(allocation.ranks) and allocation.ranks[-1] > allocation.ranks[0]
    assert allocation.params <= BUDGET and allocation.provenance["weights"] == weights.tolist()


def test_read_back_keeps_the_shape_of_a_finished_run():
    allocation = allocators.read_back("adalora", [4, 4, 8, 8, 12, 12], SHAPES, BUDGET)
    assert allocation.ranks == [4, 4, 8, 8, 12, 12] and allocation.params == BUDGET  # 48 ranks: the budget exactly


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="5 weights for 6 blocks"):
        allocators.from_weights("x", [1, 1, 1, 1, 1], SHAPES, BUDGET)
    with pytest.raises(ValueError, match="weights must be finite, >= 0"):
        allocators.from_weights("x", [1, -1, 1, 1, 1, 1], SHAPES, BUDGET)
    with pytest.raises(ValueError, match="draws"):
        allocators.random(SHAPES, BUDGET, draws=0)


def test_weight_spectrum_on_a_model(tiny_bert):
    from gelora.models.targets import block_shapes

    model, _ = tiny_bert
    shapes = block_shapes(model, ["query", "value"])
    budget = allocators.uniform(shapes, 2048).params  # uniform r = 2 on 4 blocks of 64 x 64
    allocation = allocators.weight_spectrum(model, ["query", "value"], shapes, budget)
    assert allocation.params <= budget and len(allocation.ranks) == 4 and min(allocation.ranks) >= 0
    assert all(w > 0 for w in allocation.provenance["weights"])  # random 64 x 64 weights: high energy ranks


def test_the_study_trains_each_allocation_as_lora_at_the_comparisons_budget(tmp_path):
    """The allocations of a (hand-made, tiny-bert) study task become LoRA configs with block ranks,
    no budget of their own, the comparison's settings and LoRA's rate as their grid's anchor; the
    uniform one and any allocation equal to it are not trained again."""
    import json

    from gelora.allocation.ranks import adapter_params
    from gelora.study.allocators import allocation_track
    from gelora.training.config import FinetuneConfig

    from .test_study import write_run

    task = tmp_path / "task"
    base = dict(model="tiny-bert", dataset="movie-sentiment", budget=2048, target_modules=["query", "value"],
                n_train=64, n_eval=16, max_length=32)
    for seed in range(3):
        write_run(task / "results", "lora", seed, np.ones(400), config=FinetuneConfig(method="lora", seed=seed, lr=2e-3, **base))
    eva = FinetuneConfig(method="eva", seed=0, lr=2e-3, **base)
    write_run(task / "results", "eva", 0, np.ones(400), config=eva)
    record = task / "results" / f"{run_id(eva)}.json"
    ranks = {f"bert.encoder.layer.{k}.attention.self.{m}": r for k, r in enumerate([1, 2, 3, 2]) for m in ("query", "value")}
    record.write_text(json.dumps(dict(json.loads(record.read_text()), ranks=ranks)))
    pd.DataFrame({"layer": range(5), "dimension": [8.0, 9.0, 7.0, 11.0, 10.0], "ci_low": np.nan,
                  "ci_high": np.nan}).to_csv(task / "id_profile.csv", index=False)
    track = allocation_track(task)
    labels = [label for label, _ in track.points]
    assert {"alloc:inverted_gelora", "alloc:eva_final"} <= set(labels)  # the spectra may equal uniform here: left out
    assert sum(label.startswith("alloc:random_") for label in labels) == 5
    assert "alloc:uniform" not in labels and "alloc:gelora" not in labels
    shapes = {k: [(f"bert.encoder.layer.{k}.attention.self.{m}", 64, 64) for m in ("query", "value")] for k in range(4)}
    for _, config in track.points:
        assert config.method == "lora" and config.budget is None and config.n_train == 64 and config.lr == 2e-3
        assert 0 < adapter_params(shapes, config.block_ranks) <= 2048 and config.block_ranks != [2, 2, 2, 2]
    assert dict(track.points)["alloc:eva_final"].block_ranks == [1, 2, 3, 2]  # EVA's 8 ranks: the budget's 8 exactly
    assert set(dict(track.anchors).values()) == {2e-3} and track.results == "allocators/results"


def test_an_allocation_is_also_paired_with_uniform_lora_at_its_own_rate(tmp_path):
    """The same-rate check finds uniform LoRA at the allocation's rate by identity (a selection run
    in rates/), pairs it on the seeds both have, and its difference is the hand-computed mean; at
    uniform's own rate it is the comparison itself; at a rate uniform never trained it says so."""
    import json

    from gelora.analysis.results import load_records, paired_scores
    from gelora.study.allocators import _matched, uniform_at
    from gelora.training.config import FinetuneConfig

    from .test_study import N, write_run

    task = tmp_path / "task"
    base = dict(model="tiny-bert", dataset="movie-sentiment", budget=2048, target_modules=["query", "value"],
                n_train=64, n_eval=16, max_length=32)
    rng = np.random.default_rng(0)
    for seed in range(3):
        write_run(task / "results", "lora", seed, np.zeros(N), config=FinetuneConfig(method="lora", seed=seed, lr=2e-3, **base))
    at_rate = {seed: (rng.random(N) < 0.8).astype(int) for seed in range(2)}
    for seed, correct in at_rate.items():
        write_run(task / "rates", "lora", seed, correct, lr=4e-3,
                  config=FinetuneConfig(method="lora", seed=seed, lr=4e-3, **base))
    write_run(task / "rates", "lora", 2, np.ones(N), lr=8e-3, config=FinetuneConfig(method="lora", seed=2, lr=8e-3, **base))
    ranked = dict(base, budget=None, block_ranks=[1, 2, 3, 2])
    for seed in range(3):
        write_run(task / "allocated", "lora", seed, np.ones(N), lr=4e-3,
                  config=FinetuneConfig(method="lora", seed=seed, lr=4e-3, **ranked))
    reference = json.loads(next((task / "results").glob("*seed0*.json")).read_text())
    assert sorted(uniform_at(task, reference, 4e-3)) == [0, 1]  # the 8e-3 run is another rate: never read
    scores = paired_scores(load_records(task / "allocated"), task / "allocated")["lora"]
    row = {"lr": 4e-3, "difference": 0.5, "low": 0.4, "high": 0.6, "verdict": "better", "seeds": "0,1,2"}
    matched = _matched(row, scores, task, reference)
    assert matched["matched_seeds"] == "0,1"
    assert matched["matched_difference"] == pytest.approx(1 - np.mean([at_rate[0], at_rate[1]]))
    same_rate = _matched(dict(row, lr=2e-3), scores, task, reference)
    assert same_rate == {"matched_difference": 0.5, "matched_low": 0.4, "matched_high": 0.6, "matched_verdict": "better",
                         "matched_seeds": "0,1,2"}
    assert _matched(dict(row, lr=1e-3), scores, task, reference)["matched_verdict"] == "no uniform run at this rate"


def test_the_sentence_says_what_the_table_shows_and_what_it_cannot():
    import pandas as pd

    from gelora.study.allocators import allocator_sentence

    table = pd.DataFrame({"allocation": ["uniform", "gelora", "weight_spectrum"], "ranks": [[8] * 6, [7, 7, 7, 7, 10, 10], [8] * 6],
                          "difference": [0.0, 0.0085, 0.0], "low": [0.0, 0.0007, 0.0], "high": [0.0, 0.0163, 0.0],
                          "verdict": ["reference", "better", "same ranks as uniform"], "random_draws": 0, "lr": 4e-3,
                          "matched_difference": [np.nan, 0.0085, np.nan], "matched_low": [np.nan, 0.0007, np.nan],
                          "matched_high": [np.nan, 0.0163, np.nan], "matched_verdict": [np.nan, "better", np.nan],
                          "matched_seeds": ["", "0,1,2,3,4", ""]})
    words = allocator_sentence("trec6", table)
    assert "against uniform LoRA: +0.0085 (+0.0007 to +0.0163), **better**" in words
    assert "same runs: weight_spectrum" in words and "nothing here can be called better than chance" in words
    drawn = pd.concat([table, pd.DataFrame({"allocation": ["random_0", "random_1"], "ranks": [[4] * 6, [12] * 6],
                                            "difference": [-0.01, 0.002], "low": [-0.02, -0.008], "high": [0.0, 0.012],
                                            "verdict": ["not resolved"] * 2, "matched_verdict": ["not resolved"] * 2,
                                            "matched_seeds": ["0,1,2"] * 2})],
                      ignore_index=True)
    drawn["random_draws"] = 2
    drawn["better_than_chance"] = drawn["difference"] > 0.002
    assert "Above every one of the 2 random allocations: gelora (with so few draws" in allocator_sentence("trec6", drawn)
    assert "survive" not in allocator_sentence("trec6", drawn)  # the same-rate check agrees: nothing to add
    rate_bound = table.assign(matched_difference=[np.nan, -0.0006, np.nan], matched_low=[np.nan, -0.0224, np.nan],
                              matched_high=[np.nan, 0.0212, np.nan], matched_verdict=[np.nan, "not resolved", np.nan],
                              matched_seeds=["", "0,1,2", ""])
    words = allocator_sentence("trec6", rate_bound)
    assert "**better** (against uniform LoRA at its rate 0.004, seeds 0,1,2: -0.0006 (-0.0224 to +0.0212), not resolved)" in words
    assert ("does not survive uniform LoRA trained at the same rate: at one rate the ranks' effect is not shown, "
            "so this verdict cannot be credited to the ranks") in words
