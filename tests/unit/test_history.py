"""The apply history file (appends survive a line torn by a crash) and what a rollback
goes back to."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.config_store import ConfigStore, FileConfigStore
from reconciler.converge import Outcome
from reconciler.history import (
    HISTORY_FILE,
    Record,
    append_record,
    read_history,
    rollback_target,
)


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


def change(id: int, config: str | None, previous: str | None, outcome: str = "applied") -> Record:
    return Record(
        id=id,
        time="t",
        outcome=outcome,
        message="",
        reload="grpc",
        commit=f"c{id}",
        config=config,
        previous=previous,
    )


def test_rollback_undoes_the_last_change_with_the_commit_that_asked_for_the_config() -> None:
    records = [change(1, "A", "0"), change(2, "B", "A"), change(3, "B", "B", "rolled_back")]
    goal = rollback_target(records, None)
    assert (goal.config, goal.commit, goal.describe) == ("A", "c1", "the config record 2 replaced")


def test_a_second_rollback_undoes_the_first() -> None:
    records = [change(1, "A", "0"), change(2, "B", "A"), change(3, "A", "B")]
    assert rollback_target(records, None).config == "B"


def test_an_interrupted_first_apply_rolls_back_to_the_config_before_it() -> None:
    goal = rollback_target([change(1, "phase 1", "hand-written", "interrupted")], None)
    assert (goal.config, goal.commit) == ("hand-written", None)


def test_rollback_to_a_numbered_record_takes_its_config() -> None:
    records = [change(1, "A", "0"), change(2, "B", "A")]
    goal = rollback_target(records, 1)
    assert (goal.config, goal.commit, goal.describe) == ("A", "c1", "record 1's config")


@pytest.mark.parametrize(
    ("records", "record_id", "why"),
    [
        ([], None, "no recorded change to roll back"),
        ([change(1, "A", "A", "rolled_back")], None, "no recorded change to roll back"),
        ([change(1, "A", None)], None, "record 1 created models.config: there is no earlier"),
        ([change(1, "A", "0")], 7, "no record 7 with a config"),
        ([change(1, None, "0", "failed")], 1, "no record 1 with a config"),
    ],
)
def test_why_there_is_nothing_to_roll_back_to(
    records: list[Record], record_id: int | None, why: str
) -> None:
    with pytest.raises(LookupError, match=why):
        rollback_target(records, record_id)


def test_a_line_that_is_not_utf8_is_skipped_like_a_torn_one(tmp_path: Path) -> None:
    append_record(tmp_path, record("first"))
    with (tmp_path / HISTORY_FILE).open("ab") as history:
        history.write(b'{"id": 2, "message": "\xff\xfe"}\n')
    append_record(tmp_path, record("third"))
    assert [r.message for r in read_history(tmp_path)] == ["first", "third"]


def test_numbering_reads_back_past_records_larger_than_its_first_window(tmp_path: Path) -> None:
    big = "x" * 200_000  # a record holds two whole configs: at scale, hundreds of KiB
    for _ in range(3):
        append_record(tmp_path, record(big))
    with (tmp_path / HISTORY_FILE).open("a") as history:
        history.write('{"id": 9, "time": "x", "outco')  # and a torn line after them
    append_record(tmp_path, record("last"))
    assert [r.id for r in read_history(tmp_path)] == [1, 2, 3, 4]


def test_past_its_size_limit_the_history_keeps_the_newest_records(tmp_path: Path) -> None:
    for number in range(10):
        append_record(tmp_path, record(f"{number}" + "x" * 1000), max_bytes=5_000)
    kept = read_history(tmp_path)
    assert 1 <= len(kept) <= 5 and (tmp_path / HISTORY_FILE).stat().st_size <= 5_000
    assert kept[-1].id == 10 and kept[-1].message.startswith("9")
    assert [r.id for r in kept] == list(range(11 - len(kept), 11))  # ids go on, in order
    assert not list(tmp_path.glob(".*.tmp"))


# --- lines that are JSON but not records ------------------------------------------------

NOT_RECORDS = {
    "a list": b"[]",
    "a string": b'"applied"',
    "a number": b"42",
    "null": b"null",
    "an object without the fields": b"{}",
    "an id that is a string": b'{"id": "1", "time": "t", "outcome": "applied", "message": "",'
    b' "reload": "none"}',
    "an id that is a boolean": b'{"id": true, "time": "t", "outcome": "applied", "message": "",'
    b' "reload": "none"}',
    "an outcome that is a number": b'{"id": 1, "time": "t", "outcome": 3, "message": "",'
    b' "reload": "none"}',
    "steps that are not strings": b'{"id": 1, "time": "t", "outcome": "applied", "message": "",'
    b' "reload": "none", "steps": [1, 2]}',
    "a config that is an object": b'{"id": 1, "time": "t", "outcome": "applied", "message": "",'
    b' "reload": "none", "config": {}}',
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "an object nested 100,000 deep": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "not UTF-8": b'{"id": 1, "time": "\xff"}',
}


@pytest.mark.parametrize("name", NOT_RECORDS)
def test_a_line_that_is_not_a_record_is_skipped_not_fatal(tmp_path: Path, name: str) -> None:
    append_record(tmp_path, record("before"))
    with (tmp_path / HISTORY_FILE).open("ab") as history:
        history.write(NOT_RECORDS[name] + b"\n")
    append_record(tmp_path, record("after"))
    assert [(r.id, r.message) for r in read_history(tmp_path)] == [(1, "before"), (2, "after")]


def test_a_record_with_a_field_of_a_newer_version_is_read(tmp_path: Path) -> None:
    (tmp_path / HISTORY_FILE).write_text(
        '{"id": 7, "time": "t", "outcome": "applied", "message": "m", "reload": "grpc",'
        ' "seconds": 2, "steps": ["+ a"], "phase": "started"}\n'
    )
    (found,) = read_history(tmp_path)
    assert (found.id, found.steps, found.seconds) == (7, ("+ a",), 2.0)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_RECORDISH = st.fixed_dictionaries(
    {"id": _JSON, "time": _JSON, "outcome": _JSON, "message": _JSON, "reload": _JSON},
    optional={k: _JSON for k in ("commit", "dirty", "steps", "config", "seconds", "extra")},
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_JSON | _RECORDISH | st.binary(max_size=40), max_size=6))
def test_fuzz_any_history_file_reads_as_well_typed_records(lines: list[object]) -> None:
    """Whatever the history file holds, reading it never raises, and what it returns has
    the types the commands rely on (history, status, rollback and the daemon)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / HISTORY_FILE
        path.write_bytes(
            b"\n".join(
                line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines
            )
        )
        for found in read_history(Path(folder)):
            assert isinstance(found.id, int) and not isinstance(found.id, bool)
            assert all(isinstance(x, str) for x in (found.time, found.outcome, found.message))
            assert all(isinstance(step, str) for step in found.steps)
            assert found.config is None or isinstance(found.config, str)
            assert isinstance(found.seconds, float)


