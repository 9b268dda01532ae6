"""Claims pair the same examples only: hand-made records and prediction sidecars with known
scores; a missing seed is named, a different split or other labels at the same positions are
refused, and a record edited after its predictions is caught."""
import json

import numpy as np
import pytest

from gelora.analysis.results import claims_table, paired_scores
from gelora.training.predictions import write_predictions

N = 300


def records_of(tmp_path, methods=(("lora", 0.6), ("lora_xs", 0.6), ("lora_sb", 0.95)), seeds=(0, 1, 2, 3),
               labels=None, split="test", skip=()):
    rng = np.random.default_rng(0)
    labels = np.zeros(N, dtype=np.int64) if labels is None else labels
    out = []
    for method, p in methods:
        for seed in seeds:
            if (method, seed) in skip:
                continue
            name = f"{method}-{seed}"
            scores = (rng.random(N) < p).astype(np.float32)
            entry = write_predictions(tmp_path / f"{name}.predictions.npz", np.arange(N), scores, labels, scores)
            out.append({"run_id": name, "method": method, "seed": seed, "predictions": entry, "metric": "accuracy",
                        "test": {"accuracy": float(scores.mean())}, "config": {"test_split": split}})
    return out


def test_claims_pair_common_seeds_and_name_the_rest(tmp_path):
    records = records_of(tmp_path, skip={("lora", 3)})
    table = claims_table(records, tmp_path).set_index("claim")
    assert list(table.index) == ["LoRA-SB vs LoRA-XS, equal parameters", "LoRA-SB vs LoRA, equal budget"]
    assert (table["verdict"] == "better").all() and (table["examples"] == N).all()
    assert table.loc["LoRA-SB vs LoRA, equal budget", ["seeds", "seeds_left_out"]].tolist() == ["0,1,2", "3"]
    assert table.loc["LoRA-SB vs LoRA-XS, equal parameters", ["seeds", "seeds_left_out"]].tolist() == ["0,1,2,3", ""]
    # the difference is the mean of the paired per-example differences, by hand
    scores = paired_scores(records, tmp_path)
    by_hand = np.mean([scores["lora_sb"][s].to_numpy() - scores["lora"][s].to_numpy() for s in (0, 1, 2)])
    assert table.loc["LoRA-SB vs LoRA, equal budget", "difference"] == pytest.approx(by_hand, abs=1e-7)


def test_other_labels_at_the_same_positions_are_not_paired(tmp_path):
    records = records_of(tmp_path, methods=(("lora", 0.6),))
    other = records_of(tmp_path, methods=(("lora_sb", 0.9),), labels=np.arange(N) % 2)
    with pytest.raises(ValueError, match="different examples at the same positions"):
        claims_table(records + other, tmp_path)


def test_another_split_is_not_paired(tmp_path):
    records = records_of(tmp_path, methods=(("lora", 0.6),))
    other = records_of(tmp_path, methods=(("lora_sb", 0.9),), split="validation")
    with pytest.raises(ValueError, match="another split or other labels"):
        claims_table(records + other, tmp_path)


def test_an_edited_record_or_a_damaged_sidecar_is_refused(tmp_path):
    records = records_of(tmp_path)
    records[0]["test"]["accuracy"] = 0.95
    with pytest.raises(ValueError, match="says test accuracy 0.950000 but its predictions give"):
        claims_table(records, tmp_path)
    records = records_of(tmp_path)
    (tmp_path / "lora-0.predictions.npz").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="does not match the sha256"):
        claims_table(records, tmp_path)
    json.dumps(records)  # records stay plain data
