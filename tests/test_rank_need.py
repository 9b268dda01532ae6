"""The rank each block needs, measured from full fine-tuning's update, against hand computations
and a real (tiny) full fine-tuning run."""
import numpy as np
import pandas as pd
import pytest
import torch

from gelora.rank_need import bound_vs_need, lr_sensitivity, update_needs
from gelora.spectra import energy_rank, snapshot, stable_rank, update_spectra
from gelora.train import finetune

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


def test_lr_sensitivity_by_hand():
    sweep = pd.DataFrame({"method": ["lora"] * 4 + ["lora_sb"] * 4, "factor": [0.2, 1, 5, 25] * 2,
                          "validation": [0.6, 0.8, 0.5, 0.5, 0.7, 0.75, 0.72, 0.4]})
    table = lr_sensitivity(sweep).set_index("method")
    assert table.loc["lora", "spread"] == pytest.approx(0.3) and table.loc["lora_sb", "spread"] == pytest.approx(0.05)
    assert table.loc["lora_sb", "factors"] == 3
