"""Errors the user can fix, shared by the runner and the CLI (the CLI prints them as one line)."""


class UsageError(Exception):
    """Bad command-line input: exit code 2."""
