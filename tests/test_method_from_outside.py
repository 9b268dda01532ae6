"""A method defined outside the package joins the registry with one `register` call and nothing else:
it trains through `finetune`, gets a record with its own name and identity, its formula is checked,
and it is reused on a second call. (LoRA on the query matrices only, at rank 2: a method the kit
does not ship.)"""
import pytest
from peft import LoraConfig, get_peft_model

from gelora.kit import plots
from gelora.methods import registry
from gelora.training.train import finetune

from .test_train import TINY, easy_task


def _query_only(ctx):
    model = get_peft_model(ctx.model, LoraConfig(r=2, lora_alpha=2 * ctx.config.lora_scale, target_modules=["query"],
                                                  task_type=ctx.task_type))
    return model, {"ranks": {k: 2 for k in ctx.shapes}}


def _query_params(shapes, ranks):
    return sum(ranks[block] * (i + o) for block, mats in shapes.items() for name, i, o in mats if name.endswith("query"))


@pytest.fixture
def toy_method():
    method = registry.register(registry.Method("query_lora", "Query-only LoRA", "lora", 2e-2, "#123456", "h",
                                               _query_only, _query_params))
    yield method
    registry.REGISTRY.pop(method.name)  # the other tests see the shipped registry only


def test_a_method_registered_outside_the_package_trains_and_is_reused(toy_method, tmp_path, monkeypatch):
    args = dict(TINY, dataset=easy_task(tmp_path / "data"), output_dir=str(tmp_path / "out"), rank=2,
                target_modules=["query", "value"])
    record = finetune("query_lora", **args)
    assert record["method"] == "query_lora" and record["run_id"].split("__")[2] == "query_lora"
    assert record["lr"] == toy_method.lr  # the registry's default rate reached the Trainer
    # the formula counts only the query matrices: 4 blocks x 2 x (64 + 64)
    assert record["adapter_params"] == record["expected_adapter_params"] == 4 * 2 * (64 + 64)
    assert record["steps"] > 0 and set(record["test"]) >= {"accuracy", "f1", "mcc"}
    assert plots.palette(["query_lora"]) == {"query_lora": "#123456"}
    from gelora.training import train

    monkeypatch.setattr(train, "_run", lambda *a: pytest.fail("a finished run was retrained"))
    assert finetune("query_lora", **args)["reused"]
