"""The method registry: every fact about a fine-tuning method in one entry.

An entry holds the name, the label and colour used in every table and figure, the family, the
default learning rate, a builder that puts the adapter on the model and returns what it did, any
Trainer callbacks, a finisher that reads the trained model, and the formula of its trainable
adapter parameters. The order of registration is the order of every table and figure.

Adding a method is one `register(Method(...))` here and one row in `tests/test_methods.py`.
"""
from __future__ import annotations

import hashlib
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import AdaLoraConfig, EvaConfig, LoraConfig, LoraGAConfig, get_peft_model, initialize_lora_eva_weights
from peft.tuners.lora.loraga import preprocess_loraga
from transformers import TrainerCallback

from gelora.adapters.lora_sb import apply_lora_sb, estimate_update
from gelora.allocation.ranks import (
    adalora_params,
    check_ranks,
    gelora_ranks,
    lora_config,
    lora_params,
    lora_sb_params,
    matched_baselines,
    realised_ranks,
    unresolved,
)
from gelora.data.tasks import seeded_loader
from gelora.models.spectra import snapshot, update_spectra
from gelora.models.targets import block_shapes, default_targets, find_targets, uniform_module_ranks
from gelora.probing.probe import id_profile, load_profile

FAMILIES = ("full", "lora", "lora_xs")  # every weight; B A factors; B R A with only R trained


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

    def allocation(self):
        """GeLoRA ranks from the ID profile (read from `config.profile` or probed now; under several
        processes each probes the same texts, and a shared cache is written under unique names)."""
        config = self.config
        if config.profile is not None:
            if not Path(config.profile).is_file():
                raise FileNotFoundError(f"ID profile {config.profile} does not exist")
            profile = load_profile(config.profile)
        else:
            if config.probe_examples > len(self.train):
                raise ValueError(f"probe_examples={config.probe_examples} exceeds the {len(self.train)} training "
                                 "examples: lower it, or give a profile CSV")
            subset = self.train.subset(config.probe_examples, seed=config.seed)
            profile = id_profile(self.model, self.tokenizer, subset.texts, text_pairs=subset.text_pairs,
                                 pooling=config.probe_pooling,
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


@dataclass(frozen=True)
class Method:
    """One fine-tuning method: its facts and how to build it."""

    name: str
    label: str
    family: str
    lr: float  # default peak learning rate
    colour: str
    marker: str
    build: Callable[[BuildContext], tuple[torch.nn.Module, dict]]
    params: Callable[[dict, dict], int] | None  # (block shapes, per-block ranks) -> trainable adapter parameters
    budget_rule: str | None = None  # the matched_baselines entry used at a budget (None: none or its own)
    uses_profile: bool = False
    ranks_adapter: str = "lora"  # the adapter whose parameter count GeLoRA's budget scaling uses
    callbacks: Callable[[], list] = lambda: []
    finish: Callable[[torch.nn.Module], dict] = lambda model: {}
    description: str = ""


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.family not in FAMILIES:
        raise ValueError(f"method {method.name!r}: unknown family {method.family!r}; expected one of {FAMILIES}")
    REGISTRY[method.name] = method
    return method


def get_method(name) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; expected one of {names()}")
    return REGISTRY[name]


def names() -> list[str]:
    return list(REGISTRY)


def labels() -> dict[str, str]:
    return {m.name: m.label for m in REGISTRY.values()}


def label(name: str) -> str:
    return REGISTRY[name].label if name in REGISTRY else name


def marker(name: str) -> str:
    return REGISTRY[name].marker if name in REGISTRY else "o"


def family_members(family: str) -> list[str]:
    return [m.name for m in REGISTRY.values() if m.family == family]


def colours() -> dict[str, str]:
    return {m.name: m.colour for m in REGISTRY.values()}


def order(present) -> list[str]:
    """The methods in `present`, registry order first, unknown names after (sorted)."""
    present = list(dict.fromkeys(present))
    return [m for m in REGISTRY if m in present] + sorted(set(present) - set(REGISTRY))


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
    passes = {"lora_sb": "sb_num_samples", "gelora_sb": "sb_num_samples", "lora_ga": "sb_num_samples",
              "eva": "eva_examples"}
    if method.name in passes:  # the examples a data pass really saw: fewer when the training set is smaller
        info["data_pass_examples"] = min(getattr(ctx.config, passes[method.name]), len(ctx.train_tokens))
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


# ---------------------------------------------------------------- builders

def _full(ctx):
    """Every weight trains; the target matrices are copied first so that `_full_final` can
    record the spectrum of each update (the rank full fine-tuning really used, per block)."""
    targets = find_targets(ctx.model, ctx.config.target_modules or default_targets(ctx.model))
    ctx.model.gelora_start_weights = (targets, snapshot(targets))
    return ctx.model, {"note": "every parameter trains; budget ignored" if ctx.config.budget else "every parameter trains"}


def _full_final(model) -> dict:
    targets, start = model.__dict__.pop("gelora_start_weights")
    return {"update_spectra": update_spectra(targets, start)}


def _lora_at(ctx, block_ranks, info=None, **lora_kwargs):
    model = get_peft_model(ctx.model, ctx.peft_lora(block_ranks, **lora_kwargs))
    check_ranks(model, block_ranks, ctx.targets)
    return model, {"ranks": block_ranks, **(info or {})}


def _lora(ctx):
    given = ctx.config.block_ranks
    if given is None:
        return _lora_at(ctx, {k: ctx.rank() for k in ctx.shapes})
    if len(given) != len(ctx.shapes):
        raise ValueError(f"block_ranks has {len(given)} entries but the model has {len(ctx.shapes)} blocks")
    return _lora_at(ctx, dict(zip(ctx.shapes, given)))


def _gelora(ctx):
    allocation = ctx.allocation()
    return _lora_at(ctx, allocation.by_block, {"allocation": allocation.as_dict(),
                                               "unresolved_blocks": ctx.unresolved_blocks})


def _pissa(ctx):
    return _lora_at(ctx, {k: ctx.rank() for k in ctx.shapes}, init_lora_weights="pissa")


def _lora_ga(ctx):
    """LoRA-GA: the factors from the SVD of the average gradient over sb_num_samples examples."""
    block_ranks = {k: ctx.rank() for k in ctx.shapes}
    config = ctx.peft_lora(block_ranks, init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())
    ctx.model.to(ctx.device)
    loader = ctx.batches(torch.utils.data.Subset(ctx.train_tokens, range(min(ctx.config.sb_num_samples,
                                                                               len(ctx.train_tokens)))))

    def train_step():
        for batch in loader:
            ctx.model(**{k: v.to(ctx.device) for k, v in batch.items()}).loss.backward()

    with warnings.catch_warnings():  # PEFT counts backward passes with full hooks on frozen inputs: harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        preprocess_loraga(ctx.model, config, train_step)
    model = get_peft_model(ctx.model, config)
    check_ranks(model, block_ranks, ctx.targets)
    return model, {"ranks": block_ranks}


def _adalora(ctx):
    uniform, config = ctx.uniform(), ctx.config
    target_r = uniform.get("target_r", config.rank)
    init_r = uniform.get("init_r", int(math.ceil(1.5 * target_r)))
    tinit, tfinal = int(0.1 * ctx.total_steps), int(0.2 * ctx.total_steps)
    if ctx.total_steps - tinit - tfinal < 1:
        raise ValueError(f"AdaLoRA needs more training steps than {ctx.total_steps} for its schedule")
    model = get_peft_model(ctx.model, AdaLoraConfig(
        init_r=init_r, target_r=target_r, tinit=tinit, tfinal=tfinal, deltaT=max(1, ctx.total_steps // 50),
        total_step=ctx.total_steps, orth_reg_weight=config.adalora_orth_reg,
        lora_alpha=config.lora_scale * target_r, lora_dropout=config.dropout,
        target_modules=list(ctx.targets), task_type=ctx.task_type))
    return model, {"ranks": {"init_r": init_r, "target_r": target_r},
                   "expected_adapter_params": adalora_params(ctx.shapes, init_r),
                   "budget_params": adalora_params(ctx.shapes, target_r)}


class AdaLoraAllocation(TrainerCallback):
    """AdaLoRA reallocates ranks from the gradients: after every optimiser step, before the
    gradients are zeroed (the Trainer calls on_optimizer_step exactly there)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


def _adalora_final(model) -> dict:
    """AdaLoRA after training: the rank each module kept (non-zero singular values) and the
    parameters those ranks amount to, r (in + out + 1) per module."""
    from peft.tuners.adalora import AdaLoraLayer

    ranks, total = {}, 0
    for name, module in model.named_modules():
        if isinstance(module, AdaLoraLayer) and "default" in module.lora_E:
            kept = int((module.lora_E["default"] != 0).sum())
            ranks[re.sub(r"^(base_model\.model\.)+", "", name)] = kept
            total += kept * (module.in_features + module.out_features + 1)
    return {"final_ranks": ranks, "effective_adapter_params": total}


def _eva(ctx):
    config, rank = ctx.config, ctx.rank()
    peft_config = LoraConfig(r=rank, lora_alpha=config.lora_scale * rank, target_modules=list(ctx.targets),
                             lora_dropout=config.dropout, init_lora_weights="eva", eva_config=EvaConfig(rho=2.0),
                             task_type=ctx.task_type)
    model = get_peft_model(ctx.model.to(ctx.device), peft_config, low_cpu_mem_usage=True)
    subset = torch.utils.data.Subset(ctx.train_tokens, range(min(config.eva_examples, len(ctx.train_tokens))))
    initialize_lora_eva_weights(model, ctx.batches(subset, drop_labels=config.task != "generation"),
                                gather_distributed_inputs=False,  # every process already sees the same batches
                                show_progress_bar=config.progress)
    realised = realised_ranks(model)
    return model, {"ranks": realised, "expected_adapter_params": sum(
        realised.get(n, 0) * (i + o) for mats in ctx.shapes.values() for n, i, o in mats)}


def _sb_update(ctx):
    init_lr = ctx.config.sb_init_lr or (ctx.lr / max(1, ctx.warmup_steps))
    ctx.model.to(ctx.device)
    return estimate_update(ctx.model, ctx.batches(), ctx.targets, ctx.config.sb_num_samples, init_lr), init_lr


def _lora_xs(ctx):
    rank = ctx.rank()
    apply_lora_sb(ctx.model, rank=rank, target_modules=ctx.targets, init="lora_xs", dropout=ctx.config.dropout,
                  seed=ctx.config.seed)
    return ctx.model, {"ranks": {k: rank for k in ctx.shapes}}


def _lora_sb(ctx):
    rank = ctx.rank()
    update, init_lr = _sb_update(ctx)
    apply_lora_sb(ctx.model, update, rank=rank, target_modules=ctx.targets, dropout=ctx.config.dropout,
                  seed=ctx.config.seed)
    return ctx.model, {"sb_init_lr": init_lr, "ranks": {k: rank for k in ctx.shapes}}


def _gelora_sb(ctx):
    allocation = ctx.allocation()
    update, init_lr = _sb_update(ctx)
    apply_lora_sb(ctx.model, update, ranks=allocation.by_block, target_modules=ctx.targets,
                  dropout=ctx.config.dropout, seed=ctx.config.seed)
    return ctx.model, {"allocation": allocation.as_dict(), "unresolved_blocks": ctx.unresolved_blocks,
                       "sb_init_lr": init_lr, "ranks": allocation.by_block}


# ---------------------------------------------------------------- the methods
# Colours: seaborn's colorblind palette, fixed per method so that every figure agrees.

register(Method("full", "Full FT", "full", 5e-5, "#0173b2", "o", _full, None, finish=_full_final,
                description="every weight trains"))
register(Method("lora", "LoRA", "lora", 2e-3, "#de8f05", "s", _lora, lora_params, "lora",
                description="uniform rank, B = 0 at the start (Hu et al.)"))
register(Method("gelora", "GeLoRA", "lora", 2e-3, "#029e73", "D", _gelora, lora_params, uses_profile=True,
                description="per-block ranks from the intrinsic-dimension profile (Ed-dib et al.)"))
register(Method("adalora", "AdaLoRA", "lora", 2e-3, "#d55e00", "^", _adalora, None, "adalora",
                callbacks=lambda: [AdaLoraAllocation()], finish=_adalora_final,
                description="SVD-form adapters pruned to the budget during training (Zhang et al.)"))
register(Method("eva", "EVA", "lora", 2e-3, "#cc78bc", "v", _eva, None, "eva",
                description="data-driven init from activation SVD, ranks redistributed (Paischer et al.)"))
register(Method("lora_xs", "LoRA-XS", "lora_xs", 5e-3, "#ca9161", "P", _lora_xs, lora_sb_params, "lora_xs",
                description="B, A from the SVD of W0, only R trains (Balazy et al.)"))
register(Method("lora_sb", "LoRA-SB", "lora_xs", 5e-3, "#fbafe4", "X", _lora_sb, lora_sb_params, "lora_sb",
                description="LoRA-XS initialised from the first full fine-tuning step (Ponkshe et al.)"))
register(Method("gelora_sb", "GeLoRA-SB", "lora_xs", 5e-3, "#949494", "*", _gelora_sb, lora_sb_params,
                uses_profile=True, ranks_adapter="lora_sb", description="LoRA-SB cores with GeLoRA's per-block ranks"))
register(Method("lora_ga", "LoRA-GA", "lora", 2e-3, "#56b4e9", "<", _lora_ga, lora_params, "lora",
                description="LoRA factors from the SVD of the first gradient (Wang et al.; PEFT)"))
register(Method("pissa", "PiSSA", "lora", 2e-3, "#7f3c8d", ">", _pissa, lora_params, "lora",
                description="LoRA factors from the principal singular vectors of W0 (Meng et al.; PEFT)"))

