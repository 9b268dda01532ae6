import json

import numpy as np
import pytest
import torch

from gelora.core import records as record_files
from gelora.core.records import atomic_write_json
from gelora.data.tasks import as_generation, load_dataset, tokenize
from gelora.methods.registry import names
from gelora.models.loading import load_model
from gelora.training import train
from gelora.training.identity import run_id, run_identity
from gelora.training.train import finetune

METHODS = names()

TINY = dict(model="tiny-bert", dataset="movie-sentiment", n_train=32, n_eval=16, n_test=16, batch_size=8,
            epochs=6, evals=1, max_length=32, probe_examples=32, sb_num_samples=16, progress=False)


def easy_task(folder):
    """A task a tiny random model learns in a few steps: the label is one word in the sentence."""
    import pandas as pd

    rng = np.random.default_rng(0)
    filler = "the a film plot actor scene story music ending cast script we it was is".split()
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 32), ("validation", 16), ("test", 16)):
        rows = []
        for i in range(n):
            label = ["negative", "positive"][i % 2]
            words = list(rng.choice(filler, size=8))
            words.insert(int(rng.integers(0, 8)), "great" if label == "positive" else "awful")
            rows.append({"text": " ".join(words), "label": label})
        pd.DataFrame(rows).to_csv(folder / f"{split}.csv", index=False)
    return str(folder)
LRS = {"full": 3e-3, "lora": 2e-2, "gelora": 2e-2, "adalora": 5e-2, "eva": 2e-2, "lora_xs": 1e-1, "lora_sb": 1e-1,
       "gelora_sb": 1e-1, "lora_ga": 2e-2, "pissa": 2e-2}  # 5e-2 oscillates for B A adapters on length-grouped batches
