"""Label disagreement windows across replicas, from simulator event logs (pure, no processes)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.testing.label_window import (
    WindowMismatch,
    disagreement_windows,
    label_moves,
    percentile,
    read_event_log,
    unavailable_label_spans,
)


def move(t: float, old: int | None, new: int | None, label: str = "stable") -> dict[str, Any]:
    return {"kind": "label", "t": t, "model": "m", "label": label, "old": old, "version": new}


def state(t: float, version: int, name: str) -> dict[str, Any]:
    return {"kind": "version_state", "t": t, "model": "m", "version": version, "state": name}


def test_read_event_log_leaves_out_a_last_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(move(1.0, 1, 2)) + "\n" + '{"kind": "lab')
    assert read_event_log(path) == [move(1.0, 1, 2)]


def test_read_event_log_refuses_a_broken_line_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "lab\n' + json.dumps(move(1.0, 1, 2)) + "\n")
    with pytest.raises(json.JSONDecodeError):
        read_event_log(path)


def test_label_moves_are_changes_between_versions_of_that_label_only() -> None:
    events = [
        move(1.0, None, 1),  # added: not a move
        move(2.0, 1, 2),
        move(2.5, 1, 3, label="canary"),
        state(2.6, 2, "AVAILABLE"),
        move(3.0, 2, None),  # dropped: not a move
        {**move(4.0, 2, 1), "model": "other"},
    ]
    assert [(m.old, m.new, m.t) for m in label_moves("a", events, "m", "stable")] == [(1, 2, 2.0)]


def test_window_runs_from_the_first_replicas_move_to_the_last_ones() -> None:
    logs = {
        "a": [move(10.0, 1, 2), move(20.0, 2, 1)],
        "b": [move(10.3, 1, 2), move(20.05, 2, 1)],
        "c": [move(10.1, 1, 2), move(20.2, 2, 1)],
    }
    windows = disagreement_windows(logs, "m", "stable")
    assert [(w.index, w.old, w.new) for w in windows] == [(0, 1, 2), (1, 2, 1)]
    assert [round(w.seconds, 6) for w in windows] == [0.3, 0.2]
    assert [m.replica for m in windows[0].moves] == ["a", "c", "b"]


def test_a_move_not_every_replica_made_has_no_window_yet() -> None:
    logs = {"a": [move(1.0, 1, 2), move(2.0, 2, 1)], "b": [move(1.5, 1, 2)]}
    assert [w.new for w in disagreement_windows(logs, "m", "stable")] == [2]


def test_moves_that_do_not_line_up_are_refused() -> None:
    logs = {"a": [move(1.0, 1, 2)], "b": [move(1.5, 1, 3)]}
    with pytest.raises(WindowMismatch, match=r"a: 1->2, b: 1->3"):
        disagreement_windows(logs, "m", "stable")


def test_no_replicas_no_windows() -> None:
    assert disagreement_windows({}, "m", "stable") == []


def test_percentile_interpolates_between_ranks() -> None:
    values = [0.4, 0.1, 0.3, 0.2]
    assert percentile(values, 0) == 0.1
    assert percentile(values, 100) == 0.4
    assert percentile(values, 50) == pytest.approx(0.25)
    assert percentile([7.0], 99) == 7.0


def test_percentile_refuses_no_values_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_percentile_lies_within_the_values_and_grows_with_p(
    values: list[float], p: float, q: float
) -> None:
    low, high = sorted((p, q))
    assert min(values) <= percentile(values, low) <= percentile(values, high) <= max(values)


def test_label_on_a_version_still_loading_is_an_unavailable_span() -> None:
    events = [
        state(1.0, 1, "AVAILABLE"),
        move(1.0, None, 1),
        state(2.0, 2, "START"),
        state(2.1, 2, "LOADING"),
        move(2.2, 1, 2),  # --allow_version_labels_for_unavailable_models lets this happen
        state(3.0, 2, "AVAILABLE"),
        state(4.0, 2, "UNLOADING"),
        state(4.5, 2, "END"),
    ]
    spans = unavailable_label_spans("a", events, "m", "stable")
    assert [(s.version, s.state, s.start, s.end) for s in spans] == [
        (2, "LOADING", 2.2, 3.0),
        (2, "UNLOADING", 4.0, 4.5),
        (2, "END", 4.5, math.inf),
    ]


def test_a_label_moved_only_onto_available_versions_has_no_unavailable_span() -> None:
    events = [
        state(1.0, 1, "AVAILABLE"),
        move(1.0, None, 1),
        state(2.0, 2, "LOADING"),
        state(3.0, 2, "AVAILABLE"),
        move(3.5, 1, 2),
        state(4.0, 1, "UNLOADING"),
        move(4.5, 2, None),
        state(5.0, 2, "END"),
    ]
    assert unavailable_label_spans("a", events, "m", "stable") == []


def test_a_label_on_a_version_never_seen_is_unknown() -> None:
    spans = unavailable_label_spans("a", [move(1.0, None, 9)], "m", "stable")
    assert [(s.version, s.state, s.end) for s in spans] == [(9, "UNKNOWN", math.inf)]
