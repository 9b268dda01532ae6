"""A trained run as files a user keeps: its adapter (or whole model), its head and what it needs to
be used again, and predictions on new text from it.

    gelora train --method lora --dataset reviews.csv --save-adapter my-adapter
    gelora predict my-adapter new_reviews.csv --out predictions.csv

The format is the one its users load: a PEFT adapter for the PEFT methods (LoRA, GeLoRA, AdaLoRA,
EVA; PiSSA and LoRA-GA converted by PEFT to a plain LoRA on the original weights), the kit's
checked LoRA-XS format for LoRA-XS / LoRA-SB / GeLoRA-SB (`gelora export` turns it into a PEFT
adapter), a transformers checkpoint for full fine-tuning. Beside it, `gelora-run.json` names the
base model, the task, the label names and the run it came from.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

RUN_FILE = "gelora-run.json"
FORMATS = ("peft", "lora_xs", "full")
CONVERTED_INITS = ("pissa", "lora_ga")  # PEFT changes the base weights at init: saved as a plain LoRA


def saved_run_id(folder: str | os.PathLike) -> str | None:
    """The run whose adapter `folder` holds (None when it holds none)."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("run_id")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def check_save_target(folder: str | os.PathLike, run_id: str, output_dir: str | os.PathLike, force: bool = False) -> Path:
    """Refuse, before any training, a --save-adapter folder that cannot take this run's adapter: a
    file, the results folder itself, a folder holding another run's adapter or other files (unless
    `force`), or one whose parent cannot be written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--save-adapter {folder} is a file: give a folder for the adapter")
    if folder.resolve() == Path(output_dir).resolve():
        raise ValueError(f"--save-adapter {folder} is the results folder (--output-dir): give the adapter a folder of its own")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        other = saved_run_id(folder)
        if other is None:
            raise ValueError(f"--save-adapter {folder} is not empty and holds no gelora adapter: give a new folder "
                             "(or --force to replace what is there)")
        if other != run_id:
            raise ValueError(f"--save-adapter {folder} holds the adapter of another run ({other}): give another folder "
                             "(or --force to replace it)")
    parent = folder.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=parent).cleanup()
    except OSError as error:
        raise ValueError(f"--save-adapter {folder}: cannot write in {parent} ({error.strerror})") from None
    return folder


MODEL_CARD = "README.md"  # the folder's model card: documentation a user may edit, not part of the checksums


def _files(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file of a saved folder but its run file and model card."""
    from gelora.data.tasks import file_sha256

    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in (RUN_FILE, MODEL_CARD)}


def verify_saved(folder: str | os.PathLike) -> dict:
    """The run file of a saved folder, after checking that every file it lists has its checksum and
    that no file is there it does not list (weights copied in from another run, or a write cut short)."""
    folder = Path(folder)
    meta = json.loads((folder / RUN_FILE).read_text())
    listed = meta.get("files")
    if not isinstance(listed, dict):
        raise ValueError(f"{folder / RUN_FILE} lists no checksums of its files: save the adapter again with this "
                         "version of gelora (`gelora train ... --save-adapter`)")
    found = _files(folder)
    changed = sorted(name for name in listed if found.get(name) != listed[name])
    extra = sorted(set(found) - set(listed))
    if changed or extra:
        raise ValueError(f"{folder} does not hold what run {meta.get('run_id')} saved: "
                         + "; ".join(part for part in (f"changed or missing: {changed}" if changed else "",
                                                       f"not written by it: {extra}" if extra else "") if part))
    return meta


def initial_adapter(model, method: str, scratch: str | os.PathLike) -> Path | None:
    """PiSSA and LoRA-GA move the base weights at init: PEFT converts their trained adapter to a
    plain LoRA on the original weights from the adapter saved before training (returned here)."""
    if method not in CONVERTED_INITS:
        return None
    path = Path(scratch) / "initial-adapter"
    model.save_pretrained(str(path), save_embedding_layers=False)
    return path


