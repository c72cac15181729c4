"""The waves of a fleet rollout: which replicas load a change together, in which order.

The canary wave is the first `canary` replicas in rollout order (the fleet file's order, then
discovered replicas by name); the rest follow in waves of `max_parallel`, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from reconciler.fleet_file import Parallel

T = TypeVar("T")


def waves(replicas: Sequence[T], canary: int, max_parallel: Parallel) -> tuple[tuple[T, ...], ...]:
    """`replicas` cut into waves: the canary wave, then waves of at most `max_parallel` (a
    percentage counts the whole fleet). Every replica is in exactly one wave, in order."""
    total = len(replicas)
    first = min(max(canary, 0), total)
    found: list[tuple[T, ...]] = [tuple(replicas[:first])] if first else []
    size = max_parallel.of(total)
    found.extend(tuple(replicas[i : i + size]) for i in range(first, total, size))
    return tuple(found)
