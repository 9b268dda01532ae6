"""Bad inputs and faults, one row each: every case must end in a clear error (the exception type
and a message naming the argument, file or value) or in a correct result checked against an
independent truth. Areas: data, TwoNN, probe, ranks, adapters, harness, pipeline.

A row is (area, name, action, expected): `action(tmp)` does the thing; `expected` is
(exception type, regex the message must match), or None when the action asserts the correct
result itself.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import shutil
import threading
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from gelora.adapters.files import load_adapter, save_adapter
from gelora.adapters.lora_xs import adapter_layers, add_lora_xs, init_lora_xs
from gelora.allocation.ranks import gelora_ranks, lora_config
from gelora.data.tasks import TextDataset, load_dataset, tokenize
from gelora.geometry.twonn import TwoNN, fit_mu
from gelora.kit import pipeline
from gelora.models.loading import load_model
from gelora.probing.probe import _read_cache, _write_cache, hidden_states, load_profile
from gelora.study.grid import run_grid
from gelora.training import train
from gelora.training.config import FinetuneConfig, validate
from gelora.training.identity import run_id, run_identity

from .cases import Table, check

ROOT = Path(__file__).resolve().parent.parent
TABLE = Table()
CASES = TABLE.rows


@contextlib.contextmanager
def environment(**values):
    """Set environment variables for a block and put back exactly what was there before."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


case = TABLE.case


# ---------------------------------------------------------------- helpers

def write_csv(folder: Path, split: str, texts, labels, encoding="utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False, encoding=encoding)
    return path


def small_folder(tmp: Path, test_labels=None, val_labels=None, train_labels=None) -> Path:
    folder = tmp / "data"
    train_labels = train_labels or ["negative", "positive"] * 6
    write_csv(folder, "train", [f"train sentence {i}" for i in range(len(train_labels))], train_labels)
    val_labels = val_labels or ["negative", "positive"] * 2
    write_csv(folder, "validation", [f"validation sentence {i}" for i in range(len(val_labels))], val_labels)
    test_labels = test_labels or ["negative", "positive"] * 2
    write_csv(folder, "test", [f"test sentence {i}" for i in range(len(test_labels))], test_labels)
    return folder


def tiny():
    model, tokenizer = load_model("tiny-bert", "classification", 2, seed=0)
    return model.eval(), tokenizer


def points(n=400, d=3, D=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, D))


def config(tmp: Path, **settings) -> FinetuneConfig:
    base = dict(model="tiny-bert", dataset="movie-sentiment", n_train=16, n_eval=8, n_test=8, max_length=16,
                batch_size=8, evals=1, progress=False, output_dir=str(tmp / "results"))
    return FinetuneConfig(**{"method": "lora", **base, **settings})


def no_training(*args, **kwargs):
    """Stands in for train._run: a case that must fail before any training fails if it gets here."""
    raise AssertionError("training started although the input was bad")


# ---------------------------------------------------------------- data

@case("data", "test split with one class is scored with the training label mapping")
def _(tmp):
    folder = small_folder(tmp, test_labels=["positive"] * 4)
    splits = train._load_data(config(tmp, dataset=str(folder), n_train=None, n_eval=None, n_test=None))
    assert splits["test"].label_names == ["negative", "positive"]
    assert (splits["test"].labels == 1).all()


@case("data", "a validation label training never saw", ValueError, r"validation\.csv has label\(s\) \['neutral'\]")
def _(tmp):
    folder = small_folder(tmp, val_labels=["negative", "neutral"])
    train._load_data(config(tmp, dataset=str(folder), n_train=None, n_eval=None, n_test=None))


@case("data", "whole-number ratings in validation stay regression")
def _(tmp):
    folder = small_folder(tmp, train_labels=[0.5, 1.5, -2.25, 3.0] * 3, val_labels=[1, 2, 3, 4],
                          test_labels=[0, -1, 2, 5])
    splits = train._load_data(config(tmp, dataset=str(folder), n_train=None, n_eval=None, n_test=None))
    assert {s.task for s in splits.values()} == {"regression"}
    assert splits["validation"].labels.tolist() == [1.0, 2.0, 3.0, 4.0]


@case("data", "texts NA, None, null stay texts in a CSV")
def _(tmp):
    folder = tmp / "d"
    write_csv(folder, "train", ["NA", "None", "null", "nan", "N/A"], ["a", "b", "a", "b", "a"])
    assert load_dataset(str(folder), "train").texts == ["NA", "None", "null", "nan", "N/A"]


