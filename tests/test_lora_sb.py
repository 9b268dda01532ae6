import copy
import hashlib
import json
import random

import numpy as np
import pytest
import torch
from peft import PeftModel

from gelora.adapters.files import export_peft_lora, load_adapter, save_adapter
from gelora.adapters.lora_sb import apply_lora_sb, estimate_update, init_lora_sb
from gelora.adapters.lora_xs import (
    LoraXSLayer,
    adapter_layers,
    adapters_disabled,
    add_lora_xs,
    disable_adapters,
    enable_adapters,
    init_lora_xs,
    merge_adapters,
    merge_and_unload,
    remove_lora_xs,
    truncated_svd,
    unmerge_adapters,
)
from gelora.models.loading import load_model

from .conftest import make_batches, outputs

TARGETS = ["query", "value"]


def hand_update(model, batches, n, lr):
    """-lr * sign(sum of per-example gradients), one example at a time."""
    sums = {}
    seen = 0
    for batch in batches:
        for i in range(len(batch["input_ids"])):
            if seen == n:
                break
            model.zero_grad()
            model(**{k: v[i:i + 1] for k, v in batch.items()}).loss.backward()
            for name, module in model.named_modules():
                if name.endswith(tuple("." + t for t in TARGETS)):
                    sums[name] = sums.get(name, 0) + module.weight.grad.clone()
            seen += 1
    model.zero_grad()
    return {k: -lr * torch.sign(v) for k, v in sums.items()}


def test_update_is_the_sign_of_the_summed_gradients(tiny_bert, batches):
    model, _ = tiny_bert
    reference = hand_update(copy.deepcopy(model), batches, 20, 1e-3)
    update, grads = estimate_update(model, batches, TARGETS, num_samples=20, lr=1e-3, return_gradients=True)
    assert update.keys() == reference.keys()
    for name in update:
        assert update[name].dtype == torch.float32
        agree = (update[name] == reference[name]).float().mean()
        assert agree > 0.999  # only entries whose summed gradient is ~0 may flip sign
        assert torch.equal(update[name], -1e-3 * torch.sign(grads[name]))


def test_estimate_leaves_the_model_exactly_as_it_was(tiny_bert, batches):
    model, _ = tiny_bert
    model.train()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    estimate_update(model, batches, TARGETS, num_samples=16, lr=1e-3, train_mode=True)
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert flags == {k: p.requires_grad for k, p in model.named_parameters()}
    assert torch.equal(model.classifier.weight.grad, torch.ones_like(model.classifier.weight))
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is None
    assert torch.equal(states[0], torch.get_rng_state()) and states[1] == random.getstate()
    assert np.array_equal(states[2], np.random.get_state()[1])


def test_estimate_errors(tiny_bert, batches):
    model, _ = tiny_bert
    with pytest.raises(ValueError, match="fewer than num_samples"):
        estimate_update(model, batches, TARGETS, num_samples=1000, lr=1e-3)
    with pytest.raises(ValueError, match="match no module"):
        estimate_update(model, batches, ["qkv"], num_samples=4, lr=1e-3)
    with pytest.raises(ValueError, match="labels"):
        estimate_update(model, [{k: v for k, v in batches[0].items() if k != "labels"}], TARGETS, 4, 1e-3)


@pytest.fixture
def adapted(tiny_bert, batches):
    model, _ = tiny_bert
    base = copy.deepcopy(model)
    update = estimate_update(model, batches, TARGETS, num_samples=32, lr=1e-2)
    apply_lora_sb(model, update, rank=4, target_modules=TARGETS)
    return model, base, update


def test_factors_are_the_truncated_svd(adapted):
    model, _, update = adapted
    for name, layer in adapter_layers(model).items():
        U, S, Vh = torch.linalg.svd(update[name].double())
        best = (U[:, :4] * S[:4]) @ Vh[:4]
        torch.testing.assert_close(layer.delta_weight().double(), best, atol=1e-6, rtol=1e-5)
        eye = torch.eye(4)
        torch.testing.assert_close(layer.lora_B.T @ layer.lora_B, eye, atol=1e-5, rtol=0)
        torch.testing.assert_close(layer.lora_A @ layer.lora_A.T, eye, atol=1e-5, rtol=0)
        assert torch.count_nonzero(layer.lora_R - torch.diag(torch.diagonal(layer.lora_R))) == 0


