import math

import pandas as pd
import pytest
from peft import PeftModel, get_peft_model

from gelora.allocation.ranks import (
    adalora_params,
    check_ranks,
    count_trainable,
    gelora_ranks,
    geometric_bounds,
    lora_config,
    lora_params,
    lora_sb_params,
    matched_baselines,
    realised_ranks,
    uniform_budget,
)
from gelora.models.loading import load_model
from gelora.models.targets import block_index, block_shapes, find_targets

PROFILE = [10.0, 12.0, 11.0, 15.2, 15.2]  # bounds: 2, 0, 4.2, 0


@pytest.mark.filterwarnings("ignore:GeLoRA. block")  # the calls after the first: asserted once is enough
def test_hand_computed_ranks():
    with pytest.warns(UserWarning, match=r"GeLoRA: block\(s\) \[1, 3\]"):  # the rank-0 blocks are named
        assert gelora_ranks(PROFILE).ranks == [2, 0, 5, 0]
    assert gelora_ranks(PROFILE, rounding="floor").ranks == [2, 0, 4, 0]
    assert gelora_ranks(PROFILE, rounding="round").ranks == [2, 0, 4, 0]
    assert gelora_ranks(PROFILE, offset=1).ranks == [3, 1, 6, 1]
    assert gelora_ranks(PROFILE, min_rank=2, max_rank=4).ranks == [2, 2, 4, 2]
    frame = pd.DataFrame({"layer": [4, 3, 2, 1, 0], "dimension": PROFILE[::-1]})
    assert gelora_ranks(frame).ranks == [2, 0, 5, 0]  # sorted by layer


def test_undefined_layers_are_explicit():
    profile = [float("nan"), 12.0, 11.0, 15.0]
    with pytest.raises(ValueError, match=r"layer\(s\) \[0\] have no intrinsic dimension"):
        gelora_ranks(profile)
    allocation = gelora_ranks(profile, undefined="zero")
    assert allocation.ranks == [0, 0, 4] and "bound set to 0" in allocation.notes[0]
    bounds, _ = geometric_bounds(profile, undefined="zero")
    assert bounds.tolist() == [0.0, 0.0, 4.0]


@pytest.fixture(scope="module")
def shapes():
    model, _ = load_model("tiny-llama", "generation")
    return block_shapes(model, ["q_proj", "v_proj"])  # per block: q 64x64, v 64->32


@pytest.mark.parametrize("budget", [900, 2000, 3333, 6000])
@pytest.mark.parametrize("adapter", ["lora", "lora_sb"])
def test_budget_is_met_within_one_rank_step(shapes, budget, adapter):
    allocation = gelora_ranks(PROFILE, offset=1, budget=budget, shapes=shapes, adapter=adapter)
    params = lora_params(shapes, allocation.ranks) if adapter == "lora" else lora_sb_params(shapes, allocation.ranks)
    assert params == allocation.params <= budget
    step = max((r + 1) ** 2 - r ** 2 for r in allocation.ranks) * 2 if adapter == "lora_sb" else 224
    assert budget - params < step
    weights = [b + 1 for b in allocation.bounds]
    order = sorted(range(4), key=lambda k: weights[k])
    assert all(allocation.ranks[a] <= allocation.ranks[b] + 1 for a, b in zip(order, order[1:]))  # shape kept


def test_budget_errors(shapes):
    with pytest.raises(ValueError, match="no profile shape"):
        gelora_ranks([9, 8, 7, 6, 5], budget=2000, shapes=shapes)
    with pytest.raises(ValueError, match="below the smallest allocation"):
        gelora_ranks(PROFILE, offset=1, budget=500, shapes=shapes)
    with pytest.raises(ValueError, match="exceeds"):
        gelora_ranks(PROFILE, offset=1, budget=10**9, shapes=shapes)
    with pytest.raises(ValueError, match="needs the model's target shapes"):
        gelora_ranks(PROFILE, budget=1000)
    assert gelora_ranks([9, 8, 7, 6, 5], offset=0.5, budget=2000, shapes=shapes).ranks == [2, 2, 2, 2]


@pytest.mark.parametrize("name,task,targets,prefix", [
    ("tiny-bert", "classification", ["query", "value"], "bert.encoder.layer."),
    ("tiny-llama", "generation", ["q_proj", "v_proj"], "model.layers."),
])
def test_peft_realises_the_allocation(name, task, targets, prefix, tmp_path):
    model, _ = load_model(name, task)
    shapes = block_shapes(model, targets)
    ranks = [3, 0, 5, 1]
    peft_model = get_peft_model(model, lora_config(model, ranks, targets))
    realised = check_ranks(peft_model, ranks, targets)
    assert {block_index(n) for n in realised} == {0, 2, 3} and all(n.startswith(prefix) for n in realised)
    head = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n)
    assert count_trainable(peft_model) - head == lora_params(shapes, ranks)
    assert head == (0 if task == "generation" else model.config.hidden_size * 2 + 2)
    from peft.tuners.lora import LoraLayer

    scalings = {n: m.scaling["default"] for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    assert set(scalings.values()) == {2.0}  # alpha follows the rank: the same scaling everywhere
    peft_model.save_pretrained(tmp_path)
    fresh, _ = load_model(name, task)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path)
    assert realised_ranks(reloaded) == realised
    check_ranks(reloaded, ranks)


def test_check_ranks_catches_a_config_peft_did_not_realise(tiny_bert):
    model, _ = tiny_bert
    from peft import LoraConfig

    wrong = LoraConfig(r=4, target_modules=["query", "value"], rank_pattern={"layer.9.attention.self.query": 2})
    peft_model = get_peft_model(model, wrong)  # the pattern matches nothing: PEFT says nothing
    with pytest.raises(ValueError, match="expected rank 2, realised 4"):
        check_ranks(peft_model, {0: 2, 1: 2, 2: 2, 3: 2}, ["query", "value"])


def test_wrong_names_raise(tiny_bert):
    model, _ = tiny_bert
    with pytest.raises(ValueError, match=r"\['q_proj'\] match no module"):
        lora_config(model, [1, 1, 1, 1], ["query", "q_proj"])
    with pytest.raises(ValueError, match="not linear"):
        find_targets(model, ["attention"])
    with pytest.raises(ValueError, match="not inside a numbered"):
        lora_config(model, [1, 1, 1, 1], ["classifier"])
    with pytest.raises(ValueError, match="every block has rank 0"):
        lora_config(model, [0, 0, 0, 0], ["query"])
    with pytest.raises(ValueError, match="no rank given for block 3"):
        lora_config(model, [1, 1, 1], ["query"])


def test_matched_baselines(tiny_bert):
    shapes = block_shapes(tiny_bert[0], ["query", "value"])  # 8 matrices of 64 x 64
    baselines = matched_baselines(shapes, 8 * 128 * 4)
    assert baselines["lora"].setting == {"r": 4} and baselines["lora"].params == 4096 == uniform_budget(shapes, 4)
    assert baselines["lora_sb"].setting == {"r": 23} and baselines["lora_sb"].params == 8 * 23 ** 2
    assert baselines["adalora"].setting == {"target_r": 4, "init_r": 6}
    assert baselines["adalora"].params == adalora_params(shapes, 4) == 8 * 4 * 129
    assert baselines["eva"].params == 4096 and baselines["eva"].note == ""
    with pytest.raises(ValueError, match="below half of one uniform LoRA rank"):
        matched_baselines(shapes, 100)
    assert math.isclose(lora_sb_params(shapes, [2] * 4), 32)
