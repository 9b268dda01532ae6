"""The rank each block needs, measured from full fine-tuning's update, against hand computations
and a real (tiny) full fine-tuning run."""
import numpy as np
import pandas as pd
import pytest
import torch

from gelora.analysis.rank_need import bound_vs_need, lr_sensitivity, update_needs
from gelora.models.spectra import energy_rank, snapshot, stable_rank, update_spectra
from gelora.training.train import finetune

Q, V = "bert.encoder.layer.{}.attention.self.query", "bert.encoder.layer.{}.attention.self.value"


def record(seed, spectra):
    return {"method": "full", "seed": seed, "update_spectra": spectra}


def test_energy_and_stable_rank_by_hand():
    assert energy_rank([2, 1, 0, 0], 0.9) == 2  # energies 4, 1 of 5: 80 % after one
    assert energy_rank([1, 1, 1, 1], 0.9) == 4 and energy_rank([1, 1, 1, 1], 0.75) == 3
    assert energy_rank([0, 0], 0.9) == 0
    assert stable_rank([2, 1, 0, 0]) == pytest.approx(5 / 4) and stable_rank([1, 1, 1, 1]) == 4


def test_update_needs_average_matrices_then_seeds():
    records = [record(0, {Q.format(0): [2, 1, 0, 0], V.format(0): [1, 1, 1, 1], Q.format(1): [1, 0, 0, 0],
                          V.format(1): [1, 0, 0, 0]}),
               record(1, {Q.format(0): [1, 1, 1, 1], V.format(0): [1, 1, 1, 1], Q.format(1): [1, 0, 0, 0],
                          V.format(1): [1, 1, 0, 0]}),
               {"method": "lora", "seed": 0}]
    needs = update_needs(records).set_index("block")
    assert needs.loc[0, "energy_rank_90"] == pytest.approx((3 + 4) / 2)  # seed 0: (2 + 4) / 2, seed 1: 4
    assert needs.loc[0, ["energy_rank_90_min", "energy_rank_90_max"]].tolist() == [3, 4]
    assert needs.loc[1, "energy_rank_90"] == pytest.approx((1 + 1.5) / 2) and needs.loc[1, "seeds"] == 2
    with pytest.raises(ValueError, match="no full fine-tuning record"):
        update_needs([{"method": "lora", "seed": 0}])


def test_full_fine_tuning_records_its_update_spectra(tmp_path):
    r = finetune("full", model="tiny-bert", n_train=32, n_eval=16, n_test=16, max_length=16, batch_size=8,
                 output_dir=str(tmp_path), progress=False)
    spectra, model = r["update_spectra"], r["model_object"]
    assert len(spectra) == 2 * model.config.num_hidden_layers  # query and value of every block
    name = next(iter(spectra))
    assert len(spectra[name]) == model.config.hidden_size and spectra[name][0] > 0
    assert spectra[name] == sorted(spectra[name], reverse=True)


def test_update_spectra_of_a_known_update():
    layer = torch.nn.Linear(6, 6)
    start = snapshot({"m": layer})
    with torch.no_grad():
        layer.weight += torch.outer(torch.arange(6.0), torch.ones(6))  # rank 1, singular value ||a|| ||b||
    values = update_spectra({"m": layer}, start)["m"]
    assert values[0] == pytest.approx(float(np.linalg.norm(np.arange(6.0)) * np.sqrt(6)), rel=1e-5)
    assert max(values[1:]) < 1e-4


def test_bound_vs_need_verdicts():
    intervals = pd.DataFrame({"block": [0, 1, 2], "bound": [0.0, 1.0, 3.0], "bound_high": [0.5, 2.0, 4.0]})
    needs = pd.DataFrame({"block": [0, 1, 2], "energy_rank_90": [10.0, 20.0, 30.0]})
    table, verdict = bound_vs_need(intervals, needs)
    assert verdict["lower_bound_holds"] and verdict["spearman"] == pytest.approx(1.0)
    assert verdict["largest_bound_over_need"] == pytest.approx(4 / 30)
    needs.loc[2, "energy_rank_90"] = 3.0
    _, verdict = bound_vs_need(intervals, needs)
    assert not verdict["lower_bound_holds"] and verdict["spearman"] == pytest.approx(-0.5)  # ranks 1,2,3 vs 2,3,1


