"""A method defined outside the package joins the registry with one `register` call and nothing else:
it trains through `finetune`, gets a record with its own name and identity, its formula is checked,
it is reused on a second call, and its own setting (declared with it, not in FinetuneConfig) is
checked, reaches the builder, the record, the identity and the command line. (LoRA on the query
matrices only, at a rank of its own: a method the kit does not ship.)"""
from dataclasses import dataclass

import pytest
from peft import LoraConfig, get_peft_model

from gelora.core.checks import check_whole
from gelora.kit import plots
from gelora.methods import registry
from gelora.training.train import finetune

from .test_train import TINY, easy_task


@dataclass
class QuerySettings:
    query_rank: int = registry.option(2, "rank of the query-only adapter")

    def check(self, config):
        check_whole("query_rank", self.query_rank, 1)


def _query_only(ctx):
    r = ctx.settings.query_rank
    model = get_peft_model(ctx.model, LoraConfig(r=r, lora_alpha=r * ctx.config.lora_scale, target_modules=["query"],
                                                  task_type=ctx.task_type))
    return model, {"ranks": {k: r for k in ctx.shapes}}


def _query_params(shapes, ranks):
    return sum(ranks[block] * (i + o) for block, mats in shapes.items() for name, i, o in mats if name.endswith("query"))


@pytest.fixture
def toy_method():
    method = registry.register(registry.Method("query_lora", "Query-only LoRA", "lora", 2e-2, "#123456", "h",
                                               _query_only, _query_params, settings=QuerySettings))
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


def test_a_method_brings_its_own_setting(toy_method, tmp_path):
    from gelora.training.config import FinetuneConfig, validate
    from gelora.training.identity import run_id
    from gelora.training.train import _parser

    args = dict(TINY, dataset=easy_task(tmp_path / "data"), output_dir=str(tmp_path / "out"), rank=2,
                target_modules=["query", "value"])
    record = finetune("query_lora", query_rank=3, **args)
    assert record["adapter_params"] == 4 * 3 * (64 + 64)  # the setting reached the builder
    assert record["config"]["query_rank"] == 3 and "query_rank" not in finetune("lora", **args)["config"]
    default = FinetuneConfig("query_lora", **args)
    assert default.query_rank == 2 and run_id(default) != run_id(FinetuneConfig("query_lora", query_rank=3, **args))
    with pytest.raises(ValueError, match=r"query_rank must be a whole number >= 1, got 0"):
        validate(FinetuneConfig("query_lora", query_rank=0, **args))
    assert vars(_parser().parse_args(["--method", "query_lora", "--query-rank", "4"]))["query_rank"] == 4


def test_registering_a_method_renames_no_other_run(tmp_path):
    from gelora.training.config import FinetuneConfig
    from gelora.training.identity import run_id

    before = run_id(FinetuneConfig("lora", model="tiny-bert"))
    method = registry.register(registry.Method("query_lora", "Query-only LoRA", "lora", 2e-2, "#123456", "h",
                                               _query_only, _query_params, settings=QuerySettings))
    try:
        assert run_id(FinetuneConfig("lora", model="tiny-bert")) == before
    finally:
        registry.REGISTRY.pop(method.name)
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['query_rank'\]"):
        FinetuneConfig("lora", query_rank=3)  # gone with its method