@case("data", "texts None and null stay texts in JSONL")
def _(tmp):
    path = tmp / "d.jsonl"
    path.write_text('{"text": "None", "label": "a"}\n{"text": "null", "label": "b"}\n{"text": "NA", "label": "a"}\n')
    assert load_dataset(str(path), "all").texts == ["None", "null", "NA"]


@case("data", "an empty text names file and row", ValueError, r"train\.csv: 1 empty or missing text.*row\(s\) 2")
def _(tmp):
    write_csv(tmp / "d", "train", ["fine", "", "fine too"], ["a", "b", "a"])
    load_dataset(str(tmp / "d"), "train")


@case("data", "a whitespace text is empty", ValueError, r"empty or missing text")
def _(tmp):
    write_csv(tmp / "d", "train", ["fine", "   ", "fine too"], ["a", "b", "a"])
    load_dataset(str(tmp / "d"), "train")


@case("data", "a JSON null text names the row", ValueError, r"d\.jsonl: 1 empty or missing text.*row\(s\) 2")
def _(tmp):
    (tmp / "d.jsonl").write_text('{"text": "x", "label": "a"}\n{"text": null, "label": "b"}\n')
    load_dataset(str(tmp / "d.jsonl"))


@case("data", "a malformed JSONL line names file and line", ValueError, r"d\.jsonl, line 3: not valid JSON")
def _(tmp):
    (tmp / "d.jsonl").write_text('{"text": "x", "label": "a"}\n{"text": "y", "label": "b"}\n{"text": "z", "label": \n')
    load_dataset(str(tmp / "d.jsonl"))


@case("data", "a JSONL line that is not an object", ValueError, r"line 2: expected a JSON object, got list")
def _(tmp):
    (tmp / "d.jsonl").write_text('{"text": "x", "label": "a"}\n["y", "b"]\n')
    load_dataset(str(tmp / "d.jsonl"))


@case("data", "a CSV that is not UTF-8 names the file", ValueError, r"train\.csv: not UTF-8 text")
def _(tmp):
    write_csv(tmp / "d", "train", ["caf\u00e9 cr\u00e8me", "na\u00efve"], ["a", "b"], encoding="latin-1")
    load_dataset(str(tmp / "d"), "train")


@case("data", "a JSONL file that is not UTF-8 names the file", ValueError, r"d\.jsonl: not UTF-8 text")
def _(tmp):
    (tmp / "d.jsonl").write_bytes('{"text": "caf\u00e9", "label": "a"}\n'.encode("latin-1"))
    load_dataset(str(tmp / "d.jsonl"))


@case("data", "a missing label names the row", ValueError, r"missing label\(s\) in column 'label'.*row\(s\) 1")
def _(tmp):
    write_csv(tmp / "d", "train", ["one", "two"], ["", "b"])
    load_dataset(str(tmp / "d"), "train")


@case("data", "a missing text column lists the columns", KeyError, r"no column\(s\) \['sentence'\]; columns are")
def _(tmp):
    write_csv(tmp / "d", "train", ["one", "two"], ["a", "b"])
    load_dataset(str(tmp / "d"), "train", text_column="sentence")


@case("data", "an unsupported file type", ValueError, r"unsupported file type '\.txt'")
def _(tmp):
    (tmp / "d.txt").write_text("hello\n")
    load_dataset(str(tmp / "d.txt"))


@case("data", "an empty CSV file", ValueError, r"d\.csv is empty")
def _(tmp):
    (tmp / "d.csv").write_text("")
    load_dataset(str(tmp / "d.csv"))


@case("data", "a folder without the split", FileNotFoundError, r"has no test\.csv or test\.tsv or test\.jsonl")
def _(tmp):
    write_csv(tmp / "d", "train", ["one", "two"], ["a", "b"])
    load_dataset(str(tmp / "d"), "test")


@case("data", "an unknown split name", ValueError, r"unknown split 'dev'")
def _(tmp):
    load_dataset("movie-sentiment", "dev")


@case("data", "an edited shipped file is refused", ValueError, r"does not match data/manifest\.json")
def _(tmp):
    shutil.copytree(ROOT / "data", tmp / "data")
    path = tmp / "data" / "trec6" / "test.csv"
    path.write_text(path.read_text().replace("HUM", "LOC", 1))
    with environment(GELORA_DATA_DIR=str(tmp / "data")):
        load_dataset("trec6", "test")


