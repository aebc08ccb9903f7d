"""The one error hierarchy of the repository: every error a user can cause derives from ``UserError``, and
its class says the exit code a command line reports it with -- 2 for bad usage (a flag, value, name or
input file that is wrong), 1 for the files and the machine (weights absent or refused, a folder that
cannot be read). The library's own classes (``idinvert``, ``methods``) derive from these too, keeping
their builtin bases (``KeyError``, ``ValueError``, ``FileNotFoundError``) for callers that catch those;
``bench.errors`` adds the harness's. Any other exception is a bug."""
from __future__ import annotations

__all__ = ["UserError", "UsageError"]


class UserError(Exception):
    """Base of the errors a user can cause; ``exit_code`` is what a command line exits with."""

    exit_code = 1


class UsageError(UserError):
    """Bad input (flag, value, name, an input file's content): exit code 2."""

    exit_code = 2
