"""Greedy generation in batches and exact-match scoring of the answers, for causal-LM tasks.

A response is scored by its answer: the text after the last `MARKER` (`####`, as GSM8K writes it)
when the reference response has one, else the whole response; both sides are compared after the
same normalisation (first line, spaces collapsed, case folded, thousands separators and a
trailing `.0` dropped from numbers). Generation pads on the left, so every prompt ends where its
answer begins, and stops at the end-of-sequence token or after `max_new_tokens`.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from gelora.core.checks import check_whole
from gelora.data.tasks import TextDataset, format_prompt

MARKER = "####"


def answer(text: str, marked: bool) -> str:
    """The normalised answer of a response: after the last MARKER when `marked` (empty when the
    marker is missing, and an empty answer never matches), else the response's first line."""
    if marked:
        if MARKER not in text:
            return ""
        text = text.rsplit(MARKER, 1)[1]
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    line = re.sub(r"\s+", " ", line).strip().casefold().rstrip(".")
    number = line.replace(",", "").replace("$", "")
    if re.fullmatch(r"-?\d+(\.0+)?", number):
        return str(int(float(number)))
    return line


def exact_match(generated: list[str], references: list[str]) -> np.ndarray:
    """1.0 where the generated answer equals the reference's (see `answer`), else 0.0."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated responses for {len(references)} references")
    return np.array([float(answer(g, MARKER in r) == answer(r, MARKER in r) and answer(r, MARKER in r) != "")
                     for g, r in zip(generated, references)], dtype=np.float32)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], form: str = "plain", max_new_tokens: int = 32,
             batch_size: int = 32, max_length: int | None = None) -> list[str]:
    """The greedy responses to `prompts` (in `form`, see `data.prompt_format`), decoded without
    special tokens. Prompts are batched longest first (little padding), padded on the left and
    cut to their last `max_length` tokens; the order of the answers is the order of the prompts."""
    check_whole("max_new_tokens", max_new_tokens, 1)
    check_whole("batch_size", batch_size, 1)
    texts = [format_prompt(tokenizer, p, form) for p in prompts]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if max_length is not None:
        encoded = [ids[-max_length:] for ids in encoded]
    order = np.argsort([-len(ids) for ids in encoded], kind="stable")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = [""] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):  # left padding
                ids[j, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[j, width - len(encoded[i]):] = 1
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id, num_beams=1)
            for j, i in enumerate(rows):
                out[i] = tokenizer.decode(generated[j, width:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out


def score(model, tokenizer, dataset: TextDataset, form: str, max_new_tokens: int, batch_size: int = 32,
          max_length: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Per example of a generation dataset: exact match (1/0) of the greedy response, and the
    responses themselves."""
    if dataset.task != "generation":
        raise ValueError(f"exact match scores a generation dataset, got task {dataset.task!r}")
    responses = generate(model, tokenizer, dataset.texts, form, max_new_tokens, batch_size, max_length)
    return exact_match(responses, dataset.responses), responses
