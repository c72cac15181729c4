"""``/readyz/<replica>`` over real HTTP, each replica a simulator process (or nothing at all)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired import parse_documents
from reconciler.http_endpoint import Address, HttpEndpoint
from reconciler.metrics import Metrics
from reconciler.readiness import replica_readiness
from reconciler.replica import Replica
from reconciler.testing import SimulatorProcess
from reconciler.testing.simulator import free_port

pytestmark = pytest.mark.integration

LAB = Path(__file__).resolve().parents[1]
DESIRED = parse_documents([("animals.yaml", (LAB / "desired_state" / "animals.yaml").read_bytes())])


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status), json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_each_replica_answers_for_its_own_tfs() -> None:
    nothing = free_port()  # no TFS there
    with SimulatorProcess(LAB / "examples" / "models") as sim:
        replicas = [
            Replica("tfs-a", sim.rest_url),
            Replica("tfs-down", f"http://127.0.0.1:{nothing}"),
        ]
        checks = replica_readiness(replicas, lambda: DESIRED, timeout=2.0, max_age=0.0)
        with HttpEndpoint(
            Address("127.0.0.1", 0),
            Metrics.create().registry,
            dict,
            replica_readiness=lambda: checks,
        ) as endpoint:
            base = endpoint.address.url
            assert get(f"{base}/readyz/tfs-a") == (
                200,
                {"replica": "tfs-a", "ready": True, "reasons": []},
            )
            code, body = get(f"{base}/readyz/tfs-down")
            assert (code, body["ready"]) == (503, False)
            assert body["reasons"][0].startswith("TFS does not answer")
            assert get(f"{base}/readyz/tfs-z") == (
                404,
                {"error": "no replica 'tfs-z' in the fleet", "replicas": ["tfs-a", "tfs-down"]},
            )
            assert get(f"{base}/readyz")[0] == 503  # the daemon's own: not converged yet
