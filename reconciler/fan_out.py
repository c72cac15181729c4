"""One call per item, a few threads at a time, for sources that answer one thing a call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

LIVE_READERS = 8
"""Requests to TFS in flight at once while reading many models' status."""

_Item = TypeVar("_Item")
_Read = TypeVar("_Read")


class Cancelled(Exception):
    """The caller stopped waiting; the answers still on their way are dropped."""


def each_in_threads(
    items: Sequence[_Item],
    read: Callable[[_Item], _Read],
    *,
    width: int,
    cancelled: Callable[[], bool] | None = None,
) -> list[_Read]:
    """`read` of every item, in order, by at most `width` threads that take the next item
    when done (no task queued per item). The first failure (TfsUnreachable, typically) ends
    it: no reader starts another item, and it is raised at once; calls already in flight
    finish on their own and are dropped. `cancelled()` true stops the readers the same way
    (Cancelled)."""
    if len(items) <= 1:
        return [read(item) for item in items]
    results: list[_Read | None] = [None] * len(items)
    done = threading.Condition()
    taken = finished = 0
    failure: list[Exception] = []

    def reader() -> None:
        nonlocal taken, finished
        while True:
            with done:
                if cancelled is not None and cancelled() and not failure:
                    failure.append(Cancelled())
                    done.notify_all()
                if failure or taken == len(items):
                    return
                index = taken
                taken += 1
            try:
                value = read(items[index])
            except Exception as error:
                with done:
                    failure.append(error)
                    done.notify_all()
                return
            with done:
                results[index] = value
                finished += 1
                done.notify_all()

    for _ in range(min(width, len(items))):
        threading.Thread(target=reader, name="live-reader", daemon=True).start()
    with done:
        done.wait_for(lambda: bool(failure) or finished == len(items))
    if failure:
        raise failure[0]
    return cast("list[_Read]", results)
