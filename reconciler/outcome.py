"""How a reconcile ended, in one word: the word the log, the metrics, the history and the CLI
say (a `StrEnum`, so it is stored and compared as that word). Every module names an outcome
by its member, never by the word."""

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
    # Words of the history and of `Outcome` that the reconciles metric does not count:
    STARTED = "started"  # the write-ahead record of an apply, superseded by its outcome
    BLOCKED = "blocked"  # the plan had problems: nothing was written
    FAILED = "failed"  # the apply failed and so did its rollback (counted as error)
