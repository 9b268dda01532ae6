import pytest
import torch

from gelora.models.loading import load_model
from gelora.training.identity import run_identity


@pytest.mark.parametrize("name,task", [("minilm", "classification"), ("minilm", "regression"),
                                       ("tiny-bert", "classification"), ("tiny-llama", "generation"),
                                       ("tiny-llama", "classification")])
def test_every_builtin_model_loads_offline_and_trains(name, task):
    model, tokenizer = load_model(name, task, 3 if task == "classification" else None, seed=0)
    batch = tokenizer(["a fine film", "an awful, tedious film"], padding=True, return_tensors="pt")
    labels = {"classification": torch.tensor([0, 2]), "regression": torch.tensor([0.5, -1.0]),
              "generation": batch["input_ids"]}[task]
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    matrices = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.ndim == 2 and "embed" not in n]
    assert matrices and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in matrices), \
        [n for n, p in matrices if p.grad is None or not p.grad.abs().sum() > 0]


def test_minilm_is_the_pretrained_sentence_encoder():
    model, _ = load_model("minilm", "classification", 2)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_000_000


def test_tiny_models_are_seeded_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    first, _ = load_model("tiny-bert", seed=3)
    second, _ = load_model("tiny-bert", seed=3)
    other, _ = load_model("tiny-bert", seed=4)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not torch.equal(first.classifier.weight, other.classifier.weight)


def test_a_local_folder_loads_like_a_hub_model(tmp_path, tiny_bert):
    model, tokenizer = tiny_bert
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, tokenizer2 = load_model(str(tmp_path), "classification", 2)
    batch = tokenizer(["same outputs"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, again.eval()(**batch).logits)


def test_bad_names_and_mismatched_heads_raise(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    with pytest.raises(ValueError, match="unknown task"):
        load_model("tiny-bert", "translation")
    with pytest.raises(ValueError, match="encoder"):
        load_model("tiny-bert", "generation")
    with pytest.raises(ValueError, match="encoder"):
        load_model("minilm", "generation")
    with pytest.raises(ValueError, match="one output"):
        load_model("tiny-bert", "regression", num_labels=3)


def test_a_hub_model_pinned_to_a_revision_is_asked_for_at_that_revision(monkeypatch, tmp_path):
    """name@revision reaches transformers as revision=...; the identity keeps the revision, so a
    re-published model pinned to another commit is another run; '@' in a local path is a path."""
    import transformers

    from gelora.models.loading import hub_reference, load_tokenizer
    from gelora.training.config import FinetuneConfig

    assert hub_reference("org/model@0123abc") == ("org/model", {"revision": "0123abc"})
    assert hub_reference("org/model") == ("org/model", {}) and hub_reference("minilm") == ("minilm", {})
    local = tmp_path / "weights@v2"
    local.mkdir()
    assert hub_reference(str(local)) == (str(local), {})
    with pytest.raises(ValueError, match="hub-id@revision"):
        hub_reference("org/model@")

    asked = {}

    def record(name, **kwargs):
        asked.update(name=name, **kwargs)
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record)
    with pytest.raises(OSError):
        load_tokenizer("org/model@0123abc")
    assert asked == {"name": "org/model", "revision": "0123abc"}
    with pytest.warns(UserWarning, match="pin a commit"):
        bare = run_identity(FinetuneConfig("lora", model="org/unpinned", target_modules=["q"]))["content"]["model"]
    pinned = run_identity(FinetuneConfig("lora", model="org/unpinned@0123abc", target_modules=["q"]))["content"]["model"]
    assert (bare, pinned) == ("hub:org/unpinned", "hub:org/unpinned@0123abc")
