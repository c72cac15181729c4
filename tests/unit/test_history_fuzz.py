"""Whatever history.jsonl holds (torn lines, other JSON shapes, nesting past the parser's
limit, bytes that are not UTF-8), reading it never raises and writes nothing, and appending
to it adds exactly one line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.history import HISTORY_FILE, Record, append_record, read_history

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_record = st.fixed_dictionaries(
    {
        "id": st.integers(-2, 5) | st.text(max_size=2),
        "time": st.just("2024-01-01T00:00:00Z") | st.integers(),
        "outcome": st.sampled_from(["applied", "failed"]) | st.none(),
        "message": st.text(max_size=5),
        "reload": st.just("grpc"),
    },
    optional={
        "steps": st.lists(st.text(max_size=3), max_size=2) | _json,
        "config": st.text(max_size=5) | _json,
        "previous": st.none() | st.integers(),
        "seconds": st.floats(allow_nan=False) | st.text(max_size=2),
        "extra": _json,
        "surprise": _json,
    },
)
_line = st.one_of(
    _json.map(lambda value: json.dumps(value).encode()),
    _record.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 3).map(lambda n: b"[" * (100_000 * n) + b"]" * (100_000 * n)),
    st.integers(1, 3).map(lambda n: b'{"id": ' * (50_000 * n)),
    st.binary(max_size=40),
)
_history = st.lists(_line, max_size=6).map(lambda lines: b"\n".join(lines))


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def _record_to_append() -> Record:
    return Record(id=0, time="2024-01-01T00:00:00Z", outcome="applied", message="m", reload="grpc")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_history)
def test_reading_any_history_never_raises_and_writes_nothing(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as temp:
        state = Path(temp)
        (state / HISTORY_FILE).write_bytes(content)
        records = read_history(state)
        assert all(isinstance(record, Record) for record in records)
        assert _files(state) == {HISTORY_FILE: content}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_history)
def test_appending_to_any_history_adds_one_line_and_keeps_the_rest(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as temp:
        state = Path(temp) / "state"
        state.mkdir(mode=0o700)
        (state / HISTORY_FILE).write_bytes(content)
        added = append_record(state, _record_to_append())
        after = _files(state)
        assert set(after) == {HISTORY_FILE}
        assert after[HISTORY_FILE].startswith(content)
        tail = after[HISTORY_FILE][len(content) :].lstrip(b"\n")
        assert tail.count(b"\n") == 1 and json.loads(tail)["id"] == added.id
        assert read_history(state)[-1].id == added.id
