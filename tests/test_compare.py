"""`gelora compare` on a user's CSV, end to end on a tiny model: the plan first, rates by the
protocol, held-out seeds disjoint from selection, one table and one sentence, a saved adapter with a
filled model card that loads from another folder, and a rerun that trains nothing."""
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd

from gelora.data.tasks import load_dataset


def test_compare_plans_tunes_pairs_saves_and_resumes(tmp_path):
    data = load_dataset("movie-sentiment", "train").subset(300, seed=0)
    pd.DataFrame({"review": data.texts, "sentiment": np.array(data.label_names)[data.labels]}).to_csv(
        tmp_path / "reviews.csv", index=False)
    command = [sys.executable, "-m", "gelora", "compare", "reviews.csv", "--text-column", "review", "--label-column",
               "sentiment", "--model", "tiny-bert", "--methods", "lora", "lora_sb", "--n-train", "64", "--max-length", "16",
               "--output-dir", "out", "--budget-minutes", "30"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.startswith("plan: 2 method(s)")  # the plan comes first, on stderr
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert list(table["method"]) == ["lora", "lora_sb"] and set(table["seeds"]) == {"10,11,12,13,14"}
    assert "Against LoRA on the same test examples and held-out seeds" in first.stdout
    card = (tmp_path / "out" / "best-adapter" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name:") and "chosen by gelora's full-length protocol on validation" in card
    # resumable: the same command trains nothing
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "selection round 1:" not in again.stderr and "held-out:" not in again.stderr
    assert "resuming the plan in out/plan.json: held-out seeds 10, 11, 12, 13, 14" in again.stderr
    assert "(0 selection, 0 held-out" in again.stderr
    # the adapter travels: copied elsewhere, `gelora predict` reads it (its checksums hold)
    shutil.copytree(tmp_path / "out" / "best-adapter", tmp_path / "elsewhere")
    scored = subprocess.run([sys.executable, "-m", "gelora", "predict", str(tmp_path / "elsewhere"), "reviews.csv", "--out",
                             "p.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-2000:]
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert len(predictions) == 300  # with probabilities that are a softmax of the logits
    np.testing.assert_allclose(predictions[["prob_negative", "prob_positive"]].sum(1), 1.0, atol=1e-6)
    assert (predictions["probability"] >= 0.5).all()
    listed = subprocess.run([sys.executable, "-m", "gelora", "runs", "out", "--format", "csv"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    runs = pd.read_csv(__import__("io").StringIO(listed.stdout))
    assert listed.returncode == 0 and set(runs["method"]) == {"lora", "lora_sb"} and set(runs["data"]) == {"reviews.csv"}