@case("data", "a subset larger than the split", ValueError, r"asked for 100 examples but .* has only 12")
def _(tmp):
    load_dataset(str(small_folder(tmp)), "train").subset(100)


@case("data", "a subset of 2.5 examples", ValueError, r"subset size n must be a whole number >= 1 or None, got 2\.5")
def _(tmp):
    load_dataset("trec6", "test").subset(2.5)


@case("data", "n_train larger than the split", ValueError, r"n_train=100 exceeds the 12 examples")
def _(tmp):
    train._load_data(config(tmp, dataset=str(small_folder(tmp)), n_train=100, n_eval=None, n_test=None))


@case("data", "declared label names with a duplicate", ValueError, r"label_names must be at least 2 distinct names")
def _(tmp):
    load_dataset(str(small_folder(tmp)), "train", label_names=["negative", "negative"])


@case("data", "whole-number class labels sort numerically")
def _(tmp):
    labels = [str(i) for i in range(12)]
    write_csv(tmp / "d", "train", [f"text {i}" for i in range(12)], labels)
    data = load_dataset(str(tmp / "d"), "train")
    assert data.label_names == labels and data.labels.tolist() == list(range(12))


@case("data", "tokenize with max_length 0", ValueError, r"max_length must be at least 2, got 0")
def _(tmp):
    tokenize(load_dataset("trec6", "test").subset(4), tiny()[1], max_length=0)


@case("data", "a dataset built in memory with a missing text", ValueError, r"1 empty or non-string text\(s\), first at index 1")
def _(tmp):
    TextDataset("mine", "train", ["a", float("nan")], np.array([0, 1]), "classification", ["x", "y"])


@case("data", "class labels outside the label names", ValueError, r"class labels must index label_names")
def _(tmp):
    TextDataset("mine", "train", ["a", "b"], np.array([0, 2]), "classification", ["x", "y"])


@case("data", "task generation asked of a classification dataset", ValueError, r"'trec6' is a classification task, not 'generation'")
def _(tmp):
    load_dataset("trec6", "test", task="generation")


# ---------------------------------------------------------------- TwoNN

@case("twonn", "the same dimension for X and c X, c from 1e-300 to 1e300")
def _(tmp):
    X = points()
    base = TwoNN().fit(X).dimension_
    for c in (1e-300, 1e-22, 1e-9, 1e9, 1e19, 1e25, 1e300):
        assert TwoNN().fit(X * c).dimension_ == pytest.approx(base, rel=1e-9), c


@case("twonn", "float32 data scaled by 1e19 and 1e-22")
def _(tmp):
    X = points().astype(np.float32)
    base = TwoNN().fit(X).dimension_
    assert 2.5 < base < 3.5
    for c in (np.float32(1e19), np.float32(1e-22)):
        assert TwoNN().fit(X * c).dimension_ == pytest.approx(base, rel=1e-5)


@case("twonn", "an integer grid has no fit", ValueError, r"every fitted mu equals 1 .* cannot be fitted")
def _(tmp):
    grid = np.stack(np.meshgrid(np.arange(12), np.arange(12)), -1).reshape(-1, 2)
    TwoNN().fit(grid)


@case("twonn", "integer data off a grid is fine")
def _(tmp):
    X = np.random.default_rng(0).integers(-10**6, 10**6, size=(500, 2))
    assert TwoNN().fit(X).dimension_ == pytest.approx(2.0, abs=0.3)


@case("twonn", "negative n_bootstrap", ValueError, r"n_bootstrap must be a whole number >= 0, got -1")
def _(tmp):
    TwoNN(n_bootstrap=-1).fit(points())


@case("twonn", "discard_fraction 1", ValueError, r"discard_fraction must be in \[0, 1\), got 1\.0")
def _(tmp):
    TwoNN(discard_fraction=1.0).fit(points())


@case("twonn", "confidence 1.5", ValueError, r"confidence must be in \(0, 1\), got 1\.5")
def _(tmp):
    TwoNN(confidence=1.5).fit(points())


@case("twonn", "NaN in the data names the row", ValueError, r"NaN or inf in 1 row\(s\), first at row 7")
def _(tmp):
    X = points()
    X[7, 2] = np.nan
    TwoNN().fit(X)


@case("twonn", "1-D data", ValueError, r"needs a 2-D array")
def _(tmp):
    TwoNN().fit(np.arange(10.0))


