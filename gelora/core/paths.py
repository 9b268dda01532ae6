"""Paths written into records: the kit's own folders relative to the checkout, so that a committed
record reads the same on every machine and in every clone (no /home/<someone>/... in its config).

A relative path in a record is relative to the checkout (the folder above the package, where the
profiles' paths start too); a path outside it stays absolute."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: gelora/core/paths.py -> the repository


def portable(path: str | None) -> str | None:
    """`path` (absolute, or relative to the working folder) as a record writes it: relative to the
    checkout when it lies inside, else absolute."""
    if path is None:
        return None
    full = Path(os.path.abspath(Path(path).expanduser()))  # lexical: no file is read
    try:
        return full.relative_to(ROOT).as_posix()
    except ValueError:
        return str(full)


def from_record(path: str | None) -> str | None:
    """A path as a record wrote it, back to one this process can open (relative: from the checkout)."""
    if path is None:
        return None
    return str(path) if Path(path).is_absolute() else str(ROOT / path)
