"""Converters from other frameworks' weights to srise-jax checkpoints.

Each converter is a submodule with a command line, e.g. ``python -m weights_conversion.arcface``.
Nothing is imported here, so that running a submodule with ``-m`` imports it only once.
"""