BUDGET = 8 * 128 * 8  # uniform LoRA r = 8 on the 8 query/value matrices of tiny-bert


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    data = easy_task(tmp_path_factory.mktemp("easy"))
    return {m: finetune(m, output_dir=str(out), rank=8, lr=LRS[m], budget=BUDGET if m.startswith("gelora") else None,
                        **dict(TINY, dataset=data, epochs=10)) for m in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_lowers_the_training_loss(records, method):
    losses = [p["loss"] for p in records[method]["train_loss"]]
    assert len(losses) == records[method]["steps"] == 40
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05, losses


@pytest.mark.parametrize("method", [m for m in METHODS if m != "full"])
def test_trainable_counts_match_the_formulas(records, method):
    record = records[method]
    assert record["adapter_params"] == record["expected_adapter_params"]
    assert record["head_params"] == 64 * 2 + 2  # the classification head trains with every method
    if method in ("lora_xs", "lora_sb"):
        assert record["adapter_params"] == 8 * 8 ** 2
    if method.startswith("gelora"):
        assert record["adapter_params"] <= BUDGET and record["allocation"]["budget"] == BUDGET


def test_full_trains_everything(records):
    assert records["full"]["trainable_params"] == records["full"]["total_params"]


def test_record_contents(records, tmp_path):
    record = records["gelora_sb"]
    for key in ("final", "best", "test", "evals", "train_loss", "wall_time_s", "peak_memory_mb", "versions",
                "config", "allocation", "sb_init_lr", "init_time_s"):
        assert key in record
    assert record["config"]["seed"] == 0 and record["config"]["lr"] == LRS["gelora_sb"]
    assert {"accuracy", "f1", "mcc"} <= set(record["final"])
    # the test metrics are what sklearn computes from the run's own predictions and labels
    from pathlib import Path

    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    with np.load(Path(record["config"]["output_dir"]) / record["predictions"]["file"]) as stored:
        predicted, labels, scores = stored["prediction"], stored["label"], stored["score"]
    assert record["test"]["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-12)
    assert record["test"]["accuracy"] == pytest.approx(float(scores.mean()), abs=1e-6)
    assert record["test"]["f1"] == pytest.approx(f1_score(labels, predicted), abs=1e-12)
    assert record["test"]["mcc"] == pytest.approx(matthews_corrcoef(labels, predicted), abs=1e-12)
    assert record["versions"]["torch"] == torch.__version__
    assert records["adalora"]["final_ranks"] and records["adalora"]["effective_adapter_params"] > 0


def test_same_seed_same_numbers_and_reuse(tmp_path, monkeypatch):
    args = dict(TINY, epochs=1, output_dir=str(tmp_path))
    first = finetune("lora_sb", **args)
    second = finetune("lora_sb", force=True, **args)
    assert first["final"] == second["final"] and first["train_loss"] == second["train_loss"]
    monkeypatch.setattr(train, "_run", lambda *a: pytest.fail("a finished run was retrained"))
    reused = finetune("lora_sb", **args)
    assert reused["reused"] and reused["final"] == first["final"]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["run_id"] == first["run_id"]


def test_an_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "record.json"

    def crash(payload, handle, **kwargs):
        handle.write('{"half": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(record_files.json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"a": 1})
    assert not path.exists() and not list(tmp_path.iterdir())
    monkeypatch.undo()
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'qlora'"):
        finetune("qlora", output_dir=str(tmp_path))
    with pytest.raises(TypeError, match="unknown finetune argument"):
        finetune("lora", learning_rate=1e-3)
    with pytest.raises(ValueError, match="below half of one uniform LoRA rank"):
        finetune("lora", budget=10, output_dir=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match="below the smallest allocation"):
        finetune("gelora", budget=100, output_dir=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match="is a regression task"):
        finetune("lora", output_dir=str(tmp_path), **dict(TINY, dataset="movie-rating"), task="classification")
    with pytest.raises(ValueError, match="no CUDA"):
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        finetune("lora", device="cuda", output_dir=str(tmp_path), **TINY)


def test_regression_reports_correlations(tmp_path):
    record = finetune("lora", output_dir=str(tmp_path), lr=2e-2, **dict(TINY, dataset="movie-rating", epochs=1))
    assert record["task"] == "regression" and record["metric"] == "pearson"
    from scipy import stats

    with np.load(tmp_path / record["predictions"]["file"]) as stored:
        predicted, labels = stored["prediction"].reshape(-1), stored["label"]
    assert record["test"]["pearson"] == pytest.approx(stats.pearsonr(predicted, labels)[0], abs=1e-6)
    assert record["test"]["spearman"] == pytest.approx(stats.spearmanr(predicted, labels)[0], abs=1e-6)
    assert record["test"]["mse"] == pytest.approx(float(np.mean((predicted - labels) ** 2)), abs=1e-6)


def test_causal_lm_masks_the_prompt_and_trains(tmp_path):
    model, tokenizer = load_model("tiny-llama", "generation")
    data = as_generation(load_dataset("trec6", "train").subset(4))
    item = tokenize(data, tokenizer, 48)[0]
    ids, labels = torch.tensor([item["input_ids"]]), torch.tensor([item["labels"]])
    logits = model(input_ids=ids).logits
    keep = labels[0, 1:] != -100
    manual = torch.nn.functional.cross_entropy(logits[0, :-1][keep], labels[0, 1:][keep])
    torch.testing.assert_close(model(input_ids=ids, labels=labels).loss, manual)
    assert keep.sum() < len(item["input_ids"]) / 2  # the prompt is most of the sequence and is not scored
    record = finetune("lora_sb", model="tiny-llama", dataset="trec6", task="generation", output_dir=str(tmp_path),
                      **{k: v for k, v in TINY.items() if k not in ("model", "dataset")}, lr=5e-2)
    losses = [p["loss"] for p in record["train_loss"]]
    assert record["metric"] == "exact_match" and "accuracy" in record["evals"][-1]  # tokens during training
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


def test_command_line(tmp_path, capsys):
    assert train.main(["--method", "lora", "--model", "tiny-bert", "--n-train", "16", "--n-eval", "8",
                       "--n-test", "8", "--batch-size", "8", "--no-progress", "--max-length", "16",
                       "--output-dir", str(tmp_path), "--target-modules", "query", "value"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "lora" and summary["adapter_params"] == 8 * 128 * 8


def test_plain_loop(tiny_bert, batches):
    from gelora.adapters.lora_sb import apply_lora_sb, estimate_update

    model, _ = tiny_bert
    apply_lora_sb(model, estimate_update(model, batches, ["query", "value"], 16, 1e-2), rank=4,
                  target_modules=["query", "value"])
    losses = train.train_steps(model, batches[:2], steps=20, lr=5e-2)
    assert len(losses) == 21 and min(losses[-3:]) < losses[0]


def test_the_same_settings_have_one_identity_whatever_their_source():
    from_yaml = train.FinetuneConfig("lora", epochs=1, gelora_offset=1, target_modules=("query", "value"))
    from_cli = train.FinetuneConfig("lora", epochs=1.0, gelora_offset=1.0, target_modules=["query", "value"])
    assert run_id(from_yaml) == run_id(from_cli)
    assert run_id(train.FinetuneConfig("lora", seed=1)) != run_id(from_cli)


def test_the_profile_counts_by_content_not_by_where_it_lies(tmp_path):
    """A committed record is reused in a checkout at another path; a profile that allocates other
    ranks is a new run (tests/test_identity.py: last digits that allocate the same ranks are not)."""
    first, second = tmp_path / "a" / "id_profile.csv", tmp_path / "b" / "id_profile.csv"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text("layer,dimension\n0,3.0\n1,4.0\n2,5.0\n3,6.0\n4,7.0\n")
    here = train.FinetuneConfig("gelora", model="tiny-bert", id_profile=str(first))
    there = train.FinetuneConfig("gelora", model="tiny-bert", id_profile=str(second))
    assert run_id(here) == run_id(there) and "id_profile" not in run_identity(here)["settings"]
    second.write_text("layer,dimension\n0,3.0\n1,9.0\n2,5.0\n3,6.0\n4,7.0\n")  # block 0's bound 1 -> 6
    changed = train.FinetuneConfig("gelora", model="tiny-bert", id_profile=str(second))
    assert run_id(changed) != run_id(here)
    lora = [run_id(train.FinetuneConfig("lora", model="tiny-bert", id_profile=str(p))) for p in (first, second)]
    assert lora[0] == lora[1] == run_id(train.FinetuneConfig("lora", model="tiny-bert"))  # LoRA reads no profile


def test_help_documents_every_flag_in_its_group():
    import dataclasses

    parser = train._parser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(train.FinetuneConfig)} - {"options"}
    assert set(actions) == fields | set(names_of_own_settings())
    assert all(a.help and len(a.help) > 10 for a in actions.values())
    titles = {g.title for g in parser._action_groups}
    assert {"data", "model", "method", "optimisation", "output"} <= titles
    # a method's own flag reaches its options only when given; its help names the methods that read it
    args = vars(parser.parse_args(["--method", "lora_sb", "--sb-num-samples", "8"]))
    assert args["sb_num_samples"] == 8 and "eva_examples" not in args
    assert "lora_sb" in actions["sb_num_samples"].help and "default: 64" in actions["sb_num_samples"].help


def names_of_own_settings():
    from gelora.methods.registry import options

    return list(options())


def test_settings_added_later_keep_earlier_records_named_as_they_were():
    """A setting added after records were committed is in the identity only away from its frozen
    value; the dataclass default must stay that value, or old records would name new computations."""

    from gelora.training.config import FinetuneConfig
    from gelora.training.identity import ADDED_LATER, settings

    plain = FinetuneConfig(method="lora")
    assert {k: getattr(plain, k) for k in ADDED_LATER} == ADDED_LATER  # fields, and methods' own settings
    assert not set(ADDED_LATER) & set(settings(plain))
    assert run_id(FinetuneConfig(method="lora", max_new_tokens=16)) != run_id(plain)
    assert run_id(FinetuneConfig(method="lora", block_ranks=[0, 0, 0, 0, 0, 8])) != run_id(plain)
