"""A run's identity: the settings that decide its numbers, what the files it reads contain, what
the base weights are, the ranks a GeLoRA profile allocates and the process layout. Two runs with
equal identities compute the same thing, so a record is reused only for its own identity
(`run_identity`), and its file is named by it (`run_id`). The config itself does no I/O; this
module reads files and weights, once per file and model in a process."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

from gelora.core.plan import world_size
from gelora.methods.context import gelora_allocation
from gelora.methods.registry import get_method

# Settings that do not change the numbers, left out of the run's identity.
# processes: in the identity's world_size; id_profile: by the ranks it allocates (identity's
# content.profile), not by where the file lies or its last digits, so a committed record is reused
# in a checkout at another path or a profile recomputed on another machine
NOT_IDENTITY = ("output_dir", "force", "progress", "cache_dir", "processes", "id_profile", "save_adapter")
# Settings added after records were committed: in the identity only when they differ from these
# values, so every earlier record keeps its name (a run at these values computes what it did before
# they existed). These values are frozen: tests/test_train.py fails if a default moves away from them.
ADDED_LATER = {"block_ranks": None, "prompt_format": "auto", "max_new_tokens": 48, "text_column": "text",
               "label_column": "label"}

# Methods' own settings that were FinetuneConfig fields when the committed records were made: every
# run's identity spells them (the given value or the declared default) as it did then, so every
# record keeps its name. Any other method's setting counts where the run's method declares it or
# where it is given. The defaults are frozen: tests/test_identity.py fails if a method moves one.
IN_EVERY_IDENTITY = {"sb_num_samples": 64, "sb_init_lr": None, "eva_examples": 256, "adalora_orth_reg": 0.1,
                     "probe_examples": 1000, "probe_pooling": "mean", "gelora_offset": 1.0, "gelora_min_rank": 0,
                     "gelora_max_rank": None, "gelora_rounding": "ceil", "block_ranks": None, "id_profile": None}

_HASHES: dict = {}
_WARNED: set = set()  # unpinned hub models already warned about


def _file_hash(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, modification time) for this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        from gelora.data.tasks import file_sha256

        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def _folder_hash(folder: Path) -> str:
    """One hash over every file of a model folder (weights, config, tokenizer), by name and content."""
    digest = hashlib.sha256()
    def counts(path: Path) -> bool:  # hidden files and folders (.cache locks) and bytecode decide nothing
        parts = path.relative_to(folder).parts
        return path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in parts)

    for path in sorted(p for p in folder.rglob("*") if counts(p)):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + _file_hash(path).encode())
    return digest.hexdigest()


def model_fingerprint(name: str, seed: int) -> str:
    """What the base weights are: a hash of the files of the packaged model or a local folder, the
    weights themselves for a model built in-process (they depend on the seed and on the library
    versions), and the name for a hub id: `org/model@commit` pins the weights, a bare id cannot be
    checked offline (a warning says so)."""
    from gelora.models.loading import BUILTIN, load_model, minilm_path

    if name == "minilm":
        return "files:" + _folder_hash(minilm_path())
    if name == "smollm2":  # the float32 copy is a function of the packaged file
        from gelora.models.loading import smollm2_gguf

        return "gguf:" + _file_hash(smollm2_gguf())
    if name in BUILTIN:
        key = ("in-process", name, seed)
        if key not in _HASHES:
            from gelora.probing.probe import fingerprint

            model, _ = load_model(name, "features", seed=seed)
            _HASHES[key] = "weights:" + fingerprint(model, full=True)
        return _HASHES[key]
    if Path(name).is_dir():
        return "files:" + _folder_hash(Path(name))
    repo, _, revision = name.rpartition("@") if "@" in name else (name, "", "")
    if revision and not COMMIT.fullmatch(revision):  # a branch or tag moves: only a commit pins weights
        commit = cached_commit(repo, revision)
        if commit is not None:
            return f"hub:{repo}@{commit}"
    if (not revision or not COMMIT.fullmatch(revision)) and name not in _WARNED:  # said once per process
        _WARNED.add(name)
        what = f"by {revision!r}, a branch or tag that can move," if revision else "by its name only"
        warnings.warn(f"hub model {name!r} is identified {what}: pin a commit ({repo}@<commit>) so that a "
                      "re-published model cannot reuse these records", stacklevel=2)
    return "hub:" + name  # with its @commit when pinned


COMMIT = re.compile(r"[0-9a-f]{40}")  # a full commit hash: the only revision that names fixed weights


def cached_commit(repo: str, revision: str) -> str | None:
    """The commit a branch or tag pointed at when the model was downloaded here (the hub cache's
    refs file), or None when this machine has not fetched it."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    ref = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / revision
    try:
        commit = ref.read_text().strip() if ref.is_file() else ""
    except OSError:
        return None
    return commit if COMMIT.fullmatch(commit) else None


