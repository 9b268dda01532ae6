"""The learning-rate sweep: every method at default x factor on validation, the best rate chosen,
and the per-example predictions kept with every record, in the split's order."""
import numpy as np
import pandas as pd
import pytest

from gelora.data.tasks import load_dataset
from gelora.methods import registry as methods
from gelora.study.grid import grid_configs
from gelora.training.sweep import best_lrs, lr_sweep, with_lrs
from gelora.training.train import finetune

SETTINGS = dict(model="tiny-bert", n_train=32, n_eval=16, n_test=24, batch_size=8, max_length=16, progress=False,
                evals=1)


def test_sweep_trains_each_method_at_each_factor(tmp_path):
    configs = grid_configs(["lora", "lora_xs"], [0, 1], rank=4, output_dir=str(tmp_path / "grid"), **SETTINGS)
    table = lr_sweep(configs, [0.5, 2.0], str(tmp_path / "sweep"), log=None)
    assert len(table) == 4 and set(table["seed"]) == {0}
    assert table.set_index(["method", "factor"])["lr"].to_dict() == pytest.approx(
        {("lora", 0.5): 1e-3, ("lora", 2.0): 4e-3, ("lora_xs", 0.5): 2.5e-3, ("lora_xs", 2.0): 1e-2})
    chosen = best_lrs(table)
    for method, group in table.groupby("method"):
        assert chosen[method] == group.sort_values("validation").iloc[-1]["lr"] or \
            group["validation"].nunique() == 1
    swept = with_lrs(configs, chosen, keep={"lora_xs": 0.1})
    assert [c.lr for c in swept] == [chosen["lora"]] * 2 + [0.1] * 2
    assert not list((tmp_path / "grid").glob("*.json"))  # sweep runs stay in their own folder


def test_best_lrs_prefers_the_default_on_ties_and_skips_rising_losses():
    table = pd.DataFrame({"method": ["a"] * 3, "factor": [1 / 3, 1.0, 3.0], "lr": [1.0, 3.0, 9.0],
                          "validation": [0.8, 0.8, 0.9], "loss_rose": [False, False, True]})
    assert best_lrs(table) == {"a": 3.0}
    with pytest.raises(ValueError, match="factors must be a non-empty list"):
        lr_sweep([], [], "x")


def test_predictions_are_kept_in_the_split_order(tmp_path):
    record = finetune("lora", rank=4, output_dir=str(tmp_path), seed=3, **SETTINGS)
    stored = np.load(tmp_path / record["predictions"]["file"])
    test = load_dataset("movie-sentiment", "test").subset(24, seed=3)
    assert stored["index"].tolist() == test.indices.tolist()
    assert stored["label"].tolist() == test.labels.tolist()  # predictions put back in order
    assert stored["score"].mean() == pytest.approx(record["test"]["accuracy"])
    assert record["predictions"]["examples"] == 24 and methods.get_method("lora").lr == 2e-3
