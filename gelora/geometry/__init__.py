"""Intrinsic dimension: the TwoNN estimator and manifolds of known dimension to test it on."""