def test_rank_correlation_by_hand():
    from gelora.analysis.rank_need import correlation_verdict, rank_correlation

    c = rank_correlation(np.arange(6.0), np.arange(6.0) ** 2)
    # 720 orderings of six blocks, enumerated: |rho| = 1 for exactly 2 of them
    assert c["spearman"] == 1.0 and c["p_value"] == pytest.approx(2 / 720) and c["low"] == c["high"] == 1.0
    assert correlation_verdict(c) == "positive"
    assert correlation_verdict(rank_correlation(np.arange(6.0), -np.arange(6.0))) == "negative"
    # five tied bounds and one above: rho = 0.65, and the bootstrap's defined resamples (those that
    # hold the one block) all lie above 0; the exact permutation test is what stops the claim:
    # |rho| is as large whenever that block lands on the top or bottom need, 2 places of 6
    tied = rank_correlation([0, 0, 0, 0, 0, 1.5], np.arange(6.0))
    assert tied["low"] > 0 and tied["p_value"] == pytest.approx(2 / 6) and 0.2 < tied["undefined"] < 0.5
    # and no need could change that: the smallest p these ties allow is 2/6, so the test cannot resolve
    assert tied["smallest_p"] == pytest.approx(2 / 6) and correlation_verdict(tied) == "cannot resolve"
    assert c["smallest_p"] == pytest.approx(2 / 720)  # untied: only the two perfect orderings
    # at the level exactly: 36 of 720 orderings as extreme gives p = 0.05, on the boundary: not resolved
    edge = rank_correlation([0, 0, 0, 0.01, 0.31, 0.27], [104.9, 88.2, 75.5, 52.8, 29.9, 11.1])  # trec6's bound and need
    assert edge["p_value"] * 720 == pytest.approx(36) and correlation_verdict(edge) == "not resolved"
    assert edge["smallest_p"] * 720 == pytest.approx(12)  # it could have resolved: 3! x 2 orderings reach the largest |rho|
    constant = rank_correlation(np.zeros(6), np.arange(6.0))
    assert np.isnan(constant["spearman"]) and correlation_verdict(constant) == "undefined"
    with pytest.raises(ValueError, match="equal length"):
        rank_correlation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="n_resamples must be at least 100"):
        rank_correlation([1, 2, 3], [1, 2, 3], n_resamples=10)


def test_rank_correlation_is_calibrated_and_stable_to_its_resampling_seed():
    from gelora.analysis.rank_need import correlation_verdict, rank_correlation

    rng = np.random.default_rng(0)
    # no correlation: 'resolved' at most about 5 % of the time (200 simulated studies of 12 blocks)
    null = [correlation_verdict(rank_correlation(rng.normal(size=12), rng.normal(size=12), n_resamples=1000, seed=s))
            for s in range(200)]
    assert sum(v != "not resolved" for v in null) / len(null) <= 0.09
    x = np.arange(30.0)
    y = x + rng.normal(size=30) * 8
    runs = [rank_correlation(x, y, seed=s) for s in range(20)]
    assert {correlation_verdict(c) for c in runs} == {"positive"}
    lows = np.array([c["low"] for c in runs])
    assert lows.std() < 3 * runs[0]["mc_error"] + 1e-9  # the printed Monte Carlo error covers the seed's effect


def test_lr_sensitivity_by_hand():
    sweep = pd.DataFrame({"method": ["lora"] * 4 + ["lora_sb"] * 4, "factor": [0.2, 1, 5, 25] * 2,
                          "validation": [0.6, 0.8, 0.5, 0.5, 0.7, 0.75, 0.72, 0.4]})
    table = lr_sensitivity(sweep).set_index("method")
    assert table.loc["lora", "spread"] == pytest.approx(0.3) and table.loc["lora_sb", "spread"] == pytest.approx(0.05)
    assert table.loc["lora_sb", "factors"] == 3


def block_record(block, rank, seed, validation, test, blocks=3):
    ranks = [0] * blocks
    ranks[block] = rank
    return {"run_id": f"b{block}r{rank}s{seed}", "method": "lora", "seed": seed, "metric": "accuracy",
            "final": {"accuracy": validation}, "test": {"accuracy": test}, "config": {"block_ranks": ranks}}


