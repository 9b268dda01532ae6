"""Shared fixtures. Nothing in the test suite may reach a hub: offline mode is forced here."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # forced, not defaulted: a shell that set it to 0 still runs offline
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from gelora.data.tasks import collator, load_dataset, tokenize  # noqa: E402
from gelora.kit import pipeline  # noqa: E402
from gelora.models.loading import load_model  # noqa: E402


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole pipeline on the smoke profile, once per session: (run folder, executed notebooks)."""
    run = tmp_path_factory.mktemp("smoke")
    outputs = pipeline.run("smoke", overrides=[f"figures_dir={run / 'figures'}"], run_dir=str(run), progress=False)
    return run, outputs


@pytest.fixture
def tiny_bert():
    model, tokenizer = load_model("tiny-bert", "classification", 2, seed=0)
    return model.eval(), tokenizer


@pytest.fixture
def tiny_llama():
    model, tokenizer = load_model("tiny-llama", "generation", seed=0)
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def movie_small():
    return load_dataset("movie-sentiment", "train").subset(64, seed=0)


def make_batches(dataset, tokenizer, batch_size=8, max_length=32, n=None):
    """Fixed, unshuffled batches (dicts of tensors) of a dataset."""
    tokens = tokenize(dataset if n is None else dataset.subset(n), tokenizer, max_length)
    collate = collator(tokenizer, dataset.task)
    return [dict(collate([tokens[i] for i in range(s, min(s + batch_size, len(tokens)))]))
            for s in range(0, len(tokens), batch_size)]


@pytest.fixture
def batches(tiny_bert, movie_small):
    return make_batches(movie_small, tiny_bert[1])


def outputs(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits
