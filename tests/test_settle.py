"""A rerun's outputs keep their committed bytes only when they equal them up to floating-point
noise: a table, a JSON file, a figure and an executed notebook perturbed at 1e-9 are put back; the
same files changed at 1e-3, by a word or by a moved line keep the new bytes."""
import base64
import io
import json
import subprocess

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gelora.kit import plots  # noqa: E402
from gelora.kit.settle import changed, settle  # noqa: E402


def figure_png(ys, form="png") -> bytes:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(ys)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=form)
    plt.close(fig)
    return buffer.getvalue()


def notebook(number: float, png: bytes, seconds: float, chunks=("lora seed 0: done\n", "lora seed 1: done\n")) -> str:
    cell = {"cell_type": "code", "id": "abc", "execution_count": 1, "source": ["say(x)"],
            "metadata": {"papermill": {"duration": seconds}},
            "outputs": [*({"output_type": "stream", "name": "stdout", "text": [text]} for text in chunks),
                        {"output_type": "stream", "name": "stdout", "text": [f"the bound is {number} at layer 2\n"]},
                        {"output_type": "display_data", "metadata": {},
                         "data": {"image/png": base64.b64encode(png).decode(), "text/plain": ["<Figure>"]}}]}
    return json.dumps({"cells": [cell], "metadata": {"papermill": {"duration": seconds}, "gelora": {"status": "completed"}},
                       "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def repo(tmp_path):
    """A git repository with a table, a JSON file, a figure and an executed notebook committed."""
    run = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    run("init", "-q")
    out = tmp_path / "results"
    out.mkdir()
    pd.DataFrame({"layer": [0, 1], "dimension": [39.756685132388164, 37.659062785057415],
                  "note": [None, "a"]}).to_csv(out / "p.csv", index=False)  # an empty cell
    (out / "r.json").write_text(json.dumps({"ranks": [7, 10], "dimensions": [39.756685132388164, 1.7242985716345416]}))
    ys = np.linspace(0, 1, 50) ** 2
    (out / "f.png").write_bytes(figure_png(ys))
    (out / "f.pdf").write_bytes(figure_png(ys, "pdf"))
    (out / "n.ipynb").write_text(notebook(39.756685132388164, figure_png(ys), 1.5))
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "outputs")
    return tmp_path, ys


def rewrite(root, ys, scale: float, word: str = "layer", bend: float = 0.0):
    """The outputs as a rerun writes them: numbers times (1 + scale), a word, a figure bent."""
    out = root / "results"
    pd.DataFrame({word: [0, 1], "dimension": [39.756685132388164 * (1 + scale), 37.659062785057415],
                  "note": [None, "a"]}).to_csv(out / "p.csv", index=False)
    (out / "r.json").write_text(json.dumps({"ranks": [7, 10], "dimensions": [39.756685132388164 * (1 + scale),
                                                                            1.7242961572566458]}))
    bent = ys + bend * np.sin(np.arange(len(ys)))
    (out / "f.png").write_bytes(figure_png(bent))
    (out / "f.pdf").write_bytes(figure_png(bent, "pdf"))
    (out / "n.ipynb").write_text(notebook(39.756685132388164 * (1 + scale), figure_png(bent), 2.5,
                                          chunks=("lora seed 0: done\nlora seed 1: done\n",)))  # other pieces
    return sorted(changed(root, ["results"]))


def test_noise_keeps_the_committed_bytes(repo):
    root, ys = repo
    rewritten = rewrite(root, ys, 1e-9, bend=1e-5)  # anti-aliasing moves: RMS 0.04
    assert [p.name for p in rewritten] == ["f.pdf", "f.png", "n.ipynb", "p.csv", "r.json"]
    kept = settle(rewritten, root, log=lambda *_: None)
    assert sorted(p.name for p in kept) == ["f.pdf", "f.png", "n.ipynb", "p.csv", "r.json"]
    assert changed(root, ["results"]) == []  # git status clean


@pytest.mark.parametrize("change", ["number", "word", "figure"])
def test_a_real_change_keeps_the_new_bytes(repo, change):
    root, ys = repo
    rewritten = rewrite(root, ys, 1e-3 if change == "number" else 1e-9, word="depth" if change == "word" else "layer",
                        bend=1e-2 if change == "figure" else 0.0)  # 1.5 px, about 1 pt: RMS far above 0.3
    settle(rewritten, root, log=lambda *_: None)
    new = {"number": {"p.csv", "r.json", "n.ipynb"}, "word": {"p.csv"}, "figure": {"f.png", "f.pdf", "n.ipynb"}}[change]
    assert {p.name for p in changed(root, ["results"])} == new  # only what really changed differs from HEAD


def test_outside_a_repository_nothing_is_touched(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    assert changed(tmp_path, [tmp_path]) == [] and settle([tmp_path / "a.csv"], tmp_path, log=lambda *_: None) == []


def test_the_spectrum_stops_at_the_svd_resolution():
    """A rank-3 matrix has three singular values; the rest are rounding noise, not drawn."""
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 30))
    values = np.linalg.svd(matrix, compute_uv=False)
    assert values[3] > 0  # the noise is there
    fig = plots.spectra({"m": values})
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 2, 3]
    plt.close(fig)


