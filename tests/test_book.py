"""The static site (gelora.book) from executed notebooks: built without executing, self-contained
pages, refusing to publish a notebook that did not complete."""
import json
import shutil

import pytest

from gelora import book
from gelora.pipeline import notebooks


def test_site_from_the_smoke_run(smoke_run, tmp_path):
    run, _ = smoke_run
    written = book.build(run, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    for path in notebooks():
        page = (tmp_path / "site" / f"{path.stem}.html").read_text()
        assert f'href="{path.stem}.html"' in index and '<nav class="gelora">' in page
        assert "## Exercises" not in page and '<h2 id="Exercises">' in page  # markdown rendered, not shown raw
    assert "data:image/png;base64" in (tmp_path / "site" / "01_representation_probing.html").read_text()
    assert (tmp_path / "site" / "solutions.html").exists() and len(written) >= 7
    assert "What this notebook shows" in index


def test_a_notebook_that_did_not_complete_is_refused(smoke_run, tmp_path):
    run, _ = smoke_run
    shutil.copytree(run / "executed", tmp_path / "executed")
    path = tmp_path / "executed" / "03_lora_sb_initialization.ipynb"
    notebook = json.loads(path.read_text())
    notebook["metadata"]["gelora"]["status"] = "interrupted"
    path.write_text(json.dumps(notebook))
    with pytest.raises(ValueError, match="did not complete"):
        book.build(tmp_path, tmp_path / "site")
    with pytest.raises(FileNotFoundError, match="no executed notebooks"):
        book.build(tmp_path / "nothing", tmp_path / "site")