def test_step_zero_equals_the_base_model_plus_the_truncation(adapted, batches):
    model, base, update = adapted
    expected = copy.deepcopy(base)
    for name, dw in update.items():
        U, S, Vh = torch.linalg.svd(dw.double())
        expected.get_submodule(name).weight.data += ((U[:, :4] * S[:4]) @ Vh[:4]).float()
    torch.testing.assert_close(outputs(model, batches[0]), outputs(expected, batches[0]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outputs(model, batches[0]), outputs(base, batches[0]))  # not a no-op


def test_only_the_cores_and_the_head_train(adapted, batches):
    model, _, _ = adapted
    # as attached: only the cores and the head are trainable (the flags as the library set them)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith("lora_R") or n.startswith("classifier.") for n in trainable)
    assert any(n.endswith("lora_R") for n in trainable) and any(n.startswith("classifier.") for n in trainable)
    # B and A are buffers: even unfreezing everything (what PEFT's set_adapter or a careless call does)
    # cannot make them trainable
    model.requires_grad_(True)
    assert not any("lora_A" in n or "lora_B" in n for n, _ in model.named_parameters())
    assert any("lora_A" in n for n, _ in model.named_buffers()) and any("lora_B" in n for n, _ in model.named_buffers())
    model.requires_grad_(False)
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    model(**batches[0]).loss.backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith("lora_R") or k.startswith("classifier.") for k in changed)


def test_apply_freezes_everything_but_cores_and_head(adapted):
    model, _, _ = adapted
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len([n for n in trainable if n.endswith("lora_R")]) == 8
    assert set(n for n in trainable if not n.endswith("lora_R")) == {"classifier.weight", "classifier.bias"}
    assert model.lora_xs_config.ranks == {n: 4 for n in adapter_layers(model)}


def test_merge_unmerge_and_plain_model(adapted, batches):
    model, _, _ = adapted
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.lora_R.add_(torch.randn_like(layer.lora_R) * 0.1)
    reference = outputs(model, batches[1])
    layer = next(iter(adapter_layers(model).values()))
    weight = layer.base_layer.weight.clone()
    layer.merge()
    torch.testing.assert_close(outputs(model, batches[1]), reference, atol=1e-5, rtol=1e-5)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, weight, atol=1e-6, rtol=0)
    merge_and_unload(model)
    assert not adapter_layers(model) and isinstance(model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear)
    torch.testing.assert_close(outputs(model, batches[1]), reference, atol=1e-5, rtol=1e-5)


def test_save_load_identical_and_strict(adapted, batches, tmp_path):
    model, _, _ = adapted
    with torch.no_grad():
        model.classifier.weight.add_(0.5)
    save_adapter(model, tmp_path / "adapter")
    fresh, _ = load_model("tiny-bert", "classification", 2, seed=0)
    load_adapter(fresh.eval(), tmp_path / "adapter")
    assert torch.equal(outputs(fresh, batches[0]), outputs(model, batches[0]))
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "adapter" / "lora_xs_adapter.safetensors"))

    def rewrite(new_tensors):  # a consistent file with other keys: its checksum updated too
        save_file(new_tensors, str(tmp_path / "adapter" / "lora_xs_adapter.safetensors"))
        config_path = tmp_path / "adapter" / "lora_xs_config.json"
        config = json.loads(config_path.read_text())
        config["weights_sha256"] = hashlib.sha256((tmp_path / "adapter" / "lora_xs_adapter.safetensors").read_bytes()).hexdigest()
        config_path.write_text(json.dumps(config))

    missing = dict(tensors)
    missing.pop(next(k for k in tensors if k.endswith("lora_R")))
    rewrite(missing)
    with pytest.raises(KeyError, match="missing"):
        load_adapter(load_model("tiny-bert", "classification", 2)[0], tmp_path / "adapter")
    rewrite(dict(tensors, extra=torch.zeros(1)))
    with pytest.raises(KeyError, match="unexpected"):
        load_adapter(load_model("tiny-bert", "classification", 2)[0], tmp_path / "adapter")


def test_exported_adapter_loads_in_plain_peft(adapted, batches, tmp_path):
    model, _, _ = adapted
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.lora_R.add_(torch.randn_like(layer.lora_R) * 0.1)
    export_peft_lora(model, tmp_path / "peft")
    fresh, _ = load_model("tiny-bert", "classification", 2, seed=0)
    peft_model = PeftModel.from_pretrained(fresh, tmp_path / "peft").eval()
    torch.testing.assert_close(outputs(peft_model, batches[0]), outputs(model, batches[0]), atol=1e-5, rtol=1e-5)


