"""The newer surfaces held to the library's standard, one row per case (issue: the last silent
numbers): the `gelora` command, profiles and overrides, model folders, TwoNN's input, the LoRA-SB
estimate and attach, saved adapters, recommendations. Each row ends in a clear error (type and a
message naming the problem) before expensive work, or in a correct result the action checks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gelora import cli
from gelora.geometry.twonn import TwoNN
from gelora.models.loading import load_model, minilm_path

from .cases import Table, check

TABLE = Table()
CASES = TABLE.rows


case = TABLE.case


def command(tmp, *argv, code=1, says=""):
    """Run the command in-process; assert its exit status and one line on stderr (no traceback)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main([*argv])
    text = err.getvalue()
    assert status == code, text
    assert "Traceback" not in text and says in text and len(text.strip().splitlines()) == 1, text


def batches_of(model, tokenizer, labels):
    encoded = tokenizer(["a good film", "a bad film"], padding=True, return_tensors="pt")
    return [dict(encoded, labels=labels)]


# ---------------------------------------------------------------- the command

@case("command", "rank 0 is a bad rank, not a bad budget")
def _(tmp):
    command(tmp, "recommend", "tiny-bert", "movie-sentiment", "--rank", "0", "--output-dir", str(tmp / "o"),
            says="--rank must be a whole number >= 1")


@case("command", "negative budget refused before loading")
def _(tmp):
    command(tmp, "recommend", "tiny-bert", "movie-sentiment", "--budget", "-3", "--output-dir", str(tmp / "o"),
            says="--budget must be a whole number >= 1")


@case("command", "output folder is a file")
def _(tmp):
    (tmp / "file").write_text("x")
    command(tmp, "profile", "tiny-bert", "movie-sentiment", "--output-dir", str(tmp / "file"), says="is a file, not a folder")


@case("command", "too few texts")
def _(tmp):
    command(tmp, "profile", "tiny-bert", "movie-sentiment", "--n-texts", "2", "--output-dir", str(tmp / "o"),
            says="--n-texts must be a whole number >= 3")


@case("command", "fp16 weights on CPU")
def _(tmp):
    command(tmp, "profile", "tiny-bert", "movie-sentiment", "--device", "cpu", "--precision", "fp16",
            "--output-dir", str(tmp / "o"), says="--precision fp16 needs CUDA")


@case("command", "cuda on a machine without one")
def _(tmp):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    command(tmp, "profile", "tiny-bert", "movie-sentiment", "--device", "cuda", "--output-dir", str(tmp / "o"),
            says="--device cuda, but this machine has no CUDA device")


@case("command", "a causal-LM config for an encoder")
def _(tmp):
    command(tmp, "recommend", "tiny-bert", "movie-sentiment", "--rank", "4", "--task", "generation",
            "--output-dir", str(tmp / "o"), says="--task generation does not fit tiny-bert (a classification model)")


@case("command", "train: a missing dataset is one line")
def _(tmp):
    command(tmp, "train", "--method", "lora", "--model", "tiny-bert", "--dataset", str(tmp / "nowhere"),
            "--output-dir", str(tmp / "r"), says="gelora train:")


@case("command", "--debug shows the traceback", ValueError, "--rank must be a whole number >= 1")
def _(tmp):
    cli.main(["recommend", "tiny-bert", "movie-sentiment", "--rank", "0", "--output-dir", str(tmp / "o"), "--debug"])


# ---------------------------------------------------------------- profiles and overrides

@case("profiles", "a section given twice", ValueError,
      r"key '04_fine_tuning' appears twice in one mapping \(first on line 2\)\s+in .*p.yaml\", line 4")
def _(tmp):
    from gelora.kit.profiles import load_profile

    path = tmp / "p.yaml"
    path.write_text("notebooks:\n  04_fine_tuning:\n    seeds: [0]\n  04_fine_tuning:\n    n_train: 10\n")
    load_profile(str(path))


@case("profiles", "a key given twice in a section", ValueError, r"key 'seeds' appears twice")
def _(tmp):
    from gelora.kit.profiles import load_profile

    path = tmp / "p.yaml"
    path.write_text("notebooks:\n  04_fine_tuning:\n    seeds: [0]\n    seeds: [1]\n")
    load_profile(str(path))


@case("profiles", "an override without a value", ValueError, r"override '04.n_test=' has no value")
def _(tmp):
    from gelora.kit.profiles import parse_override

    parse_override("04.n_test=")


@case("profiles", "null still means None")
def _(tmp):
    from gelora.kit.profiles import parse_override

    assert parse_override("04.n_test=null") == ("04", "n_test", None)


# ---------------------------------------------------------------- models

