"""Seeded arithmetic word problems in the style of GSM8K, for causal-LM fine-tuning on CPU.

Each problem has one to three operations (+, -, x on amounts up to 20, exact /) on small whole numbers, a person and an
item, and a worked answer: one equation per line, then the result after the marker `####`, as GSM8K
writes it. Everything comes from one `random.Random(seed)`, so the files are the same, byte for
byte, on every machine; `data/build_datasets.py` writes them with the other shipped datasets.

    python data/arithmetic.py              # print five problems
"""
from __future__ import annotations

import random

MARKER = "####"
SIZES = {"train": 2000, "validation": 200, "test": 300}
NAMES = ["Mia", "Noah", "Ava", "Liam", "Zoe", "Omar", "Lena", "Ravi", "Sofia", "Ben", "Yuki", "Amara", "Jonas",
         "Priya", "Leo", "Nadia", "Tom", "Elif", "Kofi", "Ines"]
ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "stamps", "pencils", "shells", "coins", "cards",
         "balloons", "eggs", "plums", "beads", "tickets"]


def _step(rng: random.Random, value: int, name: str, item: str) -> tuple[str, str, int]:
    """One operation on the running amount: (sentence, equation, new amount)."""
    choices = ["add"] + (["multiply"] if value <= 20 else []) + (["subtract"] if value > 1 else []) + \
              (["divide"] if any(value % d == 0 for d in (2, 3, 4, 5)) else [])
    kind = rng.choice(choices)
    if kind == "add":
        n = rng.randint(2, 30)
        return rng.choice([f"{name} gets {n} more {item}.", f"A friend gives {name} {n} {item}."]), \
            f"{value} + {n} = {value + n}", value + n
    if kind == "subtract":
        n = rng.randint(1, value - 1)
        return rng.choice([f"{name} gives away {n} {item}.", f"{name} loses {n} {item}."]), \
            f"{value} - {n} = {value - n}", value - n
    if kind == "multiply":
        n = rng.randint(2, 5)
        word = {2: "doubles", 3: "triples"}.get(n)
        text = f"{name} {word} the {item}." if word and rng.random() < 0.5 else \
            f"{name} ends up with {n} times as many {item}."
        return text, f"{value} * {n} = {value * n}", value * n
    n = rng.choice([d for d in (2, 3, 4, 5) if value % d == 0])
    return f"{name} shares the {item} equally among {n} boxes. How many go in one box?", \
        f"{value} / {n} = {value // n}", value // n


def problem(rng: random.Random) -> dict:
    """One problem: {"prompt", "response", "answer", "operations"}."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(3, 40)
    sentences, equations = [f"{name} has {value} {item}."], []
    operations = rng.choice([1, 2, 2, 3])
    for i in range(operations):
        text, equation, value = _step(rng, value, name, item)
        if "/" in equation and i < operations - 1:  # a division ends the problem: it asks its own question
            operations = i + 1
        sentences.append(text)
        equations.append(equation)
        if "/" in equation:
            break
    if "/" not in equations[-1]:
        sentences.append(f"How many {item} does {name} have now?")
    response = "\n".join(equations + [f"{MARKER} {value}"])
    return {"prompt": " ".join(sentences), "response": response, "answer": str(value), "operations": len(equations)}


def make_splits(seed: int) -> dict[str, list[dict]]:
    """Train / validation / test problems of SIZES, with no prompt in two splits."""
    rng, seen, out = random.Random(seed), set(), {}
    for split, size in SIZES.items():
        rows = []
        while len(rows) < size:
            row = problem(rng)
            if row["prompt"] not in seen:
                seen.add(row["prompt"])
                rows.append(row)
        out[split] = rows
    return out


if __name__ == "__main__":
    for row in make_splits(0)["train"][:5]:
        print(row["prompt"], "\n", row["response"], "\n")
