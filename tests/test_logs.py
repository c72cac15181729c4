"""Log configuration: JSON lines for machines, console lines for people."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog
from structlog.testing import capture_logs

from reconciler import logs


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_events_are_json_lines_when_output_is_not_a_terminal() -> None:
    out = io.StringIO()
    logs.configure("info", stream=out)
    structlog.get_logger().info("label_moved", model="animals", label="stable", new=3)
    record = json.loads(out.getvalue())
    assert record["event"] == "label_moved"
    assert record["level"] == "info"
    assert record["model"] == "animals"
    assert record["new"] == 3
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None


def test_console_rendering_is_not_json() -> None:
    out = io.StringIO()
    logs.configure("info", json=False, stream=out)
    structlog.get_logger().info("label_moved", model="animals")
    line = out.getvalue()
    assert "label_moved" in line
    assert "model" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_events_below_the_level_are_dropped() -> None:
    logs.configure("WARNING", stream=io.StringIO())
    log = structlog.get_logger()
    with capture_logs() as captured:
        log.info("reconcile_started")
        log.warning("drift_detected", model="animals")
    assert captured == [{"event": "drift_detected", "model": "animals", "log_level": "warning"}]


def test_an_exception_is_rendered_into_the_json_record() -> None:
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    try:
        raise RuntimeError("tfs unreachable")
    except RuntimeError:
        structlog.get_logger().exception("reconcile_failed")
    record = json.loads(out.getvalue())
    assert record["event"] == "reconcile_failed"
    assert "tfs unreachable" in json.dumps(record["exception"])


def test_an_unknown_level_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="debug, info, warning"):
        logs.configure("loud")
