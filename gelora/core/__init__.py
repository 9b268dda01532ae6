"""Validation of arguments, the process layout, record files and metrics: what every layer above uses."""