@case("twonn", "text data", TypeError, r"needs real numeric data")
def _(tmp):
    TwoNN().fit(np.array([["a", "b"], ["c", "d"]]))


@case("twonn", "two distinct points", ValueError, r"at least 3 distinct points, got 2")
def _(tmp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TwoNN().fit(np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]))


@case("twonn", "an unknown method", ValueError, r"unknown method 'ols'")
def _(tmp):
    TwoNN(method="ols").fit(points())


@case("twonn", "ratios below 1 given to fit_mu", ValueError, r"finite ratios r2 / r1 >= 1")
def _(tmp):
    fit_mu(np.array([0.5, 1.2, 1.3, 1.4]))


@case("twonn", "a fractional random_state", ValueError, r"random_state must be a whole number")
def _(tmp):
    TwoNN(random_state=1.5).fit(points())


@case("twonn", "block_size 0", ValueError, r"block_size must be a whole number >= 1, got 0")
def _(tmp):
    TwoNN(block_size=0).fit(points())


@case("twonn", "the mle interval is finite on good data")
def _(tmp):
    fitted = TwoNN(method="mle").fit(points(800))
    low, high = fitted.interval_
    assert math.isfinite(low) and low < fitted.dimension_ < high


# ---------------------------------------------------------------- probe

@case("probe", "an unknown pooling", ValueError, r"unknown pooling 'max'")
def _(tmp):
    model, tokenizer = tiny()
    hidden_states(model, tokenizer, ["a b", "c d", "e f"], pooling="max")


@case("probe", "one string instead of a list", TypeError, r"texts must be a list of strings")
def _(tmp):
    model, tokenizer = tiny()
    hidden_states(model, tokenizer, "a single text")


@case("probe", "an empty text", ValueError, r"1 text\(s\) are empty or not strings, first at index 1")
def _(tmp):
    model, tokenizer = tiny()
    hidden_states(model, tokenizer, ["fine", " ", "fine too"])


@case("probe", "batch_size 0", ValueError, r"batch_size must be a whole number >= 1, got 0")
def _(tmp):
    model, tokenizer = tiny()
    hidden_states(model, tokenizer, ["a", "b", "c"], batch_size=0)


