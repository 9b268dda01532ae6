"""Two processes (torchrun, gloo on CPU) against one at the same global batch, and gradient
accumulation against none: the same steps, the same losses up to float noise, the same LoRA-SB
factors, AdaLoRA within its budget, one record per run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gelora.core.plan import plan_steps

SCRIPT = Path(__file__).resolve().parent / "scripts" / "grid.py"
METHODS = ["lora", "lora_sb", "adalora", "gelora"]


def torchrun(processes: int, out: Path, accumulation: int = 1) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the same threads in every layout: the same float sums
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               str(SCRIPT), str(out), ",".join(METHODS), str(accumulation)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(records) == len(METHODS)  # one record per run, whatever the number of processes
    return {r["method"]: r for r in records}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {name: torchrun(n, root / name, accumulation)
            for name, n, accumulation in (("one", 1, 1), ("two", 2, 1), ("accumulated", 1, 2))}


@pytest.mark.parametrize("layout", ["two", "accumulated"])
@pytest.mark.parametrize("method", METHODS)
def test_same_run_in_every_layout(layouts, layout, method):
    one, other = layouts["one"][method], layouts[layout][method]
    assert other["steps"] == one["steps"] == 8 and other["plan"]["total_steps"] == 8
    assert other["plan"]["global_batch"] == one["plan"]["global_batch"] == 8
    assert other["plan"]["per_device_batch"] == 4 and one["plan"]["per_device_batch"] == 8
    assert other["world_size"] == (2 if layout == "two" else 1)
    assert other["run_id"] != one["run_id"]  # the layout is part of the identity: never reused across layouts
    for a, b in zip(one["train_loss"], other["train_loss"]):
        assert a["step"] == b["step"] and b["loss"] == pytest.approx(a["loss"], abs=2e-6)
    assert other["test"]["loss"] == pytest.approx(one["test"]["loss"], abs=2e-6)
    assert other["adapter_init_sha256"] == one["adapter_init_sha256"]


def test_adalora_stays_within_its_budget(layouts):
    record = layouts["two"]["adalora"]
    assert record["effective_adapter_params"] <= record["budget_params"]


def test_the_plan_splits_the_global_batch():
    plan = plan_steps(100, 16, 3.0, 0.1, 4, gradient_accumulation=2, processes=4)
    assert (plan.per_device_batch, plan.steps_per_epoch, plan.total_steps, plan.warmup_steps, plan.eval_steps) == \
        (2, 7, 21, 2, 5)
    with pytest.raises(ValueError, match=r"batch_size=16 \(the global batch\) does not split evenly over 3 process"):
        plan_steps(100, 16, 1.0, 0.0, 1, processes=3)
