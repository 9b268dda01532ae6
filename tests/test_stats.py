"""gelora.stats against closed forms: the bootstrap interval of a mean difference is the normal
one, mean +- z sd / sqrt(n), for a large sample; identical methods are never resolved."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from gelora.stats import compare_to_reference, paired_bootstrap


def test_one_seed_matches_the_normal_interval():
    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.80).astype(float)
    b = (rng.random(2000) < 0.75).astype(float)
    result = paired_bootstrap(a, b, n_resamples=20_000)
    d = a - b
    half = scipy_stats.norm.ppf(0.975) * d.std(ddof=0) / np.sqrt(len(d))
    assert result.difference == pytest.approx(d.mean())
    assert result.low == pytest.approx(d.mean() - half, abs=0.004)
    assert result.high == pytest.approx(d.mean() + half, abs=0.004)
    assert result.resolution == pytest.approx(half, rel=0.05)
    assert result.verdict == ("better" if result.low > 0 else "not resolved")


def test_identical_methods_are_not_resolved_and_a_clear_gap_is():
    rng = np.random.default_rng(1)
    a = (rng.random((3, 500)) < 0.7).astype(float)
    same = paired_bootstrap(a, a.copy())
    assert (same.difference, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "not resolved")
    worse = paired_bootstrap(np.zeros((3, 500)), np.ones((3, 500)))
    assert worse.verdict == "worse" and worse.high == -1.0


def test_seeds_widen_the_interval():
    rng = np.random.default_rng(2)
    base = rng.normal(size=400)
    shifts = np.array([[-0.3], [0.0], [0.3]])  # training noise: whole seeds move
    a, b = base + 0.1 + shifts, base.copy()[None, :].repeat(3, 0)
    with_seeds = paired_bootstrap(a, b)
    one_seed = paired_bootstrap(a[1], b[1])
    assert with_seeds.high - with_seeds.low > 3 * (one_seed.high - one_seed.low)


def test_compare_to_reference_and_bad_inputs():
    scores = {"lora": np.ones((2, 50)), "gelora": np.ones((2, 50)), "full": np.zeros((2, 50))}
    table = compare_to_reference(scores, "lora", n_resamples=500)
    assert table.set_index("method")["verdict"].to_dict() == {"gelora": "not resolved", "full": "worse"}
    with pytest.raises(ValueError, match="same seeds and examples"):
        paired_bootstrap(np.ones((2, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([1.0, np.nan], [1.0, 0.0])
    with pytest.raises(ValueError, match="reference 'eva' is not among"):
        compare_to_reference(scores, "eva")


def test_claims_are_paired_on_common_seeds_and_examples(tmp_path):
    from gelora.results import claims_table
    from gelora.train import write_predictions

    records = []
    rng = np.random.default_rng(0)
    for method, p in (("lora", 0.6), ("lora_xs", 0.6), ("lora_sb", 0.95)):
        for seed in (0, 1):
            name = f"{method}-{seed}"
            scores = (rng.random(300) < p).astype(np.float32)
            entry = write_predictions(tmp_path / f"{name}.predictions.npz", np.arange(300), scores, scores, scores)
            records.append({"run_id": name, "method": method, "seed": seed, "predictions": entry})
    table = claims_table(records, tmp_path, n_resamples=1000).set_index("claim")
    assert list(table.index) == ["LoRA-SB vs LoRA-XS, equal parameters", "LoRA-SB vs LoRA, equal budget"]
    assert (table["verdict"] == "better").all() and (table["examples"] == 300).all()
    (tmp_path / "lora-0.predictions.npz").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="does not match the sha256"):
        claims_table(records, tmp_path)
