"""Imports every built-in method module so each registers itself."""

import importlib

BUILTIN_MODULES = (
    "methods.encoder",
    "methods.image2stylegan",
    "methods.mse_optim",
    "methods.optim_w",
    "methods.idinvert_encoder",
    "methods.idinvert",
)

for _module in BUILTIN_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:  # a method file not written yet must not break the others
        if exc.name != _module:
            raise