def content_fingerprints(config) -> dict:
    """sha256 of every data file the run reads, the model fingerprint, and for a GeLoRA run given
    an ID profile the ranks that profile decides (not its bytes: a profile recomputed elsewhere
    differs in its last digits and allocates the same ranks, so it reuses the run)."""
    from gelora.data.tasks import data_files

    data = {}
    for split in ("train", "validation", config.test_split):
        data[split] = [_file_hash(p) for p in data_files(config.dataset, split) if p.is_file()]
    uses = get_method(config.method).uses_profile and config.id_profile is not None
    profile = {"ranks": profile_ranks(config)} if uses and Path(config.id_profile).is_file() else None
    content = {"data": data, "profile": profile, "model": model_fingerprint(config.model, config.seed)}
    if Path(config.dataset).is_file():  # one file divided by a rule: the rule decides what each split holds
        from gelora.data.tasks import FILE_SPLIT

        content["file_split"] = FILE_SPLIT
    return content


_SHAPES: dict = {}


def profile_ranks(config, dimensions=None) -> list[int]:
    """The per-block ranks a GeLoRA run trains with: its profile (or the given per-layer
    `dimensions`) allocated as the method does (`methods.gelora_allocation`), on the block shapes
    of the base model, which is loaded once per process and model."""
    from gelora.models.loading import load_model
    from gelora.models.targets import block_shapes, default_targets
    from gelora.probing.probe import load_profile

    key = (config.model, config.seed, tuple(config.target_modules or ()))
    if key not in _SHAPES:
        from transformers.utils import logging

        shown = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # naming a run shows no loading bar
        try:
            model, _ = load_model(config.model, "features", seed=config.seed)
        finally:
            if shown:
                logging.enable_progress_bar()
        _SHAPES[key] = block_shapes(model, config.target_modules or default_targets(model))
    method = get_method(config.method)
    profile = load_profile(config.id_profile) if dimensions is None else list(dimensions)
    allocation = gelora_allocation(profile, config, _SHAPES[key], method.ranks_adapter)
    return [int(r) for r in allocation.ranks]


def settings(config) -> dict:
    """The settings that decide the numbers (output folder, cache and display left out), the
    methods' own settings as IN_EVERY_IDENTITY says. Target modules left out (None) are the
    architecture's default, spelled out as PEFT names them, so omitting them and naming them (in
    any order) give the same run."""
    values = {k: v for k, v in dataclasses.asdict(config).items() if k != "options"}
    own = get_method(config.method).settings
    values.update({name: getattr(config, name) for name in IN_EVERY_IDENTITY})
    values.update({f.name: getattr(config, f.name) for f in (dataclasses.fields(own) if own else ())})
    values.update(config.options)
    values = {k: v for k, v in values.items() if k not in NOT_IDENTITY and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    default = _default_targets(config.model)
    if default and (values["target_modules"] is None or set(values["target_modules"]) == set(default)):
        values["target_modules"] = default
    return values


def run_identity(config) -> dict:
    """Everything that decides the run's numbers: the settings, the content of the data files
    (sha256), the ranks a GeLoRA profile allocates, the base model's weights (a fingerprint) and
    the process layout. Cheap after the first call in a process: files' hashes are remembered by
    path, size and modification time (an edited file is hashed again), model fingerprints by name."""
    processes = config.processes if config.processes is not None else world_size()
    return {"settings": settings(config), "content": content_fingerprints(config), "world_size": processes}


def identity_digest(identity: dict) -> str:
    """The last part of a record's name: the first 10 hex digits of the identity's sha256."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


def run_id(config) -> str:
    """A record's file name: dataset, model, method, seed and the identity's hash, in characters
    that shell tools read as a name (a local path gives its last part: never a leading `-`)."""
    digest = identity_digest(run_identity(config))
    model = Path(config.model).name if os.sep in config.model else config.model
    return f"{_name_part(config.dataset)}__{_name_part(model)}__{config.method}__seed{config.seed}__{digest}"


def _name_part(name: str) -> str:
    """`name` for a file name: an existing local path by its last part (a file without its
    extension), `/` as `-` (hub ids), anything outside letters, digits and `._:+-` as `-`, no
    leading `-` or `.`."""
    if not name.startswith("hf:") and Path(name).exists():
        name = Path(name).stem if Path(name).is_file() else Path(name).name
    safe = re.sub(r"[^A-Za-z0-9._:+-]", "-", name.replace("/", "-")).lstrip("-.")
    return safe or "data"


_DEFAULT_TARGETS: dict = {}


def _default_targets(model: str) -> list[str]:
    """PEFT's default LoRA targets for `model`'s architecture ([] where it cannot be known offline)."""
    if model not in _DEFAULT_TARGETS:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

        from gelora.models.loading import model_type

        _DEFAULT_TARGETS[model] = list(MAPPING.get(model_type(model), []))
    return _DEFAULT_TARGETS[model]
