"""Keep a committed output whose rerun equals it up to floating-point noise, so that `make
reproduce` on another machine leaves `git status` clean except where a result really changed.

The same computation on another CPU or thread count sums in another order: an ID profile moves in
its 7th significant digit, a singular value in its 15th, a figure by a few anti-aliased pixels.
Those digits are the BLAS's, not the method's (the ranks trained are exact, and the run identity
covers only what can change them). A rewritten file that is tracked by git is compared with its
committed version, by kind: tables and JSON number by number (relative tolerance RTOL), executed
notebooks cell by cell once their timings are set aside (numbers in text outputs within RTOL,
images as below), PNG figures by matplotlib's image comparison (RMS of the pixel difference at
most IMAGE_TOL), a PDF on its own (its shown text exactly, its drawn coordinates within PDF_TOL points,
everything else exact but its dates and id). Whole numbers (counts, parameters, steps) must be equal: only
decimals carry BLAS noise. Equal: the committed bytes are put back, and each kept file is listed
with the largest difference found. Anything else (another column, a changed word or count, a number
beyond RTOL) keeps the new file.
"""
from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import tempfile
import zlib
from pathlib import Path

RTOL = 1e-5  # float32 sums carry about 7 significant digits; a difference of two (an ID increment) loses one or two
IMAGE_TOL = 0.3  # RMS over pixels on 0-255: seen 0.01-0.1 across machines; a line moved by 0.3 px gives 3.6
PDF_TOL = 0.25  # points (0.09 mm) a PDF's drawn coordinates may move: BLAS noise in a bootstrap band was seen at 0.1
PDF_STRING = re.compile(rb"\((?:\\.|[^\\)])*\)|(?<!<)<[0-9A-Fa-f\s]*>(?!>)")  # text shown: (literal) or <hex>
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def committed(path: Path, root: Path) -> bytes | None:
    """The file's bytes at git HEAD, or None (not tracked, or no git here)."""
    try:
        done = subprocess.run(["git", "show", f"HEAD:{path.resolve().relative_to(root.resolve()).as_posix()}"],
                              cwd=root, capture_output=True, check=False)
    except (OSError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None


LARGEST = {"relative": 0.0, "points": 0.0}  # the largest difference a comparison accepted (reset per file)


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):  # an empty cell of a table
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    relative = abs(a - b) / max(abs(a), abs(b))
    if relative <= RTOL:
        LARGEST["relative"] = max(LARGEST["relative"], relative)
        return True
    return False


def _is_whole(text: str) -> bool:
    return "." not in text and "e" not in text.lower()


def same_text(a: str, b: str, absolute: float | None = None) -> bool:
    """Equal words, whole numbers equal, decimals equal within RTOL (or within `absolute`)."""
    if NUMBER.split(a) != NUMBER.split(b):
        return False
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
        if _is_whole(x) and _is_whole(y):
            if x != y:
                return False
        elif absolute is not None:
            if abs(float(x) - float(y)) > absolute:
                return False
            LARGEST["points"] = max(LARGEST["points"], abs(float(x) - float(y)))
        elif not close(float(x), float(y)):
            return False
    return True


def same_data(a, b) -> bool:
    """Parsed JSON compared recursively: integers exactly, other numbers within RTOL, strings as
    text, the rest exactly."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    if isinstance(a, int) and isinstance(b, int):  # counts, parameters, steps: no BLAS noise in them
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
            result = compare_images(str(first), str(second), tol=IMAGE_TOL, in_decorator=True)
        except Exception:  # another size: not the same figure
            return False
        if result is None:
            return True  # equal at the tolerance (compare_images reports no RMS then: it is below IMAGE_TOL)
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


STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
# what moves with the bytes rather than the drawing: dates, the file id, stream lengths (also as objects
# of their own, as matplotlib writes them) and the cross-reference offsets
PDF_VOLATILE = re.compile(rb"/(?:CreationDate|ModDate) \(.*?\)|/ID \[.*?\]|/Length \d+(?: 0 R)?|\d+ 0 obj\s*\d+\s*endobj"
                          rb"|startxref\s+\d+|xref.*?trailer", re.S)


def _pdf_parts(data: bytes) -> tuple[bytes, list[bytes]]:
    """A PDF's object text (dates, id, lengths and the cross-reference table set aside) and its
    streams, inflated where they are compressed."""
    streams = []
    for raw in STREAM.findall(data):
        try:
            streams.append(zlib.decompress(raw))
        except zlib.error:
            streams.append(raw)
    return PDF_VOLATILE.sub(b"", STREAM.sub(b"stream", data)), streams


def same_pdf(a: bytes, b: bytes) -> bool:
    """A PDF compared on its own: the object text (decimals within RTOL); in every drawing stream the
    text it shows exactly and the coordinates within PDF_TOL points (noise moves a line by far less
    than a pixel); binary streams (fonts, embedded images) byte for byte."""
    (text_a, streams_a), (text_b, streams_b) = _pdf_parts(a), _pdf_parts(b)
    if len(streams_a) != len(streams_b) or not same_text(text_a.decode("latin-1"), text_b.decode("latin-1")):
        return False
    for x, y in zip(streams_a, streams_b):
        if x == y:
            continue
        if not (x.isascii() and y.isascii()) or PDF_STRING.findall(x) != PDF_STRING.findall(y):
            return False  # a font or image, or any text shown, must be byte for byte the same
        if not same_text(PDF_STRING.sub(b"()", x).decode("ascii"), PDF_STRING.sub(b"()", y).decode("ascii"), absolute=PDF_TOL):
            return False
    return True


COMPARE = {".pdf": same_pdf, ".csv": same_table, ".json": lambda a, b: same_data(json.loads(a), json.loads(b)),
           ".ipynb": same_notebook, ".png": same_png}


def settle(paths, root: Path, log=print) -> list[Path]:
    """Put the committed bytes back in every file of `paths` that equals its committed version up
    to noise (see the module's doc); returns the files kept, each logged with the largest relative
    difference its comparison accepted."""
    kept, lines = [], []
    for path in sorted({Path(p) for p in paths}, key=str):
        old = committed(path, root) if path.is_file() else None
        new = path.read_bytes() if path.is_file() else None
        if old is None or new is None or old == new:
            continue
        compare = COMPARE.get(path.suffix)
        LARGEST.update(relative=0.0, points=0.0)
        try:
            equal = compare is not None and compare(old, new)
        except (ValueError, UnicodeDecodeError):
            equal = False
        if equal:
            path.write_bytes(old)
            kept.append(path)
            detail = ("images within the tolerance" if path.suffix == ".png" else
                      f"drawing moved at most {LARGEST['points']:.2g} pt" if path.suffix == ".pdf" else
                      f"largest relative difference {LARGEST['relative']:.2g}")
            lines.append(f"  {path.relative_to(root) if path.is_relative_to(root) else path}: {detail}")
    if kept:
        log(f"kept the committed bytes of {len(kept)} file(s) a rerun reproduced up to floating-point noise "
            f"(decimals within {RTOL:g} relative, whole numbers equal, images within RMS {IMAGE_TOL:g}, PDF drawings "
            f"within {PDF_TOL:g} pt):\n" + "\n".join(lines))
    return kept


def changed(root: Path, folders) -> list[Path]:
    """Tracked files under `folders` that differ from HEAD (what a rerun rewrote)."""
    try:
        done = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", *map(str, folders)], cwd=root,
                              capture_output=True, text=True, check=False)
    except OSError:
        return []
    return [root / line for line in done.stdout.splitlines() if line] if done.returncode == 0 else []
