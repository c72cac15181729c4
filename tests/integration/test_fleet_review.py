"""The fleet under attack (review of issue 12), on five simulator processes: the reconciler
killed with -9 mid-rollout then run again, and status with a replica down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import pytest

from reconciler.testing.lab import label_version, wait_until
from reconciler.testing.simulator import free_port
from reconciler.testing.traffic import request
from reconciler.tfs_config import parse_config

from .test_fleet import NAMES, Fleet, fleet, output, promote

__all__ = ["fleet"]  # the fixture, used by name

pytestmark = pytest.mark.integration


def start_apply(fleet: Fleet) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    return subprocess.Popen(
        [
            "tfs-reconciler", "apply", "--fleet", str(fleet.file),
            "--desired", str(fleet.lab / "desired_state"),
            "--models-dir", str(fleet.lab / "models"),
            "--state-dir", str(fleet.lab / "state"),
            "--reload", "grpc", "--file-system-poll-seconds", "0.2",
        ],
        cwd=fleet.lab, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("moment", ["canary", "wave2", "flip"])
def test_apply_killed_with_9_then_run_again_converges_and_rollback_returns(
    fleet: Fleet, moment: str
) -> None:
    promote(fleet.lab)
    victim = start_apply(fleet)
    try:
        if moment == "canary":
            wait_until(lambda: "versions: 4" in fleet.config("tfs-a").read_text(), 60)
        elif moment == "wave2":
            wait_until(lambda: "versions: 4" in fleet.config("tfs-c").read_text(), 60)
        else:
            wait_until(lambda: "value: 4" in fleet.config("tfs-a").read_text(), 60)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
    for name in NAMES:  # each file parses and is something that replica can boot with
        parse_config(fleet.config(name).read_text())
    again = fleet.apply()
    assert again.returncode == 0, output(again)
    assert fleet.labels() == dict.fromkeys(NAMES, 4)
    for name in NAMES:
        assert "value: 4" in fleet.config(name).read_text()
    back = fleet.cli("rollback", "--reload", "grpc", "--file-system-poll-seconds", "0.2")
    assert back.returncode == 0, output(back)
    text = fleet.cli("history", "--output", "json").stdout
    # back to what served before the killed rollout, not to the half-done fleet it left
    assert fleet.labels() == dict.fromkeys(NAMES, 2), output(again) + output(back) + text
    for name in NAMES:
        assert "value: 2" in fleet.config(name).read_text()
    history = json.loads(text)
    assert [r["outcome"] for r in history] == ["started", "done", "done"]
    assert history[1]["extra"]["resumes"] == history[0]["id"]


def test_status_with_a_replica_stopped_is_not_in_sync(fleet: Fleet) -> None:
    assert fleet.apply().returncode == 0
    pid = fleet.sims["tfs-c"].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        result = fleet.cli("status", "--output", "json", timeout=120)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result.returncode != 0, output(result)
    assert result.stdout, output(result)
    document = json.loads(result.stdout)
    (row,) = [r for r in document["replicas"] if r["name"] == "tfs-c"]
    assert row.get("in_sync") is not True, row


@pytest.mark.parametrize(
    "fleet", [{"tfs-e": ["--sim_load_seconds_for=animals:4=1.0"]}], indirect=True
)
def test_a_replica_stopped_before_the_flip_fails_it_and_the_others_go_back(fleet: Fleet) -> None:
    promote(fleet.lab)
    pid = fleet.sims["tfs-b"].pid
    assert pid is not None

    def stop_tfs_b_while_the_last_wave_loads() -> None:
        wait_until(lambda: "versions: 4" in fleet.config("tfs-e").read_text(), 60)
        os.kill(pid, signal.SIGSTOP)  # as `docker pause`: prepared, then never answers

    stopper = threading.Thread(target=stop_tfs_b_while_the_last_wave_loads, daemon=True)
    stopper.start()
    try:
        result = fleet.apply("--timeout", "10")
        stopper.join(5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result.returncode == 1, output(result)
    history = json.loads(fleet.cli("history", "--output", "json").stdout)
    record = history[-1]
    assert "tfs-b" in record["extra"]["failed"], record
    running = [n for n in NAMES if n != "tfs-b"]
    assert {n: v for n, v in fleet.labels().items() if n in running} == dict.fromkeys(running, 2)
    for name in running:  # loaded only for the halted rollout: unloaded again
        assert fleet.states(name).get(4) in (None, "END"), (name, fleet.states(name))
        assert "value: 2" in fleet.config(name).read_text()
    assert record["outcome"] == "rollback_failed", record  # tfs-b could not be put back
    # resumed, tfs-b never serves the label on a version the others have dropped
    assert fleet.labels()["tfs-b"] == 2
    parse_config(fleet.config("tfs-b").read_text())
    status = fleet.cli("status", "--output", "json")
    assert status.returncode != 0, output(status)  # not in sync: the desired 4 is not live


def test_two_replicas_whose_config_is_one_file_through_a_link_are_refused(fleet: Fleet) -> None:
    promote(fleet.lab)
    fleet.config("tfs-b").unlink()
    fleet.config("tfs-b").symlink_to(fleet.config("tfs-a"))
    before = fleet.config("tfs-a").read_text()
    result = fleet.apply("--timeout", "10")
    assert result.returncode != 0, output(result)
    assert "replicas tfs-a and tfs-b have one models.config" in result.stderr, output(result)
    assert "another tfs-reconciler" not in result.stderr  # it was this one, on itself
    assert fleet.config("tfs-a").read_text() == before


@pytest.mark.parametrize(
    "fleet", [{"tfs-d": ["--sim_load_seconds_for=animals:4=1.0"]}], indirect=True
)
def test_a_replica_killed_mid_prepare_fails_the_rollout_and_the_rest_go_back(
    fleet: Fleet,
) -> None:
    promote(fleet.lab)
    pid = fleet.sims["tfs-d"].pid
    assert pid is not None

    def kill_tfs_d_while_it_loads() -> None:
        wait_until(lambda: "versions: 4" in fleet.config("tfs-d").read_text(), 60)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_tfs_d_while_it_loads, daemon=True)
    killer.start()
    result = fleet.apply("--timeout", "10")
    killer.join(5)
    assert result.returncode == 1, output(result)
    record = json.loads(fleet.cli("history", "--output", "json").stdout)[-1]
    assert "tfs-d" in record["extra"]["failed"], record
    running = [n for n in NAMES if n != "tfs-d"]
    labels = {n: label_version(fleet.sims[n].rest_url, "animals", "stable") for n in running}
    assert labels == dict.fromkeys(running, 2)
    for name in running:
        assert fleet.states(name).get(4) in (None, "END"), (name, fleet.states(name))
    # tfs-d's file: what it should boot with, parsed, its label on a version it lists
    config = parse_config(fleet.config("tfs-d").read_text())
    (model,) = config.models
    assert dict(model.labels)["stable"] == 2  # what it served: it boots back into that
    assert "tfs-d" in result.stdout and "rollback FAILED" in result.stdout  # never healthy


def test_the_daemon_with_a_replica_stopped_is_unready_moves_no_label_and_converges_once_it_resumes(
    fleet: Fleet,
) -> None:
    port = free_port()
    daemon = fleet.daemon(port, "--timeout", "8")
    pid = fleet.sims["tfs-c"].pid
    assert pid is not None
    try:

        def get(path: str) -> tuple[int, object]:
            try:
                return request(f"http://127.0.0.1:{port}", "GET", path)
            except OSError:
                return 0, None

        def state() -> object:
            code, body = get("/status")
            return body.get("state") if code == 200 and isinstance(body, dict) else None

        wait_until(lambda: state() == "in_sync", 30, what="in sync at start")
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: state() not in (None, "in_sync"), 30, what="tfs-c noticed")
        # /readyz/<replica>: the stopped one out of the balancer (a bounded ask), not the rest
        wait_until(lambda: get("/readyz/tfs-c")[0] == 503, 30, what="tfs-c unready")
        assert get("/readyz/tfs-a")[0] == 200
        promote(fleet.lab)

        def rollouts() -> list[dict[str, object]]:
            found: list[dict[str, object]] = json.loads(
                fleet.cli("history", "--output", "json").stdout
            )
            return found

        wait_until(lambda: any(r["outcome"] != "started" for r in rollouts()), 90, what="halt")
        assert "tfs-c" in str(rollouts()[0]["extra"])
        running = [n for n in NAMES if n != "tfs-c"]
        # while tfs-c cannot load, no label moves anywhere (the flip waits for every replica)
        for _ in range(3):
            code, _ = get("/status")
            assert code == 200  # the endpoint answers while a pass waits on tfs-c
            labels = {
                n: label_version(fleet.sims[n].rest_url, "animals", "stable") for n in running
            }
            assert labels == dict.fromkeys(running, 2)
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: fleet.labels() == dict.fromkeys(NAMES, 4), 120, what="promoted")
        wait_until(lambda: state() == "in_sync", 60, what="in sync after")
        wait_until(lambda: get("/readyz/tfs-c")[0] == 200, 30, what="tfs-c ready again")
    finally:
        os.kill(pid, signal.SIGCONT)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr[-3000:]


FAILS_4 = ["--sim_load_fail_for=animals:4", "--max_num_load_retries=0"]


@pytest.mark.parametrize("fleet", [{"tfs-c": FAILS_4}], indirect=True)
def test_a_tolerated_failure_flips_the_others_and_leaves_the_failed_replica_consistent(
    fleet: Fleet,
) -> None:
    fleet.file.write_text(fleet.file.read_text().replace("max_failures: 0", "max_failures: 1"))
    promote(fleet.lab)
    result = fleet.apply("--timeout", "20")
    assert result.returncode == 1, output(result)
    assert "partial" in result.stderr and "tfs-c" in result.stderr, output(result)
    assert fleet.labels() == {**dict.fromkeys(NAMES, 4), "tfs-c": 2}
    assert fleet.states("tfs-c").get(4) in (None, "END")
    (model,) = parse_config(fleet.config("tfs-c").read_text()).models
    assert dict(model.labels)["stable"] == 2 and 4 not in model.policy.versions  # type: ignore[union-attr]
    status = fleet.cli("status", "--output", "json")
    assert status.returncode != 0, output(status)  # tfs-c is not in sync, nor the fleet
    assert json.loads(status.stdout)["label_disagreements"], status.stdout
