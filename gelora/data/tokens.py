"""Tokenised examples: prompts in the model's chat template or plain, prompt-masked labels for
generation, and seeded, length-grouped loaders with dynamic padding."""
from __future__ import annotations

import numpy as np
import torch

from gelora.data.dataset import TextDataset

PROMPT_FORMATS = ("auto", "chat", "plain")


class TokenizedDataset(torch.utils.data.Dataset):
    """Tokenised examples as dicts of lists, padded later by a collator (dynamic padding)."""

    def __init__(self, features: list[dict]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.features[i]


def disjoint_halves(tokens: TokenizedDataset, first: int, second: int) -> tuple[TokenizedDataset, TokenizedDataset]:
    """The examples cut into two halves that share none, the first holding at least `first`
    examples and the second `second`: an estimate is judged against a reference made from other
    examples (shared examples would inflate their agreement)."""
    half = len(tokens) // 2
    if first > half or second > len(tokens) - half:
        raise ValueError(f"two disjoint halves of {first} and {second} examples need {2 * max(first, second)} "
                         f"examples; there are {len(tokens)}")
    return TokenizedDataset(tokens.features[:half]), TokenizedDataset(tokens.features[half:])


def prompt_format(tokenizer, requested: str = "auto") -> str:
    """'chat' (the model's chat template) or 'plain' (the prompt as it is): `auto` takes the chat
    template when the tokenizer has one. Asking for 'chat' without a template is an error."""
    if requested not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {requested!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if requested == "chat" and not has_template:
        raise ValueError("prompt_format='chat' but the tokenizer has no chat template: use 'plain' or 'auto'")
    return requested if requested != "auto" else ("chat" if has_template else "plain")


def format_prompt(tokenizer, prompt: str, form: str) -> str:
    """The text the model reads before its response: the user turn and the assistant header of the
    chat template, or the prompt itself."""
    if form == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
    return prompt


def tokenize(dataset: TextDataset, tokenizer, max_length: int = 128, form: str = "plain") -> TokenizedDataset:
    """Tokenise for a model. Classification gets integer labels, regression float labels; for
    generation the labels are the response tokens (then the end-of-sequence token), with the
    prompt (in `form`: 'plain' or 'chat', see `prompt_format`) masked out (-100)."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if dataset.task == "generation":
        return TokenizedDataset(_tokenize_generation(dataset, tokenizer, max_length, form))
    encoded = tokenizer(dataset.texts, dataset.text_pairs, truncation=True, max_length=max_length)
    features = []
    for i in range(len(dataset)):
        item = {k: encoded[k][i] for k in encoded.keys()}
        if dataset.labels is not None:
            label = dataset.labels[i]
            item["labels"] = float(label) if dataset.task == "regression" else int(label)
        features.append(item)
    return TokenizedDataset(features)


def _tokenize_generation(dataset: TextDataset, tokenizer, max_length: int, form: str) -> list[dict]:
    if form not in ("chat", "plain"):
        raise ValueError(f"form must be 'chat' or 'plain', got {form!r}")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    features = []
    for prompt, response in zip(dataset.texts, dataset.responses):
        prompt_ids = tokenizer(format_prompt(tokenizer, prompt, form), add_special_tokens=False)["input_ids"]
        response = response.strip() if form == "chat" else response  # the template ends the header with a newline
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + eos
        if len(response_ids) >= max_length:
            raise ValueError(f"a response of {len(response_ids)} tokens does not fit max_length={max_length}")
        prompt_ids = prompt_ids[-(max_length - len(response_ids)):]  # keep the end of a long prompt
        ids = prompt_ids + response_ids
        features.append({
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "labels": [-100] * len(prompt_ids) + response_ids,
        })
    return features


class ResponseLogits:
    """Pads a causal-LM batch (label-aware) and keeps the output layer to the positions that
    predict a response token: `logits_to_keep` lists the positions t whose next token is a response
    token in some row, and `labels` / `shift_labels` are those next tokens (-100 elsewhere), so the
    model computes the vocabulary-sized output and the loss only there. The loss is the same as on
    every position (the others are masked out of it anyway); on a 49k-word vocabulary the output
    layer is most of a step's work."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        self.pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    def __call__(self, features):
        batch = dict(self.pad(features))
        shifted = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)  # position t predicts t + 1
        keep = (shifted != -100).any(0).nonzero().squeeze(1)
        batch["logits_to_keep"] = keep
        batch["labels"] = batch["shift_labels"] = shifted[:, keep].contiguous()
        return batch


def collator(tokenizer, task: str):
    """The batch collator that fits the task: for generation, label-aware padding and the output
    layer on response positions only (`ResponseLogits`)."""
    from transformers import DataCollatorWithPadding

    if task == "generation":
        return ResponseLogits(tokenizer)
    return DataCollatorWithPadding(tokenizer)


def by_length(tokens: TokenizedDataset) -> tuple[TokenizedDataset, np.ndarray]:
    """The examples sorted by length, longest first (evaluation batches then hold little padding),
    and the order: sorted[k] is tokens[order[k]]."""
    order = np.argsort([-len(f["input_ids"]) for f in tokens.features], kind="stable")
    return TokenizedDataset([tokens.features[i] for i in order]), order


def seeded_loader(tokens, tokenizer, task: str, batch_size: int, seed: int, drop_labels: bool = False,
                  group_by_length: bool = True):
    """Shuffled batches in one seeded order (the global RNG is not used), so a pass over the first
    n examples always sees the same n. group_by_length: batches of similar lengths (the Trainer's
    LengthGroupedSampler: shuffled mega-batches sorted by length), so little padding is computed.
    drop_labels: for passes that need inputs only (EVA)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    collate = collator(tokenizer, task)

    def collate_fn(features):
        batch = dict(collate(features))
        if drop_labels:  # the inputs only (for generation also the kept positions' targets)
            batch = {k: v for k, v in batch.items() if k not in ("labels", "shift_labels", "logits_to_keep")}
        return batch

    generator = torch.Generator().manual_seed(seed)
    if group_by_length:
        lengths = [len(tokens[i]["input_ids"]) for i in range(len(tokens))]
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
        return torch.utils.data.DataLoader(tokens, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn)
    return torch.utils.data.DataLoader(tokens, batch_size=batch_size, shuffle=True, generator=generator,
                                       collate_fn=collate_fn)
