"""SimulatorProcess picks its ports before the simulator binds them: a port taken in between
must not fail the test that started it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.testing import simulator
from reconciler.testing.simulator import SimulatorProcess

pytestmark = pytest.mark.integration


def test_a_port_taken_between_the_pick_and_the_bind_is_tried_again_on_new_ports(
    lab: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks: Iterator[int] = iter([busy])
        real_free_port = simulator.free_port
        monkeypatch.setattr(simulator, "free_port", lambda: next(picks, None) or real_free_port())

        with SimulatorProcess(lab / "models") as sim:
            assert sim.rest_port != busy
            assert f"--rest_api_port={sim.rest_port}" in sim.args
            assert f"--rest_api_port={busy}" not in sim.args
