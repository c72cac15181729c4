"""A fleet (issue 12) end to end: `tfs-reconciler apply --fleet` against five simulator processes,
each with its own models.config, sharing the lab's model folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.testing import SimulatorProcess, traffic
from reconciler.testing.lab import label_version, wait_until
from reconciler.testing.traffic import request

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOG_EXAMPLE = REPO / "examples" / "dog_example.json"
MODEL = "animals"
NAMES = ("tfs-a", "tfs-b", "tfs-c", "tfs-d", "tfs-e")
LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


@dataclass
class Fleet:
    lab: Path
    sims: dict[str, SimulatorProcess]

    @property
    def file(self) -> Path:
        return self.lab / "fleet.yaml"

    def config(self, name: str) -> Path:
        return self.lab / "replicas" / name / "models.config"

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
        return subprocess.run(
            [
                "tfs-reconciler",
                *args,
                "--fleet",
                str(self.file),
                "--desired",
                str(self.lab / "desired_state"),
                "--models-dir",
                str(self.lab / "models"),
                "--state-dir",
                str(self.lab / "state"),
            ],
            cwd=self.lab,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def apply(self, *options: str) -> subprocess.CompletedProcess[str]:
        return self.cli("apply", "--reload", "grpc", "--file-system-poll-seconds", "0.2", *options)

    def labels(self, label: str = "stable") -> dict[str, int | None]:
        return {name: label_version(s.rest_url, MODEL, label) for name, s in self.sims.items()}

    def states(self, name: str) -> dict[int, str]:
        _, body = request(self.sims[name].rest_url, "GET", f"/v1/models/{MODEL}")
        found: dict[int, str] = {}
        for entry in body["model_version_status"]:
            number = int(entry["version"])
            if found.get(number) in (None, "END"):
                found[number] = entry["state"]
        return found


def want(lab: Path, versions: str, labels: dict[str, int]) -> None:
    lines = "\n".join(f"      {k}: {v}" for k, v in labels.items())
    (lab / "desired_state" / "animals.yaml").write_text(
        f"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: {versions}\n"
        f"    labels:\n{lines}\n"
    )


def add_version(lab: Path, number: int) -> None:
    base = lab / "models" / MODEL
    shutil.copytree(base / "3", base / f".{number}.tmp")
    (base / f".{number}.tmp").rename(base / str(number))


def promote(lab: Path) -> None:
    add_version(lab, 4)
    want(lab, "[2, 3, 4]", {"stable": 4, "canary": 3})


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.fixture
def fleet(lab: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """Five simulators on the lab's models, each from its own copy of the lab's config; a
    test parametrizing it (indirect) with {name: [flags]} gives some of them more flags."""
    extra: dict[str, Sequence[str]] = getattr(request, "param", {})
    with ExitStack() as stack:
        sims = {}
        for name in NAMES:
            config = lab / "replicas" / name / "models.config"
            config.parent.mkdir(parents=True)
            shutil.copy(lab / "models" / "models.config", config)
            sim = SimulatorProcess(
                lab / "models",
                config,
                file_system_poll_seconds=0.2,
                load_seconds=0.3,
                extra_args=list(extra.get(name, ())),
            )
            sims[name] = stack.enter_context(sim)
        rows = "\n".join(
            f"    - {{name: {n}, rest: '{s.rest_url}', grpc: '{s.grpc_target}',"
            f" config: replicas/{n}/models.config}}"
            for n, s in sims.items()
        )
        (lab / "fleet.yaml").write_text(
            "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
            f"{rows}\n  rollout: {{canary: 1, max_parallel: 2, max_failures: 0}}\n"
        )
        yield Fleet(lab, sims)
        for sim in sims.values():  # a test may leave one stopped
            if sim.pid is not None:
                with suppress(OSError):
                    os.kill(sim.pid, signal.SIGCONT)


def test_a_promotion_converges_every_replica_with_no_failed_request(fleet: Fleet) -> None:
    promote(fleet.lab)
    body = DOG_EXAMPLE.read_bytes()
    with ExitStack() as streams:
        loops = [
            streams.enter_context(
                traffic.PredictStream(s.rest_url, MODEL, body, label="stable", interval=0.01)
            )
            for s in fleet.sims.values()
        ]
        result = fleet.apply()
    assert result.returncode == 0, output(result)
    assert "Done: 5 replica(s) converged in 3 wave(s)" in result.stdout
    assert all(loop.total > 0 for loop in loops)
    assert [loop.failures for loop in loops] == [[]] * 5
    assert fleet.labels() == dict.fromkeys(NAMES, 4)
    for name in NAMES:
        assert fleet.states(name)[4] == "AVAILABLE"
        assert fleet.states(name)[1] == "END"
        assert "versions: 4" in fleet.config(name).read_text()
    status = fleet.cli("status", "--output", "json")
    assert status.returncode == 0, output(status)
    document = json.loads(status.stdout)
    assert [r["name"] for r in document["replicas"]] == list(NAMES)
    assert all(r["rollout"]["phase"] == "cleanup" for r in document["replicas"])
    assert len({r["config_digest"] for r in document["replicas"]}) == 1
    assert document["label_disagreements"] == {}
    history = json.loads(fleet.cli("history", "--output", "json").stdout)
    assert [r["outcome"] for r in history] == ["done"]


# TFS retries a failed load (--max_num_load_retries, 5 by default, a minute apart): without
# retries the failure is final at once, as with a version that cannot load at all.
FAILS_4 = ["--sim_load_fail_for=animals:4", "--max_num_load_retries=0"]


@pytest.mark.parametrize("fleet", [{"tfs-c": FAILS_4}], indirect=True)
def test_a_failed_load_on_one_replica_halts_and_rolls_back_leaving_labels(fleet: Fleet) -> None:
    promote(fleet.lab)
    result = fleet.apply()
    assert result.returncode == 1, output(result)
    assert "rolled_back" in result.stderr and "tfs-c" in result.stderr
    assert fleet.labels() == dict.fromkeys(NAMES, 2)
    assert fleet.labels("deprecated") == dict.fromkeys(NAMES, 1)
    for name in ("tfs-a", "tfs-b"):  # loaded for the halted rollout: unloaded again
        assert fleet.states(name).get(4) == "END"
    for name in ("tfs-d", "tfs-e"):  # the later wave was never touched
        assert 4 not in fleet.states(name)
        assert "versions: 4" not in fleet.config(name).read_text()
    for name in NAMES:
        assert "value: 2" in fleet.config(name).read_text()


@pytest.mark.parametrize(
    "fleet", [{"tfs-d": ["--sim_load_seconds_for=animals:4=1.0"]}], indirect=True
)
def test_a_replica_stopped_mid_rollout_neither_hangs_it_nor_counts_healthy(fleet: Fleet) -> None:
    promote(fleet.lab)
    stopped = threading.Event()

    def stop_tfs_d_once_it_prepares() -> None:
        wait_until(lambda: "versions: 4" in fleet.config("tfs-d").read_text(), 60)
        pid = fleet.sims["tfs-d"].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # as `docker pause`: it accepts, never answers
        stopped.set()

    stopper = threading.Thread(target=stop_tfs_d_once_it_prepares, daemon=True)
    stopper.start()
    result = fleet.apply("--timeout", "10")
    stopper.join(5)
    assert stopped.is_set(), output(result)
    assert result.returncode == 1, output(result)
    history = json.loads(fleet.cli("history", "--output", "json").stdout)
    (record,) = history
    assert "tfs-d" in record["extra"]["failed"]
    assert record["outcome"] in ("rolled_back", "rollback_failed")
    running = [n for n in NAMES if n != "tfs-d"]
    assert {n: v for n, v in fleet.labels().items() if n in running} == dict.fromkeys(running, 2)


def test_rollback_returns_every_replica_to_what_it_served_before_the_last_rollout(
    fleet: Fleet,
) -> None:
    promote(fleet.lab)
    assert fleet.apply().returncode == 0
    result = fleet.cli("rollback", "--reload", "grpc", "--file-system-poll-seconds", "0.2")
    assert result.returncode == 0, output(result)
    assert "before rollout 1" in result.stdout
    assert fleet.labels() == dict.fromkeys(NAMES, 2)
    assert fleet.labels("deprecated") == dict.fromkeys(NAMES, 1)
    for name in NAMES:
        assert fleet.states(name)[1] == "AVAILABLE"
    history = json.loads(fleet.cli("history", "--output", "json").stdout)
    assert [r["outcome"] for r in history] == ["done", "done"]
