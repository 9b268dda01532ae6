"""The `gelora` command end to end on the tiny models, the recommender's config applied with plain
PEFT, and the LoRA-SB Trainer example."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model

from gelora import cli
from gelora.allocation.ranks import adapter_params, realised_ranks
from gelora.allocation.recommend import read_texts, recommend_ranks
from gelora.models.loading import load_model
from gelora.models.targets import block_shapes

ROOT = Path(__file__).resolve().parent.parent


def texts_file(tmp_path, n=60):
    path = tmp_path / "texts.txt"
    texts = read_texts("movie-sentiment", n)
    path.write_text("\n".join(texts[: n // 2]) + "\n\n" + "\n".join(texts[n // 2:]) + "\n")  # a blank line is skipped
    return path


def test_profile_writes_csv_and_figure(tmp_path, capsys):
    assert cli.main(["profile", "tiny-bert", str(texts_file(tmp_path)), "--n-texts", "50", "--max-length", "32",
                     "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    profile = pd.read_csv(tmp_path / "out" / "profile.csv")
    assert profile["layer"].tolist() == [0, 1, 2, 3, 4] and (tmp_path / "out" / "profile.png").exists()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("model, targets, task_type", [("tiny-bert", ["query", "value"], "SEQ_CLS"),
                                                        ("tiny-llama", ["q_proj", "v_proj"], "CAUSAL_LM")])
def test_recommendation_is_realised_by_plain_peft(tmp_path, capsys, model, targets, task_type):
    out = tmp_path / "rec"
    assert cli.main(["recommend", model, "movie-sentiment", "--n-texts", "80", "--max-length", "32", "--rank", "4",
                     "--target-modules", *targets, "--output-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "LoraConfig.from_pretrained" in printed and "trainable adapter parameters" in printed
    assert "What the kit's study found about rank allocators at equal budget" in printed  # the package's findings
    config = LoraConfig.from_pretrained(str(out))
    assert config.task_type == task_type
    recommended = recommend_ranks(model, read_texts("movie-sentiment", 80), rank=4, target_modules=targets,
                                  max_length=32)
    head = "classification" if task_type == "SEQ_CLS" else "generation"
    net, _ = load_model(model, head, 2 if head == "classification" else None)
    budget = adapter_params(block_shapes(net, targets), [4] * 4)
    peft_model = get_peft_model(net, config)
    realised = realised_ranks(peft_model)  # names under the task model's prefix (bert., model.)
    assert {k.split(".", 1)[1]: v for k, v in realised.items()} == recommended.module_ranks
    trainable_adapter = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert trainable_adapter == recommended.params <= budget


def test_recommend_needs_a_budget_and_reports_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["recommend", "tiny-bert", "movie-sentiment"])
    assert cli.main(["recommend", "tiny-bert", str(tmp_path / "missing.txt"), "--rank", "2"]) == 1
    assert "gelora recommend:" in capsys.readouterr().err


def test_forwarded_commands_and_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--gradient-accumulation" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "recommend" in capsys.readouterr().out


def test_the_console_script_is_installed():
    script = shutil.which("gelora", path=str(Path(sys.executable).parent))
    assert script is not None, "pip install -e . installs the gelora command"
    done = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "gelora profile" in done.stdout


def test_the_trainer_example_trains_saves_reloads_and_exports(tmp_path):
    spec = importlib.util.spec_from_file_location("example", ROOT / "examples" / "lora_sb_trainer.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    logits = example.main(["--model", "tiny-bert", "--n-train", "64", "--rank", "4", "--batch-size", "8",
                           "--output-dir", str(tmp_path)])
    assert torch.equal(logits[0], logits[1])  # the reloaded adapter
    torch.testing.assert_close(logits[2], logits[0], atol=1e-5, rtol=1e-5)  # plain PEFT
    assert cli.main(["export", str(tmp_path / "lora_sb"), "tiny-bert", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "adapter_model.safetensors").exists()


def test_recommend_on_a_local_model_folder(tmp_path, capsys):
    model, tokenizer = load_model("tiny-bert", "classification", 2)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    assert cli.main(["recommend", str(tmp_path / "model"), str(texts_file(tmp_path)), "--n-texts", "50",
                     "--max-length", "32", "--budget", "3000", "--output-dir", str(tmp_path / "rec"), "--no-progress"]) == 0
    config = LoraConfig.from_pretrained(str(tmp_path / "rec"))
    assert config.task_type == "SEQ_CLS" and len(config.target_modules) > 0
    assert "budget 3,000" in capsys.readouterr().out
