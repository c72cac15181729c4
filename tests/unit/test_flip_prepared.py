"""The flip's push is built before the gate, so the pushes released
together only send (reconciler/fleet_replicas.GatedReloader, TfsGrpc.prepare)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from reconciler.fleet_replicas import Gate, GatedReloader
from reconciler.reload import GrpcReloader
from reconciler.tfs_config import ServingConfig
from reconciler.tfs_grpc import TfsGrpc


@dataclass
class RecordingClient:
    gate: Gate
    calls: list[tuple[str, bool]] = field(default_factory=list)  # (call, gate still closed)

    def prepare(self, config: ServingConfig) -> None:
        self.calls.append(("prepare", bool(self.gate.names)))

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        self.calls.append(("reload", bool(self.gate.names)))


def test_the_push_is_prepared_before_the_gate_and_sent_after_it() -> None:
    gate = Gate({"tfs-a"})
    client = RecordingClient(gate)
    reloader = GatedReloader(GrpcReloader(cast(TfsGrpc, client)), gate, "tfs-a")
    reloader.reload(ServingConfig())
    assert client.calls == [("prepare", True), ("reload", False)]


def test_a_prepared_request_is_sent_once_and_only_for_its_config() -> None:
    client = TfsGrpc("127.0.0.1:9")  # never connected: building a request asks nothing
    config, other = ServingConfig(), ServingConfig()
    client.prepare(config)
    prepared = client._request(config)
    assert client._request(config) is not prepared  # used once
    client.prepare(config)
    assert client._request(other) == prepared  # another config object: built afresh
    assert client._request(other) is not prepared
    client.close()