# --- the write-ahead record (issue 10) -----------------------------------------------------------


def started(id: int, config: str, previous: str) -> Record:
    return Record(id, "t", "started", "", "grpc", config=config, previous=previous)


def test_a_rollback_after_a_killed_apply_undoes_that_apply_not_the_one_before() -> None:
    """Issue 10: `rollback` after an apply killed mid-way undid the change before it."""
    records = [change(1, "A", "0"), change(2, "B", "A"), started(3, "C", "B")]
    assert rollback_target(records, None).config == "B"


def test_a_finished_apply_s_start_record_is_not_a_change_of_its_own() -> None:
    finish = Record(3, "t", "rolled_back", "", "grpc", config="B", previous="B")
    records = [change(1, "A", "0"), change(2, "B", "A"), started(3, "C", "B"), finish]
    assert rollback_target(records, None).config == "A"


def _lab_apply(lab: Path, store: ConfigStore | None = None) -> tuple[Outcome, Record | None, Path]:
    from reconciler.desired_files import load_desired
    from reconciler.plan import plan
    from reconciler.reconcile import Revision, execute, observe_for
    from reconciler.reload import NoReload
    from reconciler.settings import Settings
    from reconciler.tfs_rest import TfsRest

    (lab / "desired_state" / "animals.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2, 3]\n"
        "    labels: {deprecated: 1, stable: 3, canary: 3}\n"
    )
    config = Settings(desired=lab / "desired_state", models_dir=lab / "models")
    desired = load_desired(config.desired)
    observed = observe_for(config, desired, None)
    outcome, kept = execute(
        plan(desired, observed),
        observed,
        desired,
        settings=config,
        reloader=NoReload(),
        rest=TfsRest("http://127.0.0.1:9"),
        revision=Revision(),
        verify=False,
        store=store,
    )
    return outcome, kept, config.state_path


@dataclass(frozen=True)
class HistoryAtWrites(FileConfigStore):
    """The lab's models.config; what the history held at each write of it."""

    seen: list[list[Record]] = field(default_factory=list)

    def write(self, text: str) -> bool:
        self.seen.append(read_history(self.state_dir))
        return super().write(text)


def test_a_started_record_is_written_before_the_first_write_of_the_config(lab: Path) -> None:
    original = (lab / "models" / "models.config").read_text()
    models = lab / "models"
    store = HistoryAtWrites(models / "models.config", models / ".tfs-reconciler")
    seen = store.seen
    _, _, state = _lab_apply(lab, store)
    (ahead,) = seen[0]
    assert ahead.outcome == "started" and ahead.previous == original
    assert ahead.config is not None and "value: 3" in ahead.config
    # Had the process been killed here, rollback would undo exactly this apply:
    assert rollback_target(seen[0], None).config == original
    first, last = read_history(state)
    assert last.id == first.id and last.outcome == "written"  # the outcome supersedes


def test_an_unwritable_history_refuses_the_apply_before_anything_changes(lab: Path) -> None:
    """Issue 10: with history.jsonl a directory, apply changed TFS, then exited 1."""
    config = lab / "models" / "models.config"
    original = config.read_bytes()
    (lab / "models" / ".tfs-reconciler" / HISTORY_FILE).mkdir(parents=True)
    outcome, kept, _ = _lab_apply(lab)
    assert outcome.result == "failed" and kept is None
    assert "the history cannot record this apply before it starts" in outcome.message
    assert "nothing was changed" in outcome.message
    assert config.read_bytes() == original
