"""One registry for everything chosen by name: estimators, merge methods, suites.

A registry maps names to objects of one kind and refuses an unknown name with one line that lists the known
ones, so every ``--estimator``, ``merge_method`` or ``--suite`` fails the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one ``kind`` (used in messages: "Unknown estimator 'x'; known: ...")."""

    def __init__(self, kind: str, *, hint: str = ""):
        self.kind = kind
        self.hint = hint  # appended to the unknown-name message, e.g. " (or several joined by '+')"
        self._items: dict[str, T] = {}

    def register(self, name: str, value: T) -> T:
        """Add ``value`` under ``name``; a second object with the same name is a programming error."""
        if name in self._items:
            raise ValueError(f"Two {self.kind}s are named {name}.")
        self._items[name] = value
        return value

    def get(self, name: str) -> T:
        """The object registered as ``name``, or ConfigError naming the known ones."""
        if name not in self._items:
            raise ConfigError(self.unknown(name))
        return self._items[name]

    def unknown(self, name: str) -> str:
        return f"Unknown {self.kind} '{name}'; known: {', '.join(self.names())}{self.hint}."

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
