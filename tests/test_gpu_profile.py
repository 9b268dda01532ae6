"""The gpu profile proven on CPU: its notebooks, target modules, validation split and bf16
autocast, end to end, on tiny-deberta (the DeBERTa-v2 architecture of DeBERTa-v3-base) and a
local GLUE-format sentence-pair task made from the shipped data."""
import json

import nbformat
import pytest
import torch

from gelora.adapters.lora_xs import adapter_layers
from gelora.data.glue_copy import write_glue_copy
from gelora.kit import pipeline
from gelora.models.loading import load_model
from gelora.models.targets import find_targets
from gelora.training.train import finetune

GPU_TARGETS = pipeline.load_profile("gpu")["notebooks"]["04_fine_tuning"]["target_modules"]
SMALL = [  # the gpu profile's settings, with sizes a CPU runs in seconds
    "max_length=32", "n_examples=80", "01.max_points=400", "01.synthetic_points=400", "01.scaling_layer=2",
    "01.batch_size=16", "02.sensitivity_examples=[40, 80]", "03.rank=4", "03.num_samples=16",
    "03.sample_sizes=[4, 8, 16]", "03.reference_samples=32", "03.steps=3", "03.batch_size=8",
    "04.methods=[full, lora, gelora, adalora, eva, lora_sb, lora_ga]", "04.seeds=[0]", "04.n_train=48",
    "04.n_eval=24", "04.n_test=24", "04.epochs=1", "04.batch_size=8", "04.sb_num_samples=16", "04.device=cpu",
    "04.precision=bf16",
]


def test_the_gpu_profile_modules_resolve_on_deberta_v2():
    model, _ = load_model("tiny-deberta", "classification", 2)
    found = find_targets(model, GPU_TARGETS)
    assert len(found) == 6 * 4  # six matrices in each of the four blocks
    assert type(model).__name__ == "DebertaV2ForSequenceClassification"


def test_the_gpu_profile_runs_end_to_end_on_cpu(tmp_path):
    data = write_glue_copy(tmp_path / "pairs", "pairs", n_train=120, n_validation=40)
    overrides = ["model=tiny-deberta", f"dataset={data}", f"figures_dir={tmp_path / 'figures'}", *SMALL]
    # 06 reads the committed study whatever the profile (the smoke pipeline runs it): 01-05 here
    executed = pipeline.run("gpu", overrides, only=["01", "02", "03", "04", "05"], run_dir=str(tmp_path / "run"),
                            progress=False)
    assert [pipeline.executed_status(p) for p in executed] == ["completed"] * 5
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "results").glob("*.json"))]
    assert len(records) == 7
    for record in records:
        assert record["config"]["test_split"] == "validation" and record["precision"] == "bf16"
        assert record["autocast_dtype"] == "bfloat16" and record["device"] == "cpu"
        if record["method"] != "full":
            assert sorted({m.split(".")[-1] for m in record["target_modules"]}) == sorted(
                {t.split(".")[-1] for t in GPU_TARGETS})
    book = nbformat.read(str(executed[3]), as_version=4)
    assert "budget:" in json.dumps([cell.get("outputs", []) for cell in book.cells])


def test_bf16_autocast_keeps_the_adapter_in_float32(tmp_path):
    data = write_glue_copy(tmp_path / "sst2", "sst2", n_train=32, n_validation=16)
    record = finetune("lora_sb", model="tiny-deberta", dataset=str(data), test_split="validation", n_train=32,
                      batch_size=8, max_length=32, rank=4, sb_num_samples=16, target_modules=GPU_TARGETS,
                      precision="bf16", device="cpu", output_dir=str(tmp_path / "out"), progress=False)
    layers = adapter_layers(record["model_object"])
    assert len(layers) == 24 and record["precision"] == "bf16"
    for layer in layers.values():
        assert layer.lora_A.dtype == layer.lora_B.dtype == layer.lora_R.dtype == torch.float32
        eye = torch.eye(4)
        torch.testing.assert_close(layer.lora_A @ layer.lora_A.T, eye, atol=1e-5, rtol=0)  # orthonormal in float32
    assert record["train_loss"] and all(map(lambda e: e["loss"] == e["loss"], record["train_loss"]))


@pytest.mark.parametrize("task, pair", [("sst2", False), ("pairs", True)])
def test_glue_copies_load_as_glue(tmp_path, task, pair):
    from gelora.data.tasks import load_dataset

    data = load_dataset(str(write_glue_copy(tmp_path, task, n_train=20, n_validation=10)), "validation")
    assert len(data) == 10 and data.label_names == ["0", "1"] and (data.text_pairs is not None) == pair
