"""The apply history: one JSON line per apply in the state folder."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"


@dataclass(frozen=True)
class Record:
    id: int
    time: str  # ISO 8601, UTC
    outcome: str  # applied, noop, rolled_back, failed, blocked, written
    message: str
    reload: str
    commit: str | None = None
    dirty: bool | None = None
    steps: tuple[str, ...] = ()
    config: str | None = None  # the models.config text that resulted
    previous: str | None = None  # the models.config text before the apply
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def read_history(state_dir: Path) -> list[Record]:
    path = state_dir / HISTORY_FILE
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            data = json.loads(line)
            data["steps"] = tuple(data.get("steps", ()))
            records.append(Record(**data))
        except (ValueError, TypeError):
            continue  # a line torn by a crash is skipped, not fatal
    return records


def append_record(state_dir: Path, record: Record) -> Record:
    """Append `record` with the next id; one write of one line, fsynced."""
    existing = read_history(state_dir)
    numbered = Record(**{**asdict(record), "id": (existing[-1].id + 1) if existing else 1})
    state_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(numbered), sort_keys=True) + "\n"
    fd = os.open(state_dir / HISTORY_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (_separator(fd) + line).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return numbered


def _separator(fd: int) -> str:
    """A line break when the file ends in a line torn by a crash, so that the record written
    next is a line of its own rather than the torn line's corrupt end."""
    size = os.fstat(fd).st_size
    return "\n" if size and os.pread(fd, 1, size - 1) != b"\n" else ""
