"""The outcome words are part of the wire (history.jsonl, JSON outputs, the log, /metrics):
the enum that names them in code must say exactly the words earlier versions wrote."""

from __future__ import annotations

import json

from reconciler.history import STARTED
from reconciler.metrics import OUTCOMES
from reconciler.outcome import Result


def test_each_outcome_is_stored_and_logged_as_its_word() -> None:
    assert {r.name: str(r) for r in Result} == {
        "APPLIED": "applied",
        "WRITTEN": "written",
        "NOOP": "noop",
        "INVALID": "invalid",
        "ERROR": "error",
        "ROLLED_BACK": "rolled_back",
        "INTERRUPTED": "interrupted",
        "STARTED": "started",
        "BLOCKED": "blocked",
        "FAILED": "failed",
    }
    assert json.dumps({"outcome": Result.ROLLED_BACK}) == '{"outcome": "rolled_back"}'
    assert f"{Result.NOOP:<11}|" == "noop       |"  # `history` prints it in a column


def test_the_reconciles_metric_counts_the_same_outcomes_as_before() -> None:
    assert [str(o) for o in OUTCOMES] == [
        "applied",
        "written",
        "noop",
        "invalid",
        "error",
        "rolled_back",
    ]


def test_the_write_ahead_record_is_the_started_outcome() -> None:
    assert STARTED is Result.STARTED
    assert str(STARTED) == "started"
