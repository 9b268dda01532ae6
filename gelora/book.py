"""The reference run as a static site a reader opens without a kernel.

    make book                                   # python -m gelora.book
    python -m gelora.book --run results/cpu --out build/book

Each executed notebook of the run (results/cpu/executed/, committed) becomes one HTML page with
nbconvert, Jupyter's own converter: outputs and figures as the run left them, nothing executed,
nothing downloaded (the pages embed their figures and need no network). An index page puts the
story in order, with each notebook's summary, and the solutions and the teachers' guide follow.
nbconvert rather than Jupyter Book or Quarto: it is already installed with Jupyter, renders exactly
what the notebooks hold, and needs no Node, Sphinx or Quarto toolchain on an offline machine.
"""
from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html

from .pipeline import repo_root, resolve, shown

EXTRA_PAGES = {"SOLUTIONS": "notebooks/SOLUTIONS.md", "TEACHING": "docs/TEACHING.md"}
STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
         "nav.gelora{font-family:system-ui,sans-serif;padding:.6rem 1rem;background:#f3f3f3;border-bottom:1px solid #ddd}"
         "nav.gelora a{margin-right:1.2rem}")


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


def _summary(book) -> tuple[str, str]:
    """A notebook's title (its first heading) and its 'What this notebook shows' paragraph."""
    first = book.cells[0].source if book.cells and book.cells[0].cell_type == "markdown" else ""
    lines = first.splitlines()
    title = next((line.lstrip("# ") for line in lines if line.startswith("#")), "")
    paragraphs = [p for p in first.split("\n\n") if p.startswith("**What this notebook shows.**")]
    return title, paragraphs[0] if paragraphs else ""


def _nav(pages: list[tuple[str, str]], here: str) -> str:
    links = " ".join(f'<a href="{href}"{" style=font-weight:bold" if href == here else ""}>{html.escape(label)}</a>'
                     for href, label in pages)
    return f'<nav class="gelora">{links}</nav>'


def build(run_dir: str | Path = "results/cpu", out_dir: str | Path = "build/book") -> list[Path]:
    """Write index.html, one page per executed notebook and the extra pages. Returns the files."""
    run, out = resolve(run_dir), resolve(out_dir)
    paths = executed_notebooks(run)
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    books = {p.stem: nbformat.read(str(p), as_version=4) for p in paths}
    extras = {name: repo_root() / rel for name, rel in EXTRA_PAGES.items() if (repo_root() / rel).is_file()}
    pages = [("index.html", "Contents"), *[(f"{stem}.html", stem[:2]) for stem in books],
             *[(f"{name.lower()}.html", name.capitalize()) for name in extras]]
    written = []
    for stem, book in books.items():
        body, _ = exporter.from_notebook_node(book)
        head, _, rest = body.partition("<body")  # the navigation bar goes right after <body ...>
        tag_end = rest.index(">") + 1
        body = f"{head}<body{rest[:tag_end]}{_nav(pages, f'{stem}.html')}{rest[tag_end:]}"
        written.append(out / f"{stem}.html")
        written[-1].write_text(body)
    for name, source in extras.items():
        page = _page(name.capitalize(), markdown2html(source.read_text()), _nav(pages, f"{name.lower()}.html"))
        written.append(out / f"{name.lower()}.html")
        written[-1].write_text(page)
    items = []
    for stem, book in books.items():
        title, summary = _summary(book)
        items.append(f'<li><a href="{stem}.html"><b>{html.escape(title)}</b></a>{markdown2html(summary)}</li>')
    intro = ("<p>The reference run of the kit (the <code>cpu</code> profile), executed and published as it ran: "
             f"every output and figure below comes from <code>{html.escape(shown(run))}</code>. Nothing here runs "
             "code; to rerun, see the README.</p>")
    written.append(out / "index.html")
    written[-1].write_text(_page("gelora: the reference run", f"{intro}<ol>{''.join(items)}</ol>", _nav(pages, "index.html")))
    return written


def _page(title: str, body: str, nav: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{nav}<h1>{html.escape(title)}</h1>{body}</body></html>\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gelora.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="results/cpu", help="run folder whose executed/ notebooks are published")
    parser.add_argument("--out", default="build/book", help="site folder (index.html is its entry)")
    args = parser.parse_args(argv)
    try:
        written = build(args.run, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"book error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} pages; open {shown(resolve(args.out) / 'index.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
