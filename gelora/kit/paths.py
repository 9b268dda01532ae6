"""Where the kit's files are: the checkout (notebooks/, data/, results/), paths from parameters
resolved against it, and paths shown to readers without this machine's prefix."""
from __future__ import annotations

from pathlib import Path


def repo_root() -> Path:
    """The checkout holding notebooks/ and data/ (paths in profiles are relative to it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "notebooks").is_dir():
        raise FileNotFoundError(f"no notebooks/ beside the package at {root}: run from a clone of the repository")
    return root


def resolve(path: str | Path) -> Path:
    """A path from a parameter: absolute as is, relative ones from the repository root (so a
    notebook opened in JupyterLab and the pipeline write to the same place)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root() / path


def shown(path: str | Path) -> str:
    """A path as a reader should see it in an output: relative to the repository root when it
    lies inside (no machine-specific prefix in executed notebooks), else as given."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def notebooks() -> list[Path]:
    found = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError("no numbered notebooks under notebooks/")
    return found
