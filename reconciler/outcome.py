"""How a reconcile ended, in one word: the word the log, the metrics, the history and the CLI
say (a `StrEnum`, so it is stored and compared as that word)."""

from __future__ import annotations

from enum import StrEnum


class Result(StrEnum):
    APPLIED = "applied"
    WRITTEN = "written"
    NOOP = "noop"
    INVALID = "invalid"
    ERROR = "error"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"
