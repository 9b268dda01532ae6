import numpy as np
import pytest
import torch

from gelora.geometry.twonn import TwoNN
from gelora.probing.probe import hidden_states, id_profile, load_profile, profile_from_states, save_profile

TEXTS = ["a quietly moving film", "bad", "the plot never quite gets going, but the cast is superb",
         "an unexpected delight", "two hours I will not get back", "fine"]


@pytest.mark.parametrize("pooling", ["cls", "mean", "last", "tokens"])
def test_shapes_for_an_encoder_and_a_decoder(pooling, tiny_bert, tiny_llama):
    for model, tokenizer in (tiny_bert, tiny_llama):
        states = hidden_states(model, tokenizer, TEXTS, pooling=pooling, batch_size=4, progress=False)
        assert len(states) == model.config.num_hidden_layers + 1
        rows = sum(len(tokenizer(t)["input_ids"]) for t in TEXTS) if pooling == "tokens" else len(TEXTS)
        assert all(s.shape == (rows, model.config.hidden_size) and s.dtype == np.float32 for s in states)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["mean", "last", "cls", "tokens"])
def test_pooling_ignores_padding(pooling, padding_side, tiny_bert, tiny_llama):
    """Batched with padding on either side, every text's pooled states are those it has alone."""
    if pooling == "cls" and padding_side == "left":
        with pytest.raises(ValueError, match="cls pooling reads the first position"):
            hidden_states(*tiny_bert, TEXTS, pooling="cls", padding_side="left", progress=False)
        return
    for model, tokenizer in (tiny_bert, tiny_llama):
        options = dict(pooling=pooling, progress=False, max_points=10_000)
        alone = [hidden_states(model, tokenizer, [t], **options) for t in TEXTS]
        batched = hidden_states(model, tokenizer, TEXTS, batch_size=len(TEXTS), padding_side=padding_side, **options)
        for layer in range(len(batched)):
            np.testing.assert_allclose(batched[layer], np.concatenate([a[layer] for a in alone]), atol=1e-5)


def test_cache_returns_identical_arrays_without_running_the_model(tmp_path, tiny_bert, monkeypatch):
    model, tokenizer = tiny_bert
    first = hidden_states(model, tokenizer, TEXTS, cache_dir=tmp_path, progress=False)
    calls = []
    monkeypatch.setattr(model.bert, "forward", lambda *a, **k: calls.append(1))
    second = hidden_states(model, tokenizer, TEXTS, cache_dir=tmp_path, progress=False)
    assert not calls and all(np.array_equal(a, b) for a, b in zip(first, second))
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_tokens_pooling_is_capped_and_seeded(tiny_bert):
    model, tokenizer = tiny_bert
    a = hidden_states(model, tokenizer, TEXTS, pooling="tokens", max_points=10, seed=1, progress=False)
    b = hidden_states(model, tokenizer, TEXTS, pooling="tokens", max_points=10, seed=1, progress=False)
    assert a[0].shape[0] == 10 and np.array_equal(a[2], b[2])


def test_profile_reports_layers_without_a_dimension(tiny_bert, tmp_path):
    model, tokenizer = tiny_bert
    texts = [f"sentence number {i} about film {i % 7}" for i in range(60)]
    with pytest.warns(UserWarning, match="layer 0: no intrinsic dimension"):
        profile = id_profile(model, tokenizer, texts, pooling="cls", progress=False)
    assert len(profile) == 5 and np.isnan(profile.loc[0, "dimension"])
    assert "distinct" in profile.loc[0, "note"] and profile.loc[0, "n_distinct"] == 1
    assert profile["dimension"][1:].notna().all()
    path = save_profile(profile, tmp_path / "profile.csv")
    again = load_profile(path)
    np.testing.assert_allclose(again["dimension"], profile["dimension"])
    assert again["note"].tolist() == profile["note"].tolist()


def test_profile_of_known_states():
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(1500, d)) @ rng.normal(size=(d, 64)) for d in (2, 4, 6)]
    profile = profile_from_states(states, TwoNN())
    assert np.allclose(profile["dimension"], [2, 4, 6], atol=0.4)


def test_bad_input(tiny_bert):
    model, tokenizer = tiny_bert
    with pytest.raises(ValueError, match="unknown pooling"):
        hidden_states(model, tokenizer, TEXTS, pooling="max")
    with pytest.raises(ValueError, match="empty"):
        hidden_states(model, tokenizer, [])
    with pytest.raises(ValueError, match="empty or not strings"):
        hidden_states(model, tokenizer, ["fine", "  "])
    with pytest.raises(ValueError, match="not an ID profile"):
        import pandas as pd
        pd.DataFrame({"x": [1]}).to_csv("/tmp/_not_a_profile.csv", index=False)
        load_profile("/tmp/_not_a_profile.csv")


def test_nan_states_are_an_error(tiny_bert):
    model, tokenizer = tiny_bert
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="layer 2 hidden states contain NaN"):
        hidden_states(model, tokenizer, TEXTS, progress=False)


@pytest.mark.parametrize("pooling", ["mean", "tokens"])
def test_fp64_probe_is_a_float64_forward_and_leaves_the_model_as_it_was(pooling, tiny_bert, tiny_llama):
    """precision='fp64' gives exactly the states of a float64 copy of the model; afterwards every
    parameter and buffer (the decoder's rotary frequencies) has its dtype back and a float32 probe
    gives the same states as before."""
    import copy

    for model, tokenizer in (tiny_bert, tiny_llama):
        options = dict(pooling=pooling, batch_size=4, progress=False, max_points=10_000)
        dtypes = {name: t.dtype for name, t in [*model.named_parameters(), *model.named_buffers()]}
        before = hidden_states(model, tokenizer, TEXTS, **options)
        reference = hidden_states(copy.deepcopy(model).double(), tokenizer, TEXTS, **options)
        states = hidden_states(model, tokenizer, TEXTS, precision="fp64", **options)
        assert all(np.array_equal(a, b) for a, b in zip(states, reference))
        assert {name: t.dtype for name, t in [*model.named_parameters(), *model.named_buffers()]} == dtypes
        after = hidden_states(model, tokenizer, TEXTS, **options)
        assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_fp64_states_do_not_depend_on_how_texts_are_batched(tiny_bert):
    """Batching changes the shapes of the products, so float32 states move in their last digits
    (here by up to ~1,400 float32 steps, as they move between machines); float64 states rounded to
    float32 stay within one step."""
    model, tokenizer = tiny_bert
    one, six = (hidden_states(model, tokenizer, TEXTS, pooling="tokens", batch_size=b, precision="fp64",
                              progress=False, max_points=10_000) for b in (1, 6))
    for a, b in zip(one, six):
        assert (np.abs(a - b) <= np.spacing(np.abs(a))).all()


def test_unknown_probe_precision_is_refused(tiny_bert):
    with pytest.raises(ValueError, match="precision must be None .* 'fp64'.*got 'float64'"):
        hidden_states(*tiny_bert, TEXTS, precision="float64", progress=False)
