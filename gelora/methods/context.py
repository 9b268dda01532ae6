"""What a method's builder gets (`BuildContext`) and the one call that builds any registered
method (`build`): the targets and block shapes, the budget's uniform setting, the seeded data
passes, GeLoRA's allocation, and the facts every record keeps about the adapter it started from."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gelora.allocation.ranks import gelora_ranks, lora_config, matched_baselines, unresolved
from gelora.data.tasks import seeded_loader
from gelora.methods.registry import get_method, settings_of
from gelora.models.targets import block_shapes, default_targets, uniform_module_ranks
from gelora.probing.probe import id_profile, load_profile


@dataclass
class BuildContext:
    """What a builder may use: the run's settings, the model and data, the step plan."""

    config: object  # FinetuneConfig
    model: torch.nn.Module
    tokenizer: object
    train: object  # TextDataset (texts, labels, task)
    train_tokens: torch.utils.data.Dataset
    total_steps: int
    warmup_steps: int
    lr: float
    device: str
    targets: list[str] = field(default_factory=list)
    shapes: dict = field(default_factory=dict)
    unresolved_blocks: list = field(default_factory=list)  # GeLoRA blocks whose bound noise decides

    @property
    def task_type(self) -> str:
        return "CAUSAL_LM" if self.config.task == "generation" else "SEQ_CLS"

    @property
    def settings(self):
        """The method's own settings (its registry entry's dataclass), from the config's options."""
        return settings_of(self.config.method, self.config.options)

    def uniform(self) -> dict:
        """The method's uniform setting at the budget (its `budget_rule` entry of
        matched_baselines), or {} without a budget."""
        rule = get_method(self.config.method).budget_rule
        if self.config.budget is None or rule is None:
            return {}
        return matched_baselines(self.shapes, self.config.budget)[rule].setting

    def rank(self) -> int:
        """The uniform rank: matched to the budget, else `config.rank`."""
        return self.uniform().get("r", self.config.rank)

    def batches(self, dataset=None, drop_labels: bool = False):
        """Seeded, shuffled batches of the training tokens (or `dataset`) for a data pass (the
        LoRA-SB and LoRA-GA gradients, EVA's activations). Under torchrun / accelerate every
        process runs the same pass on the same batches, with no communication and no shared file,
        so every process builds the identical adapter (the record's `adapter_init_sha256`)."""
        return seeded_loader(dataset if dataset is not None else self.train_tokens, self.tokenizer, self.train.task,
                             self.config.batch_size, self.config.seed, drop_labels, self.config.group_by_length)

    def first_examples(self, count: int):
        """The first `count` training examples (all when there are fewer): a data pass's sample."""
        return torch.utils.data.Subset(self.train_tokens, range(min(count, len(self.train_tokens))))

    def allocation(self):
        """GeLoRA ranks from the ID profile (read from the `id_profile` setting or probed now; under
        several processes each probes the same texts, and a shared cache is written under unique names)."""
        config, settings = self.config, self.settings
        if settings.id_profile is not None:
            if not Path(settings.id_profile).is_file():
                raise FileNotFoundError(f"ID profile {settings.id_profile} does not exist")
            profile = load_profile(settings.id_profile)
        else:
            if settings.probe_examples > len(self.train):
                raise ValueError(f"probe_examples={settings.probe_examples} exceeds the {len(self.train)} training "
                                 "examples: lower it, or give a profile CSV")
            subset = self.train.subset(settings.probe_examples, seed=config.seed)
            profile = id_profile(self.model, self.tokenizer, subset.texts, text_pairs=subset.text_pairs,
                                 pooling=settings.probe_pooling,
                                 max_length=config.max_length, cache_dir=config.cache_dir, progress=config.progress)
        self.unresolved_blocks = unresolved(profile)  # the record says which ranks noise decided
        return gelora_allocation(profile, config, self.shapes, get_method(config.method).ranks_adapter)

    def peft_lora(self, block_ranks, **lora_kwargs):
        """A PEFT LoraConfig at per-block ranks (alpha = lora_scale * r, every module by name)."""
        return lora_config(self.model, block_ranks, self.targets, scale=self.config.lora_scale,
                           lora_dropout=self.config.dropout, task_type=self.task_type, **lora_kwargs)


def gelora_allocation(profile, config, shapes: dict, adapter: str):
    """GeLoRA's allocation of `profile` under the run's settings: the one function that both
    training and the run's identity (`identity.profile_ranks`) call, so they cannot disagree."""
    if len(profile) - 1 != len(shapes):
        raise ValueError(f"the ID profile has {len(profile) - 1} blocks but the model has {len(shapes)}")
    # a block next to a layer without a dimension (a decoder's last-token embeddings, all alike)
    # gets bound 0, as in notebook 02 and `gelora recommend`; the allocation's notes say so
    return gelora_ranks(profile, min_rank=config.gelora_min_rank, max_rank=config.gelora_max_rank,
                        rounding=config.gelora_rounding, offset=config.gelora_offset, budget=config.budget,
                        shapes=shapes, adapter=adapter, undefined="zero")


def build(ctx: BuildContext) -> tuple[torch.nn.Module, dict]:
    """Put the method's adapter on the model. Returns (model, info): ranks, the expected adapter
    parameters by formula, the targets, and the time the builder took (its data passes)."""
    method = get_method(ctx.config.method)
    if method.family != "full":
        ctx.targets = list(ctx.config.target_modules or default_targets(ctx.model))
        ctx.shapes = block_shapes(ctx.model, ctx.targets)
        if not method.uses_profile:  # a uniform rank larger than a matrix side is refused here, for every method
            uniform_module_ranks(ctx.model, ctx.rank(), ctx.targets)
    start = time.perf_counter()
    model, info = method.build(ctx)
    if method.family != "full":
        info = {"target_modules": list(ctx.targets), **info}
        if method.params is not None and "expected_adapter_params" not in info:
            info["expected_adapter_params"] = method.params(ctx.shapes, info["ranks"])
    info["init_time_s"] = time.perf_counter() - start
    info["adapter_init_sha256"] = adapter_state_sha256(model)
    return model, info


def adapter_state_sha256(model) -> str:
    """A hash of what the method put on the model before training: every trainable tensor and
    every adapter buffer (LoRA-XS's B and A). Equal hashes: the same initialisation, whatever
    the process layout that computed it."""
    digest = hashlib.sha256()
    tensors = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    tensors += [(n, b) for n, b in model.named_buffers() if "lora_" in n]
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        digest.update(name.encode() + tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()
