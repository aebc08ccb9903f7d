"""idinvert: the library behind idinvert-bench — networks, domains, inversion, training, boundaries, zoo."""

__version__ = "0.1.0"
