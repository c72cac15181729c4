"""Discovery on a real engine: ``tfs-sim:local`` containers found by a fleet label, their ports
and bind mounts read from the engine, a container added later found at the next look."""

from __future__ import annotations

import secrets
import urllib.request

import docker
import pytest

from reconciler.fleet_discovery import discover_docker, discover_docker_with_skipped
from reconciler.testing.docker_bed import StartTfsContainer

pytestmark = pytest.mark.docker

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def answers(rest: str) -> bool:
    with OPENER.open(f"{rest}/v1/models/animals", timeout=10) as response:
        return int(response.status) == 200


def test_containers_are_found_by_label_with_their_ports_and_bind_mounts(
    docker_client: docker.DockerClient, start_tfs_container: StartTfsContainer
) -> None:
    label = f"tfs-reconciler.fleet=test-{secrets.token_hex(4)}"
    key, _, value = label.partition("=")
    first = start_tfs_container(labels={key: value}, wait_for_model="animals")
    second = start_tfs_container(labels={key: value}, wait_for_model="animals")
    start_tfs_container(labels={key: "another-fleet"})  # same key, other fleet
    start_tfs_container()  # no fleet label

    replicas = discover_docker(docker_client, label)

    beds = {bed.name: bed for bed in (first, second)}
    assert [r.name for r in replicas] == sorted(beds)
    for replica in replicas:
        bed = beds[replica.name]
        assert (replica.rest, replica.grpc) == (bed.rest_url, bed.grpc_target)
        assert replica.models_dir == bed.models_dir
        assert replica.config == bed.models_dir / "models.config"
        assert answers(replica.rest)

    third = start_tfs_container(labels={key: value}, wait_for_model="animals")
    replicas, skipped = discover_docker_with_skipped(docker_client, label)
    assert [r.name for r in replicas] == sorted([*beds, third.name])
    assert skipped == ()


def test_a_stopped_container_is_no_longer_found(
    docker_client: docker.DockerClient, start_tfs_container: StartTfsContainer
) -> None:
    label = f"tfs-reconciler.fleet=test-{secrets.token_hex(4)}"
    key, _, value = label.partition("=")
    kept = start_tfs_container(labels={key: value})
    stopped = start_tfs_container(labels={key: value})
    stopped.stop(timeout=2)
    assert [r.name for r in discover_docker(docker_client, label)] == [kept.name]
