"""A GeLoRA run is identified by the ranks it trains, not by the bytes of its ID profile: a profile
recomputed elsewhere (last digits differ) reuses the run, a profile that moves a rank retrains it,
and records named under the old rule are renamed only after a check of each one."""
import json

from gelora.data.tasks import file_sha256
from gelora.training import migrate
from gelora.training.config import FinetuneConfig
from gelora.training.identity import run_id
from gelora.training.train import finetune

SETTINGS = dict(model="tiny-bert", dataset="movie-sentiment", n_train=32, n_eval=16, n_test=16, batch_size=8,
                epochs=1, evals=1, max_length=32, progress=False, budget=8 * 128 * 8,
                target_modules=["query", "value"])
DIMENSIONS = [12.0, 14.5, 13.0, 17.25, 16.0]  # tiny-bert: 4 blocks, bounds [2.5, 0, 4.25, 0]


def write_profile(path, dimensions):
    path.write_text("layer,dimension\n" + "".join(f"{k},{d!r}\n" for k, d in enumerate(dimensions)))
    return str(path)


def gelora_run(tmp_path, profile, **extra):
    return finetune("gelora", id_profile=profile, output_dir=str(tmp_path / "runs"), **SETTINGS, **extra)


def test_a_profile_that_differs_in_its_last_digits_reuses_the_run(tmp_path):
    first = gelora_run(tmp_path, write_profile(tmp_path / "a.csv", DIMENSIONS))
    nudged = [d * (1 + 1e-9) for d in DIMENSIONS]  # another machine's float rounding, far above it
    again = gelora_run(tmp_path, write_profile(tmp_path / "b.csv", nudged))
    assert file_sha256(tmp_path / "a.csv") != file_sha256(tmp_path / "b.csv")
    assert again.get("reused") and again["run_id"] == first["run_id"]
    assert first["identity"]["content"]["profile"] == {"ranks": first["allocation"]["ranks"]}


def test_a_profile_that_moves_a_rank_retrains(tmp_path):
    first = gelora_run(tmp_path, write_profile(tmp_path / "a.csv", DIMENSIONS))
    moved = DIMENSIONS[:3] + [DIMENSIONS[3] + 6.0, DIMENSIONS[4] + 6.0]  # block 2's bound grows from 4.25 to 10.25
    second = gelora_run(tmp_path, write_profile(tmp_path / "b.csv", moved))
    assert not second.get("reused") and second["run_id"] != first["run_id"]
    assert second["allocation"]["ranks"] != first["allocation"]["ranks"]


def as_old_record(record: dict, profile: str, folder) -> str:
    """The record as the kit wrote it before: the profile by its sha256, the name by that identity."""
    from gelora.training.identity import identity_digest

    old = json.loads((folder / f"{record['run_id']}.json").read_text())
    old["identity"]["content"]["profile"] = file_sha256(profile)
    old["run_id"] = f"{record['run_id'].rsplit('__', 1)[0]}__{identity_digest(old['identity'])}"
    old["predictions"]["file"] = old["run_id"] + ".predictions.npz"
    (folder / f"{record['run_id']}.json").unlink()
    (folder / f"{record['run_id']}.predictions.npz").rename(folder / old["predictions"]["file"])
    (folder / f"{old['run_id']}.json").write_text(json.dumps(old))
    (folder / "runs.csv").write_text(f"run_id,accuracy\n{old['run_id']},0.5\n")
    return old["run_id"]


def test_records_under_the_old_rule_are_renamed_after_a_check_and_then_reused(tmp_path):
    profile = write_profile(tmp_path / "a.csv", DIMENSIONS)
    record = gelora_run(tmp_path, profile)
    folder = tmp_path / "runs"
    old_name = as_old_record(record, profile, folder)
    assert run_id(FinetuneConfig("gelora", id_profile=profile, **SETTINGS)) == record["run_id"] != old_name
    renames, problems = migrate.plan([folder])
    assert [(r.old, r.new, r.checked) for r in renames] == [(old_name, record["run_id"], "profile file")]
    assert problems == []
    assert (folder / f"{old_name}.json").exists()  # a plan writes nothing
    assert migrate.main([str(folder), "--apply"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["runs.csv", f"{record['run_id']}.json", f"{record['run_id']}.predictions.npz"])
    assert record["run_id"] in (folder / "runs.csv").read_text()
    again = gelora_run(tmp_path, profile)  # reads the renamed record and its predictions: no training
    assert again.get("reused") and again["test"] == record["test"]
    assert migrate.plan([folder]) == ([], [])  # a second pass has nothing to do


def test_a_record_whose_ranks_do_not_follow_from_its_dimensions_is_refused(tmp_path):
    profile = write_profile(tmp_path / "a.csv", DIMENSIONS)
    record = gelora_run(tmp_path, profile)
    folder = tmp_path / "runs"
    old_name = as_old_record(record, profile, folder)
    path = folder / f"{old_name}.json"
    tampered = json.loads(path.read_text())
    tampered["allocation"]["ranks"] = tampered["allocation"]["ranks"][::-1]
    path.write_text(json.dumps(tampered))
    renames, (problem,) = migrate.plan([folder])
    assert renames == [] and "allocate" in problem and "today, the run trained" in problem and str(path) in problem
    assert migrate.main([str(folder), "--apply"]) == 1 and path.exists()  # reported, left alone
