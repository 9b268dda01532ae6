"""Records name the kit's folders relative to the checkout, so a committed record reads the same
in every clone; a path outside the checkout keeps its meaning (absolute)."""
import json
from pathlib import Path

from gelora.core.paths import ROOT, from_record, portable
from gelora.training.config import PATH_SETTINGS, FinetuneConfig, config_from_record


def test_a_path_inside_the_checkout_is_written_relative_and_read_back(tmp_path, monkeypatch):
    assert (ROOT / "gelora" / "core" / "paths.py").is_file()  # ROOT is the checkout
    assert portable(ROOT / "results" / "cpu" / "id_profile.csv") == "results/cpu/id_profile.csv"
    assert from_record("results/cpu/id_profile.csv") == str(ROOT / "results" / "cpu" / "id_profile.csv")
    assert portable(tmp_path / "runs") == str(tmp_path / "runs")  # outside: absolute, unchanged
    assert from_record(str(tmp_path / "runs")) == str(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)  # relative to the working folder: made absolute, not read as the checkout's
    assert portable("runs/results") == str(tmp_path / "runs" / "results")
    monkeypatch.chdir(ROOT)
    assert portable("runs/results") == "runs/results"
    assert portable(None) is None and from_record(None) is None


def test_a_config_writes_and_reads_its_paths_through_the_checkout(tmp_path):
    profile = ROOT / "results" / "cpu" / "id_profile.csv"
    config = FinetuneConfig("gelora", model="tiny-bert", id_profile=str(profile), output_dir=str(ROOT / "runs" / "x"),
                            cache_dir=str(tmp_path / "cache"))
    flat = config.flat()
    assert flat["id_profile"] == "results/cpu/id_profile.csv" and flat["output_dir"] == "runs/x"
    assert flat["cache_dir"] == str(tmp_path / "cache")
    back = config_from_record(flat)
    assert back.id_profile == str(profile) and back.output_dir == str(ROOT / "runs" / "x")
    assert back.cache_dir == str(tmp_path / "cache")
    legacy = {("profile" if k == "id_profile" else k): v for k, v in flat.items()}  # the name records had before
    assert config_from_record(legacy) == back


def test_no_committed_record_names_a_machine_s_folder():
    """Every committed record's path settings are relative (they once carried /work/main/...)."""
    records = [json.loads(p.read_text()) for p in (ROOT / "results").rglob("*.json")]
    records = [r for r in records if isinstance(r, dict) and isinstance(r.get("config"), dict)]
    assert len(records) > 600
    absolute = [(r["run_id"], k) for r in records for k in PATH_SETTINGS
                if isinstance(r["config"].get(k), str) and Path(r["config"][k]).is_absolute()]
    assert absolute == []
