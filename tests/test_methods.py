"""The method registry: every method has its facts, and its adapter trains exactly the parameters
its formula says. Adding a method is one registration and one row in FORMULAS."""
import re

import pandas as pd
import pytest
import torch

from gelora.allocation.ranks import count_trainable
from gelora.data.tasks import load_dataset, tokenize
from gelora.kit import plots
from gelora.methods import registry as methods
from gelora.methods.context import BuildContext, build
from gelora.models.loading import load_model
from gelora.training.config import FinetuneConfig

TARGETS = ["query", "value"]  # tiny-bert: 4 blocks, 64 x 64 matrices, 8 targets
BUDGET = 8 * 128 * 8  # uniform LoRA r = 8
MATRICES, SIDE = 8, 64


def lora_count(ranks_per_block):
    return sum(2 * r * (SIDE + SIDE) for r in ranks_per_block)  # 2 matrices per block, r (in + out) each


def core_count(ranks_per_block):
    return sum(2 * r * r for r in ranks_per_block)  # only the r x r core trains


# method -> trainable adapter parameters, computed by hand from what the record says it built
FORMULAS = {
    "full": lambda model, info: sum(p.numel() for p in model.parameters()) - (SIDE * 2 + 2),
    "lora": lambda model, info: MATRICES * 8 * (SIDE + SIDE),
    "gelora": lambda model, info: lora_count(info["allocation"]["ranks"]),
    "adalora": lambda model, info: MATRICES * 12 * (SIDE + SIDE + 1),  # init_r = ceil(1.5 x 8), pruned later
    "eva": lambda model, info: MATRICES * 8 * (SIDE + SIDE),  # same shapes: the redistribution keeps the total
    "lora_xs": lambda model, info: MATRICES * 32 * 32,  # r = sqrt(8192 / 8)
    "lora_sb": lambda model, info: MATRICES * 32 * 32,
    "gelora_sb": lambda model, info: core_count(info["allocation"]["ranks"]),
    "lora_ga": lambda model, info: MATRICES * 8 * (SIDE + SIDE),
    "pissa": lambda model, info: MATRICES * 8 * (SIDE + SIDE),
}


def test_every_registered_method_has_its_facts_and_a_formula_row():
    assert set(FORMULAS) == set(methods.names()), "add a FORMULAS row for every registered method"
    # the registration order is every table's order (committed tables and the README are in it)
    assert methods.names() == ["full", "lora", "gelora", "adalora", "eva", "lora_xs", "lora_sb", "gelora_sb",
                               "lora_ga", "pissa"]
    for method in methods.REGISTRY.values():
        assert method.label and method.family in methods.FAMILIES and method.lr > 0
        assert re.fullmatch(r"#[0-9a-f]{6}", method.colour)
    colours = [m.colour for m in methods.REGISTRY.values()]
    assert len(set(colours)) == len(colours), "two methods share a colour"
    assert len({m.label for m in methods.REGISTRY.values()}) == len(methods.REGISTRY)
    assert plots.palette(["lora", "unknown"]) == {"lora": methods.get_method("lora").colour, "unknown": "grey"}
    assert methods.order(["pissa", "zzz", "full", "lora"]) == ["full", "lora", "pissa", "zzz"]
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get_method("lora"))
    with pytest.raises(ValueError, match="unknown method 'qlora'"):
        methods.get_method("qlora")


@pytest.fixture(scope="module")
def profile_csv(tmp_path_factory):
    """A profile of known shape: bounds 2, 0, 2, 0 (GeLoRA ranks in the ratio 3 : 1 : 3 : 1 with offset 1)."""
    path = tmp_path_factory.mktemp("profile") / "profile.csv"
    pd.DataFrame({"layer": range(5), "dimension": [1.0, 3.0, 3.0, 5.0, 5.0]}).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("name", list(FORMULAS))
def test_each_method_trains_what_its_formula_says(name, profile_csv):
    torch.manual_seed(0)
    model, tokenizer = load_model("tiny-bert", "classification", 2, seed=0)
    train = load_dataset("movie-sentiment", "train").subset(64, seed=0)
    config = FinetuneConfig(name, model="tiny-bert", target_modules=TARGETS, budget=None if name == "full" else BUDGET,
                            id_profile=profile_csv, sb_num_samples=16, eva_examples=32, batch_size=8, max_length=32,
                            progress=False)
    ctx = BuildContext(config, model, tokenizer, train, tokenize(train, tokenizer, 32), total_steps=40,
                               warmup_steps=2, lr=1e-3, device="cpu")
    adapted, info = build(ctx)
    head = SIDE * 2 + 2
    adapter = count_trainable(adapted) - head
    assert adapter == FORMULAS[name](adapted, info)
    if name != "full":
        assert info["expected_adapter_params"] == adapter  # the registry's own formula agrees
        assert info["target_modules"] == TARGETS
    if name.startswith("gelora"):
        ranks = info["allocation"]["ranks"]
        assert ranks[0] == ranks[2] > ranks[1] == ranks[3] > 0  # the profile's 3 : 1 : 3 : 1 shape
        assert adapter <= BUDGET


@pytest.mark.parametrize("name", ["lora_ga", "pissa"])
def test_the_peft_initialisations_keep_the_function_at_step_zero(name, batches, tiny_bert):
    """LoRA-GA and PiSSA move part of W0 into the factors; the model must still compute W0 x."""
    model, tokenizer = tiny_bert
    before = model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits.detach()
    train = load_dataset("movie-sentiment", "train").subset(32, seed=0)
    config = FinetuneConfig(name, model="tiny-bert", target_modules=TARGETS, rank=4, sb_num_samples=16, batch_size=8)
    ctx = BuildContext(config, model, tokenizer, train, tokenize(train, tokenizer, 32), 10, 1, 1e-3, "cpu")
    adapted, _ = build(ctx)
    adapted.eval()
    after = adapted(**{k: v for k, v in batches[0].items() if k != "labels"}).logits.detach()
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # unlike plain LoRA, B does not start at zero


def test_methods_own_their_settings_and_every_given_value_is_checked():
    """A method's settings live in its module; the config reads them as attributes (default:
    the method's), refuses names no method declares, and checks a value given for another method
    by that method's own checks (a profile's setting shared by a grid of methods)."""
    from gelora.training.config import validate
    from gelora.training.identity import IN_EVERY_IDENTITY

    shared = {f.name for f in __import__("dataclasses").fields(FinetuneConfig)}
    assert not shared & set(methods.options())  # no method's setting is a field of the shared config
    assert methods.options()["sb_num_samples"][1] == ["lora_sb", "gelora_sb", "lora_ga"]
    config = FinetuneConfig("lora_sb", sb_num_samples=32)
    assert config.sb_num_samples == 32 and config.sb_init_lr is None and config.options == {"sb_num_samples": 32}
    assert config.flat()["sb_num_samples"] == 32 and "eva_examples" not in config.flat()
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['sb_samples'\]"):
        FinetuneConfig("lora_sb", sb_samples=32)
    with pytest.raises(ValueError, match=r"eva_examples must be a whole number >= 1, got 0"):
        validate(FinetuneConfig("lora", eva_examples=0))
    with pytest.raises(ValueError, match=r"block_ranks applies to method 'lora' only"):
        validate(FinetuneConfig("gelora", block_ranks=[1, 2]))
    # the settings that were shared fields when records were committed keep their frozen defaults
    assert {k: getattr(FinetuneConfig("lora"), k) for k in IN_EVERY_IDENTITY} == IN_EVERY_IDENTITY
    assert set(IN_EVERY_IDENTITY) == set(methods.options())
