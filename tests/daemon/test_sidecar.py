"""`run --sidecar` against the simulator, its desired state a ConfigMap volume written as the
kubelet writes it (reconciler.testing.kubelet.AtomicWriter): what the sidecar sees in a pod."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing import SimulatorProcess
from reconciler.testing.kubelet import AtomicWriter
from reconciler.testing.traffic import PredictStream

from .conftest import StartDaemon, StartSim
from .daemon_harness import (
    DaemonProcess,
    LabRepo,
    add_version,
    desired_text,
    http_get,
    label_is,
    label_version,
    wait_until,
)

pytestmark = pytest.mark.integration

LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}
PROMOTED = {"deprecated": 1, "stable": 3, "canary": 3}
DOG_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dog_example.json"
GENEROUS = 30.0  # deadlines, never promises: the bench measures how fast


def configmap(tmp_path: Path, text: str) -> AtomicWriter:
    folder = tmp_path / "configmap"
    folder.mkdir()
    writer = AtomicWriter(folder)
    writer.write({"animals.yaml": text.encode()})
    return writer


def sidecar(
    sim: SimulatorProcess, start_daemon: StartDaemon, writer: AtomicWriter, *args: str
) -> DaemonProcess:
    return start_daemon(
        "--sidecar",
        "--desired",
        str(writer.target),
        *args,
        rest_url=sim.rest_url,
        grpc_target=sim.grpc_target,
    )


def readyz(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    code, body = http_get(f"{daemon.metrics_url}/readyz", timeout=10)
    return code, json.loads(body)


@dataclass
class ReadinessLog:
    """/readyz and where `stable` resolves, asked over and over in a thread."""

    daemon: DaemonProcess
    rest_url: str
    seen: list[tuple[int, int | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ReadinessLog:
        url = self.daemon.metrics_url

        def run() -> None:
            while not self._stop.wait(0.05):
                code = http_get(f"{url}/readyz", timeout=10)[0]
                self.seen.append((code, label_version(self.rest_url, "stable")))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(15)


def restarted(sim: SimulatorProcess) -> SimulatorProcess:
    """The same TFS command line again, on the same ports (a container restart)."""
    sim.stop()
    again = SimulatorProcess(sim.models_dir, sim.config_file)
    again.rest_port, again.grpc_port, again.args = sim.rest_port, sim.grpc_port, list(sim.args)
    return again


@pytest.fixture
def sims() -> Iterator[list[SimulatorProcess]]:
    started: list[SimulatorProcess] = []
    yield started
    for sim in started:
        sim.stop()


def test_a_configmap_update_is_converged(
    repo: LabRepo, tmp_path: Path, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    writer = configmap(tmp_path, desired_text("[1, 2, 3]", LAB_LABELS))
    sim = start_sim()
    daemon = sidecar(sim, start_daemon, writer, "--resync", "600")
    daemon.wait_for_event("reconciled")
    wait_until(lambda: readyz(daemon)[0] == 200, GENEROUS, what="ready")
    mark = daemon.count()
    assert writer.write({"animals.yaml": desired_text("[1, 2, 3]", PROMOTED).encode()})
    # No resync for 600 s: the swap of ..data itself wakes the daemon.
    wait_until(label_is(sim.rest_url, "stable", 3), GENEROUS, what="stable moved to 3")
    event = daemon.wait_for_event("reconciled", lambda e: e["outcome"] != "noop", after=mark)
    assert event["outcome"] == "applied"
    assert not [e for e in daemon.events() if e.get("event") == "invalid_desired_state"]


def test_readiness_stays_up_through_a_promotion_and_goes_down_while_tfs_restarts(
    repo: LabRepo,
    tmp_path: Path,
    start_sim: StartSim,
    start_daemon: StartDaemon,
    sims: list[SimulatorProcess],
) -> None:
    writer = configmap(tmp_path, desired_text("[1, 2, 3]", LAB_LABELS))
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=2.0"])
    daemon = sidecar(sim, start_daemon, writer)
    wait_until(lambda: readyz(daemon)[0] == 200, GENEROUS, what="ready")

    # A promotion: version 4 appears, the ConfigMap asks for it under stable.
    add_version(repo.models, 4)
    promoted = {"deprecated": 1, "stable": 4, "canary": 3}
    with (
        PredictStream(sim.rest_url, "animals", DOG_EXAMPLE.read_bytes(), label="stable") as stream,
        ReadinessLog(daemon, sim.rest_url) as readiness,
    ):
        writer.write({"animals.yaml": desired_text("[1, 2, 3, 4]", promoted).encode()})
        wait_until(label_is(sim.rest_url, "stable", 4), GENEROUS, what="stable moved to 4")
    assert stream.failures == []
    codes = {code for code, _ in readiness.seen}
    assert codes == {200}, readiness.seen
    # It was asked while version 4 loaded and the label still named the old version.
    assert (200, 2) in readiness.seen

    # TFS restarts: not ready while it is down and until its labels resolve again.
    again = restarted(sim)
    sims.append(again)
    wait_until(lambda: readyz(daemon)[0] == 503, GENEROUS, what="not ready while TFS is down")
    code, body = readyz(daemon)
    assert code == 503 and "TFS does not answer" in body["reasons"][0], body
    again.start()
    wait_until(lambda: readyz(daemon)[0] == 200, GENEROUS, what="ready after the restart")
    # Booted from the pod-local models.config the sidecar wrote: labels intact.
    assert label_version(again.rest_url, "stable") == 4


def test_readiness_waits_for_the_first_convergence_and_status_says_converged(
    repo: LabRepo, tmp_path: Path, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    writer = configmap(tmp_path, desired_text("[1, 2, 3]", PROMOTED))
    sim = start_sim()
    sim.stop()  # the pod starts with TFS not answering yet: the first pass cannot converge
    daemon = sidecar(sim, start_daemon, writer, "--resync", "600")
    daemon.wait_for_event("reconcile_failed")
    code, body = readyz(daemon)
    assert code == 503, body
    assert body["reasons"] == ["not converged yet since the reconciler started"], body
    again = restarted(sim).start()
    try:
        daemon.wait_for_event("reconciled")
        wait_until(lambda: readyz(daemon)[0] == 200, GENEROUS, what="ready")
    finally:
        again.stop()
    status = json.loads(http_get(f"{daemon.metrics_url}/status")[1])
    assert status["last_apply"]["outcome"] in ("applied", "written"), status


@pytest.mark.parametrize(
    ("sim_options", "expected"),
    [
        (
            {"allow_labels_for_unavailable": False},
            "a restarted TFS container would not boot",
        ),
        ({"poll_seconds": 60}, "--model_config_file_poll_wait_seconds=60"),
    ],
    ids=["labels without the allow flag", "a config file poll"],
)
def test_tfs_flags_that_are_traps_are_refused(
    repo: LabRepo,
    tmp_path: Path,
    start_sim: StartSim,
    start_daemon: StartDaemon,
    sim_options: dict[str, Any],
    expected: str,
) -> None:
    writer = configmap(tmp_path, desired_text("[1, 2, 3]", PROMOTED))
    # Without the flag, TFS would not even start from the lab's file (it has labels).
    unlabelled = re.sub(r"\s*version_labels \{[^}]*\}", "", repo.config.read_text())
    repo.config.write_text(unlabelled)
    sim = start_sim(**sim_options)
    daemon = sidecar(sim, start_daemon, writer)
    event = daemon.wait_for_event("refused", timeout=GENEROUS)
    assert expected in event["problem"]
    code, body = readyz(daemon)
    assert code == 503, body
    assert repo.config.read_text() == unlabelled  # nothing applied
    status = json.loads(http_get(f"{daemon.metrics_url}/status")[1])
    assert expected in (status.get("last_error") or ""), status


def _can_bind_mount(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    (tmp_path / "probe-src").write_text("")
    (tmp_path / "probe-dst").write_text("")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "mount", "--bind",
         str(tmp_path / "probe-src"), str(tmp_path / "probe-dst")],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


def test_a_single_file_bind_mount_of_the_desired_state_is_refused(
    repo: LabRepo, tmp_path: Path
) -> None:
    """A subPath mount of one ConfigMap key: the file is bind-mounted by itself, pinned to
    the inode it had, and a ConfigMap update never reaches it."""
    if not _can_bind_mount(tmp_path):
        pytest.skip("needs unshare and mount --bind (root, or a user namespace)")
    writer = configmap(tmp_path, desired_text("[1, 2, 3]", LAB_LABELS))
    pinned = tmp_path / "desired" / "animals.yaml"
    pinned.parent.mkdir()
    pinned.write_text("")
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    run = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         str(writer.target / "animals.yaml"), str(pinned),
         "tfs-reconciler", "run", "--sidecar", "--desired", str(pinned),
         "--models-dir", str(repo.models), "--metrics-addr", "127.0.0.1:0",
         "--rest-url", "http://127.0.0.1:1", "--grpc-target", "127.0.0.1:1"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert f"{pinned}: a single-file mount" in run.stderr
    assert "Mount the ConfigMap" in run.stderr
