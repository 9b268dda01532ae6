"""Keep a committed output whose rerun equals it up to floating-point noise, so that `make
reproduce` on another machine leaves `git status` clean except where a result really changed.

The same computation on another CPU or thread count sums in another order: an ID profile moves in
its 7th significant digit, a singular value in its 15th, a figure by a few anti-aliased pixels.
Those digits are the BLAS's, not the method's (the ranks trained are exact, and the run identity
covers only what can change them). A rewritten file that is tracked by git is compared with its
committed version, by kind: tables and JSON number by number (relative tolerance RTOL), executed
notebooks cell by cell once their timings are set aside (numbers in text outputs within RTOL,
images as below), PNG figures by matplotlib's image comparison (RMS of the pixel difference at
most IMAGE_TOL), a PDF with the PNG of the same figure. Equal: the committed bytes are put back.
Anything else (another column, a changed word, a number beyond RTOL) keeps the new file.
"""
from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import tempfile
from pathlib import Path

RTOL = 1e-5  # float32 sums carry about 7 significant digits; a difference of two (an ID increment) loses one or two
IMAGE_TOL = 0.3  # RMS over pixels on 0-255: seen 0.01-0.1 across machines; a line moved by 0.3 px gives 3.6
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def committed(path: Path, root: Path) -> bytes | None:
    """The file's bytes at git HEAD, or None (not tracked, or no git here)."""
    try:
        done = subprocess.run(["git", "show", f"HEAD:{path.resolve().relative_to(root.resolve()).as_posix()}"],
                              cwd=root, capture_output=True, check=False)
    except (OSError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):  # an empty cell of a table
        return math.isnan(a) and math.isnan(b)
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= RTOL * max(abs(a), abs(b)))


def same_text(a: str, b: str) -> bool:
    """Equal words, and numbers equal within RTOL."""
    if NUMBER.split(a) != NUMBER.split(b):
        return False
    return all(close(float(x), float(y)) for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)))


def same_data(a, b) -> bool:
    """Parsed JSON compared recursively: numbers within RTOL, strings as text, the rest exactly."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return close(float(a), float(b))
    if isinstance(a, str) and isinstance(b, str):
        return a == b or same_text(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_data(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b))
    return a == b


def same_png(a: bytes, b: bytes) -> bool:
    """matplotlib's own image comparison (the one its test suite uses), at IMAGE_TOL."""
    from matplotlib.testing.compare import compare_images

    with tempfile.TemporaryDirectory() as scratch:
        first, second = Path(scratch) / "a.png", Path(scratch) / "b.png"
        first.write_bytes(a)
        second.write_bytes(b)
        try:
            return compare_images(str(first), str(second), tol=IMAGE_TOL) is None
        except Exception:  # another size: not the same figure
            return False


def _output_data(output: dict) -> dict:
    return output.get("data", {}) if isinstance(output, dict) else {}


def _joined(outputs: list) -> list:
    """Consecutive stream outputs of one stream as one: the kernel splits printed text into
    chunks by timing, so the same text arrives in other pieces on another run."""
    joined: list = []
    for output in outputs:
        previous = joined[-1] if joined else None
        if (output.get("output_type") == "stream" and previous is not None
                and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
            joined[-1] = dict(previous, text="".join(previous.get("text", "")) + "".join(output.get("text", "")))
        else:
            joined.append(output)
    return joined


def same_notebook(a: bytes, b: bytes) -> bool:
    """Two executed notebooks: the same cells and sources, outputs equal as text within RTOL and as
    images by `same_png`; timings, cell ids and execution stamps set aside."""
    first, second = json.loads(a), json.loads(b)
    cells_a, cells_b = first.get("cells", []), second.get("cells", [])
    if len(cells_a) != len(cells_b):
        return False
    for x, y in zip(cells_a, cells_b):
        if x.get("cell_type") != y.get("cell_type") or x.get("source") != y.get("source"):
            return False
        outs_x, outs_y = _joined(x.get("outputs", [])), _joined(y.get("outputs", []))
        if len(outs_x) != len(outs_y):
            return False
        for p, q in zip(outs_x, outs_y):
            data_p, data_q = _output_data(p), _output_data(q)
            if p.get("output_type") != q.get("output_type") or data_p.keys() != data_q.keys():
                return False
            if not same_text("".join(p.get("text", "")), "".join(q.get("text", ""))):
                return False
            for kind in data_p:
                u, v = data_p[kind], data_q[kind]
                if kind.startswith("image/png"):
                    if u != v and not same_png(base64.b64decode("".join(u)), base64.b64decode("".join(v))):
                        return False
                elif not same_data(u, v):
                    return False
    meta_a, meta_b = (dict(n.get("metadata", {}), papermill=None) for n in (first, second))
    return same_data(meta_a, meta_b)


def same_table(a: bytes, b: bytes) -> bool:
    import pandas as pd

    try:
        x, y = pd.read_csv(io.BytesIO(a)), pd.read_csv(io.BytesIO(b))
    except Exception:
        return a == b
    if list(x.columns) != list(y.columns) or x.shape != y.shape:
        return False
    return same_data(x.to_dict("list"), y.to_dict("list"))


COMPARE = {".csv": same_table, ".json": lambda a, b: same_data(json.loads(a), json.loads(b)),
           ".ipynb": same_notebook, ".png": same_png}


def settle(paths, root: Path, log=print) -> list[Path]:
    """Put the committed bytes back in every file of `paths` that equals its committed version up
    to noise (see the module's doc); returns the files kept. A PDF follows its PNG twin."""
    kept = []
    paths = sorted({Path(p) for p in paths}, key=lambda p: (p.suffix == ".pdf", str(p)))
    for path in paths:
        old = committed(path, root) if path.is_file() else None
        new = path.read_bytes() if path.is_file() else None
        if old is None or new is None or old == new:
            continue
        if path.suffix == ".pdf":  # the same figure as its PNG twin: settled with it, or unchanged
            twin = path.with_suffix(".png")
            equal = twin in kept or (twin.is_file() and committed(twin, root) == twin.read_bytes())
        else:
            compare = COMPARE.get(path.suffix)
            try:
                equal = compare is not None and compare(old, new)
            except (ValueError, UnicodeDecodeError):
                equal = False
        if equal:
            path.write_bytes(old)
            kept.append(path)
    if kept:
        log(f"kept the committed bytes of {len(kept)} file(s) a rerun reproduced up to floating-point noise "
            f"(numbers within {RTOL:g} relative, images within RMS {IMAGE_TOL:g})")
    return kept


def changed(root: Path, folders) -> list[Path]:
    """Tracked files under `folders` that differ from HEAD (what a rerun rewrote)."""
    try:
        done = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", *map(str, folders)], cwd=root,
                              capture_output=True, text=True, check=False)
    except OSError:
        return []
    return [root / line for line in done.stdout.splitlines() if line] if done.returncode == 0 else []
