"""GeLoRA rank recommendations for any model, as a PEFT config: the tool behind `gelora recommend`.

    rec = recommend_ranks("path/to/model", texts, budget=300_000, target_modules=["q_proj", "v_proj"])
    rec.config.save_pretrained("out/")          # adapter_config.json: LoraConfig.from_pretrained("out/")

The profile is measured on the bare backbone (any head gives the same hidden states), ranks are
scaled to the budget, and every adapted module is named in full with its rank, so plain
`peft.get_peft_model(model, LoraConfig.from_pretrained("out/"))` builds exactly these ranks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gelora.allocation.ranks import RankAllocation, adapter_params, gelora_ranks, lora_config, uniform_budget, unresolved
from gelora.geometry.twonn import TwoNN
from gelora.models.targets import block_shapes, default_targets, module_ranks
from gelora.probing.probe import id_profile


def read_texts(source: str, n: int | None = None, seed: int = 0, text_column: str = "text") -> list[str]:
    """Texts to probe: a plain .txt file (one text per line, blank lines skipped), a local
    CSV/TSV/JSONL file or folder, a shipped dataset name, or hf:<name> (its training split);
    `n` texts drawn with `seed` (all when None)."""
    path = Path(source)
    if path.suffix == ".txt" and path.is_file():
        try:
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        if len(texts) < 3:
            raise ValueError(f"{path} holds {len(texts)} non-empty line(s): TwoNN needs at least 3 texts")
        if n is not None:
            if n > len(texts):
                raise ValueError(f"asked for {n} texts but {path} holds {len(texts)}")
            import numpy as np

            texts = [texts[i] for i in np.sort(np.random.default_rng(seed).choice(len(texts), n, replace=False))]
        return texts
    from gelora.data.tasks import load_dataset

    return load_dataset(source, "train", text_column=text_column, label_column=None).subset(n, seed=seed).texts


@dataclass
class Recommendation:
    allocation: RankAllocation
    module_ranks: dict[str, int]
    config: object  # peft.LoraConfig
    profile: pd.DataFrame
    params: int
    budget: int
    unresolved_blocks: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def snippet(self, path: str = "gelora-recommendation") -> str:
        """Python that applies the recommendation with plain PEFT."""
        return ("from peft import LoraConfig, get_peft_model\n"
                f"config = LoraConfig.from_pretrained({path!r})  # {len(self.module_ranks)} modules, "
                f"{self.params:,} trainable adapter parameters\n"
                "model = get_peft_model(model, config)")


def recommend_ranks(model, texts, budget: int | None = None, rank: int | None = None, target_modules=None,
                    tokenizer=None, pooling: str = "mean", offset: float = 1.0, min_rank: int = 0,
                    max_rank: int | None = None, max_length: int = 128, batch_size: int = 32, seed: int = 0,
                    task_type: str | None = None, profile: pd.DataFrame | None = None,
                    progress: bool = False) -> Recommendation:
    """GeLoRA ranks for `model` (a loaded model with `tokenizer`, or a name/folder) at `budget`
    trainable adapter parameters, or at the budget of uniform LoRA of `rank`."""
    from gelora.core.checks import check_real, check_whole

    start = time.perf_counter()
    if (budget is None) == (rank is None):
        raise ValueError("give exactly one of budget (trainable adapter parameters) or rank (uniform LoRA's budget)")
    check_whole("budget", budget, 1, optional=True)
    check_whole("rank", rank, 1, optional=True)
    check_whole("min_rank", min_rank, 0)
    check_whole("max_rank", max_rank, 1, optional=True)
    check_real("offset", offset, 0)
    if task_type not in (None, "SEQ_CLS", "CAUSAL_LM"):
        raise ValueError(f"task_type must be None, 'SEQ_CLS' or 'CAUSAL_LM', got {task_type!r}")
    if target_modules is not None and (isinstance(target_modules, str) or not list(target_modules)):
        raise ValueError(f"target_modules must be a non-empty list of module names or None, got {target_modules!r}")
    if isinstance(model, str):
        from gelora.models.loading import load_model

        model, tokenizer = load_model(model, "features", seed=seed)
    elif tokenizer is None:
        raise ValueError("a loaded model needs its tokenizer")
    if task_type is not None and task_type != _task_type_of(model):
        raise ValueError(f"task_type {task_type!r} does not fit this model ({type(model).__name__}: "
                         f"{_task_type_of(model)}); PEFT could not apply the written config")
    targets = list(target_modules or default_targets(model))
    shapes = block_shapes(model, targets)
    if profile is not None and len(profile) != len(shapes) + 1:
        raise ValueError(f"the ID profile has {len(profile)} layers but the model has {len(shapes)} blocks: it needs "
                         f"{len(shapes) + 1} (the embeddings and every block's output); was it made for another model?")
    budget = uniform_budget(shapes, rank) if budget is None else budget
    if profile is None:
        profile = id_profile(model, tokenizer, texts, pooling=pooling, estimator=TwoNN(random_state=seed),
                             max_length=max_length, batch_size=batch_size, seed=seed, progress=progress)
    allocation = gelora_ranks(profile, min_rank=min_rank, max_rank=max_rank, offset=offset, budget=budget,
                              shapes=shapes, undefined="zero")
    chosen = module_ranks(model, allocation.by_block, targets)
    config = lora_config(model, allocation.by_block, targets, task_type=task_type or _task_type_of(model))
    return Recommendation(allocation, chosen, config, profile, adapter_params(shapes, allocation.ranks), budget,
                          unresolved(profile), time.perf_counter() - start)


def _task_type_of(model) -> str:
    """The PEFT task type of the model a user will fine-tune: causal LM for decoders, sequence
    classification for encoders (PEFT then trains the new head)."""
    from gelora.models.loading import _is_decoder

    return "CAUSAL_LM" if _is_decoder(model.config) else "SEQ_CLS"


FINDINGS_PATH = Path(__file__).with_name("study_findings.json")  # written by gelora.study.findings


def study_findings_text(path: str | Path | None = None) -> str:
    """What the kit's study found about allocators at equal budget (the package's findings file,
    written from the committed study by `gelora study --readme`), for `gelora recommend` to print
    beside its ranks: per task, the allocations better than uniform LoRA (and whether that survives
    uniform LoRA trained at the same rate) and those above every random allocation."""
    import json

    path = Path(path) if path is not None else FINDINGS_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this install lacks the study's findings (reinstall gelora)")
    data = json.loads(path.read_text())
    lines = [f"What the kit's study found about rank allocators at equal budget ({data['section']}):"]
    for task, t in data["tasks"].items():
        rows = t["allocators"]
        better = [f"{name} {r['difference']:+.4f} ({r['low']:+.4f} to {r['high']:+.4f})"
                  + ("" if r["same_rate_verdict"] in (None, "better") else
                     f", {r['same_rate_verdict']} against uniform LoRA at its rate")
                  for name, r in rows.items() if r["verdict"] == "better"]
        gelora = rows.get("gelora")
        above = [name for name, r in rows.items() if r["above_every_random_draw"] and not name.startswith("random_")]
        lines.append(f"- {task} ({t['model']}, {t['metric']}, seeds {t['seeds']}, budget {t['budget']}): better than "
                     f"uniform: {'; '.join(better) or 'none'}"
                     + (f"; GeLoRA {gelora['verdict']} {gelora['difference']:+.4f} ({gelora['low']:+.4f} to "
                        f"{gelora['high']:+.4f})" if gelora and gelora["verdict"] != "better" else "")
                     + f"; above every one of {t['random_draws']} random allocations: {', '.join(above) or 'none'}.")
    lines.append("These are small tasks on one small encoder: evidence about them, not a promise for your model; "
                 "train uniform LoRA at the same budget beside these ranks before you trust them.")
    return "\n".join(lines)
