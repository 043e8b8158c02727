"""A tiny named registry: families (data sets, models, methods) declare members in a few lines,
and an unknown name fails with the list of valid ones."""
from __future__ import annotations

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
