"""A run's identity beyond its settings: what the files it reads contain, what the base weights
are, and the ranks a GeLoRA profile allocates. Two runs with equal identities compute the same
thing, so a record is reused only for its own identity (`FinetuneConfig.identity`)."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from gelora.methods.registry import gelora_allocation, get_method

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
    if "@" not in name and name not in _WARNED:  # said once per process
        _WARNED.add(name)
        warnings.warn(f"hub model {name!r} is identified by its name only: pin a commit ({name}@<commit>) so that a "
                      "re-published model cannot reuse these records", stacklevel=2)
    return "hub:" + name  # with its @revision when pinned


def content_fingerprints(config) -> dict:
    """sha256 of every data file the run reads, the model fingerprint, and for a GeLoRA run given
    an ID profile the ranks that profile decides (not its bytes: a profile recomputed elsewhere
    differs in its last digits and allocates the same ranks, so it reuses the run)."""
    from gelora.data.tasks import data_files

    data = {}
    for split in ("train", "validation", config.test_split):
        data[split] = [_file_hash(p) for p in data_files(config.dataset, split) if p.is_file()]
    uses = get_method(config.method).uses_profile and config.profile is not None
    profile = {"ranks": profile_ranks(config)} if uses and Path(config.profile).is_file() else None
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
    profile = load_profile(config.profile) if dimensions is None else list(dimensions)
    allocation = gelora_allocation(profile, config, _SHAPES[key], method.ranks_adapter)
    return [int(r) for r in allocation.ranks]
