import numpy as np
import pytest
import torch

from gelora.geometry import synthetic
from gelora.geometry.twonn import TwoNN, fit_mu, id_scaling, two_nearest_neighbors, twonn


def brute_force(X):
    d = np.linalg.norm(X[:, None, :] - X[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1)[:, :2]
    return np.take_along_axis(d, order, 1), order


@pytest.mark.parametrize("X,true_d,tol", [
    (synthetic.gaussian(2500, 2, 100, seed=1), 2, 0.35),
    (synthetic.gaussian(2500, 5, 100, seed=2), 5, 0.35),
    (synthetic.sphere(2500, 2, seed=3), 2, 0.2),
    (synthetic.sphere(2500, 2, ambient=30, seed=4), 2, 0.2),
    (synthetic.torus(2500, seed=5), 2, 0.2),
    (synthetic.swiss_roll(2500, seed=6), 2, 0.3),
])
def test_known_dimensions(X, true_d, tol):
    model = TwoNN().fit(X)
    assert abs(model.dimension_ - true_d) < tol
    assert model.interval_[0] <= model.dimension_ <= model.interval_[1]
    assert abs(TwoNN(method="mle").fit(X).dimension_ - true_d) < tol + 0.1


def test_high_dimension_is_underestimated_as_documented():
    estimate = twonn(synthetic.gaussian(2000, 20, 100, seed=0))
    assert 13 < estimate < 19  # METHODS.md: about 16-17, never the full 20


@pytest.mark.parametrize("method", ["linear", "mle"])
@pytest.mark.parametrize("X", [synthetic.gaussian(1500, 6, 40, seed=7), synthetic.torus(1200, seed=8),
                               np.random.default_rng(9).normal(size=(800, 384)).astype(np.float32)])
def test_agrees_with_scikit_dimension(X, method):
    skdim = pytest.importorskip("skdim")
    ours = TwoNN(method=method).fit(X).dimension_
    reference = skdim.id.TwoNN(method=method).fit(X).dimension_
    assert ours == pytest.approx(reference, rel=1e-6)


def test_linear_fit_and_mle_agree_on_pareto_ratios():
    mu = synthetic.pareto_ratios(20000, 7.0, seed=0)
    linear, _, _ = fit_mu(mu, 0.1, "linear")
    mle, _, _ = fit_mu(mu, 0.1, "mle")
    assert linear == pytest.approx(7.0, rel=0.03) and mle == pytest.approx(7.0, rel=0.03)
    assert linear == pytest.approx(mle, rel=0.04)


def test_exact_neighbours_across_blocks_and_far_from_the_origin():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16)) * 1e-3 + 1e4  # tiny distances, huge norms: float32 expansion fails here
    r1, r2, idx = two_nearest_neighbors(X, block_size=64)
    dist, order = brute_force(X)
    np.testing.assert_allclose(r1, dist[:, 0], rtol=1e-6)
    np.testing.assert_allclose(r2, dist[:, 1], rtol=1e-6)
    assert (idx == order).mean() > 0.99  # ties aside, the same neighbours
    small = two_nearest_neighbors(X, block_size=7)
    np.testing.assert_allclose(small[0], r1, rtol=1e-12)


def test_duplicates_are_removed_and_counted():
    X = synthetic.sphere(500, 2, seed=1)
    with pytest.warns(UserWarning, match="removed 50 duplicate"):
        model = TwoNN().fit(np.vstack([X, X[:50]]))
    assert model.n_duplicates_ == 50 and model.n_distinct_ == 500 and model.n_points_ == 550
    assert model.dimension_ == pytest.approx(TwoNN().fit(X).dimension_)


def test_bad_input_raises_clearly():
    X = synthetic.sphere(100, 2, seed=1)
    X[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 row"):
        TwoNN().fit(X)
    with pytest.raises(ValueError, match="at least 3 distinct points"):
        TwoNN().fit(np.ones((40, 8)))
    with pytest.raises(ValueError, match="2-D"):
        TwoNN().fit(np.arange(10.0))
    with pytest.raises(ValueError, match="unknown method"):
        TwoNN(method="knn").fit(X[:5])  # checked in fit, as scikit-learn asks
    with pytest.raises(ValueError, match="discard_fraction"):
        TwoNN(discard_fraction=1.0).fit(X[:5])
    with pytest.raises(TypeError, match="numeric"):
        TwoNN().fit(np.array([["a", "b"], ["c", "d"], ["e", "f"]]))


def test_seeded_and_free_of_global_rng():
    X = synthetic.gaussian(600, 4, 20, seed=0)
    state = torch.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()
    a, b = TwoNN(random_state=1).fit(X), TwoNN(random_state=1).fit(X)
    assert a.interval_ == b.interval_ and a.standard_error_ == b.standard_error_
    assert torch.equal(state, torch.get_rng_state()) and np.array_equal(numpy_state, np.random.get_state()[1])


def test_torch_input_and_diagnostics():
    X = torch.from_numpy(synthetic.sphere(800, 2, seed=2)).float()
    model = TwoNN().fit(X)
    assert model.n_used_ == int(800 * 0.9) and len(model.mu_) == 800
    assert (model.mu_ >= 1).all() and model.log_mu_.shape == model.neg_log_survival_.shape
    assert model.standard_error_ > 0


def test_scaling_curve():
    X = synthetic.sphere(1000, 2, seed=3)
    table = id_scaling(X, repeats=3, random_state=0)
    assert table["n_points"].tolist() == [1000, 500, 250, 125, 62, 31]
    assert table.loc[0, "repeats"] == 1 and (table["repeats"][1:] == 3).all()
    assert (abs(table["mean"][:3] - 2) < 0.4).all()
    with pytest.raises(ValueError, match="at least 20"):
        id_scaling(X[:10])


def test_twonn_is_a_scikit_learn_estimator():
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils import estimator_checks as checks

    estimator = TwoNN(discard_fraction=0.2)
    copy = clone(estimator)
    assert copy is not estimator and copy.get_params() == estimator.get_params()
    assert estimator.get_params(deep=True)["discard_fraction"] == 0.2
    assert estimator.set_params(method="mle") is estimator and estimator.method == "mle"
    for check in (checks.check_no_attributes_set_in_init, checks.check_parameters_default_constructible,
                  checks.check_get_params_invariance, checks.check_set_params, checks.check_dont_overwrite_parameters):
        check("TwoNN", TwoNN())
    points = synthetic.gaussian(800, 3, 20, seed=1)
    pipeline = make_pipeline(StandardScaler(), TwoNN(random_state=0)).fit(points)
    assert abs(pipeline[-1].dimension_ - 3) < 0.5
    bad = TwoNN(discard_fraction=1.5)  # constructing never fails (clone needs that); fit says what is wrong
    with pytest.raises(ValueError, match="discard_fraction must be in"):
        bad.fit(points)
    with pytest.raises(ValueError, match="n_bootstrap must be a whole number >= 0"):
        TwoNN(n_bootstrap=-1).fit(points)
