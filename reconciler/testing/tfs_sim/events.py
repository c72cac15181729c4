"""The simulator's event log: what changed and when, for tests and the benchmark (TFS has none).

Every version state change, label change and config reload is recorded as one event, a dict
with ``seq`` (1, 2, ... in the order they happened in this process), ``t`` (``time.time()``
when it happened: wall-clock seconds, so logs of several simulators can be put on one time
line) and ``kind``:

- ``version_state``: ``model``, ``version``, ``state`` (START, LOADING, AVAILABLE, UNLOADING,
  END), ``error`` ("" unless the version ended with an error);
- ``label``: ``model``, ``label``, ``version`` (the version it resolves to from now on, null
  when the label was dropped), ``old`` (null when the label is new);
- ``config_reload``: ``models`` (the names in the config), ``ok``, ``error`` ("" when ok).

The simulator serves them at ``GET /sim/events?since=N`` (``{"events": [...]}``, those with
``seq > N``) and, with ``--sim_event_log=FILE``, appends each one as a JSON line to FILE as it
happens (flushed at once, so a reader sees it while the simulator runs, and after a kill).
The in-memory log keeps the last :data:`KEPT_IN_MEMORY` events; the file keeps them all.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

Event = dict[str, Any]
KINDS = ("version_state", "label", "config_reload")
KEPT_IN_MEMORY = 100_000


class EventLog:
    """Events in memory and, when ``path`` is given, appended to it as JSON lines.
    Thread-safe."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events: deque[Event] = deque(maxlen=KEPT_IN_MEMORY)
        self._seq = 0
        self._file: IO[str] | None = (
            None if path is None else Path(path).open("a", encoding="utf-8")  # noqa: SIM115
        )

    def record(self, kind: str, **fields: Any) -> Event:
        """Record one event of ``kind`` now; returns it."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(KINDS)}")
        with self._lock:
            self._seq += 1
            event: Event = {"seq": self._seq, "t": self._clock(), "kind": kind, **fields}
            self._events.append(event)
            if self._file is not None:
                self._file.write(json.dumps(event, sort_keys=True) + "\n")
                self._file.flush()
            return event

    def since(self, seq: int) -> list[Event]:
        """The events kept in memory whose ``seq`` is above ``seq``, in order."""
        with self._lock:
            return [dict(e) for e in self._events if e["seq"] > seq]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def label_changes(
    old: dict[str, dict[str, int]], new: dict[str, dict[str, int]]
) -> list[tuple[str, str, int | None, int | None]]:
    """``(model, label, old_version, new_version)`` for every label added, moved or dropped
    between two label maps (model -> label -> version), in name order."""
    changes: list[tuple[str, str, int | None, int | None]] = []
    for model in sorted(old.keys() | new.keys()):
        before, after = old.get(model, {}), new.get(model, {})
        for label in sorted(before.keys() | after.keys()):
            if before.get(label) != after.get(label):
                changes.append((model, label, before.get(label), after.get(label)))
    return changes
