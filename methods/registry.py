"""Registry of inversion methods by stable name; ``resolve`` turns a ``--methods`` spec into names."""

from __future__ import annotations

import dataclasses
import math
import fnmatch
from typing import Any

from idinvert.registry import Registry, UnknownName
from idinvert.errors import UsageError
from idinvert.utils import suggest
from methods.base import InversionMethod

METHODS: Registry[type[InversionMethod]] = Registry("method")

__all__ = ["METHODS", "UnknownName", "BadParameter", "register", "names", "get", "resolve", "coerce",
           "build"]


class BadParameter(UsageError, ValueError):
    """A ``--set METHOD.PARAM=VALUE`` that names no field or has a value of the wrong type."""


def register(cls: type[InversionMethod]) -> type[InversionMethod]:
    """Class decorator: register a method under its ``name`` (a dataclass of hyperparameters)."""
    if not cls.name or not cls.name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"method class {cls.__name__} needs a name of letters, digits, '-' or '_'")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"method {cls.name!r} must be a dataclass (its fields are its hyperparameters)")
    METHODS.add(cls.name, cls)
    return cls


def names() -> list[str]:
    _load_builtin()
    return METHODS.names()


def get(name: str) -> type[InversionMethod]:
    _load_builtin()
    return METHODS.get(name)


def resolve(spec: str) -> list[str]:
    """``all`` | name | comma list | glob (``idinvert*``) -> registered names, in registry order."""
    _load_builtin()
    known = METHODS.names()
    if not spec or not spec.strip():
        raise UnknownName("method", spec, known)
    picked: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            matches = known
        elif any(ch in part for ch in "*?["):
            matches = [n for n in known if fnmatch.fnmatchcase(n, part)]
            if not matches:
                raise UnknownName("method pattern", part, known)
        elif part in METHODS:
            matches = [METHODS.canonical(part)]
        else:
            raise UnknownName("method", part, known)
        picked += [m for m in matches if m not in picked]
    return [n for n in known if n in picked]


def coerce(value: str, default: Any, where: str) -> Any:
    """Parse a command-line string into the type of the field's default."""
    try:
        if isinstance(default, bool):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            number = float(value)
            if math.isfinite(number):  # inf/nan would pass range checks, then break the store's JSON
                return number
            reason = "is not a finite number"
        elif isinstance(default, tuple):
            return tuple(type(default[0])(v) if default else v for v in value.split(":")) if value else ()
        else:
            return value
    except ValueError:
        raise BadParameter(f"{where}: {value!r} is not a valid {type(default).__name__}") from None
    raise BadParameter(f"{where}: {value!r} {reason}")


def build(name: str, overrides: dict[str, str] | None = None) -> InversionMethod:
    """Instantiate method ``name`` with string overrides ``{param: value}`` (type-checked against defaults)."""
    cls = get(name)
    defaults = cls.hyperparameters()
    kwargs = {}
    for key, raw in (overrides or {}).items():
        if key not in defaults:
            raise BadParameter(f"method {name!r} has no hyperparameter {key!r}{suggest(key, defaults, n=1)} "
                               f"(it has: {', '.join(defaults) or 'none'})")
        kwargs[key] = coerce(raw, defaults[key], f"{name}.{key}")
    return cls(**kwargs)


def _load_builtin() -> None:
    # Importing the package registers the built-in methods (one module each).
    import methods  # noqa: F401
