"""What a run leaves behind: JSON records written atomically, the software versions, and the
peak memory of the run."""
from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
from pathlib import Path

import numpy as np
import peft
import psutil
import torch
import transformers

from gelora import __version__


class PeakMemory:
    """Peak memory of the run: CUDA allocator peak on GPU; on CPU the peak resident set size
    above the level at the start, sampled every 50 ms by a thread."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return self
        self._process = psutil.Process()
        self._start = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.05):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, self._process.memory_info().rss) - self._start) / 2**20
        return False


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "numpy": np.__version__, "gelora": __version__}


def atomic_write(path: Path, write, binary: bool = False) -> Path:
    """Call write(handle) on a temporary file with a unique name in the same folder, then rename it
    to `path`: a crash never leaves half a file, and two writers never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone who reads the run
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: Path, payload: dict) -> None:
    """A JSON record, written atomically."""
    atomic_write(path, lambda handle: json.dump(payload, handle, indent=2, default=jsonable))


def jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def check_writable(folder: str | os.PathLike, argument: str = "output_dir") -> Path:
    """Create `folder` and prove a file can be written there, before any work that would be lost."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{argument} {str(folder)!r} cannot hold the results: {error}") from None
    return folder


def read_record(path: Path, identity: dict) -> dict:
    """A stored record, reused only if it is this run's: valid JSON, a record, and the same
    identity (settings, file contents, model, process layout). Anything else is an error that
    names the file and how to redo the run."""
    redo = f"delete {path} or rerun with force=True (--force)"
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a valid record (truncated or edited: {error}); {redo}") from None
    if not isinstance(record, dict) or "identity" not in record or "test" not in record:
        raise ValueError(f"{path} is not a gelora run record (no identity or test results); {redo}")
    expected = json.loads(json.dumps(identity, sort_keys=True, default=jsonable))
    if record["identity"] != expected:
        differ = sorted(_differences(record["identity"], expected))
        raise ValueError(f"{path} holds another run's record (differs in {differ[:6]}); {redo}")
    return record


def _differences(stored, expected, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(expected, dict):
        out = []
        for key in set(stored) | set(expected):
            out += _differences(stored.get(key), expected.get(key), f"{prefix}{key}.")
        return out
    return [] if stored == expected else [prefix.rstrip(".")]
