"""The nginx balancer of reconciler.testing: traffic spread over several simulators, a stopped
one routed around, a new upstream list put in force by a reload."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from reconciler.testing import SimulatorProcess
from reconciler.testing.balancer import UPSTREAM_HEADER, Balancer, render_config

pytestmark = pytest.mark.integration

LAB_MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


@pytest.fixture(scope="module", autouse=True)
def nginx() -> None:
    if Balancer([]).nginx and shutil.which(Balancer([]).nginx):
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI=true and no nginx (apt-get install nginx)", pytrace=False)
    pytest.skip("no nginx on this machine (apt-get install nginx)")


@pytest.fixture
def sims() -> Iterator[list[SimulatorProcess]]:
    started: list[SimulatorProcess] = []
    try:
        for _ in range(3):
            started.append(SimulatorProcess(LAB_MODELS).start())
        yield started
    finally:
        for sim in started:
            sim.stop()


def upstream(sim: SimulatorProcess) -> str:
    return f"127.0.0.1:{sim.rest_port}"


def spread(balancer: Balancer, requests_count: int = 30) -> Counter[str]:
    """Where ``requests_count`` status requests went (each must answer 200)."""
    seen: Counter[str] = Counter()
    with requests.Session() as session:
        for _ in range(requests_count):
            answer = session.get(f"{balancer.url}/v1/models/animals", timeout=10)
            assert answer.status_code == 200, answer.text
            seen[answer.headers[UPSTREAM_HEADER].split(", ")[-1]] += 1
    return seen


def test_rendered_config_is_valid_for_nginx(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    config = tmp_path / "nginx.conf"
    config.write_text(
        render_config(["127.0.0.1:1", "[::1]:2"], port=3, generation=4, fail_timeout=2, timeout=1.5)
    )
    prefix = f"{tmp_path}/"
    checked = subprocess.run(
        [Balancer([]).nginx, "-t", "-p", prefix, "-c", str(config), "-e", f"{prefix}error.log"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_a_balancer_needs_an_upstream() -> None:
    with pytest.raises(ValueError, match="at least one upstream"):
        render_config([], port=1, generation=0, fail_timeout=1, timeout=1)


def test_requests_go_through_to_every_simulator(sims: list[SimulatorProcess]) -> None:
    with Balancer([upstream(s) for s in sims]) as balancer:
        seen = spread(balancer)
    assert set(seen) == {upstream(s) for s in sims}


def test_a_stopped_upstream_is_routed_around(sims: list[SimulatorProcess]) -> None:
    with Balancer([upstream(s) for s in sims], fail_timeout=30) as balancer:
        sims[1].stop()
        seen = spread(balancer)  # every request answered 200 (spread asserts it)
    assert set(seen) == {upstream(sims[0]), upstream(sims[2])}


def test_reconfigure_puts_the_new_upstreams_in_force(sims: list[SimulatorProcess]) -> None:
    with Balancer([upstream(s) for s in sims]) as balancer:
        balancer.reconfigure([upstream(sims[2])])
        assert balancer.generation == 1
        assert set(spread(balancer, 10)) == {upstream(sims[2])}
