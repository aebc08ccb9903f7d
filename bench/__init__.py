"""bench: the idinvert-bench harness — CLI, runner, metrics, results store, report."""

from idinvert import __version__

__all__ = ["__version__"]
