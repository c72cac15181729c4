"""The apply history: one JSON line per apply in the state folder."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import structlog

from reconciler.no_follow import check_plain, open_no_follow, private_dir, read_plain
from reconciler.outcome import Result
from reconciler.problems import InputError
from reconciler.tfs_config import ServingConfig, parse_config

HISTORY_FILE = "history.jsonl"
# The write-ahead record, appended before the first write of models.config; the apply's
# outcome is appended later under the same id, and supersedes it.
STARTED = Result.STARTED
STARTED_MESSAGE = (
    "started; no outcome follows if it was stopped part-way (kill -9, power loss): "
    "models.config then holds what it had written"
)

log = structlog.get_logger("reconciler.history")


@dataclass(frozen=True)
class Record:
    id: int
    time: str  # ISO 8601, UTC
    outcome: str  # started, applied, noop, rolled_back, failed, blocked, written
    message: str
    reload: str
    commit: str | None = None
    dirty: bool | None = None
    steps: tuple[str, ...] = ()
    config: str | None = None  # the models.config text that resulted
    previous: str | None = None  # the models.config text before the apply
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    action: str = "apply"  # or "rollback to ..."


@dataclass(frozen=True)
class RollbackTarget:
    config: str  # the models.config text to converge to
    commit: str | None  # the commit that asked for that config, when known
    dirty: bool | None
    describe: str  # for people: "record 3's config", "the config record 4 replaced"


def unfinished(records: Sequence[Record]) -> list[Record]:
    """`records` without the "started" records whose apply recorded its outcome (a later
    record with the same id): what is left of a start is an apply stopped part-way, a change
    of its own."""
    later: set[int] = set()
    kept = []
    for record in reversed(records):
        if not (record.outcome == STARTED and record.id in later):
            kept.append(record)
        later.add(record.id)
    return kept[::-1]


def rollback_target(records: Sequence[Record], record_id: int | None) -> RollbackTarget:
    """Record `record_id`'s resulting config; without an id, the config the last recorded
    change replaced (an undo: a second rollback undoes the first; an apply stopped part-way
    counts as a change). LookupError says why there is none."""
    records = unfinished(records)
    if record_id is not None:
        chosen = next((r for r in records if r.id == record_id and r.config is not None), None)
        if chosen is None or chosen.config is None:
            raise LookupError(f"no record {record_id} with a config")
        return RollbackTarget(
            chosen.config, chosen.commit, chosen.dirty, f"record {record_id}'s config"
        )
    changed = [i for i, r in enumerate(records) if r.config is not None and r.config != r.previous]
    if not changed:
        raise LookupError("no recorded change to roll back")
    last = records[changed[-1]]
    if last.previous is None:
        raise LookupError(
            f"record {last.id} created models.config: there is no earlier config to roll back to"
        )
    earlier = reversed(records[: changed[-1]])
    source = next((r for r in earlier if r.config == last.previous), None)
    return RollbackTarget(
        last.previous,
        source.commit if source is not None else None,
        source.dirty if source is not None else None,
        f"the config record {last.id} replaced",
    )


def read_history(state_dir: Path) -> list[Record]:
    """The records in the history, oldest first. A line that is not a record (torn by a
    crash, edited by hand, of another shape, nested past what the parser takes) is skipped
    and logged by its line number, never quoted, and never fatal."""
    path = state_dir / HISTORY_FILE
    try:
        lines = read_plain(path).splitlines()
    except FileNotFoundError:
        return []
    records = []
    skipped = []
    for number, line in enumerate(lines, start=1):
        found = parse_record(line)
        if found is not None:
            records.append(found)
        elif line.strip():
            skipped.append(number)
    if skipped:
        log.warning("history_lines_skipped", path=str(path), lines=skipped[:20], count=len(skipped))
    return records


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(kind: type) -> Callable[[object], bool]:
    return lambda value: value is None or isinstance(value, kind)


_FIELD_CHECKS: dict[str, Callable[[object], bool]] = {
    "id": _is_int,
    "time": lambda v: isinstance(v, str),
    "outcome": lambda v: isinstance(v, str),
    "message": lambda v: isinstance(v, str),
    "reload": lambda v: isinstance(v, str),
    "commit": _optional(str),
    "dirty": _optional(bool),
    "steps": lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    "config": _optional(str),
    "previous": _optional(str),
    "seconds": lambda v: _is_int(v) or isinstance(v, float),
    "extra": lambda v: isinstance(v, dict),
    "action": lambda v: isinstance(v, str),
}
_REQUIRED = tuple(
    f.name for f in fields(Record) if f.default is MISSING and f.default_factory is MISSING
)
_KNOWN = frozenset(f.name for f in fields(Record))


def parse_record(line: bytes) -> Record | None:
    """One history line as a Record, or None when it is not one."""
    try:
        data = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's limit
        return None
    if not isinstance(data, dict) or any(name not in data for name in _REQUIRED):
        return None
    values = {k: v for k, v in data.items() if k in _KNOWN}  # fields of a newer version: kept out
    for name, value in values.items():
        check = _FIELD_CHECKS.get(name)
        if check is not None and not check(value):
            return None
    if "steps" in values:
        values["steps"] = tuple(values["steps"])
    if "seconds" in values:
        values["seconds"] = float(values["seconds"])
    return Record(**values)


MAX_HISTORY_BYTES = 64 * 1024 * 1024


def append_record(
    state_dir: Path,
    record: Record,
    max_bytes: int = MAX_HISTORY_BYTES,
    *,
    same_id: int | None = None,
) -> Record:
    """Append `record` with the next id (or `same_id`: the outcome of a started apply); one
    write of one line, fsynced. Past `max_bytes`
    the oldest records are dropped, keeping about half: a record holds two whole configs,
    and a daemon adds one per change, heal and retry."""
    path = private_dir(state_dir) / HISTORY_FILE
    fd = open_no_follow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600)
    try:
        check_plain(fd, path)
        number = same_id if same_id is not None else _last_id(fd) + 1
        numbered = Record(**{**asdict(record), "id": number})
        line = json.dumps(asdict(numbered), sort_keys=True) + "\n"
        os.write(fd, (_separator(fd) + line).encode("utf-8"))
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > max_bytes:
        _keep_newest(path, max_bytes // 2)
    return numbered


def _keep_newest(path: Path, budget: int) -> None:
    """Rewrite `path` (atomically) with the newest whole lines that fit in `budget` bytes,
    and always the last one."""
    kept: list[bytes] = []
    total = 0
    for line in reversed(read_plain(path).splitlines(keepends=True)):
        if kept and total + len(line) > budget:
            break
        kept.append(line)
        total += len(line)
    partial = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)  # left by a crash; O_EXCL below creates a file of its own
    fd = open_no_follow(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"".join(reversed(kept)))
    os.replace(partial, path)


def _last_id(fd: int) -> int:
    """The id of the last record that parses (0 for none), reading the file from its end: a
    record holds two whole configs, so the file grows large and a full read per append would
    make each apply slower than the last."""
    size = os.fstat(fd).st_size
    window = 64 * 1024
    while True:
        start = max(0, size - window)
        lines = os.pread(fd, size - start, start).split(b"\n")
        if start > 0:
            lines = lines[1:]  # cut in the middle of a line
        for line in reversed(lines):
            try:
                data = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            if isinstance(data, dict) and isinstance(data.get("id"), int):
                return int(data["id"])
        if start == 0:
            return 0
        window *= 4


def _separator(fd: int) -> str:
    """A line break when the file ends in a line torn by a crash, so that the record written
    next is a line of its own rather than the torn line's corrupt end."""
    size = os.fstat(fd).st_size
    return "\n" if size and os.pread(fd, 1, size - 1) != b"\n" else ""


def last_applied(records: list[Record]) -> ServingConfig | None:
    """The config the last successful apply left in models.config, if it still parses."""
    for record in reversed(records):
        if record.outcome in (Result.APPLIED, Result.WRITTEN) and record.config is not None:
            try:
                return parse_config(record.config, f"history record {record.id}")
            except InputError:
                return None
    return None
