"""Replicas found from Docker inspect data and DNS answers (no engine, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest

from reconciler.errors import TransientError
from reconciler.fleet_discovery import (
    DiscoveryError,
    SkippedContainer,
    UnusableContainer,
    discover_dns,
    discover_docker,
    discover_docker_with_skipped,
    replica_of,
)
from reconciler.replica import Replica


def inspect(
    name: str = "tfs-a",
    *,
    args: list[str] | None = None,
    ports: dict[str, Any] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    status: str = "running",
) -> dict[str, Any]:
    """The parts of ``docker inspect`` discovery reads, shaped as the engine returns them."""
    tfs_args = (
        args
        if args is not None
        else ["--model_config_file=/models/models.config", "--port=8500", "--rest_api_port=8501"]
    )
    return {
        "Id": "0123456789abcdef",
        "Name": f"/{name}",
        "State": {"Status": status, "Running": status == "running"},
        # tfs-sim:local's entrypoint, as the engine reports it: tini's "--" is not TFS's.
        "Path": "/usr/bin/tini",
        "Args": ["--", "/usr/bin/tf_serving_entrypoint.sh", *tfs_args],
        "Config": {
            "Entrypoint": ["/usr/bin/tini", "--", "/usr/bin/tf_serving_entrypoint.sh"],
            "Cmd": tfs_args,
        },
        "NetworkSettings": {
            "Ports": ports
            if ports is not None
            else {
                "8500/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}],
                "8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32769"}],
            }
        },
        "Mounts": mounts
        if mounts is not None
        else [
            {"Type": "bind", "Source": "/srv/tfs-a/models", "Destination": "/models", "RW": True}
        ],
    }


def test_a_container_is_a_replica_on_its_published_ports_and_bind_mounts() -> None:
    assert replica_of(inspect()) == Replica(
        name="tfs-a",
        rest="http://127.0.0.1:32769",
        grpc="127.0.0.1:32768",
        config=Path("/srv/tfs-a/models/models.config"),
        models_dir=Path("/srv/tfs-a/models"),
    )


def test_ports_published_on_every_address_are_reached_on_loopback_ipv4_first() -> None:
    ports = {
        "8500/tcp": [
            {"HostIp": "::", "HostPort": "9000"},
            {"HostIp": "0.0.0.0", "HostPort": "9000"},
        ],
        "8501/tcp": [{"HostIp": "::", "HostPort": "9001"}],
    }
    replica = replica_of(inspect(ports=ports))
    assert (replica.rest, replica.grpc) == ("http://[::1]:9001", "127.0.0.1:9000")


def test_the_containers_own_port_flags_say_which_ports_to_look_up() -> None:
    args = ["--port=9500", "--rest_api_port=9501", "--model_config_file=/cfg/models.config"]
    ports = {
        "9500/tcp": [{"HostIp": "10.0.0.5", "HostPort": "19500"}],
        "9501/tcp": [{"HostIp": "10.0.0.5", "HostPort": "19501"}],
        "8501/tcp": [{"HostIp": "10.0.0.5", "HostPort": "1"}],
    }
    replica = replica_of(inspect(args=args, ports=ports))
    assert (replica.rest, replica.grpc) == ("http://10.0.0.5:19501", "10.0.0.5:19500")


def test_port_flags_count_only_as_tfs_reads_them() -> None:
    """TFS takes ``--name=value`` only: ``--rest_api_port 9501`` and ``-port=9500`` leave it on
    8501 and 8500, and so does anything after a bare ``--``."""
    ports = {
        "8500/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18500"}],
        "8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18501"}],
        "9500/tcp": [{"HostIp": "127.0.0.1", "HostPort": "1"}],
        "9501/tcp": [{"HostIp": "127.0.0.1", "HostPort": "2"}],
    }
    for args in (["--rest_api_port", "9501", "-port=9500"], ["--", "--rest_api_port=9501"]):
        replica = replica_of(inspect(args=args, ports=ports))
        assert (replica.rest, replica.grpc) == ("http://127.0.0.1:18501", "127.0.0.1:18500")


def test_the_config_maps_through_the_deepest_bind_mount_holding_it() -> None:
    mounts = [
        {"Type": "bind", "Source": "/data/models", "Destination": "/models"},
        {"Type": "bind", "Source": "/etc/tfs", "Destination": "/models/config"},
        {"Type": "volume", "Source": "/var/lib/docker/volumes/x/_data", "Destination": "/cfg"},
    ]
    replica = replica_of(
        inspect(args=["--model_config_file=/models/config/m.config"], mounts=mounts)
    )
    assert (replica.config, replica.models_dir) == (Path("/etc/tfs/m.config"), Path("/data/models"))


def test_a_config_or_models_outside_bind_mounts_is_not_known() -> None:
    replica = replica_of(inspect(args=["--model_config_file=/etc/models.config"], mounts=[]))
    assert (replica.config, replica.models_dir, replica.grpc) == (None, None, "127.0.0.1:32768")


def test_a_container_without_published_rest_cannot_be_a_replica() -> None:
    ports = {"8500/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}], "8501/tcp": None}
    with pytest.raises(UnusableContainer, match="REST port 8501/tcp is not published"):
        replica_of(inspect(ports=ports))


def test_a_container_nothing_could_change_cannot_be_a_replica() -> None:
    ports = {"8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32769"}]}
    with pytest.raises(UnusableContainer, match="nothing could change what it serves"):
        replica_of(inspect(ports=ports, mounts=[]))


def test_without_grpc_a_replica_with_its_config_on_a_bind_mount_is_file_poll_only() -> None:
    ports = {"8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32769"}]}
    replica = replica_of(inspect(ports=ports))
    assert (replica.grpc, replica.config) == (None, Path("/srv/tfs-a/models/models.config"))


@pytest.mark.parametrize("status", ["exited", "created", "dead"])
def test_a_container_that_is_not_running_cannot_be_a_replica(status: str) -> None:
    with pytest.raises(UnusableContainer, match=f"it is {status}"):
        replica_of(inspect(status=status))


def test_a_paused_container_is_still_a_member() -> None:
    assert replica_of(inspect(status="paused")).name == "tfs-a"


class FakeContainers:
    def __init__(self, found: list[dict[str, Any]] | Exception) -> None:
        self.found = found
        self.filters: list[dict[str, str]] = []

    def list(self, *, filters: dict[str, str], ignore_removed: bool) -> list[Any]:
        assert ignore_removed  # a container removed between list and inspect is no error
        self.filters.append(filters)
        if isinstance(self.found, Exception):
            raise self.found
        return [type("C", (), {"attrs": attrs})() for attrs in self.found]


class FakeClient:
    def __init__(self, found: list[dict[str, Any]] | Exception) -> None:
        self.containers = FakeContainers(found)


def test_discovery_lists_labelled_containers_by_name_and_says_why_some_are_left_out() -> None:
    client = FakeClient(
        [inspect("tfs-c"), inspect("tfs-a"), inspect("tfs-b", ports={}), inspect("tfs-0")]
    )
    replicas, skipped = discover_docker_with_skipped(client, "tfs-reconciler.fleet=prod")  # type: ignore[arg-type]
    assert [r.name for r in replicas] == ["tfs-0", "tfs-a", "tfs-c"]
    assert skipped == (SkippedContainer("tfs-b", "its REST port 8501/tcp is not published"),)
    assert client.containers.filters == [{"label": "tfs-reconciler.fleet=prod"}]
    assert discover_docker(client, "tfs-reconciler.fleet=prod") == replicas  # type: ignore[arg-type]


def test_an_engine_that_does_not_answer_is_a_transient_discovery_error() -> None:
    client = FakeClient(docker.errors.DockerException("connection refused"))
    with pytest.raises(DiscoveryError, match="connection refused") as error:
        discover_docker(client, "fleet=prod")  # type: ignore[arg-type]
    assert isinstance(error.value, TransientError)


class FakeResolver:
    def __init__(
        self,
        addresses: dict[str, list[str]] | None = None,
        srv: dict[str, list[tuple[str, int]]] | None = None,
        error: OSError | None = None,
    ) -> None:
        self._addresses, self._srv, self._error = addresses or {}, srv or {}, error

    def addresses(self, name: str) -> list[str]:
        if self._error:
            raise self._error
        return self._addresses.get(name, [])

    def srv(self, name: str) -> list[tuple[str, int]]:
        if self._error:
            raise self._error
        return self._srv.get(name, [])


def test_dns_a_records_give_one_replica_per_address_in_numeric_order() -> None:
    resolver = FakeResolver(addresses={"tfs.internal": ["10.0.0.10", "10.0.0.9", "fd00::1"]})
    replicas = discover_dns("tfs.internal", 8501, 8500, resolver)
    assert replicas == (
        Replica("10.0.0.9", "http://10.0.0.9:8501", "10.0.0.9:8500"),
        Replica("10.0.0.10", "http://10.0.0.10:8501", "10.0.0.10:8500"),
        Replica("fd00::1", "http://[fd00::1]:8501", "[fd00::1]:8500"),
    )


def test_dns_srv_records_give_the_rest_port_per_target() -> None:
    resolver = FakeResolver(
        srv={"_rest._tcp.tfs.svc": [("tfs-1.tfs.svc", 8501), ("tfs-0.tfs.svc", 8501)]}
    )
    replicas = discover_dns("_rest._tcp.tfs.svc", grpc_port=9000, resolver=resolver)
    assert replicas == (
        Replica("tfs-0.tfs.svc", "http://tfs-0.tfs.svc:8501", "tfs-0.tfs.svc:9000"),
        Replica("tfs-1.tfs.svc", "http://tfs-1.tfs.svc:8501", "tfs-1.tfs.svc:9000"),
    )


def test_dns_ports_not_given_are_tfs_defaults() -> None:
    resolver = FakeResolver(addresses={"tfs": ["10.0.0.1"]})
    replicas = discover_dns("tfs", rest_port=None, grpc_port=None, resolver=resolver)
    assert replicas == (Replica("10.0.0.1", "http://10.0.0.1:8501", "10.0.0.1:8500"),)


def test_dns_srv_targets_sharing_a_host_are_named_with_their_port() -> None:
    resolver = FakeResolver(srv={"_tfs._tcp.local": [("h", 9001), ("h", 9002)]})
    assert [r.name for r in discover_dns("_tfs._tcp.local", resolver=resolver)] == [
        "h:9001",
        "h:9002",
    ]


def test_a_name_without_records_has_no_replicas() -> None:
    assert discover_dns("nothing.internal", resolver=FakeResolver()) == ()


def test_a_resolver_that_does_not_answer_is_a_transient_discovery_error() -> None:
    resolver = FakeResolver(error=OSError("timed out"))
    with pytest.raises(DiscoveryError, match=r"address lookup of tfs\.internal failed: timed out"):
        discover_dns("tfs.internal", resolver=resolver)


def test_the_system_resolver_finds_localhost() -> None:
    replicas = discover_dns("localhost", 8501, 8500)
    assert {r.name for r in replicas} <= {"127.0.0.1", "::1"}
    assert replicas
