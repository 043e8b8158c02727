"""A tiny named registry: each family (data sets, models, training recipes, unlearning methods,
protocols) declares its members once, and everything that lists or offers them (the CLI's help,
the app's select boxes, the plots' labels and colours) reads the registry. An unknown name fails
with the list of valid ones."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Generic, Iterator, TypeVar

from core.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, family: str):
        self.family = family
        self._members: dict[str, T] = {}

    def register(self, name: str, member: T) -> T:
        if name in self._members:
            raise ValueError(f"{self.family} '{name}' is registered twice")
        self._members[name] = member
        return member

    @contextmanager
    def registered(self, name: str, member: T) -> Iterator[T]:
        """``member`` registered for the duration of a ``with`` block (a notebook's or a test's own)."""
        self.register(name, member)
        try:
            yield member
        finally:
            del self._members[name]

    def get(self, name: str) -> T:
        try:
            return self._members[name]
        except KeyError:
            raise UserError(f"unknown {self.family} '{name}'; choose one of: {', '.join(self._members)}") from None

    def names(self) -> list[str]:
        return list(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)
