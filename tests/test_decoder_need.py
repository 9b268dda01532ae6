"""Bound vs need on a decoder (gelora.study.decoder_need) on tiny-llama: the bound is the ID
increment of the profile it wrote, the need is the energy rank of the recorded update, the probe is
read back only under the settings that made it, and the README line says what the table shows."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from gelora.models.spectra import energy_rank
from gelora.study.decoder_need import DecoderNeed, bound_need_table, decoder_text, full_configs, probe
from gelora.training.train import finetune

TINY = DecoderNeed(model="tiny-llama", n_examples=60, n_resamples=50, n_train=32, max_length=16, seeds=(0, 1))


def test_bound_and_need_of_a_tiny_decoder(tmp_path):
    assert "not trained yet" in decoder_text(TINY, root=tmp_path)
    intervals = probe(TINY, root=tmp_path, log=None)
    folder = TINY.folder(tmp_path)
    dims = pd.read_csv(folder / "id_profile.csv").sort_values("layer")["dimension"].to_numpy()
    assert np.isnan(dims[0])  # the embedding layer's last token is the same token for every text
    by_hand = np.maximum(np.diff(np.nan_to_num(dims)), 0.0)
    by_hand[0] = 0.0  # no increment from an undefined layer
    assert intervals["bound"].to_numpy() == pytest.approx(by_hand)
    assert (intervals["bound_low"] <= intervals["bound"] + 1e-12).all()
    records = [finetune(config=c) for c in full_configs(TINY, root=tmp_path)]
    assert {len(r["update_spectra"]) for r in records} == {7 * len(intervals)}  # seven projections per block
    table, verdict = bound_need_table(TINY, root=tmp_path)
    spectra = [v for name, v in records[0]["update_spectra"].items() if ".layers.1." in name]
    seed0 = np.mean([energy_rank(v, 0.9) for v in spectra])
    seed1 = np.mean([energy_rank(v, 0.9) for name, v in records[1]["update_spectra"].items() if ".layers.1." in name])
    assert table.set_index("block").loc[1, "energy_rank_90"] == pytest.approx((seed0 + seed1) / 2)
    line = decoder_text(TINY, root=tmp_path)
    assert f"at most {table['bound_high'].max():.2f} ranks" in line and f"{verdict['blocks']} blocks" in line
    assert "permutation p" in line
    # read back under the same settings; refused under others
    assert probe(TINY, root=tmp_path, log=None).equals(pd.read_csv(folder / "rank_intervals.csv"))
    with pytest.raises(ValueError, match="probed with other settings"):
        probe(dataclasses.replace(TINY, n_examples=50), root=tmp_path, log=None)
    assert json.loads((folder / "probe.json").read_text())["targets"][-1] == "down_proj"
