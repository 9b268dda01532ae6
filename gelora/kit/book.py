"""The reference runs as a book: a Sphinx site from the committed executed notebooks.

    make book                                   # python -m gelora book
    python -m gelora book --run results/cpu --run results/cpu-llm --output-dir build/book

Sphinx with myst-nb and the book theme (execution off: every output is what the run left): a
sidebar with the chapters, previous/next, an in-page contents, full-text search, numbered figures
with captions and alt text, parameter and set-up cells folded, and the guide and solutions as pages. Math is
typeset by a copy of MathJax 3 served from the site itself (the `django-static-mathjax` wheel
ships it; `make setup` installs it with --no-deps, it is never imported), so the book works on an
offline laptop. `tests/test_book.py` opens it in headless Chromium with the network off.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

from gelora import __version__
from gelora.kit import plots
from gelora.kit.paths import repo_root, resolve, shown

PROG = "python -m gelora.kit.book"  # `gelora book` sets its own name in help and errors
RUNS = {"results/cpu": "The encoder run: MiniLM on movie sentences",
        "results/cpu-llm": "The decoder run: SmolLM2-135M on arithmetic"}
# the book's pages beside the lessons, by chapter: page name -> (file in the checkout, title)
RESULT_PAGES = {"study": ("docs/STUDY.md", "The two-task study"),
                "preregistration": ("docs/PREREGISTRATION.md", "The benchmark's pre-registration"),
                "statistics": ("docs/STATISTICS.md", "How a verdict is read"),
                "references": ("docs/REFERENCES.md", "References")}
# "(Author et al., year)" in a page becomes a citation of docs/references.bib in the book
CITATIONS = {"Ed-dib et al., 2024": "eddib2024gelora", "Ponkshe et al., 2024": "ponkshe2024lorasb",
             "Balazy et al., 2024": "balazy2024loraxs", "Hu et al., 2022": "hu2022lora", "Zhang et al., 2023": "zhang2023adalora",
             "Facco et al., 2017": "facco2017twonn", "Holm, 1979": "holm1979", "Hartung and Knapp, 2001": "hartung2001",
             "Roever et al., 2015": "rover2015"}
REFERENCE_PAGES = {"runs": ("docs/RUNS.md", "The reference runs"), "guide": ("docs/GUIDE.md", "The guide")}
EXTRA_PAGES = {"teaching": ("docs/TEACHING.md", "For teachers"), "solutions": ("notebooks/SOLUTIONS.md", "Solutions")}
CHAPTERS = (("Results", RESULT_PAGES), ("Reference", REFERENCE_PAGES), ("Teaching", EXTRA_PAGES))
MATHJAX = "static/mathjax/es5/tex-svg.js"  # inside the `mathjax` folder of django-static-mathjax: one file, fonts as SVG
FOLDED = {"parameters", "injected-parameters"}  # papermill's tags: the run's settings, folded


def mathjax_file() -> Path:
    """The local MathJax 3 bundle (the site serves it; no CDN)."""
    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / MATHJAX if locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError("the offline MathJax bundle is missing: pip install --no-deps django-static-mathjax==3.2.2.1 "
                                "(make setup does)")
    return path


def executed_notebooks(run: Path) -> list[Path]:
    """The run's executed notebooks, in order; each must have completed (an interrupted or failed
    copy would publish a half story)."""
    found = sorted((run / "executed").glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no executed notebooks in {shown(run / 'executed')}: run the pipeline first")
    for path in found:
        status = json.loads(path.read_text()).get("metadata", {}).get("gelora", {}).get("status")
        if status != "completed":
            raise ValueError(f"{shown(path)} did not complete (status {status!r}): rerun it before publishing")
    return found


def _first_sentence(text: str, limit: int = 280) -> str:
    """The first sentence of a cell's prose, headings, tables and lists left out."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(("#", "|", "- ", "```"))]
    text = re.sub(r"\s+", " ", re.sub(r"[*`]", "", " ".join(lines))).strip()
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + " ..."


def _markdown_of(cell) -> str:
    """The prose a cell shows: its source if markdown, else its Markdown or text outputs."""
    if cell.cell_type == "markdown":
        return cell.source
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "text/markdown" in data:
            return data["text/markdown"]
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            return output.get("text", "")
    return ""


def prepare(book, stem: str):
    """A notebook made ready for the book: parameter cells folded, and every figure numbered with a
    caption and alt text: what the `gelora.kit.plots` function that drew it says it draws (else the
    sentence that follows the figure). A figure shares its cell with nothing: other outputs stay in the code cell, the image
    moves to a cell of its own right after it (myst-nb puts a cell's caption on every output)."""
    title = next((line.lstrip("# ") for line in book.cells[0].source.splitlines() if line.startswith("#")), stem)
    cells, figure, setup_folded = [], 0, False
    for i, cell in enumerate(book.cells):
        cells.append(cell)
        if cell.cell_type != "code":
            continue
        tags = set(cell.metadata.get("tags", []))
        if tags & FOLDED:
            cell.metadata["tags"] = sorted(tags | {"hide-cell"})
        elif not setup_folded:  # the imports and set-up before the story starts: folded, outputs shown
            cell.metadata["tags"], setup_folded = sorted(tags | {"hide-input"}), True
        drawn = [getattr(plots, name, None) for name in re.findall(r"plots\.(\w+)\(", cell.source)
                 if name not in ("save", "set_style", "palette")]
        following = [_markdown_of(cell), *(_markdown_of(c) for c in book.cells[i + 1:i + 3])]
        sentences = [_first_sentence(f.__doc__) for f in drawn if f is not None and f.__doc__]  # what it draws
        sentences += [_first_sentence(t) for t in following if t.strip()]
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        cell.outputs = [o for o in cell.get("outputs", []) if "image/png" not in o.get("data", {})]
        for image in images:
            figure += 1
            caption = next((s for s in sentences if s[:1].isalnum()), f"Figure {figure} of {title}.")
            cells.append(nbformat.v4.new_code_cell(f"# figure {figure}", outputs=[image], metadata={
                "tags": ["remove-input"],
                "mystnb": {"figure": {"caption": caption, "name": f"fig-{stem}-{figure}"},
                           "image": {"alt": f"{title}, figure {figure}: {caption}"}}}))
    book.cells = cells
    return book