def test_trained_need_is_the_smallest_rank_not_resolved_worse_than_the_best():
    from gelora.analysis.rank_need import sweep_labels, trained_needs

    n, rng = 2000, np.random.default_rng(0)
    truth = {  # block -> rank -> accuracy of its per-example scores
        0: {2: 0.60, 8: 0.80, 32: 0.80},  # needs 8: rank 2 is clearly worse, 8 and 32 alike
        1: {2: 0.79, 8: 0.80, 32: 0.80},  # needs 2: a one-point gap is not resolved here
        2: {2: 0.50, 8: 0.60, 32: 0.80},  # still rising at the top of the grid
    }
    records, scores = [], {}
    for block, per_rank in truth.items():
        for rank, accuracy in per_rank.items():
            for seed in (0, 1):
                correct = (rng.random(n) < accuracy).astype(float) if accuracy != 0.80 else (np.arange(n) % 5 != 0) * 1.0
                records.append(block_record(block, rank, seed, validation=accuracy + 0.001 * (rank == 8), test=correct.mean()))
                scores.setdefault(f"b{block}@{rank}", {})[seed] = pd.Series(correct)
    table = trained_needs(sweep_labels(records), scores)
    per_block = table.groupby("block")[["need", "need_at_least", "need_at_top", "best_rank"]].first()
    assert per_block.loc[0, "need"] == 8 and per_block.loc[0, "best_rank"] == 8  # 32 matches 8, 2 is worse
    assert per_block.loc[0, "need_at_least"] == 8
    # a one-point gap at 2,000 examples is neither resolved worse nor shown to match: the need lies
    # between 2 and 8, and is not read as 2 (a lack of power is no evidence that 2 ranks suffice)
    assert per_block.loc[1, "need"] == 8 and per_block.loc[1, "need_at_least"] == 2
    assert per_block.loc[2, "need"] == 32 and per_block.loc[2, "need_at_top"] and per_block.loc[2, "need_at_least"] == 32
    row = table.set_index(["block", "rank"]).loc[(0, 2)]
    assert row["verdict"] == "worse" and row["high"] < 0 and row["difference"] == pytest.approx(-0.2, abs=0.03)
    intervals = pd.DataFrame({"block": [0, 1, 2], "bound": [1.0, 3.0, 0.0], "bound_high": [2.0, 4.0, 0.5]})
    needs = pd.DataFrame({"block": [0, 1, 2], "energy_rank_90": [10.0, 20.0, 30.0]})
    joined, verdict = bound_vs_need(intervals, needs, trained=table)
    assert list(joined["trained_need"]) == [8, 8, 32] and list(joined["trained_need_at_least"]) == [8, 2, 32]
    assert verdict["trained_lower_bound_holds"]  # block 1's bound reaches 4, within its need of at most 8
    assert verdict["trained_largest_bound_over_need"] == pytest.approx(0.5)
    shown = table.assign(need=np.where(table["block"] == 1, 2, table["need"]))  # had 2 ranks been shown to suffice...
    _, verdict = bound_vs_need(intervals, needs, trained=shown)
    assert not verdict["trained_lower_bound_holds"]  # ...a bound reaching 4 would not stay below it


def test_a_record_that_adapts_several_blocks_is_not_a_sweep_run():
    from gelora.analysis.rank_need import sweep_labels

    with pytest.raises(ValueError, match="not a per-block sweep run"):
        sweep_labels([dict(block_record(0, 2, 0, 0.5, 0.5), config={"block_ranks": [2, 2, 0]})])


def test_block_ranks_adapt_exactly_the_named_blocks(tmp_path):
    from gelora.training.config import FinetuneConfig, validate

    record = finetune(method="lora", model="tiny-bert", dataset="movie-sentiment", n_train=32, n_eval=16, n_test=16,
                      block_ranks=[0, 4, 0, 0], evals=1, output_dir=str(tmp_path), progress=False)
    assert record["ranks"] == {"0": 0, "1": 4, "2": 0, "3": 0} or record["ranks"] == {0: 0, 1: 4, 2: 0, 3: 0}
    assert record["adapter_params"] == 4 * (64 + 64) * 2  # query and value of block 1, hidden 64
    for bad, message in (([0, 0], "at least one above 0"), ([1, -1], "whole numbers >= 0"), ([1.5], "whole numbers")):
        with pytest.raises(ValueError, match=message):
            validate(FinetuneConfig(method="lora", block_ranks=bad))
    with pytest.raises(ValueError, match="method 'lora' only"):
        validate(FinetuneConfig(method="pissa", block_ranks=[1]))
    with pytest.raises(ValueError, match="has 2 entries but the model has 4 blocks"):
        finetune(method="lora", model="tiny-bert", dataset="movie-sentiment", n_train=32, n_eval=16, n_test=16,
                 block_ranks=[0, 4], evals=1, output_dir=str(tmp_path), progress=False)