@case("probe", "a damaged cache is rebuilt with a warning")
def _(tmp):
    model, tokenizer = tiny()
    texts = [f"sentence number {i}" for i in range(12)]
    fresh = hidden_states(model, tokenizer, texts, cache_dir=tmp, progress=False)
    (cache,) = tmp.glob("hidden-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.warns(UserWarning, match="is damaged"):
        again = hidden_states(model, tokenizer, texts, cache_dir=tmp, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(fresh, again))
    assert _read_cache(cache, 12) is not None  # rewritten whole


@case("probe", "a cache with the wrong number of rows is not used")
def _(tmp):
    _write_cache(tmp / "c.npz", [np.zeros((5, 4), np.float32)] * 3)
    with pytest.warns(UserWarning, match="is damaged"):
        assert _read_cache(tmp / "c.npz", 6) is None


@case("probe", "two writers of one cache never share a temporary file")
def _(tmp):
    arrays = [[np.full((50, 8), float(k), np.float32)] * 3 for k in range(8)]
    threads = [threading.Thread(target=_write_cache, args=(tmp / "c.npz", a)) for a in arrays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = _read_cache(tmp / "c.npz", 50)
    assert stored is not None and len({float(x[0, 0]) for x in stored}) == 1  # one writer's file, whole
    assert [p.name for p in tmp.iterdir()] == ["c.npz"]


# ---------------------------------------------------------------- profiles and ranks

def profile_csv(tmp: Path, layers, dims) -> Path:
    path = tmp / "profile.csv"
    pd.DataFrame({"layer": layers, "dimension": dims}).to_csv(path, index=False)
    return path


@case("ranks", "a profile with a missing layer", ValueError, r"missing \[2\]")
def _(tmp):
    load_profile(profile_csv(tmp, [0, 1, 3, 4], [5.0, 6.0, 7.0, 8.0]))


@case("ranks", "a profile with a duplicated layer", ValueError, r"duplicated \[1\]")
def _(tmp):
    load_profile(profile_csv(tmp, [0, 1, 1, 2], [5.0, 6.0, 7.0, 8.0]))


@case("ranks", "a profile with a negative layer", ValueError, r"out of range \[-1\]")
def _(tmp):
    load_profile(profile_csv(tmp, [-1, 0, 1, 2], [5.0, 6.0, 7.0, 8.0]))


@case("ranks", "a negative dimension", ValueError, r"dimension of layer\(s\) \[2\] is not a number >= 0")
def _(tmp):
    load_profile(profile_csv(tmp, [0, 1, 2], [5.0, 6.0, -7.0]))


@case("ranks", "a dimension that is text", ValueError, r"dimension of layer\(s\) \[1\] is not a number")
def _(tmp):
    load_profile(profile_csv(tmp, [0, 1, 2], ["5.0", "many", "7.0"]))


@case("ranks", "a profile file that is not UTF-8", ValueError, r"profile\.csv is not a readable ID profile CSV")
def _(tmp):
    (tmp / "profile.csv").write_bytes("layer,dimension,note\n0,5.0,caf\u00e9\n1,6.0,\n".encode("utf-16"))
    load_profile(tmp / "profile.csv")


@case("ranks", "a rank-0 block is reported, never silent")
def _(tmp):
    with pytest.warns(UserWarning, match=r"block\(s\) \[1\] get rank 0 and are not adapted"):
        allocation = gelora_ranks([10.0, 12.0, 11.0, 15.0])
    assert allocation.ranks == [2, 0, 4] and any("not adapted" in n for n in allocation.notes)


@case("ranks", "a negative min_rank", ValueError, r"min_rank must be a whole number >= 0, got -1")
def _(tmp):
    gelora_ranks([1.0, 2.0, 3.0], min_rank=-1)


@case("ranks", "a fractional budget", ValueError, r"budget must be a whole number >= 1 or None, got 100\.5")
def _(tmp):
    gelora_ranks([1.0, 2.0, 3.0], budget=100.5, shapes={0: [("a", 8, 8)], 1: [("b", 8, 8)]})


@case("ranks", "an infinite offset", ValueError, r"offset must be a finite number >= 0, got inf")
def _(tmp):
    gelora_ranks([1.0, 2.0, 3.0], offset=float("inf"))


@case("ranks", "LoRA rank 100 on 64 x 64 matrices", ValueError, r"rank 100 for .* exceeds the smaller side of its 64 x 64")
def _(tmp):
    lora_config(tiny()[0], [100] * 4, ["query", "value"])


@case("ranks", "a rank of 4.7", ValueError, r"the rank of block 0 must be a whole number, got 4\.7")
def _(tmp):
    lora_config(tiny()[0], [4.7, 2, 2, 2], ["query", "value"])


@case("ranks", "a rank for a block the model lacks", ValueError, r"ranks given for block\(s\) \[4\] that hold no target")
def _(tmp):
    lora_config(tiny()[0], [2, 2, 2, 2, 2], ["query", "value"])


@case("ranks", "a target that matches nothing", ValueError, r"\['q_proj'\] match no module")
def _(tmp):
    lora_config(tiny()[0], [2, 2, 2, 2], ["q_proj"])


# ---------------------------------------------------------------- adapters

def saved_adapter(tmp: Path) -> Path:
    model, _ = tiny()
    init_lora_xs(add_lora_xs(model, rank=4, target_modules=["query", "value"]))
    return save_adapter(model, tmp / "adapter")


def structure(model):
    return [(n, type(m).__name__) for n, m in model.named_modules()]


@case("adapters", "an adapter reloads to identical outputs")
def _(tmp):
    model, tokenizer = tiny()
    init_lora_xs(add_lora_xs(model, rank=4, target_modules=["query", "value"]))
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.lora_R.add_(0.3)
    save_adapter(model, tmp / "a")
    fresh = load_adapter(tiny()[0], tmp / "a")
    batch = tokenizer(["a short sentence", "another one"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, fresh(**batch).logits)


@case("adapters", "another seed's base model is refused, untouched")
def _(tmp):
    path = saved_adapter(tmp)
    other, _ = load_model("tiny-bert", "classification", 2, seed=1)
    before = structure(other)
    with pytest.raises(ValueError, match=r"saved on other base weights .* check_base=False"):
        load_adapter(other, path)
    assert structure(other) == before and not adapter_layers(other)
    load_adapter(other, path, check_base=False)  # the explicit override
    assert len(adapter_layers(other)) == 8


@case("adapters", "corrupted weight bytes", ValueError, r"does not match the checksum")
def _(tmp):
    path = saved_adapter(tmp)
    weights = path / "lora_xs_adapter.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    load_adapter(tiny()[0], path)


@case("adapters", "a failed load leaves the model untouched")
def _(tmp):
    path = saved_adapter(tmp)
    other, _ = load_model("tiny-bert", "classification", 3, seed=0)  # a 3-class head
    before, weights = structure(other), copy.deepcopy(other.state_dict())
    with pytest.raises(ValueError, match="shapes differ"):
        load_adapter(other, path)
    assert structure(other) == before
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in weights.items())


@case("adapters", "a broken adapter config names the file", ValueError, r"lora_xs_config\.json is not a valid adapter config")
def _(tmp):
    path = saved_adapter(tmp)
    (path / "lora_xs_config.json").write_text('{"ranks": {"bert.encoder.layer.0.attention.self.query": 4')
    load_adapter(tiny()[0], path)


@case("adapters", "ranks that are not positive whole numbers", ValueError, r"ranks must map module names to positive whole numbers")
def _(tmp):
    path = saved_adapter(tmp)
    config = json.loads((path / "lora_xs_config.json").read_text())
    config["ranks"] = {name: 0 for name in config["ranks"]}
    (path / "lora_xs_config.json").write_text(json.dumps(config))
    load_adapter(tiny()[0], path)


@case("adapters", "a folder without an adapter", FileNotFoundError, r"not a folder written by save_adapter")
def _(tmp):
    load_adapter(tiny()[0], tmp)


@case("adapters", "a LoRA-XS rank larger than the matrix", ValueError, r"rank 100 for .* exceeds the smaller side")
def _(tmp):
    add_lora_xs(tiny()[0], rank=100, target_modules=["query"])


@case("adapters", "dropout 1", ValueError, r"dropout must be in \[0, 1\), got 1\.0")
def _(tmp):
    add_lora_xs(tiny()[0], rank=2, target_modules=["query"], dropout=1.0)


# ---------------------------------------------------------------- harness

BAD_SETTINGS = [
    ("evals", -3, r"evals must be a whole number >= 1, got -3"),
    ("rank", 4.7, r"rank must be a whole number >= 1, got 4\.7"),
    ("max_length", 0, r"max_length must be a whole number >= 1, got 0"),
    ("lr", float("nan"), r"lr must be a finite number > 0 or None, got nan"),
    ("lr", -1.0, r"lr must be a finite number > 0 or None, got -1\.0"),
    ("dropout", 1.5, r"dropout must be a finite number >= 0 and < 1, got 1\.5"),
    ("device", "tpu", r"device must be one of \('auto', 'cpu', 'cuda'\), got 'tpu'"),
    ("batch_size", True, r"batch_size must be a whole number >= 1, got True"),
    ("n_train", 0, r"n_train must be a whole number >= 1 or None, got 0"),
    ("target_modules", [], r"target_modules must be a non-empty list of module names or None"),
    ("test_split", "train", r"test_split must be 'test' or 'validation', got 'train'"),
    ("id_profile", "no/such/profile.csv", r"id_profile must be the path of an ID profile CSV or None, got 'no/such/profile\.csv'"),
    ("epochs", 0, r"epochs must be a finite number > 0, got 0\.0"),
    ("warmup_ratio", 1.0, r"warmup_ratio must be a finite number >= 0 and < 1, got 1\.0"),
]
for _name, _value, _match in BAD_SETTINGS:
    case("harness", f"{_name}={_value!r}", ValueError, _match)(
        lambda tmp, name=_name, value=_value: validate(config(tmp, **{name: value})))


@case("harness", "an unknown method", ValueError, r"unknown method 'lora2'")
def _(tmp):
    validate(config(tmp, method="lora2"))


@case("harness", "an unknown setting", TypeError, r"unknown finetune argument\(s\) \['ranks'\]")
def _(tmp):
    train.finetune("lora", ranks=4)


@case("harness", "one target module given as a string is one name")
def _(tmp):
    assert config(tmp, target_modules="query").target_modules == ["query"]
    assert run_id(config(tmp, target_modules="query")) == run_id(config(tmp, target_modules=["query"]))


@case("harness", "output_dir below a regular file fails before training", ValueError, r"output_dir .* cannot hold the results")
def _(tmp):
    (tmp / "file").write_text("not a folder")
    original, train._run = train._run, no_training
    try:
        train.finetune(config=config(tmp, output_dir=str(tmp / "file" / "results")))
    finally:
        train._run = original


def stored(tmp: Path, payload: str) -> FinetuneConfig:
    cfg = config(tmp)
    path = Path(cfg.output_dir) / f"{run_id(cfg)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload)
    return cfg


@case("harness", "a record {} is not returned as this run", ValueError, r"is not a gelora run record .* force=True")
def _(tmp):
    train.finetune(config=stored(tmp, "{}"))


@case("harness", "a truncated record names its file", ValueError, r"__seed0__\w+\.json is not a valid record \(truncated")
def _(tmp):
    train.finetune(config=stored(tmp, '{"run_id": "x", "test": {"accu'))


@case("harness", "another run's record under this name", ValueError,
      r"holds another run's record \(differs in \[.*'settings\.seed'\]\)")
def _(tmp):
    other = run_identity(dataclasses.replace(config(tmp), seed=1))
    train.finetune(config=stored(tmp, json.dumps({"identity": other, "test": {"accuracy": 1.0}})))


@case("harness", "an edited data file changes the run's identity")
def _(tmp):
    folder = small_folder(tmp)
    cfg = config(tmp, dataset=str(folder), n_train=None, n_eval=None, n_test=None)
    before = run_id(cfg)
    write_csv(folder, "test", ["edited"] * 4, ["positive"] * 4)
    assert run_id(cfg) != before


@case("harness", "an edited ID profile changes the run's identity")
def _(tmp):
    path = profile_csv(tmp, [0, 1, 2, 3, 4], [5.0, 6.0, 7.0, 8.0, 9.0])
    cfg = config(tmp, method="gelora", id_profile=str(path))
    before = run_id(cfg)
    profile_csv(tmp, [0, 1, 2, 3, 4], [5.0, 9.0, 7.0, 8.0, 9.0])
    assert run_id(cfg) != before


@case("harness", "an edited local model changes the run's identity")
def _(tmp):
    model, tokenizer = tiny()
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    cfg = config(tmp, model=str(tmp / "model"))
    before = run_id(cfg)
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight.add_(1e-3)
    model.save_pretrained(tmp / "model")
    assert run_id(cfg) != before


@case("harness", "the world size is part of the identity")
def _(tmp):
    single = run_id(config(tmp))
    with environment(WORLD_SIZE="2"):
        assert run_id(config(tmp)) != single


@case("harness", "a NaN loss stops the run", FloatingPointError, r"loss is nan at step 3: the run diverged")
def _(tmp):
    state = type("State", (), {"global_step": 3})()
    train.DivergenceGuard().on_log(None, state, None, logs={"loss": float("nan")})


@case("harness", "a loss that rose far above its start is flagged")
def _(tmp):
    assert train.loss_trend([{"step": 1, "loss": 0.7}, {"step": 9, "loss": 2.5}])["loss_rose"]
    assert not train.loss_trend([{"step": 1, "loss": 0.7}, {"step": 9, "loss": 0.4}])["loss_rose"]


@case("harness", "n_train larger than the split fails before training", ValueError, r"n_train=9999 exceeds the 12 examples")
def _(tmp):
    train.finetune(config=config(tmp, dataset=str(small_folder(tmp)), n_train=9999, n_eval=None, n_test=None))


@case("harness", "probe_examples larger than the training set", ValueError, r"probe_examples=1000 exceeds the 16 training examples")
def _(tmp):
    train.finetune(config=config(tmp, method="gelora"))


@case("harness", "an AdaLoRA rank larger than the matrix", ValueError, r"rank 100 for .* exceeds the smaller side")
def _(tmp):
    train.finetune(config=config(tmp, method="adalora", rank=100))


@case("harness", "the plain loop stops on a NaN loss", FloatingPointError, r"loss is nan at step 0: the run diverged")
def _(tmp):
    model, tokenizer = tiny()
    batch = dict(tokenizer(["a b c", "d e f"], return_tensors="pt", padding=True), labels=torch.tensor([0, 1]))
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    train.train_steps(model, [batch], steps=2, lr=1e-3, evaluate_first=False)


@case("harness", "the plain loop with lr 0", ValueError, r"lr must be a finite number > 0, got 0")
def _(tmp):
    train.train_steps(tiny()[0], [], steps=2, lr=0)


@case("harness", "a model seed of -1", ValueError, r"seed must be a whole number >= 0, got -1")
def _(tmp):
    load_model("tiny-bert", "classification", 2, seed=-1)


@case("harness", "a LoRA-SB estimate over 2.5 examples", ValueError, r"num_samples must be a whole number >= 1, got 2\.5")
def _(tmp):
    from gelora.adapters.lora_sb import estimate_update

    estimate_update(tiny()[0], [], ["query"], num_samples=2.5)


@case("harness", "two runs of one method and seed are never tabulated together", ValueError,
      r"2 runs of lora seed 0 .* with different settings")
def _(tmp):
    from gelora.analysis.results import runs_table

    record = {"dataset": "d", "model": "m", "method": "lora", "seed": 0}
    runs_table([dict(record, run_id="a"), dict(record, run_id="b")])


@case("harness", "a record folder with a damaged file names it", ValueError, r"broken\.json is not a valid record")
def _(tmp):
    from gelora.analysis.results import load_records

    (tmp / "broken.json").write_text('{"run_id": ')
    load_records(tmp)


@case("harness", "a grid that repeats a seed", ValueError, r"seeds repeats \[0\]: each run once")
def _(tmp):
    run_grid(["lora"], [0, 1, 0], output_dir=str(tmp))


# ---------------------------------------------------------------- pipeline

@case("pipeline", "broken YAML names the file and line", ValueError, r"(?s)broken\.yaml is not valid YAML: .*broken\.yaml\", line 3")
def _(tmp):
    (tmp / "broken.yaml").write_text("common:\n  seed: 0\n  model: [tiny-bert\n")
    pipeline.load_profile(str(tmp / "broken.yaml"))


@case("pipeline", "a profile that is a list", ValueError, r"must be a mapping with common / notebooks sections, got list")
def _(tmp):
    (tmp / "list.yaml").write_text("- seed\n- model\n")
    pipeline.load_profile(str(tmp / "list.yaml"))


@case("pipeline", "an override with bad YAML", ValueError, r"override 'seeds=\[0, 1': the value is not valid YAML")
def _(tmp):
    pipeline.parse_override("seeds=[0, 1")


@case("pipeline", "a parameter no notebook declares", ValueError, r"parameter 'sed' is declared by no notebook")
def _(tmp):
    pipeline.plan(pipeline.load_profile("smoke"), ["sed=1"])


def fake_execution(outcome):
    """papermill.execute_notebook that writes the output notebook, then ends as `outcome`."""
    def execute(source, out, **kwargs):
        nbformat.write(nbformat.read(source, as_version=4), out)
        if outcome is not None:
            raise outcome
    return execute


@case("pipeline", "an interrupted notebook is marked, never completed")
def _(tmp):
    import papermill

    original = papermill.execute_notebook
    papermill.execute_notebook = fake_execution(KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run("smoke", only=["05"], run_dir=str(tmp / "run"), progress=False)
    finally:
        papermill.execute_notebook = original
    out = tmp / "run" / "executed" / "05_figures.ipynb"
    assert pipeline.executed_status(out) == "interrupted"
    assert nbformat.read(str(out), as_version=4).metadata["papermill"]["exception"] is True


@case("pipeline", "a completed notebook is marked, and an old copy never stands in")
def _(tmp):
    import papermill

    original = papermill.execute_notebook
    try:
        papermill.execute_notebook = fake_execution(None)
        (out,) = pipeline.run("smoke", only=["05"], run_dir=str(tmp / "run"), progress=False)
        assert pipeline.executed_status(out) == "completed"
        papermill.execute_notebook = lambda *args, **kwargs: (_ for _ in ()).throw(MemoryError("out of memory"))
        with pytest.raises(MemoryError):
            pipeline.run("smoke", only=["05"], run_dir=str(tmp / "run"), progress=False)
    finally:
        papermill.execute_notebook = original
    assert not out.exists()  # the completed copy of the earlier run was removed, nothing was written


# ---------------------------------------------------------------- the table

def test_the_table_is_large_enough():
    areas = {p.id.split(":")[0] for p in CASES}
    names = [p.id for p in CASES]
    rows = Path(__file__).read_text().count("\n@case(") + len(BAD_SETTINGS)  # decorated rows and the settings table
    assert len(names) == len(set(names)) == rows  # every row registered once, under its own name
    assert areas == {"data", "twonn", "probe", "ranks", "adapters", "harness", "pipeline"}


@pytest.mark.parametrize("action, expected", CASES)
def test_fault(action, expected, tmp_path):
    check(action, expected, tmp_path)
