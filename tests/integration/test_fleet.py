"""A fleet (issue 12) end to end: `tfs-reconciler apply --fleet` against five simulator processes,
each with its own models.config, sharing the lab's model folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing import SimulatorProcess, traffic
from reconciler.testing.lab import label_version, wait_until
from reconciler.testing.process import run_fleet, write_fleet_file
from reconciler.testing.simulator import free_port
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
        return run_fleet(self.lab, *args, timeout=timeout)

    def apply(self, *options: str) -> subprocess.CompletedProcess[str]:
        return self.cli("apply", "--reload", "grpc", "--file-system-poll-seconds", "0.2", *options)

    def daemon(self, port: int, *options: str) -> subprocess.Popen[str]:
        """`run --fleet` on this lab, its endpoint on `port`, with no TFS_RECONCILER_* set."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
        return subprocess.Popen(
            [
                "tfs-reconciler", "run", "--fleet", str(self.file),
                "--desired", str(self.lab / "desired_state"),
                "--models-dir", str(self.lab / "models"),
                "--state-dir", str(self.lab / "state"), "--reload", "grpc",
                "--file-system-poll-seconds", "0.2", "--resync", "0.3",
                "--metrics-addr", f"127.0.0.1:{port}", *options,
            ],
            cwd=self.lab, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

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
        write_fleet_file(lab, sims, "{canary: 1, max_parallel: 2, max_failures: 0}")
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
    shared = fleet.lab / "shared.config"
    result = fleet.apply("--config", str(shared))
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
    assert not shared.exists()  # the fleet's shared file only ever holds a finished rollout


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


def test_the_daemon_rolls_out_a_change_and_heals_a_replica_that_drifted(fleet: Fleet) -> None:
    port = free_port()
    daemon = fleet.daemon(port)
    try:

        def status() -> dict[str, Any]:
            try:
                code, body = request(f"http://127.0.0.1:{port}", "GET", "/status")
            except OSError:
                return {}
            return body if code == 200 and isinstance(body, dict) else {}

        wait_until(lambda: status().get("state") == "in_sync", 30, what="in sync at start")
        code, ready = request(f"http://127.0.0.1:{port}", "GET", "/readyz/tfs-c")
        assert (code, ready["ready"]) == (200, True), ready
        code, _ = request(f"http://127.0.0.1:{port}", "GET", "/readyz/tfs-z")
        assert code == 404
        unready: list[Any] = []
        probing = threading.Event()

        def probe() -> None:  # a balancer's health check of every replica, through the change
            while not probing.is_set():
                for name in NAMES:
                    code, body = request(f"http://127.0.0.1:{port}", "GET", f"/readyz/{name}")
                    if code != 200:
                        unready.append((name, code, body))
                time.sleep(0.02)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        promote(fleet.lab)
        wait_until(lambda: fleet.labels() == dict.fromkeys(NAMES, 4), 60, what="promoted")
        probing.set()
        prober.join(10)
        assert unready == []  # ready through the promotion: the old version serves until the flip
        wait_until(lambda: status().get("state") == "in_sync", 30, what="in sync after")
        # tfs-e's file put back by hand: drift, healed by the next pass
        shutil.copy(fleet.lab / "models" / "models.config", fleet.config("tfs-e"))
        wait_until(lambda: "versions: 4" in fleet.config("tfs-e").read_text(), 30, what="healed")
        assert fleet.labels() == dict.fromkeys(NAMES, 4)
        _, metrics = request(f"http://127.0.0.1:{port}", "GET", "/metrics")
        assert 'tfs_reconciler_fleet_replica_in_sync{replica="tfs-a"}' in metrics
        assert 'tfs_reconciler_fleet_rollouts_total{result="done"}' in metrics
        assert [r["name"] for r in status()["replicas"]] == list(NAMES)
        asked = fleet.cli("status", "--output", "json", "--metrics-addr", f"127.0.0.1:{port}")
        assert asked.returncode == 0, output(asked)
        assert json.loads(asked.stdout)["source"] == "daemon"  # the daemon's, not recomputed
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr


def test_diff_shows_each_replica_and_the_waves_and_changes_nothing(fleet: Fleet) -> None:
    promote(fleet.lab)
    before = {name: fleet.config(name).read_text() for name in NAMES}
    result = fleet.cli("diff")
    assert result.returncode == 2, output(result)
    assert "wave 1: tfs-a\nwave 2: tfs-b, tfs-c\nwave 3: tfs-d, tfs-e\n" in result.stdout
    assert all(f"== {name} (" in result.stdout for name in NAMES)
    assert {name: fleet.config(name).read_text() for name in NAMES} == before


def test_a_shared_models_config_is_written_once_the_whole_fleet_is_done(fleet: Fleet) -> None:
    promote(fleet.lab)
    shared = fleet.lab / "shared" / "models.config"
    shared.parent.mkdir()
    result = fleet.apply("--config", str(shared))
    assert result.returncode == 0, output(result)
    assert shared.read_text() == fleet.config("tfs-a").read_text()
    assert "value: 4" in shared.read_text()


def with_smaller_input(version_dir: Path) -> None:
    """Version 4's serving_default takes 4x4 images: the dog example (8x8) no longer fits."""
    from reconciler.testing.tfs_sim.savedmodel import _SAVED_MODEL

    path = version_dir / "saved_model.pb"
    proto: Any = _SAVED_MODEL()
    proto.ParseFromString(path.read_bytes())
    for graph in proto.meta_graphs:
        dims = graph.signature_def["serving_default"].inputs["input_image"].tensor_shape.dim
        dims[1].size = dims[2].size = 4
    path.write_bytes(proto.SerializeToString())


def promote_verified(lab: Path) -> None:
    add_version(lab, 4)
    shutil.copy(DOG_EXAMPLE, lab / "desired_state" / "dog_example.json")
    want(lab, "[2, 3, 4]", {"stable": 4, "canary": 3})
    with (lab / "desired_state" / "animals.yaml").open("a") as desired:
        desired.write("    verify:\n      request: dog_example.json\n")


def test_each_replica_answers_the_verify_request_before_any_label_moves(fleet: Fleet) -> None:
    promote_verified(fleet.lab)
    result = fleet.apply()
    assert result.returncode == 0, output(result)
    for sim in fleet.sims.values():  # asked of each replica, by version, before the flip
        assert "predict model=animals version=4 via=version:4" in sim.log
    assert fleet.labels() == dict.fromkeys(NAMES, 4)


def test_a_wrong_verify_answer_on_the_canary_halts_before_the_next_wave(fleet: Fleet) -> None:
    promote_verified(fleet.lab)
    with_smaller_input(fleet.lab / "models" / MODEL / "4")
    result = fleet.apply()
    assert result.returncode == 1, output(result)
    assert "halted in wave 1" in result.stderr
    assert "verification of animals version 4" in result.stdout
    assert fleet.labels() == dict.fromkeys(NAMES, 2)
    assert fleet.states("tfs-a").get(4) == "END"  # loaded for the rollout, unloaded again
    for name in NAMES[1:]:
        assert 4 not in fleet.states(name)


def test_no_verify_skips_the_request_on_every_replica(fleet: Fleet) -> None:
    promote_verified(fleet.lab)
    with_smaller_input(fleet.lab / "models" / MODEL / "4")
    result = fleet.apply("--no-verify")
    assert result.returncode == 0, output(result)
    assert not any("version=4 via=version:4" in sim.log for sim in fleet.sims.values())
    assert fleet.labels() == dict.fromkeys(NAMES, 4)
