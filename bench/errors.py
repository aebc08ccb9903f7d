"""The errors a user can cause, and how the command line reports them.

Every failure a user can cause is raised as one of these classes at the place where the input is checked,
with a message that names the file, parameter or value. The CLI prints it as one line
``bench: error: <message>`` and exits with the class's code: 2 for bad usage (a bad flag, value, file or
name), 1 for a problem of the environment (disk full, no permission, a damaged results store). Any
other exception is a bug: the CLI lets its traceback show. The roots ``UserError`` / ``UsageError`` live in
``idinvert.errors``, so that the library's own errors carry their exit codes too.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any

from idinvert.errors import UsageError, UserError  # noqa: F401  (the hierarchy's roots, re-exported)


class BenchError(UserError):
    """A problem the user can fix outside the command line (missing weights, an unreadable folder): exit 1."""

    exit_code = 1


class EnvironmentProblem(BenchError):
    """The machine refused: disk full, no permission, read-only media, I/O error. Exit code 1."""


class DamagedStore(EnvironmentProblem):
    """The results store fails SQLite's integrity check, or is not a results database at all."""


# errno values that describe the environment rather than a bug in the harness
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
                      errno.EFBIG, errno.EMFILE, errno.ENFILE}


def describe_os_error(exc: OSError, path: str | Path | None = None, doing: str = "write") -> str:
    """``cannot write results/x.pt: No space left on device (the disk is full)``."""
    where = path if path is not None else (exc.filename or "a file")
    why = exc.strerror or str(exc)
    hint = {errno.ENOSPC: " (the disk is full; free some space and rerun the same command to resume)",
            errno.EDQUOT: " (disk quota exceeded; free some space and rerun the same command to resume)",
            errno.EROFS: " (read-only file system; give another folder)",
            errno.EACCES: " (no permission; give a folder you can write to)",
            errno.EPERM: " (no permission; give a folder you can write to)"}.get(exc.errno or 0, "")
    return f"cannot {doing} {where}: {why}{hint}"


def environment_error(exc: OSError, path: str | Path | None = None, doing: str = "write") -> EnvironmentProblem:
    return EnvironmentProblem(describe_os_error(exc, path, doing))


def is_environment_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


# -- checks of command-line values ------------------------------------------------------------------------

SEED_MAX = 2**32 - 1  # numpy and torch generators both take any seed in [0, 2**32)


def check_seed(seed: Any, flag: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UsageError(f"{flag} must be an integer in [0, {SEED_MAX}], got {seed}")
    return seed


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def check_threads(threads: int | None, flag: str = "--threads") -> int | None:
    """At least 1 and at most the CPU cores this process may use: more threads than cores only contend
    (thousands crash or stall the machine)."""
    if threads is None:
        return None
    cores = usable_cpus()
    if not 1 <= threads <= cores:
        raise UsageError(f"{flag} must be between 1 and {cores} (the CPU cores this process may use), "
                         f"got {threads}")
    return threads


# Most file systems allow 255 bytes per name and 4096 per path; longer ones fail at the first open.
NAME_MAX, PATH_MAX = 255, 4096


def check_path_text(path: str | Path, flag: str) -> Path:
    """A path the store and the report can record: valid UTF-8 text within the file system's limits."""
    text = str(path)
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise UsageError(f"{flag} {shown}: the path is not valid UTF-8 text (the results store and the report "
                         "record it); rename it") from None
    if len(raw) > PATH_MAX or any(len(part.encode()) > NAME_MAX for part in Path(text).parts):
        raise UsageError(f"{flag} {text[:60]}...: the path is too long ({len(raw)} bytes; at most {PATH_MAX}, "
                         f"and {NAME_MAX} per name)")
    return Path(path)


def check_finite(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise UsageError(f"{where}: {value!r} is not a finite number")
    return value


def check_device(name: str, flag: str = "--device") -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (also ``mps``), usable on this machine; else a UsageError."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{flag} {name!r}: not a device; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{flag} {name!r}: unsupported device type {dev.type!r}; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"{flag} {name}: MPS is not available on this machine; use --device cpu")
    return name


def check_output_dir(path: Path, flag: str = "--results", *, file_target: bool = False) -> Path:
    """A folder the harness may create (or, ``file_target``, a file it may write): refuse a path that is,
    or lies under, a regular file."""
    path = check_path_text(path, flag)
    probe = path.parent if file_target else path
    while True:
        if probe.exists() or probe.is_symlink():
            if not probe.is_dir():
                what = "is" if probe == path else f"lies under {probe}, which is"
                raise UsageError(f"{flag} {path}: {what} a file, not a folder")
            return path
        if probe.parent == probe:
            return path
        probe = probe.parent
