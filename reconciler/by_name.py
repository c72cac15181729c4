"""Looking models up by name in the tuples the frozen state values hold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def index_by_name(items: Iterable[N]) -> dict[str, N]:
    """name -> item; the first of a name wins, as a scan from the front would find it."""
    index: dict[str, N] = {}
    for item in items:
        index.setdefault(item.name, item)
    return index