def test_per_block_ranks_and_lora_xs(tiny_bert, batches):
    model, _ = tiny_bert
    base = copy.deepcopy(model)
    update = estimate_update(model, batches, TARGETS, num_samples=16, lr=1e-3)
    apply_lora_sb(model, update, ranks=[2, 0, 3, 1], target_modules=TARGETS)
    assert sorted(layer.rank for layer in adapter_layers(model).values()) == [1, 1, 2, 2, 3, 3]
    xs = apply_lora_sb(copy.deepcopy(base), init="lora_xs", rank=4, target_modules=TARGETS, seed=0)
    assert (outputs(xs, batches[0]) - outputs(base, batches[0])).abs().max() < 1e-4  # nearly a no-op
    for name, layer in adapter_layers(xs).items():
        U, S, Vh = torch.linalg.svd(base.get_submodule(name).weight.double())
        torch.testing.assert_close(layer.lora_B.double().abs(), U[:, :4].abs(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exactly one of rank"):
        apply_lora_sb(copy.deepcopy(base), update, target_modules=TARGETS)
    with pytest.raises(ValueError, match="exceeds the smaller side of its 64 x 64"):
        apply_lora_sb(copy.deepcopy(base), update, rank=100, target_modules=TARGETS)
    with pytest.raises(ValueError, match="needs the update"):
        apply_lora_sb(copy.deepcopy(base), rank=2, target_modules=TARGETS)


def test_randomized_svd_is_close_and_leaves_the_rng():
    matrix = torch.sign(torch.randn(96, 64, generator=torch.Generator().manual_seed(0)))
    matrix += 3 * torch.outer(torch.linspace(-1, 1, 96), torch.linspace(1, 2, 64))
    state = torch.get_rng_state()
    U, S, Vh = truncated_svd(matrix, 4, "randomized", oversample=20, n_iter=6, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    exact = torch.linalg.svdvals(matrix.double())[:4]
    torch.testing.assert_close(S, exact, rtol=0.05, atol=0)


def test_conv1d_layers_of_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=32)).eval()
    ids = torch.randint(0, 50, (4, 10))
    batches = [{"input_ids": ids, "labels": ids}]
    update = estimate_update(model, batches, ["c_attn"], num_samples=4, lr=1e-2)
    assert update["transformer.h.0.attn.c_attn"].shape == (96, 32)
    base = copy.deepcopy(model)
    apply_lora_sb(model, update, rank=3, target_modules=["c_attn"])
    with torch.no_grad():
        adapted_logits = model(ids).logits
        merge_and_unload(model)
        torch.testing.assert_close(model(ids).logits, adapted_logits, atol=1e-5, rtol=1e-5)
        for name, dw in update.items():
            U, S, Vh = torch.linalg.svd(dw.double())
            base.get_submodule(name).weight.data += ((U[:, :3] * S[:3]) @ Vh[:3]).T.float()
        torch.testing.assert_close(base(ids).logits, adapted_logits, atol=1e-5, rtol=1e-5)


def test_trains_with_the_hf_trainer_and_keeps_weight_decay(tiny_bert, movie_small, tmp_path):
    from transformers import Trainer, TrainingArguments

    from gelora.data.tasks import collator, tokenize

    model, tokenizer = tiny_bert
    tokens = tokenize(movie_small, tokenizer, 32)
    batches = make_batches(movie_small, tokenizer)
    apply_lora_sb(model, estimate_update(model, batches, TARGETS, 16, 1e-3), rank=4, target_modules=TARGETS)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_R" not in k and "classifier" not in k}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, weight_decay=0.123,
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=tokens, data_collator=collator(tokenizer, "classification"))
    trainer.train()
    assert all(group["weight_decay"] in (0.0, 0.123) for group in trainer.optimizer.param_groups)
    assert any(group["weight_decay"] == 0.123 for group in trainer.optimizer.param_groups)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())


def test_layer_rejects_impossible_rank():
    with pytest.raises(ValueError, match="impossible"):
        LoraXSLayer(torch.nn.Linear(4, 3), 4)