@case("models", "a model folder saved without its tokenizer", ValueError, "has no tokenizer")
def _(tmp):
    folder = tmp / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(minilm_path() / name, folder / name)
    load_model(str(folder), "classification", 2)


# ---------------------------------------------------------------- TwoNN input

@case("twonn", "complex input", TypeError, "real numeric data, got dtype complex128")
def _(tmp):
    TwoNN().fit(np.ones((10, 3)) * (1 + 1j))


@case("twonn", "a torch bool tensor", TypeError, "real numeric data, got dtype torch.bool")
def _(tmp):
    TwoNN().fit(torch.zeros(10, 3, dtype=torch.bool))


@case("twonn", "no features", ValueError, r"at least one feature, got shape \(10, 0\)")
def _(tmp):
    TwoNN().fit(np.zeros((10, 0)))


@case("twonn", "a meta tensor", ValueError, "meta tensor")
def _(tmp):
    TwoNN().fit(torch.empty(10, 3, device="meta"))


# ---------------------------------------------------------------- LoRA-SB estimate and attach

@case("lora_sb", "tuple batches", ValueError, "batches that are mappings")
def _(tmp):
    from gelora.adapters.lora_sb import estimate_update

    model, tokenizer = load_model("tiny-bert", "classification", 2, seed=0)
    batch = batches_of(model, tokenizer, torch.tensor([0, 1]))[0]
    estimate_update(model, [(batch["input_ids"], batch["labels"])], num_samples=2)


@case("lora_sb", "labels outside the head", ValueError, r"labels range over 0..5 but the head has 2 classes")
def _(tmp):
    from gelora.adapters.lora_sb import estimate_update

    model, tokenizer = load_model("tiny-bert", "classification", 2, seed=0)
    estimate_update(model, batches_of(model, tokenizer, torch.tensor([0, 5])), num_samples=2)


@case("lora_sb", "float labels on a classifier", ValueError, "labels are floats")
def _(tmp):
    from gelora.adapters.lora_sb import estimate_update

    model, tokenizer = load_model("tiny-bert", "classification", 2, seed=0)
    estimate_update(model, batches_of(model, tokenizer, torch.tensor([0.0, 1.0])), num_samples=2)


@case("lora_sb", "a non-finite loss", ValueError, "hold NaN or inf")
def _(tmp):
    from gelora.adapters.lora_sb import estimate_update

    model, tokenizer = load_model("tiny-bert", "classification", 2, seed=0)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    estimate_update(model, batches_of(model, tokenizer, torch.tensor([0, 1])), num_samples=2)


@case("lora_sb", "attach checks its arguments before the gradient pass", ValueError, "init_lr must be a finite number > 0")
def _(tmp):
    from gelora.adapters.lora_sb import attach_lora_sb

    model, _ = load_model("tiny-bert", "classification", 2, seed=0)
    attach_lora_sb(model, iter(()), init_lr=0.0, rank=4)  # an empty loader: never reached


@case("lora_sb", "attach with an unknown module name", ValueError, "nope")
def _(tmp):
    from gelora.adapters.lora_sb import attach_lora_sb

    model, _ = load_model("tiny-bert", "classification", 2, seed=0)
    attach_lora_sb(model, iter(()), init_lr=1e-3, rank=4, target_modules=["nope"])


# ---------------------------------------------------------------- saved adapters and recommendations

@case("adapters", "a saved config with an unknown init", ValueError, "unknown init 'magic'")
def _(tmp):
    from gelora.adapters.files import load_adapter, save_adapter
    from gelora.adapters.lora_xs import add_lora_xs, init_lora_xs

    model, _ = load_model("tiny-bert", "classification", 2, seed=0)
    init_lora_xs(add_lora_xs(model, rank=2))
    save_adapter(model, tmp / "adapter")
    config_path = tmp / "adapter" / "lora_xs_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(dict(config, init="magic")))
    fresh, _ = load_model("tiny-bert", "classification", 2, seed=0)
    load_adapter(fresh, tmp / "adapter")


@case("recommend", "a profile shorter than the model", ValueError, r"the ID profile has 3 layers but the model has 4 blocks")
def _(tmp):
    import pandas as pd

    from gelora.allocation.recommend import recommend_ranks

    model, tokenizer = load_model("tiny-bert", "features", seed=0)
    profile = pd.DataFrame({"layer": [0, 1, 2], "dimension": [5.0, 8.0, 9.0]})
    recommend_ranks(model, None, rank=4, tokenizer=tokenizer, profile=profile)


@pytest.mark.parametrize("action, expected", CASES)
def test_surface(action, expected, tmp_path):
    check(action, expected, tmp_path)


def test_every_row_has_a_distinct_name():
    names = [p.id for p in CASES]
    assert len(names) == len(set(names))
    assert Path(__file__).read_text().count('\n@case("') == len(names)  # every decorated row registered
