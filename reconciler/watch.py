"""Wake the daemon's loop when watched files change.

A ``Trigger`` watches folders (recursively) and single files (the git ref
files: the loose ref, packed-refs, HEAD), folds a burst of changes into one
wake-up once the burst has been quiet for ``debounce`` seconds, and lets the
loop block in ``wait(timeout)``::

    with Trigger([models_dir, *source.ref_files()], ignore=[state_dir]) as trigger:
        while running:
            wake = trigger.wait(timeout=resync_seconds)  # None: resync time
            reconcile()

A wake-up says *when* to reconcile, never *what*: the reconcile reads
everything again. Changes made while the loop reconciles are kept and wake the
next ``wait()``. Reads never wake it; neither do writes to ``ignore``d paths
(the state folder), to names matching ``ignore_names`` (temporary files such
as ``.models.config.tmp``) or under a ``.git`` folder (except the ref files
watched by name).
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_ATTRIB,
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

__all__ = [
    "DEFAULT_DEBOUNCE",
    "DEFAULT_IGNORE_NAMES",
    "DEFAULT_MAX_DELAY",
    "FILES_CHANGED",
    "Trigger",
    "Wake",
]

DEFAULT_DEBOUNCE = 0.2
DEFAULT_MAX_DELAY = 10.0
DEFAULT_IGNORE_NAMES = (".*.tmp", ".*.swp", "*~", ".#*", "4913")
"""Temporary files: the reconciler's own (``.<name>.tmp``) and editors' ones."""

FILES_CHANGED = "files_changed"

# Changes only: without a filter inotify also queues every open and read, so one scan of a
# large models tree (ours, or TFS's file-system poll) overflows the kernel queue, and
# watchdog's re-walk on overflow reads the tree again: a busy loop with nothing changing.
_EVENT_FILTER = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
]

_CHANGES = {
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_ATTRIB,
}


@dataclass(frozen=True)
class Wake:
    """Why ``wait()`` returned: ``files_changed`` or the reason given to ``poke()``.

    ``events`` counts the changes folded into this wake-up and ``first_path``
    names the first of them, for logs only.
    """

    reason: str
    events: int = 0
    first_path: str | None = None


class Trigger:
    """Watches ``paths``: an existing folder recursively, anything else as one
    file, which may not exist yet (its creation wakes the loop; for a path that
    does not exist at construction, only that path counts, even if it later
    appears as a folder). Start with ``start()`` or ``with``."""

    def __init__(
        self,
        paths: Iterable[Path],
        *,
        ignore: Iterable[Path] = (),
        ignore_names: Iterable[str] = DEFAULT_IGNORE_NAMES,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._folders: list[str] = []
        self._files: set[str] = set()
        for path in paths:
            absolute = os.path.abspath(path)
            if os.path.isdir(absolute):
                self._folders.append(absolute)
            else:
                self._files.add(absolute)
        self._ignore = [os.path.abspath(path) for path in ignore]
        self._ignore_names = tuple(ignore_names)
        self._debounce = debounce
        self._max_delay = max(max_delay, debounce)
        self._clock = clock
        self._condition = threading.Condition()
        self._first_at: float | None = None
        self._last_at = 0.0
        self._events = 0
        self._first_path: str | None = None
        self._poked: str | None = None
        self._observer: BaseObserver | None = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> Trigger:
        if self._observer is not None:
            raise RuntimeError("the trigger is already started")
        observer = Observer()
        handler = _Handler(self._on_event)
        for folder in self._folders:
            observer.schedule(handler, folder, recursive=True, event_filter=_EVENT_FILTER)
        for directory, recursive in _directories_for(self._files):
            observer.schedule(handler, directory, recursive=recursive, event_filter=_EVENT_FILTER)
        observer.daemon = True
        observer.start()
        self._observer = observer
        return self

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()

    def __enter__(self) -> Trigger:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the loop's side ---------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Wake | None:
        """Block until a debounced change, a ``poke()``, or ``timeout`` seconds
        (None: forever). Returns None on timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._condition:
            while True:
                now = self._clock()
                wake_at: float | None
                if self._poked is not None:
                    return self._take(self._poked)
                if self._first_at is not None:
                    settles_at = min(
                        self._last_at + self._debounce, self._first_at + self._max_delay
                    )
                    if now >= settles_at:
                        return self._take(FILES_CHANGED)
                    wake_at = settles_at if deadline is None else min(settles_at, deadline)
                else:
                    wake_at = deadline
                if deadline is not None and now >= deadline:
                    return None
                self._condition.wait(None if wake_at is None else max(wake_at - now, 0.0))

    def poke(self, reason: str) -> None:
        """Wake ``wait()`` now, without debounce (a signal, a finished fetch...).

        Pending file changes are folded into the same wake-up.
        """
        with self._condition:
            self._poked = reason
            self._condition.notify_all()

    # --- the observer's side -----------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return  # its entries' own events say what changed in it
        paths = [_text(event.src_path)]
        if event.event_type == EVENT_TYPE_MOVED:
            paths.append(_text(event.dest_path))
        relevant = [path for path in paths if self._matters(path)]
        if not relevant:
            return
        with self._condition:
            now = self._clock()
            if self._first_at is None:
                self._first_at = now
                self._first_path = relevant[0]
            self._last_at = now
            self._events += 1
            self._condition.notify_all()

    def _matters(self, path: str) -> bool:
        if path in self._files:
            return True
        folder = next((f for f in self._folders if _is_within(path, f)), None)
        if folder is None or any(_is_within(path, ignored) for ignored in self._ignore):
            return False
        inside = os.path.relpath(path, folder).split(os.sep)
        if ".git" in inside:
            return False
        return not any(fnmatch.fnmatchcase(inside[-1], pattern) for pattern in self._ignore_names)

    def _take(self, reason: str) -> Wake:
        wake = Wake(reason=reason, events=self._events, first_path=self._first_path)
        self._poked = None
        self._first_at = None
        self._first_path = None
        self._events = 0
        return wake


class _Handler(FileSystemEventHandler):
    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        super().__init__()
        self._on_event = on_event

    def dispatch(self, event: FileSystemEvent) -> None:
        self._on_event(event)


def _directories_for(files: Iterable[str]) -> list[tuple[str, bool]]:
    """Where to watch single files: their folder, or the nearest existing
    ancestor (recursively) when the folder does not exist yet."""
    found: dict[str, bool] = {}
    for file in sorted(files):
        directory, recursive = os.path.dirname(file), False
        while not os.path.isdir(directory):
            directory, recursive = os.path.dirname(directory), True
        found[directory] = found.get(directory, False) or recursive
    return sorted(found.items())


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)
