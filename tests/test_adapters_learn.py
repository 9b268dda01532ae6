"""Every registered method's adapter learns, not just the head: on a task a frozen random head
cannot solve (which of two key words a sentence holds, on a randomly initialised tiny BERT), the
head is frozen after the registry builds the method, so only the adapter (or, for full
fine-tuning, the body) can move the prediction. Each method must start near chance, end near
perfect on held-out sentences, leave the head bit-for-bit unchanged and move its adapter."""
import copy

import numpy as np
import pytest
import torch

from gelora.data.tasks import TextDataset, seeded_loader, tokenize
from gelora.methods import registry as methods
from gelora.models.loading import load_model
from gelora.training.apply import adapt
from gelora.training.loop import is_head, train_steps

FILLER = "the a of and to in is it that was for on with as his they at be this from".split()
KEYS = ("apple", "river")
STEPS = 60
# rates for 60 steps on a random tiny model: cores (r x r) and AdaLoRA (E starts at 0) need far more
RATES = {"full": 1e-3, "lora": 1e-2, "lora_xs": 3e-1}
SPECIAL = {"adalora": 2e-1}
BUDGET = {"lora": 4096, "lora_xs": 512}  # LoRA r = 4 on 8 matrices of 128 x 128; cores of r = 8


def sentences(n: int, seed: int):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, 7))
        words.insert(int(rng.integers(8)), KEYS[label])
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def accuracy(model, tokenizer, texts, labels) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    model.train()
    return float((logits.argmax(-1).numpy() == labels).mean())


@pytest.fixture(scope="module")
def task():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from more, and loses much beside other jobs
    texts, labels = sentences(256, 0)
    train = TextDataset("keyword", "train", texts, labels, "classification", list(KEYS))
    model, tokenizer = load_model("tiny-bert", "classification", 2, seed=0)
    yield train, sentences(200, 1), model, tokenizer
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", methods.names())
def test_the_adapter_learns_with_the_head_frozen(task, name):
    train, (test_texts, test_labels), base, tokenizer = task
    method = methods.get_method(name)
    settings = dict(max_length=16, batch_size=16, sb_num_samples=32, eva_examples=64, probe_examples=128, progress=False)
    if method.family != "full":
        settings["budget"] = BUDGET[method.family]
    lr = SPECIAL.get(name, RATES[method.family])
    model, _ = adapt(name, copy.deepcopy(base), tokenizer, train, steps=STEPS, lr=lr, **settings)
    for parameter_name, parameter in model.named_parameters():
        if is_head(parameter_name):
            parameter.requires_grad_(False)
    head = {n: p.detach().clone() for n, p in model.named_parameters() if is_head(n)}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert head and trained and not set(head) & set(trained)
    before = accuracy(model, tokenizer, test_texts, test_labels)
    torch.manual_seed(0)
    batches = seeded_loader(tokenize(train, tokenizer, 16), tokenizer, "classification", 16, 0, False, True)
    train_steps(model, batches, STEPS, lr)
    after = accuracy(model, tokenizer, test_texts, test_labels)
    assert 0.35 <= before <= 0.65, before  # the frozen random head alone: chance
    assert after >= 0.9 and after - before >= 0.3, (before, after)
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], value) for n, value in head.items())  # the head did not move
    moved = [n for n, value in trained.items() if not torch.equal(now[n].detach(), value)]
    assert len(moved) >= 0.9 * len(trained), f"{len(moved)} of {len(trained)} trainable tensors moved"