CONF = '''# Generated by gelora.kit.book: the book's Sphinx settings (execution off, math served locally).
project = "gelora"
author = "the gelora team"
extensions = ["myst_nb", "sphinxcontrib.bibtex"]
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
numfig = True
numfig_format = {{"figure": "Figure %s"}}
html_theme = "sphinx_book_theme"
html_title = "gelora: the reference runs"
html_static_path = ["_static"]
mathjax_path = "mathjax/tex-svg.js"
mathjax3_config = {{"svg": {{"fontCache": "global"}}}}
html_theme_options = {{"show_toc_level": 2, "use_download_button": True, "use_fullscreen_button": False,
                      "navigation_with_keys": False, "show_navbar_depth": 2,
                      "extra_footer": "<p>gelora {version}, built {date} from the committed runs</p>"}}
html_sidebars = {{"**": ["navbar-logo.html", "sbt-sidebar-nav.html"]}}
exclude_patterns = ["_build"]
suppress_warnings = ["mystnb.unknown_mime_type", "misc.highlighting_failure", "myst.header"]
html_last_updated_fmt = None
html_show_sourcelink = False
html_copy_source = False
'''


def source_tree(runs: list[Path], src: Path) -> Path:
    """The Sphinx source folder: conf.py, the index with one chapter per run, the prepared
    notebooks, the guide and the solutions, and the MathJax bundle in _static."""
    if src.exists():
        shutil.rmtree(src)
    (src / "_static" / "mathjax").mkdir(parents=True)
    shutil.copy(mathjax_file(), src / "_static" / "mathjax" / "tex-svg.js")
    shutil.copy(mathjax_file().parent.parent / "LICENSE", src / "_static" / "mathjax" / "LICENSE")
    (src / "conf.py").write_text(CONF.format(version=__version__, date=time.strftime("%Y-%m-%d", time.gmtime())))
    shutil.copy(repo_root() / "docs" / "references.bib", src / "references.bib")
    chapters = []
    for run in runs:
        folder = run.name
        (src / folder).mkdir()
        entries = []
        for path in executed_notebooks(run):
            book = prepare(nbformat.read(str(path), as_version=4), f"{folder}-{path.stem[:2]}")
            nbformat.write(book, str(src / folder / path.name))
            entries.append(f"{folder}/{path.stem}")
        caption = RUNS.get(shown(run), f"The run in {shown(run)}")
        chapters.append(f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n" + "\n".join(entries) + "\n```\n")
    pages = {Path(relative).name: name for _, group in CHAPTERS for name, (relative, _) in group.items()}
    (src / "figures").mkdir()
    tocs = {}
    for caption, group in CHAPTERS:
        for name, (relative, _) in group.items():
            (src / f"{name}.md").write_text(_page(repo_root() / relative, pages, src / "figures"))
        tocs[caption] = f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n" + "\n".join(group) + "\n```\n"
    intro = ("# gelora: the reference runs\n\nThe kit's results first, then its lessons executed and published as they "
             "ran: every output and figure comes from the committed executed notebooks (" + ", ".join(f"`{shown(r)}`" for r in runs)
             + "). Nothing here runs code, and the book needs no network: the math is typeset by a copy of MathJax "
             "served from the site itself. To rerun anything, see the README.\n\n")
    (src / "index.md").write_text(intro + tocs["Results"] + "\n" + "\n".join(chapters) + "\n" + tocs["Reference"] + "\n"
                                  + tocs["Teaching"])
    return src


def _page(path: Path, pages: dict, figures: Path) -> str:
    """A checkout page as a book page: links to the other pages by their book names, its figures
    copied into the book's folder."""
    text = path.read_text().replace("../notebooks/SOLUTIONS.md", "solutions.md").replace("../README.md", "#")
    for file, page in pages.items():
        text = text.replace(f"]({file}", f"]({page}.md").replace(f"](docs/{file}", f"]({page}.md")
    for words, key in CITATIONS.items():
        text = text.replace(f"({words})", f"{{cite:p}}`{key}`")
    for image in re.findall(r"\]\(\.\./figures/([^)\s]+)\)", text):
        (figures / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo_root() / "figures" / image, figures / image)
    return text.replace("](../figures/", "](figures/")


def build(runs=tuple(RUNS), out_dir: str | Path = "build/book") -> Path:
    """Build the site into `out_dir` (its index.html is the entry). Returns that index."""
    from sphinx.cmd.build import build_main

    paths = [resolve(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)]
    out = resolve(out_dir)
    src = source_tree(paths, out.parent / f"{out.name}-source")
    if out.exists():
        shutil.rmtree(out)
    status = build_main(["-b", "html", "-q", "-E", str(src), str(out)])
    if status:
        raise RuntimeError(f"sphinx-build failed (exit {status}) on {shown(src)}")
    return out / "index.html"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=None,
                        help=f"a run folder whose executed/ notebooks become a chapter (repeatable; default: {', '.join(RUNS)})")
    parser.add_argument("--output-dir", default="build/book", help="site folder (index.html is its entry)")
    args = parser.parse_args(argv)
    try:
        index = build(args.run or tuple(RUNS), args.output_dir)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    print(f"wrote the book; open {shown(index)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