def save_trained(model, tokenizer, folder: str | os.PathLike, run: dict, initial: Path | None = None) -> Path:
    """Write the trained model of `run` (a result record) to `folder` in its users' format: into a
    new hidden folder beside it, then renamed into place (`check_save_target` has refused a folder
    holding another run's adapter before training)."""
    target = Path(folder)
    target.resolve().parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.resolve().parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        _write_trained(model, tokenizer, folder, run, initial)
        _publish(folder, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return target


def _publish(folder: Path, target: Path) -> None:
    """Files readable by others, then the finished folder put in place of `target` by renames: a
    kill leaves the old adapter or the new one (or the old one under a hidden name), never a mix."""
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(folder, 0o755)
    if target.exists():
        old = target.resolve().parent / f".{target.name}.replaced-{os.getpid()}"
        os.replace(target, old)
        os.replace(folder, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(folder, target)


def _write_trained(model, tokenizer, folder: Path, run: dict, initial: Path | None) -> None:
    from peft import PeftModel

    from gelora.adapters.files import save_adapter
    from gelora.adapters.lora_xs import adapter_layers

    if isinstance(model, PeftModel):
        kind = "peft"
        model.save_pretrained(str(folder), save_embedding_layers=False,  # the base vocabulary is unchanged
                              path_initial_model_for_weight_conversion=None if initial is None else str(initial))
        if initial is not None:
            _put_back_head(model, folder)
    elif adapter_layers(model):
        kind = "lora_xs"
        save_adapter(model, folder)
    elif run["method"] == "full":
        kind = "full"
        model.save_pretrained(str(folder))
    else:
        raise ValueError(f"method {run['method']!r} left no adapter the kit knows how to save")
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    meta = {"run_id": run["run_id"], "format": kind, "method": run["method"], "model": run["model"],
            "seed": run["seed"], "task": run["task"], "label_names": run.get("label_names"),
            "max_length": run["config"]["max_length"], "text_column": run["config"].get("text_column", "text"),
            "label_column": run["config"].get("label_column", "label"),
            "base_fingerprint": run["identity"]["content"]["model"], "dataset": run["dataset"],
            "test": run["test"], "metric": run["metric"]}
    meta["files"] = _files(folder)  # ties the weights to this run: load_trained checks every one
    (folder / RUN_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _put_back_head(model, folder: Path) -> None:
    """PEFT (0.21) converts PiSSA / LoRA-GA to a plain LoRA but leaves the trained head
    (modules_to_save) out of the file: it is written back, so the adapter loads whole."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    saved = load_file(str(path))
    head = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()
            if "lora_" not in k and k not in saved}
    save_file({**saved, **head}, str(path), metadata={"format": "pt"})


def load_trained(folder: str | os.PathLike):
    """(model, tokenizer, meta) from a folder written by `save_trained`, the base weights checked
    against the ones the run trained on."""
    import transformers
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from gelora.adapters.files import load_adapter
    from gelora.models.loading import load_model
    from gelora.training.identity import model_fingerprint

    transformers.utils.logging.disable_progress_bar()  # the weight-loading bar: a command prints one line
    folder = Path(folder)
    if not (folder / RUN_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds no {RUN_FILE}: not a folder written by `gelora train --save-adapter`")
    meta = verify_saved(folder)
    if meta.get("format") not in FORMATS:
        raise ValueError(f"{folder / RUN_FILE}: unknown format {meta.get('format')!r}; expected one of {FORMATS}")
    if meta["task"] not in ("classification", "regression"):
        raise ValueError(f"the run in {folder} is a {meta['task']} run: predict scores classification and "
                         "regression runs (generate with the model's own generate())")
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    num_labels = len(meta["label_names"]) if meta["task"] == "classification" else None
    if meta["format"] == "full":
        model = AutoModelForSequenceClassification.from_pretrained(str(folder))
        return model.eval(), tokenizer, meta
    found = model_fingerprint(meta["model"], meta["seed"])
    if found != meta["base_fingerprint"]:
        raise ValueError(f"the base model {meta['model']!r} here is not the one the adapter in {folder} was trained "
                         f"on (fingerprint {found[:24]}... vs {meta['base_fingerprint'][:24]}...)")
    model, _ = load_model(meta["model"], meta["task"], num_labels, seed=meta["seed"])
    if meta["format"] == "peft":
        model = PeftModel.from_pretrained(model, str(folder))
    else:
        load_adapter(model, folder)
    return model.eval(), tokenizer, meta


@torch.no_grad()
def logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32, text_pairs=None) -> np.ndarray:
    """The model's outputs for `texts`, in order (batches of similar length, put back)."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        pairs = None if text_pairs is None else [text_pairs[i] for i in rows]
        batch = tokenizer([texts[i] for i in rows], pairs, truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt")
        out[rows] = model(**batch).logits.float().cpu().numpy()
    return out


def predict(folder: str | os.PathLike, data: str, text_column: str | None = None,
            label_column: str | None = None, batch_size: int = 32) -> tuple[pd.DataFrame, dict]:
    """Score every row of `data` (a CSV/TSV/JSONL file or a .txt file, one text per line) with the
    run saved in `folder` (columns: the run's own unless named). Returns (a table: text, prediction, its
    probability, every class's probability (softmax) and logit, or the predicted value, plus the label
    when the file has one; meta with the accuracy or error where labels exist)."""
    from gelora.allocation.recommend import read_texts
    from gelora.data.tasks import load_dataset, read_table

    model, tokenizer, meta = load_trained(folder)
    column = text_column or meta["text_column"]
    label_column = label_column or meta["label_column"]
    path = Path(data)
    if path.suffix == ".txt":
        texts, pairs, labels = read_texts(data, text_column=column), None, None
    else:
        has_labels = label_column in read_table(path).columns if path.is_file() else True
        dataset = load_dataset(data, "all" if path.is_file() else "test", text_column=column,
                               label_column=label_column if has_labels else None,
                               task=meta["task"] if has_labels else None,
                               label_names=meta["label_names"] if has_labels and meta["task"] == "classification" else None)
        texts, pairs, labels = dataset.texts, dataset.text_pairs, dataset.labels
    outputs = logits(model, tokenizer, texts, meta["max_length"], batch_size, pairs)
    table = pd.DataFrame({"text": texts})
    scored = dict(meta)
    if meta["task"] == "classification":
        names = meta["label_names"]
        table["prediction"] = [names[i] for i in outputs.argmax(1)]
        shifted = np.exp(outputs - outputs.max(1, keepdims=True))
        probabilities = shifted / shifted.sum(1, keepdims=True)  # softmax of the logits, row by row
        table["probability"] = probabilities.max(1)
        for k, name in enumerate(names):
            table[f"prob_{name}"] = probabilities[:, k]
        for k, name in enumerate(names):
            table[f"logit_{name}"] = outputs[:, k]
        if labels is not None:
            table["label"] = [names[i] for i in labels]
            scored["accuracy"] = float((outputs.argmax(1) == labels).mean())
    else:
        table["prediction"] = outputs[:, 0]
        if labels is not None:
            table["label"] = labels
            scored["mse"] = float(((outputs[:, 0] - labels) ** 2).mean())
    scored["examples"] = len(texts)
    return table, scored

