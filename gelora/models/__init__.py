"""Base models (packaged, local, hub at a pinned revision), the matrices an adapter targets and their spectra."""
