"""One registry type for everything the benchmark looks up by name: methods, metrics and bundles.

An entry is registered under a validated name (and optional aliases), either as the object itself or as
a lazy ``"module:attr"`` string that is imported on first use, so that listing entries imports no heavy
backend. An unknown name raises :class:`UnknownName` with a "did you mean" suggestion.

    METHODS = Registry("method")
    METHODS.add("idinvert", IDInvert)                       # the object itself
    METHODS.add("pti", "methods.pti:PTI", aliases=("pivotal",))  # imported when first asked for
    METHODS.get("idinvrt")  # UnknownName: unknown method 'idinvrt'; did you mean 'idinvert'? (known: ...)
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Generic, Iterator, TypeVar

from idinvert.errors import UsageError
from idinvert.utils import suggest

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.<>+-]*$")


class UnknownName(UsageError, KeyError):
    """An unknown method / metric / bundle name; the message carries a "did you mean" suggestion."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, list(known)
        self.message = f"unknown {kind} {name!r}{suggest(str(name), known)} (known: {', '.join(known)})"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


def load_ref(ref: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"a lazy entry must be 'module:attr', got {ref!r}")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Name -> entry, in registration order. Entries may be lazy ``"module:attr"`` strings."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._aliases: dict[str, str] = {}

    # -- writing -------------------------------------------------------------------------------------
    def add(self, name: str, entry: T | str, *, aliases: tuple[str, ...] = (), replace: bool = False) -> T | str:
        """Register ``entry`` under ``name``; a second, different entry under a taken name is an error
        unless ``replace``. Returns ``entry`` (so that it can serve as a decorator's body)."""
        for n in (name, *aliases):
            if not isinstance(n, str) or not _NAME.match(n):
                raise ValueError(f"bad {self.kind} name {n!r}: letters, digits and '_-.+' only")
        old = self._entries.get(name)
        if old is not None and old is not entry and old != entry and not replace:
            raise ValueError(f"{self.kind} name {name!r} registered twice")
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` and its aliases (tests that register a toy entry clean up with this)."""
        self._entries.pop(name, None)
        self._aliases = {a: n for a, n in self._aliases.items() if n != name}

    # -- reading -------------------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name of ``name`` or of the alias ``name``; UnknownName otherwise."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UnknownName(self.kind, name, self.names())

    def get(self, name: str) -> T:
        """The entry (imported now when it was registered lazily)."""
        key = self.canonical(name)
        entry = self._entries[key]
        if isinstance(entry, str):
            entry = load_ref(entry)
            self._entries[key] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self.get(n)) for n in self._entries]

    def values(self) -> list[T]:
        return [self.get(n) for n in self._entries]

    def keys(self) -> list[str]:
        return self.names()

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, entry: T) -> None:
        self.add(name, entry, replace=True)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
