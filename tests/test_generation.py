"""Causal-LM tasks: answers parsed and matched by hand, batched left-padded generation against
one prompt at a time, the output layer on response positions only against the loss on every
position, chat-template prompts, and a real run on the arithmetic set."""
import numpy as np
import pytest
import torch

from gelora.data.tasks import ResponseLogits, as_generation, load_dataset, prompt_format, tokenize
from gelora.models.loading import load_model
from gelora.training.generate import answer, exact_match, generate


def test_answers_by_hand():
    assert answer("3 + 4 = 7\n#### 7", marked=True) == "7"
    assert answer("#### 1,200.0\nmore text", marked=True) == "1200"
    assert answer("I think it is 7", marked=True) == ""  # no marker: no answer
    assert answer(" DESC\nsomething", marked=False) == "desc"
    assert answer("  Paris. ", marked=False) == "paris"
    scores = exact_match(["5 * 2 = 10\n#### 10", "#### 11", "no idea", "LOC", ""],
                         ["#### 10", "#### 10", "#### 10", " LOC", "#### 3"])
    assert scores.tolist() == [1, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="2 generated responses for 1 references"):
        exact_match(["a", "b"], ["a"])


def test_batched_left_padded_generation_equals_one_prompt_at_a_time():
    model, tokenizer = load_model("tiny-llama", "generation", seed=3)
    prompts = load_dataset("arithmetic", "validation").texts[:6]
    together = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=4)
    alone = [generate(model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert together == alone and any(together)


def test_the_output_layer_on_response_positions_gives_the_full_loss():
    model, tokenizer = load_model("tiny-llama", "generation", seed=1)
    data = as_generation(load_dataset("trec6", "train").subset(6))
    features = [tokenize(data, tokenizer, 64)[i] for i in range(6)]
    batch = ResponseLogits(tokenizer)(features)
    full = dict(ResponseLogits(tokenizer).pad(features))
    assert batch["logits_to_keep"].numel() < full["input_ids"].shape[1]  # fewer positions through the head
    with torch.no_grad():
        kept = model(**batch).loss
        everywhere = model(**full).loss  # the model's own shifted loss over every position
    assert kept.item() == pytest.approx(everywhere.item(), rel=1e-5)


def test_chat_prompts_use_the_template_and_mask_it():
    _, tokenizer = load_model("tiny-llama", "generation")
    assert prompt_format(tokenizer, "auto") == "plain"  # the tiny model's tokenizer has no template
    with pytest.raises(ValueError, match="no chat template"):
        prompt_format(tokenizer, "chat")
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert prompt_format(tokenizer, "auto") == "chat"
    data = load_dataset("arithmetic", "train").subset(2)
    item = tokenize(data, tokenizer, 256, "chat")[0]
    prompt_length = sum(label == -100 for label in item["labels"])
    assert tokenizer.decode(item["input_ids"][:prompt_length]).replace(" ", "").endswith("<assistant>")
    assert item["labels"][prompt_length:] == item["input_ids"][prompt_length:]


def test_a_generation_run_scores_exact_match_per_example(tmp_path):
    from gelora.training.train import finetune

    record = finetune(method="lora", model="tiny-llama", dataset="arithmetic", n_train=32, n_eval=8, n_test=8,
                      max_length=96, max_new_tokens=6, evals=2, output_dir=str(tmp_path), progress=False)
    assert record["metric"] == "exact_match" and record["prompt_format"] == "plain"
    assert 0 <= record["test"]["exact_match"] <= 1 and "accuracy" in record["evals"][0]
    with np.load(tmp_path / record["predictions"]["file"]) as stored:
        assert set(np.unique(stored["score"])) <= {0.0, 1.0} and len(stored["score"]) == 8
        assert stored["score"].mean() == pytest.approx(record["test"]["exact_match"])
