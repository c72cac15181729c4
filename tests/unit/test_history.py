"""The apply history file: appends survive a line torn by a crash."""

from __future__ import annotations

from pathlib import Path

from reconciler.history import HISTORY_FILE, Record, append_record, read_history


def record(message: str) -> Record:
    return Record(
        id=0, time="2024-01-01T00:00:00Z", outcome="applied", message=message, reload="none"
    )


def test_records_are_numbered_in_order(tmp_path: Path) -> None:
    append_record(tmp_path, record("first"))
    append_record(tmp_path, record("second"))
    assert [(r.id, r.message) for r in read_history(tmp_path)] == [(1, "first"), (2, "second")]


def test_append_after_a_torn_last_line_starts_a_fresh_line(tmp_path: Path) -> None:
    append_record(tmp_path, record("first"))
    with (tmp_path / HISTORY_FILE).open("a") as history:
        history.write('{"id": 2, "time": "x", "outco')  # a crash mid-append
    appended = append_record(tmp_path, record("after the crash"))
    assert [(r.id, r.message) for r in read_history(tmp_path)] == [
        (1, "first"),
        (appended.id, "after the crash"),
    ]
    assert appended.id == 2


def test_append_to_a_file_holding_only_a_torn_line(tmp_path: Path) -> None:
    (tmp_path / HISTORY_FILE).write_text('{"id": 1, "ti')
    append_record(tmp_path, record("only"))
    assert [(r.id, r.message) for r in read_history(tmp_path)] == [(1, "only")]
    assert (tmp_path / HISTORY_FILE).read_text().endswith("\n")


def test_append_creates_the_state_folder(tmp_path: Path) -> None:
    append_record(tmp_path / "state", record("first"))
    assert [r.message for r in read_history(tmp_path / "state")] == ["first"]
