"""A fleet on a real engine (issue 12): five simulator containers found by a Docker label
(``discover: {docker: {label: ...}}``), behind a real nginx, promoted with ``tfs-reconciler
apply --fleet`` while requests by label go through the balancer.

Each container bind-mounts its own copy of the lab's models at ``/models`` (its models.config
there, found by discovery through the mount) and writes its event log there
(``--sim_event_log``), so the test reads, per replica, when each label moved and each version
changed state: a label must never resolve to a version its replica does not have AVAILABLE.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.desired import DesiredState, parse_documents
from reconciler.fleet_discovery import discover_docker
from reconciler.http_endpoint import Address, HttpEndpoint
from reconciler.metrics import Metrics
from reconciler.readiness import replica_readiness
from reconciler.testing import docker_bed
from reconciler.testing.balancer import Balancer
from reconciler.testing.docker_bed import StartTfsContainer, TfsContainer
from reconciler.testing.lab import label_version, wait_until
from reconciler.testing.label_window import (
    disagreement_windows,
    read_event_log,
    unavailable_label_spans,
)
from reconciler.testing.traffic import PredictStream, request

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
DOG = (REPO / "examples" / "dog_example.json").read_bytes()
MODEL = "animals"
LABELS = ("deprecated", "stable", "canary")
REPLICAS = 5
EVENT_LOG = "events.jsonl"
ARGS = (
    "--model_config_file=/models/models.config",
    "--model_config_file_poll_wait_seconds=60",
    "--allow_version_labels_for_unavailable_models=true",
    "--file_system_poll_wait_seconds=0.2",
    "--sim_load_seconds=0.3",
    "--max_num_load_retries=0",
    f"--sim_event_log=/models/{EVENT_LOG}",
)


@dataclass
class DockerFleet:
    root: Path
    label: str
    containers: dict[str, TfsContainer]
    start: StartTfsContainer
    balancer: Balancer | None = None

    @property
    def url(self) -> str:
        """The balancer's URL: requests to any replica."""
        assert self.balancer is not None
        return self.balancer.url

    @property
    def file(self) -> Path:
        return self.root / "fleet.yaml"

    def cli(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
        return subprocess.run(
            [
                "tfs-reconciler",
                *args,
                "--fleet",
                str(self.file),
                "--desired",
                str(self.root / "desired_state"),
                "--models-dir",
                str(self.root / "models"),
                "--state-dir",
                str(self.root / "state"),
            ],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def apply(self, *options: str) -> subprocess.CompletedProcess[str]:
        return self.cli("apply", "--reload", "grpc", "--file-system-poll-seconds", "0.2", *options)

    def add(self, extra: Sequence[str] = ()) -> TfsContainer:
        """One more container carrying the fleet's label, serving the lab as it is."""
        key, _, value = self.label.partition("=")
        models = docker_bed.copy_example_models(self.root / f"models-{len(self.containers)}")
        bed = self.start(
            models,
            [*ARGS, *extra],
            labels={key: value},
            wait_for_model=MODEL,
            wait_for_versions=(1, 2, 3),
        )
        self.containers[bed.name] = bed
        return bed

    def labels(self, label: str = "stable") -> dict[str, int | None]:
        return {n: label_version(c.rest_url, MODEL, label) for n, c in self.containers.items()}

    def events(self) -> dict[str, list[dict[str, Any]]]:
        return {n: read_event_log(c.models_dir / EVENT_LOG) for n, c in self.containers.items()}


def want(root: Path, versions: str, labels: dict[str, int]) -> None:
    lines = "\n".join(f"      {k}: {v}" for k, v in labels.items())
    (root / "desired_state" / "animals.yaml").write_text(
        f"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: {versions}\n"
        f"    labels:\n{lines}\n"
    )


def add_version(models_dir: Path, number: int) -> None:
    base = models_dir / MODEL
    shutil.copytree(base / "3", base / f".{number}.tmp")
    (base / f".{number}.tmp").rename(base / str(number))


def promote(fleet: DockerFleet) -> None:
    """Version 4 on every replica's disk; stable -> 4, canary stays 3, version 1 goes."""
    for bed in fleet.containers.values():
        add_version(bed.models_dir, 4)
    want(fleet.root, "[2, 3, 4]", {"stable": 4, "canary": 3})


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def no_label_on_unavailable(fleet: DockerFleet, since: float) -> None:
    """From every replica's event log: no label resolved, after ``since``, to a version that
    replica did not have AVAILABLE."""
    spans = [
        span
        for name, events in fleet.events().items()
        for label in LABELS
        for span in unavailable_label_spans(name, events, MODEL, label)
        if span.end > since
    ]
    assert spans == []


@pytest.fixture
def docker_fleet(
    lab: Path, start_tfs_container: StartTfsContainer, request: pytest.FixtureRequest
) -> Iterator[DockerFleet]:
    """Five containers labelled for this test only, nginx over their REST ports, and a fleet
    file that finds them by the label. A test parametrizing it (indirect) with {index:
    [flags]} gives some containers more flags."""
    extra: dict[int, Sequence[str]] = getattr(request, "param", {})
    label = f"tfs-reconciler.fleet=test-{secrets.token_hex(4)}"
    (lab / "fleet.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nfleet:\n"
        f"  discover: {{docker: {{label: '{label}'}}}}\n"
        "  rollout: {canary: 1, max_parallel: 2, max_failures: 0}\n"
    )
    fleet = DockerFleet(lab, label, {}, start_tfs_container)
    for index in range(REPLICAS):
        fleet.add(extra.get(index, ()))
    upstreams = [f"127.0.0.1:{c.rest_port}" for c in fleet.containers.values()]
    with ExitStack() as stack:
        fleet.balancer = stack.enter_context(Balancer(upstreams, fail_timeout=1, timeout=1.0))
        yield fleet
        for bed in fleet.containers.values():  # a test may leave one paused
            if bed.status() == "paused":
                bed.container.unpause()


def test_the_fleet_file_finds_the_labelled_containers(
    docker_fleet: DockerFleet, docker_client: docker.DockerClient
) -> None:
    found = discover_docker(docker_client, docker_fleet.label)
    assert [r.name for r in found] == sorted(docker_fleet.containers)
    status = docker_fleet.cli("status", "--output", "json")
    assert status.returncode == 0, output(status)
    document = json.loads(status.stdout)
    assert [r["name"] for r in document["replicas"]] == sorted(docker_fleet.containers)


def test_a_promotion_through_nginx_fails_no_request_and_never_labels_an_unavailable_version(
    docker_fleet: DockerFleet,
) -> None:
    promote(docker_fleet)
    started = max(float(e["t"]) for events in docker_fleet.events().values() for e in events)
    with PredictStream(
        docker_fleet.url, MODEL, DOG, label="stable", interval=0.01, max_seconds=300
    ) as stream:
        result = docker_fleet.apply()
    assert result.returncode == 0, output(result)
    assert f"Done: {REPLICAS} replica(s) converged" in result.stdout, output(result)
    assert stream.total > 0
    assert stream.failures == []
    assert docker_fleet.labels() == dict.fromkeys(docker_fleet.containers, 4)
    no_label_on_unavailable(docker_fleet, started)
    (window,) = [
        w for w in disagreement_windows(docker_fleet.events(), MODEL, "stable") if w.start > started
    ]
    assert (window.old, window.new) == (2, 4)
    print(
        f"stable 2 -> 4 across {REPLICAS} containers: disagreement {window.seconds * 1000:.1f} ms"
    )

    want(docker_fleet.root, "[2, 3, 4]", {"stable": 3, "canary": 4})  # labels only, back
    with PredictStream(
        docker_fleet.url, MODEL, DOG, label="stable", interval=0.01, max_seconds=300
    ) as stream:
        result = docker_fleet.apply()
    assert result.returncode == 0, output(result)
    assert stream.failures == []
    assert docker_fleet.labels() == dict.fromkeys(docker_fleet.containers, 3)
    no_label_on_unavailable(docker_fleet, started)


@pytest.mark.parametrize(
    ("docker_fleet", "how"),
    [
        ({3: ["--sim_load_seconds_for=animals:4=2.0"]}, "pause"),
        ({3: ["--sim_load_seconds_for=animals:4=2.0"]}, "stop"),
    ],
    indirect=["docker_fleet"],
)
def test_a_container_paused_or_stopped_mid_rollout_neither_hangs_it_nor_counts_healthy(
    docker_fleet: DockerFleet, how: str
) -> None:
    promote(docker_fleet)
    names = sorted(docker_fleet.containers)
    target = docker_fleet.containers[names[3]]  # in the last wave; its load of 4 takes 2 s
    done = threading.Event()

    def stop_it_once_it_prepares() -> None:
        config = target.models_dir / "models.config"
        wait_until(lambda: "versions: 4" in config.read_text(), 120)
        if how == "pause":
            target.container.pause()  # accepts connections, never answers
        else:
            target.stop(timeout=1)
        done.set()

    stopper = threading.Thread(target=stop_it_once_it_prepares, daemon=True)
    stopper.start()
    result = docker_fleet.apply("--timeout", "10")
    stopper.join(5)
    assert done.is_set(), output(result)
    assert result.returncode == 1, output(result)
    history = json.loads(docker_fleet.cli("history", "--output", "json").stdout)
    (record,) = history
    assert target.name in record["extra"]["failed"]
    assert record["outcome"] in ("rolled_back", "rollback_failed")
    running = [n for n in names if n != target.name]
    labels = docker_fleet.labels()
    assert {n: labels[n] for n in running} == dict.fromkeys(running, 2)


def test_a_container_added_mid_rollout_is_found_and_converged(docker_fleet: DockerFleet) -> None:
    """Discovery runs once per command: a container started while a rollout runs is not part
    of it, and the next apply finds it and converges it alone."""
    promote(docker_fleet)
    added: list[TfsContainer] = []

    def add_one_mid_rollout() -> None:
        first = docker_fleet.containers[sorted(docker_fleet.containers)[0]]
        wait_until(lambda: "versions: 4" in (first.models_dir / "models.config").read_text(), 120)
        added.append(docker_fleet.add())

    adder = threading.Thread(target=add_one_mid_rollout, daemon=True)
    adder.start()
    result = docker_fleet.apply()
    adder.join(120)
    assert result.returncode == 0, output(result)
    (new,) = added
    add_version(new.models_dir, 4)
    assert label_version(new.rest_url, MODEL, "stable") == 2
    again = docker_fleet.apply()
    assert again.returncode == 0, output(again)
    assert docker_fleet.labels() == dict.fromkeys(docker_fleet.containers, 4)
    assert len(docker_fleet.containers) == REPLICAS + 1
    status = json.loads(docker_fleet.cli("status", "--output", "json").stdout)
    assert new.name in [r["name"] for r in status["replicas"]]
    assert status["in_sync"] is True


def test_readyz_per_replica_stays_ready_through_a_promotion_and_not_for_a_paused_replica(
    docker_fleet: DockerFleet, docker_client: docker.DockerClient
) -> None:
    desired_file = docker_fleet.root / "desired_state" / "animals.yaml"

    def desired() -> DesiredState:
        return parse_documents([(desired_file.name, desired_file.read_bytes())])

    found = discover_docker(docker_client, docker_fleet.label)
    checks = replica_readiness(found, desired, timeout=1.0, max_age=0.0)
    endpoint = HttpEndpoint(
        Address("127.0.0.1", 0), Metrics.create().registry, dict, replica_readiness=lambda: checks
    )
    not_ready: list[tuple[str, int, Any]] = []
    probes = [0]
    probing = threading.Event()

    def probe() -> None:
        while probing.is_set():
            for replica in found:
                code, body = request(endpoint.address.url, "GET", f"/readyz/{replica.name}")
                probes[0] += 1
                if code != 200:
                    not_ready.append((replica.name, code, body))

    with endpoint:
        promote(docker_fleet)
        probing.set()
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        result = docker_fleet.apply()
        probing.clear()
        prober.join(10)
        assert result.returncode == 0, output(result)
        assert probes[0] >= len(found)
        assert not_ready == []  # every replica ready all through the promotion

        paused = docker_fleet.containers[found[2].name]
        paused.container.pause()
        code, body = request(endpoint.address.url, "GET", f"/readyz/{paused.name}", timeout=10)
        assert code == 503
        assert body["reasons"][0].startswith("TFS does not answer"), body
        for replica in found:
            if replica.name != paused.name:
                assert request(endpoint.address.url, "GET", f"/readyz/{replica.name}")[0] == 200