@pytest.mark.parametrize("name, committed, rerun", [
    ("parameters in a table", "params\n22713218\n", "params\n22713220\n"),
    ("a count in JSON", '{"adapter_params": 147456}', '{"adapter_params": 147457}'),
    ("a step count in a table", "step,loss\n268,0.5\n", "step,loss\n269,0.5\n"),
])
def test_a_change_of_one_unit_in_a_whole_number_is_real(tmp_path, name, committed, rerun):
    """Whole numbers carry no BLAS noise: 22,713,218 -> 22,713,220 is within 1e-5 relative, and still
    a real change."""
    suffix = ".json" if "JSON" in name else ".csv"
    run = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    run("init", "-q")
    path = tmp_path / f"out{suffix}"
    path.write_text(committed)
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "outputs")
    path.write_text(rerun)
    assert settle([path], tmp_path, log=lambda *_: None) == [] and path.read_text() == rerun


def test_a_printed_count_in_a_notebook_is_real_and_a_pdf_is_compared_on_its_own(repo):
    root, ys = repo
    out = root / "results"
    text = (out / "n.ipynb").read_text().replace("lora seed 1: done", "lora seed 1: done (147456 parameters)")
    subprocess.run(["git", "-C", str(root), "commit", "-qam", "count"], check=False, capture_output=True)
    (out / "n.ipynb").write_text(text)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "count"],
                   check=True, capture_output=True)
    (out / "n.ipynb").write_text(text.replace("147456 parameters", "147457 parameters"))
    # the PDF really changed (a bent line) while its PNG twin is rewritten unchanged
    (out / "f.pdf").write_bytes(figure_png(ys + 1e-2 * np.sin(np.arange(len(ys))), "pdf"))
    (out / "f.png").write_bytes(figure_png(ys))
    lines = []
    kept = settle(changed(root, ["results"]), root, log=lines.append)
    assert {p.name for p in changed(root, ["results"])} == {"n.ipynb", "f.pdf"} and kept == []


def test_each_kept_file_is_listed_with_its_largest_difference(repo):
    root, ys = repo
    rewrite(root, ys, 3e-7)
    lines = []
    settle(changed(root, ["results"]), root, log=lines.append)
    # p.csv moved by 3e-7; r.json's second dimension differs by 1.4e-6 in the fixture itself
    assert "results/p.csv: largest relative difference 3e-07" in lines[0]
    assert "results/r.json: largest relative difference 1.4e-06" in lines[0]
    assert "whole numbers equal" in lines[0]


def test_a_pdf_that_says_another_number_is_a_real_change(tmp_path):
    """The text a PDF shows is compared exactly, so a tick or label that says 0.9 instead of 0.5 is never
    within the coordinates' tolerance."""
    from gelora.kit.settle import same_pdf

    def labelled(text):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1])
        ax.set_title(text)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="pdf")
        plt.close(fig)
        return buffer.getvalue()

    assert same_pdf(labelled("accuracy 0.5"), labelled("accuracy 0.5"))
    assert not same_pdf(labelled("accuracy 0.5"), labelled("accuracy 0.9"))
