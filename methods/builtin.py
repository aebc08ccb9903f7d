"""Imports every built-in method module so each registers itself (registry order = this order)."""

import importlib

BUILTIN_MODULES = (
    "methods.encoder",
    "methods.image2stylegan",
    "methods.mse_optim",
    "methods.optim_w",
    "methods.idinvert_encoder",
    "methods.idinvert",
    "methods.e4e",
    "methods.restyle",
    "methods.psp",
    "methods.pti",
    "methods.g_samples",
    "methods.g_codes",
)

for _module in BUILTIN_MODULES:
    importlib.import_module(_module)
