"""The study's rate protocol on a hand-made task folder whose records carry real identities:
the curve is read from results/ and rates/, the protocol asks for the next rate, and once settled
the comparison folder holds exactly the chosen rate (runs at other rates moved, selection runs
reused by copy, only the missing seeds left to train)."""
import numpy as np

from gelora import study_rates
from gelora.config import FinetuneConfig

from .test_study import BASE, N, write_run

VALIDATION = {1e-3: 0.70, 2e-3: 0.80, 4e-3: 0.85, 8e-3: 0.60}


def add(folder, sub, lr, seed):
    config = FinetuneConfig(method="lora", seed=seed, lr=lr, **BASE)
    value = VALIDATION[lr] + 0.001 * seed
    write_run(folder / sub, "lora", seed, (np.arange(N) % 3 != 0).astype(float), lr=lr,
              evals=(0.5, 0.6, value, value), config=config)


def test_protocol_then_arrange(tmp_path):
    task = tmp_path / "task"
    for seed in range(5):
        add(task, "results", 2e-3, seed)  # the old comparison, at the old rate
    for lr in (1e-3, 4e-3):
        for seed in (0, 1, 2):
            add(task, "rates", lr, seed)
    state = study_rates.choices(task)
    choice, runs = state["lora"]
    assert len(runs) == 11 and choice.rate == 4e-3 and choice.to_train == [8e-3]
    todo = study_rates.selection_configs(task, state)
    assert [(c.lr, c.seed) for c in todo] == [(8e-3, 0), (8e-3, 1), (8e-3, 2)]
    assert all(c.output_dir == str(task / "rates") for c in todo)
    for seed in (0, 1, 2):
        add(task, "rates", 8e-3, seed)
    state = study_rates.choices(task)
    assert state["lora"][0].status == "interior" and state["lora"][0].rate == 4e-3
    missing = study_rates.arrange(task, seeds=range(5), state=state, log=None)
    assert sorted((c.lr, c.seed) for c in missing) == [(4e-3, 3), (4e-3, 4)]
    kept = sorted(p.name for p in (task / "results").glob("*.json"))
    assert kept == sorted(f"{FinetuneConfig(method='lora', seed=s, lr=4e-3, **BASE).run_id}.json" for s in (0, 1, 2))
    assert len(list((task / "rates").glob("*.json"))) == 5 + 9  # the old rate's runs joined the curve
    table = study_rates.rate_table(task)
    assert table.set_index("rate").loc[4e-3, "chosen"] and len(table) == 4
