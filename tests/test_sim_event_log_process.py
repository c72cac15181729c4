"""The simulator's event log as a process serves it: ``--sim_event_log FILE`` and
``GET /sim/events?since=N``, during a label move pushed through the config file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from reconciler.testing import SimulatorProcess

pytestmark = pytest.mark.integration


def test_label_move_is_in_the_event_log_file_and_at_sim_events(lab: Path) -> None:
    models, log_file = lab / "models", lab / "events.jsonl"
    config = models / "models.config"
    before = time.time()
    with SimulatorProcess(
        models, poll_seconds=0.2, extra_args=[f"--sim_event_log={log_file}"]
    ) as sim:
        start = sim.events()
        available = {e["version"] for e in start if e.get("state") == "AVAILABLE"}
        assert available == {1, 2, 3}
        last = start[-1]["seq"]
        config.write_text(config.read_text().replace("value: 2", "value: 3"))
        deadline = time.monotonic() + 20
        moves: list[dict[str, Any]] = []
        while not moves and time.monotonic() < deadline:
            moves = [e for e in sim.events(since=last) if e["kind"] == "label"]
            time.sleep(0.05)
        assert [(m["model"], m["label"], m["old"], m["version"]) for m in moves] == [
            ("animals", "stable", 2, 3)
        ]
        assert all(e["seq"] > last for e in sim.events(since=last))
        assert requests.get(f"{sim.rest_url}/sim/events?since=x", timeout=5).status_code == 400
        served = sim.events()
    written = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert written[: len(served)] == served  # the file holds the same events, in order
    assert [e["seq"] for e in written] == list(range(1, len(written) + 1))
    assert before <= written[0]["t"] <= moves[0]["t"] <= time.time()
