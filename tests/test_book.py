"""The book (gelora.kit.book) from the committed executed notebooks, opened in a real browser:
headless Chromium loads every page from disk with every request that is not a local file
refused and recorded, and the test asserts that the math was typeset by the bundled MathJax,
every image loaded, search finds a word, and no request left the machine."""
import json
import re
import shutil
from pathlib import Path

import pytest

from gelora.kit import book

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "site"
    index = book.build(out_dir=out)
    return index.parent


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.name not in ("genindex.html", "search.html"))


def test_every_notebook_of_both_runs_is_a_page_with_navigation(site):
    for run in ("cpu", "cpu-llm"):
        for notebook in book.executed_notebooks(Path(book.repo_root()) / "results" / run):
            page = (site / run / f"{notebook.stem}.html").read_text()
            assert 'class="prev-next-area"' in page and "bd-sidebar-primary" in page  # previous/next, sidebar
            assert ('class="math' not in page) or "_static/mathjax/tex-svg.js" in page  # the bundled MathJax
            assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from elsewhere
    for extra in ("teaching", "solutions"):
        assert (site / f"{extra}.html").is_file()
    teaching = (site / "teaching.html").read_text()
    assert 'href="solutions.html"' in teaching and "<table" in teaching  # its link works, its table renders


def test_figures_are_numbered_with_captions_and_alt_text(site):
    page = (site / "cpu" / "02_rank_allocation.html").read_text()
    figures = re.findall(r"<figure.*?</figure>", page, flags=re.S)
    assert len(figures) >= 3
    numbers = [int(re.search(r'caption-number">Figure (\d+)', f).group(1)) for f in figures]
    assert numbers == list(range(numbers[0], numbers[0] + len(figures)))  # numbered through the book, in order
    for figure in figures:
        assert re.search(r'caption-text">[A-Z][^<]{20,}', figure)  # a caption that is a sentence
        alt = re.search(r'<img[^>]*alt="([^"]*)"', figure).group(1)
        assert len(alt) > 20 and "figure" in alt


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_book_works_offline_in_a_browser(site):
    from playwright.sync_api import sync_playwright

    outside, report = [], {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()

        def guard(route):
            url = route.request.url
            if url.startswith(("file://", "data:")):
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        page.route("**/*", guard)
        for path in pages(site):
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            has_math = page.evaluate("document.querySelectorAll('.math').length")
            if has_math:
                page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20_000)
                page.evaluate("MathJax.startup.promise")
            report[path.relative_to(site).as_posix()] = page.evaluate("""() => ({
                math: document.querySelectorAll('.math').length,
                typeset: [...document.querySelectorAll('.math')].filter(m => m.querySelector('mjx-container')).length,
                images: document.images.length,
                broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
            })""")
        page.goto((site / "search.html").as_uri() + "?q=TwoNN")
        page.wait_for_selector("#search-results li", timeout=20_000)
        hits = page.locator("#search-results li").count()
        browser.close()
    assert outside == [], outside
    assert hits > 0
    assert sum(r["math"] for r in report.values()) >= 50  # the formulas of the notebooks and the guide
    for name, r in report.items():
        assert r["typeset"] == r["math"], (name, r)
        assert not r["broken"], (name, r["broken"])
    assert sum(r["images"] for r in report.values()) >= 20
    json.dumps(report)


def test_a_notebook_that_did_not_complete_is_refused(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(Path(book.repo_root()) / "results" / "cpu" / "executed", run / "executed")
    path = run / "executed" / "03_lora_sb_initialization.ipynb"
    notebook = json.loads(path.read_text())
    notebook["metadata"]["gelora"]["status"] = "interrupted"
    path.write_text(json.dumps(notebook))
    with pytest.raises(ValueError, match="did not complete"):
        book.build([run], tmp_path / "site")
    with pytest.raises(FileNotFoundError, match="no executed notebooks"):
        book.build([tmp_path / "nothing"], tmp_path / "site")


def test_results_pages_cite_the_papers_and_the_footer_says_version_and_date(site):
    from gelora import __version__

    references = (site / "references.html").read_text()
    text = references.lower()  # the bibliography style sets titles in sentence case
    assert "gelora" in text and "silver bullet" in text and "sequentially rejective" in text
    study = (site / "study.html").read_text()
    assert 'href="references.html#id' in study or "references.html#" in study  # the citations link to the bibliography
    assert "Ed-dib" in study and "{cite" not in study
    index = (site / "index.html").read_text()
    assert f"gelora {__version__}, built " in index
    for page in ("study", "preregistration", "statistics", "runs", "guide"):
        assert (site / f"{page}.html").is_file()
    notebook = (site / "cpu" / "01_representation_probing.html").read_text()
    assert "btn-download" in notebook or "download" in notebook.lower()  # the download-notebook button
