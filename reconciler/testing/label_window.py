"""How long replicas disagreed on a label, from the simulators' event logs.

Each simulator records its label moves and version states (``--sim_event_log FILE`` or
``GET /sim/events``, see :mod:`reconciler.testing.tfs_sim.events`), stamped with
``time.time()``, so the logs of several simulators on one host share a time line::

    logs = {name: read_event_log(path) for name, path in paths.items()}
    windows = disagreement_windows(logs, "animals", "stable")
    print(percentile([w.seconds for w in windows], 99))

A *move* is a label going from one version to another on one replica (a label added or
dropped is not a move). The n-th move of a label on every replica is the same promotion; its
*disagreement window* runs from the first replica's move to the last one's: meanwhile a
request by label gets the old version from some replicas and the new one from others.

:func:`unavailable_label_spans` finds the times a label resolved, on one replica, to a
version that replica did not have AVAILABLE (a request by label then fails there).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Event = Mapping[str, Any]


@dataclass(frozen=True)
class LabelMove:
    """One replica's label moving from ``old`` to ``new`` at ``t`` (``time.time()``)."""

    replica: str
    model: str
    label: str
    old: int
    new: int
    t: float


@dataclass(frozen=True)
class Window:
    """The n-th move of a label across replicas (``index`` from 0): ``start`` is the first
    replica's move, ``end`` the last one's."""

    index: int
    model: str
    label: str
    old: int
    new: int
    start: float
    end: float
    moves: tuple[LabelMove, ...]  # one per replica, in time order

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class UnavailableSpan:
    """On ``replica``, ``label`` resolved to ``version`` while it was ``state`` (not
    AVAILABLE, or never seen: ``UNKNOWN``) from ``start`` to ``end`` (``math.inf``: until the
    log ends)."""

    replica: str
    model: str
    label: str
    version: int
    state: str
    start: float
    end: float


class WindowMismatch(ValueError):
    """The replicas' moves of a label do not line up (different versions at the same index)."""


def read_event_log(path: Path) -> list[dict[str, Any]]:
    """The events of a ``--sim_event_log`` file, in order. A last line cut short (the
    simulator writing it right now, or killed mid-line) is left out."""
    complete, _, _partial = Path(path).read_text(encoding="utf-8").rpartition("\n")
    return [json.loads(line) for line in complete.split("\n") if line]


def label_moves(replica: str, events: Iterable[Event], model: str, label: str) -> list[LabelMove]:
    """The moves of ``model``'s ``label`` in one replica's events, in order."""
    return [
        LabelMove(replica, model, label, int(e["old"]), int(e["version"]), float(e["t"]))
        for e in events
        if e.get("kind") == "label"
        and e.get("model") == model
        and e.get("label") == label
        and e.get("old") is not None
        and e.get("version") is not None
        and e.get("old") != e.get("version")
    ]


def disagreement_windows(
    logs: Mapping[str, Iterable[Event]], model: str, label: str
) -> list[Window]:
    """The disagreement window of each move of ``label`` that every replica made (the n-th
    move of each replica pairs up; moves some replicas have not made yet are left out).

    Raises :class:`WindowMismatch` when the n-th moves do not go between the same versions.
    """
    per_replica = {name: label_moves(name, events, model, label) for name, events in logs.items()}
    if not per_replica:
        return []
    count = min(len(moves) for moves in per_replica.values())
    windows: list[Window] = []
    for index in range(count):
        moves = sorted((m[index] for m in per_replica.values()), key=lambda m: (m.t, m.replica))
        pairs = {(m.old, m.new) for m in moves}
        if len(pairs) != 1:
            detail = ", ".join(f"{m.replica}: {m.old}->{m.new}" for m in moves)
            raise WindowMismatch(f"move {index} of {model}/{label} differs: {detail}")
        (old, new) = pairs.pop()
        windows.append(Window(index, model, label, old, new, moves[0].t, moves[-1].t, tuple(moves)))
    return windows


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, interpolated linearly between the two
    nearest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile wants 0..100, got {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def unavailable_label_spans(
    replica: str, events: Iterable[Event], model: str, label: str
) -> list[UnavailableSpan]:
    """When ``label`` resolved on this replica to a version that was not AVAILABLE there,
    replaying its events in order (a label added or moved onto a version still loading, or a
    version unloaded under its label)."""
    states: dict[int, str] = {}
    current: int | None = None
    open_span: UnavailableSpan | None = None
    spans: list[UnavailableSpan] = []

    def check(t: float) -> None:
        nonlocal open_span
        state = None if current is None else states.get(current, "UNKNOWN")
        now_bad = None if state in (None, "AVAILABLE") else (current, state)
        was_bad = None if open_span is None else (open_span.version, open_span.state)
        if now_bad == was_bad:
            return
        if open_span is not None:
            spans.append(dataclasses.replace(open_span, end=t))
            open_span = None
        if current is not None and state is not None and now_bad is not None:
            open_span = UnavailableSpan(replica, model, label, current, state, t, math.inf)

    for e in events:
        if e.get("model") != model:
            continue
        if e.get("kind") == "version_state":
            states[int(e["version"])] = str(e["state"])
        elif e.get("kind") == "label" and e.get("label") == label:
            current = None if e.get("version") is None else int(e["version"])
        else:
            continue
        check(float(e["t"]))
    if open_span is not None:
        spans.append(open_span)
    return spans
