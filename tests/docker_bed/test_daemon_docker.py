"""Issue 5's "done when", as a new user would: the simulator in a ``tfs-sim:local`` container
(the lab's mount and flags), ``tfs-reconciler run --git --reload grpc`` beside it, and a
``git commit`` moving ``stable`` is live within about a second.

The daemon is the installed console script in a subprocess; its desired_state/ is committed
in a real git repository in the test's folder, and --models-dir is the folder bind-mounted
at /models in the container (the daemon writes models.config there, TFS sees it at
/models/models.config).
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon.daemon_harness import MODEL, DaemonProcess, commit_is, desired_text, label_is

from reconciler.testing import docker_bed
from reconciler.testing.lab import LabRepo, git, label_version, wait_until
from reconciler.tfs_config import parse_config

pytestmark = [pytest.mark.docker, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
PROMOTED = {"deprecated": 1, "stable": 3, "canary": 3}
LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        code = daemon.stop()
        print(f"\n--- {daemon.log_path.name} (exit {code}) ---\n{daemon.text[-6000:]}")


def test_done_when_with_tfs_in_docker_commit_live_drift_reverted_invalid_reported_sigterm(
    tfs_container: docker_bed.TfsContainer, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    root = tmp_path / "repo"
    (root / "desired_state").mkdir(parents=True)
    shutil.copy(REPO / "desired_state" / "animals.yaml", root / "desired_state")
    git(root, "init", "--quiet", "--initial-branch=main")
    repo = LabRepo(root)
    repo.commit("lab desired state")
    assert label_version(tfs_container.rest_url, MODEL, "stable") == 2

    daemon = DaemonProcess(
        [
            "--log-level", "debug", "run", "--git", "--reload", "grpc",
            "--desired", str(repo.desired),
            "--models-dir", str(tfs_container.models_dir),
            "--serving-root", "/models",
            "--rest-url", tfs_container.rest_url,
            "--grpc-target", tfs_container.grpc_target,
            "--metrics-addr", "127.0.0.1:0",
            "--resync", "1",
            "--timeout", "20",
        ],
        env={},
        cwd=root,
        log_path=tmp_path / "daemon.log",
    )  # fmt: skip
    daemons.append(daemon)
    first = daemon.wait_for_event("reconciled", timeout=30)
    assert first["outcome"] == "noop", daemon.text  # the lab as it is: nothing to change

    times = []
    for stable, labels in ((3, PROMOTED), (2, LAB_LABELS)):
        repo.write(desired_text("[1, 2, 3]", labels))
        commit = repo.commit(f"stable -> {stable}")
        committed = time.monotonic()
        wait_until(label_is(tfs_container.rest_url, "stable", stable), 15)
        times.append(time.monotonic() - committed)
        event = daemon.wait_for_event("reconciled", commit_is(commit))
        assert event["outcome"] == "applied"
    print(
        "\ncommit to live with TFS in Docker (label metadata answers the new version): "
        + ", ".join(f"{t:.3f}" for t in times)
        + " s"
    )
    assert max(times) < 3, times

    # A hand edit of models.config is reverted (TFS polls it only every 60 s here).
    config = tfs_container.models_dir / "models.config"
    served = parse_config(config.read_text())
    stable_2 = r"""(key: ['"]stable['"]\s+value: )2"""
    config.write_text(re.sub(stable_2, r"\g<1>1", config.read_text()))
    assert parse_config(config.read_text()) != served
    wait_until(lambda: parse_config(config.read_text()) == served, 5, what="hand edit reverted")

    # An invalid commit is reported with file:line; the previous state keeps serving.
    repo.write(desired_text("[1, 2, 3]", {"deprecated": 1, "stable": 9, "canary": 3}))
    repo.commit("stable -> 9 (not served)")
    event = daemon.wait_for_event("invalid_desired_state", timeout=5)
    assert re.search(r"desired_state/animals\.yaml:\d+", event["problem"]), event
    time.sleep(1.2)
    assert label_version(tfs_container.rest_url, MODEL, "stable") == 2
    assert parse_config(config.read_text()) == served

    daemon.kill(signal.SIGTERM)
    assert daemon.wait(15) == 0, daemon.text
    assert [p for p in tfs_container.models_dir.iterdir() if p.name.endswith(".tmp")] == []
