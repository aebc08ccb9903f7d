"""Pluggable inversion methods, one module each, registered by name (see ``methods.registry``)."""

from methods import builtin as _builtin  # noqa: F401  (registers the built-in methods)