def test_the_verbs_add_init_disable_merge_remove(tiny_bert, batches):
    """add (a no-op), init, disable (the base function back), merge/unmerge, remove (the
    original modules and flags back), each checked against the plain model."""
    model, _ = tiny_bert
    base = copy.deepcopy(model)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    originals = {n: model.get_submodule(n) for n in ("bert.encoder.layer.0.attention.self.query",
                                                      "bert.encoder.layer.3.attention.self.value")}
    add_lora_xs(model, rank=4, target_modules=TARGETS)
    assert len(adapter_layers(model)) == 8 and model.lora_xs_config.init is None
    torch.testing.assert_close(outputs(model, batches[0]), outputs(base, batches[0]), atol=0, rtol=0)
    init_lora_sb(model, estimate_update(model, batches, TARGETS, 16, 1e-2))
    adapted = outputs(model, batches[0])
    assert model.lora_xs_config.init == "lora_sb" and not torch.allclose(adapted, outputs(base, batches[0]))
    disable_adapters(model)
    torch.testing.assert_close(outputs(model, batches[0]), outputs(base, batches[0]), atol=0, rtol=0)
    enable_adapters(model)
    torch.testing.assert_close(outputs(model, batches[0]), adapted, atol=0, rtol=0)
    with adapters_disabled(model):
        torch.testing.assert_close(outputs(model, batches[0]), outputs(base, batches[0]), atol=0, rtol=0)
    torch.testing.assert_close(outputs(model, batches[0]), adapted, atol=0, rtol=0)
    merge_adapters(model)
    torch.testing.assert_close(outputs(model, batches[0]), adapted, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="merged"):
        disable_adapters(model)
    unmerge_adapters(model)
    remove_lora_xs(model)
    assert not adapter_layers(model) and not hasattr(model, "lora_xs_config")
    for name, module in originals.items():
        assert model.get_submodule(name) is module
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    torch.testing.assert_close(outputs(model, batches[0]), outputs(base, batches[0]), atol=1e-6, rtol=0)
    init_lora_xs(add_lora_xs(model, ranks={0: 2, 1: 2, 2: 2, 3: 2}, target_modules=TARGETS), seed=1)
    assert model.lora_xs_config.init == "lora_xs" and {layer.rank for layer in adapter_layers(model).values()} == {2}


def test_a_failed_apply_or_load_leaves_the_model_untouched(tiny_bert, batches, tmp_path):
    model, _ = tiny_bert
    before = {k: v.clone() for k, v in model.state_dict().items()}
    structure = [n for n, _ in model.named_modules()]
    update = estimate_update(model, batches, TARGETS, 16, 1e-2)
    wrong = dict(update)
    name = next(iter(wrong))
    wrong[name] = wrong[name][:, :10]
    with pytest.raises(ValueError, match="has shape"):
        apply_lora_sb(model, wrong, rank=4, target_modules=TARGETS)
    with pytest.raises(ValueError, match="no rank given for block 3"):
        apply_lora_sb(model, update, ranks=[2, 2, 2], target_modules=TARGETS)
    assert [n for n, _ in model.named_modules()] == structure and not adapter_layers(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    donor = apply_lora_sb(copy.deepcopy(model), update, rank=4, target_modules=TARGETS)
    save_adapter(donor, tmp_path / "a")
    other, _ = load_model("tiny-bert", "classification", 3, seed=0)  # a 3-class head: shapes differ
    structure = [n for n, _ in other.named_modules()]
    with pytest.raises(ValueError, match="shapes differ"):
        load_adapter(other, tmp_path / "a")
    assert [n for n, _ in other.named_modules()] == structure and not adapter_layers(other)
    with pytest.raises(FileNotFoundError, match="not a folder written by save_adapter"):
        load_adapter(other, tmp_path / "nothing")


def test_truncation_error_by_hand_and_exactly_zero_at_full_rank():
    """diag(3, 2, 1): dropping 2 and 1 leaves sqrt(5/14), dropping 1 sqrt(1/14), keeping all 0
    (exactly, not float noise); a random matrix matches ||M - M_r|| / ||M|| from its SVD."""
    from gelora.models.spectra import singular_values, truncation_error

    np.testing.assert_allclose(truncation_error([3.0, 2.0, 1.0], [0, 1, 2, 3]),
                               [1.0, np.sqrt(5 / 14), np.sqrt(1 / 14), 0.0], rtol=1e-15)
    M = torch.randn(30, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    errors = truncation_error(singular_values(M), range(21))
    assert errors[20] == 0.0
    for r in (1, 5, 19):
        direct = torch.linalg.matrix_norm(M - U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]) / torch.linalg.matrix_norm(M)
        assert errors[r] == pytest.approx(float(direct), rel=1e-12)
