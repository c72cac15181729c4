"""A fleet of five simulator processes behind a real nginx, promoted with ``apply --fleet``,
judged from the simulators' event logs (``--sim_event_log``): what each replica's labels and
versions did, and when, not only where they ended."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing import SimulatorProcess
from reconciler.testing.balancer import Balancer
from reconciler.testing.lab import label_version
from reconciler.testing.label_window import (
    disagreement_windows,
    read_event_log,
    unavailable_label_spans,
)
from reconciler.testing.process import run_fleet, write_fleet_file
from reconciler.testing.traffic import PredictStream

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOG = (REPO / "examples" / "dog_example.json").read_bytes()
MODEL = "animals"
LABELS = ("deprecated", "stable", "canary")
NAMES = ("tfs-a", "tfs-b", "tfs-c", "tfs-d", "tfs-e")


@dataclass
class Fleet:
    lab: Path
    sims: dict[str, SimulatorProcess]
    balancer: Balancer

    def apply(self) -> subprocess.CompletedProcess[str]:
        return run_fleet(self.lab, "apply", "--reload", "grpc", "--file-system-poll-seconds", "0.2")

    def events(self) -> dict[str, list[dict[str, Any]]]:
        return {n: read_event_log(self.lab / "replicas" / n / "events.jsonl") for n in self.sims}

    def labels(self, label: str = "stable") -> dict[str, int | None]:
        return {n: label_version(s.rest_url, MODEL, label) for n, s in self.sims.items()}

    def last_event(self) -> float:
        return max(float(e["t"]) for events in self.events().values() for e in events)


def promote(lab: Path) -> None:
    base = lab / "models" / MODEL
    shutil.copytree(base / "3", base / ".4.tmp")
    (base / ".4.tmp").rename(base / "4")
    (lab / "desired_state" / "animals.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [2, 3, 4]\n"
        "    labels:\n      stable: 4\n      canary: 3\n"
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.fixture
def fleet(lab: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """Five simulators on the lab's models, each with its own config and event log, behind
    nginx; a test parametrizing it (indirect) with {name: [flags]} gives some more flags."""
    extra: dict[str, Sequence[str]] = getattr(request, "param", {})
    with ExitStack() as stack:
        sims = {}
        for name in NAMES:
            folder = lab / "replicas" / name
            folder.mkdir(parents=True)
            shutil.copy(lab / "models" / "models.config", folder / "models.config")
            sim = SimulatorProcess(
                lab / "models",
                folder / "models.config",
                file_system_poll_seconds=0.2,
                load_seconds=0.3,
                extra_args=[f"--sim_event_log={folder / 'events.jsonl'}", *extra.get(name, ())],
            )
            sims[name] = stack.enter_context(sim)
        write_fleet_file(lab, sims, "{canary: 1, max_parallel: 2, max_failures: 0}")
        upstreams = [f"127.0.0.1:{s.rest_port}" for s in sims.values()]
        balancer = stack.enter_context(Balancer(upstreams, fail_timeout=1, timeout=1.0))
        yield Fleet(lab, sims, balancer)


def test_a_promotion_through_nginx_fails_nothing_and_labels_only_available_versions(
    fleet: Fleet,
) -> None:
    promote(fleet.lab)
    started = fleet.last_event()
    with PredictStream(
        fleet.balancer.url, MODEL, DOG, label="stable", interval=0.005, max_seconds=300
    ) as stream:
        result = fleet.apply()
    assert result.returncode == 0, output(result)
    assert stream.total > 0
    assert stream.failures == []
    events = fleet.events()
    spans = [
        span
        for name, replica_events in events.items()
        for label in LABELS
        for span in unavailable_label_spans(name, replica_events, MODEL, label)
        if span.end > started
    ]
    assert spans == []
    (window,) = [w for w in disagreement_windows(events, MODEL, "stable") if w.start > started]
    assert (window.old, window.new) == (2, 4)
    print(f"stable 2 -> 4 on {len(NAMES)} replicas: disagreement {window.seconds * 1000:.1f} ms")


# TFS retries a failed load (--max_num_load_retries, 5 by default, a minute apart): without
# retries the failure is final at once.
FAILS_4 = ["--sim_load_fail_for=animals:4", "--max_num_load_retries=0"]


@pytest.mark.parametrize("fleet", [{"tfs-c": FAILS_4}], indirect=True)
def test_a_failed_load_halts_the_rollout_and_no_replica_ever_moves_a_label(fleet: Fleet) -> None:
    promote(fleet.lab)
    started = fleet.last_event()
    with PredictStream(
        fleet.balancer.url, MODEL, DOG, label="stable", interval=0.005, max_seconds=300
    ) as stream:
        result = fleet.apply()
    assert result.returncode == 1, output(result)
    assert stream.failures == []
    moved = {
        name: [e for e in replica_events if e["kind"] == "label" and float(e["t"]) > started]
        for name, replica_events in fleet.events().items()
    }
    assert moved == {name: [] for name in NAMES}  # not even for a moment, on any replica
    loaded = {
        name
        for name, replica_events in fleet.events().items()
        for e in replica_events
        if e["kind"] == "version_state" and e["version"] == 4 and e["state"] == "AVAILABLE"
    }
    assert loaded == {"tfs-a", "tfs-b"}  # the canary and tfs-c's wave; tfs-d, tfs-e untouched
    assert fleet.labels() == dict.fromkeys(NAMES, 2)
