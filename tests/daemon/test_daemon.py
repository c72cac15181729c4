"""Issue 5 end to end: `tfs-reconciler run` (the installed console script) against the TFS
simulator, on a lab whose desired_state/ is committed in a real git repository.

Everything is real: git commits move refs the daemon's own watchdog observer watches, the
simulator is a process on loopback, signals are sent with os.kill, and systemd's NOTIFY_SOCKET
is an AF_UNIX datagram socket in the test's folder. The daemon logs JSON lines on stderr (not a
TTY); tests parse its events. Resync is 1 s and loads take 0.2 s so each test takes seconds.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing import SimulatorProcess
from reconciler.testing.lab import GIT_IDENTITY, LabRepo, git, label_version, wait_until
from reconciler.testing.traffic import PredictStream
from reconciler.tfs_config import ServingConfig, parse_config
from reconciler.tfs_grpc import TfsGrpc

from .conftest import StartDaemon, StartSim
from .daemon_harness import (
    MODEL,
    DaemonProcess,
    NotifySocket,
    add_version,
    commit_is,
    desired_text,
    http_get,
    label_is,
    version_states,
)

pytestmark = pytest.mark.integration

LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}
PROMOTED = {"deprecated": 1, "stable": 3, "canary": 3}
DOG_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dog_example.json"


def run_with(sim: SimulatorProcess, start_daemon: StartDaemon, *args: str) -> DaemonProcess:
    return start_daemon(*args, rest_url=sim.rest_url, grpc_target=sim.grpc_target)


def status_json(repo: LabRepo, daemon: DaemonProcess | None, rest_url: str) -> dict[str, Any]:
    """`tfs-reconciler status --output json`, asking the daemon's endpoint when given one."""
    document: dict[str, Any] = json.loads(status_output(repo, daemon, rest_url, "json"))
    return document


def status_output(
    repo: LabRepo, daemon: DaemonProcess | None, rest_url: str, output: str = "text"
) -> str:
    address = daemon.metrics_url.removeprefix("http://") if daemon else "127.0.0.1:1"
    out = subprocess.run(
        [
            "tfs-reconciler", "status", "--output", output,
            "--metrics-addr", address,
            "--desired", str(repo.desired),
            "--models-dir", str(repo.models),
            "--rest-url", rest_url,
        ],
        capture_output=True, text=True, timeout=30, check=False,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")},
            "TFS_RECONCILER_ENV_FILE": "",
        },
    )  # fmt: skip
    # 0 in sync, 2 not, 1 unknown (TFS does not answer): the text or document says which.
    assert out.returncode in (0, 1, 2) and out.stdout, out.stderr
    return out.stdout


def hand_edit(repo: LabRepo) -> bytes:
    """Point stable at 1 in models.config by hand, as an operator would."""
    text = repo.config.read_text()
    edited = re.sub(r"""(key: ['"]stable['"]\s+value: )2""", r"\g<1>1", text)
    assert edited != text
    repo.config.write_text(edited)
    return edited.encode()


def served_config(repo: LabRepo) -> ServingConfig:
    """models.config as parsed (the daemon renders it in its own layout)."""
    return parse_config(repo.config.read_text())


def temp_files(repo: LabRepo) -> list[Path]:
    return [p for p in repo.models.rglob("*") if p.name.endswith(".tmp")]


# --- GitOps: a commit is live within a second ---------------------------------------------


@pytest.mark.parametrize("reload", ["grpc", "poll"])
def test_a_commit_moving_stable_is_live_within_a_second(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket,
    reload: str,
) -> None:  # fmt: skip
    sim = start_sim(poll_seconds=0.3 if reload == "poll" else 0.0)
    daemon = run_with(sim, start_daemon, "--git", "--reload", reload)
    first = daemon.wait_for_event("reconciled")
    head = git(repo.root, "rev-parse", "HEAD")
    assert first["commit"] == head
    # READY only once the first reconcile has finished, naming the commit it is in sync at.
    notify.wait_for("READY", "1")
    ready = next(m for _, m in notify.messages if "READY=1" in m)
    assert f"MAINPID={daemon.pid}" in ready.splitlines()
    assert f"STATUS=in sync at {head}" in ready.splitlines()
    assert label_version(sim.rest_url, MODEL, "stable") == 2

    times = []
    for stable, labels in ((3, PROMOTED), (2, LAB_LABELS), (3, PROMOTED)):
        repo.write(desired_text("[1, 2, 3]", labels))
        commit = repo.commit(f"stable -> {stable}")
        committed = time.monotonic()
        wait_until(label_is(sim.rest_url, "stable", stable), 10)
        times.append(time.monotonic() - committed)
        event = daemon.wait_for_event("reconciled", commit_is(commit))
        assert event["outcome"] == "applied"
    print(f"\ncommit to live with --reload {reload} (label metadata answers the new version): "
          f"{', '.join(f'{t:.3f}' for t in times)} s")  # fmt: skip
    assert max(times) < 3, times

    # One event per step: action, model, version, label, commit and the apply's duration.
    step = daemon.events("changed")[-1]
    assert (step["action"], step["model"], step["label"], step["commit"]) == (
        "move_label",
        "animals",
        "stable",
        commit,
    ) and step["seconds"] >= 0, step
    # Every apply records its commit: logs (above), status, history, metrics.
    assert any(f"STATUS=reconciling {commit}" in m for _, m in notify.messages)
    # The pass logs `reconciled`, then tells systemd: the datagram may come a moment later.
    notify.wait_for("STATUS", f"in sync at {commit}")
    assert notify.lines("STATUS")[-1][1] == f"in sync at {commit}"
    document = status_json(repo, daemon, sim.rest_url)
    assert document["source"] == "daemon" and document["in_sync"] is True
    assert document["last_apply"]["commit"] == commit
    assert document["models"]["animals"]["live"]["labels"]["stable"] == 3
    _, metrics = http_get(f"{daemon.metrics_url}/metrics")
    assert f'tfs_reconciler_applied_commit_info{{commit="{commit}"}} 1.0' in metrics.decode()


def test_uncommitted_edits_are_never_applied_in_git_mode(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    config = repo.config.read_bytes()

    repo.write(desired_text("[1, 2, 3]", PROMOTED))  # edited, not committed
    (repo.desired / "other.yaml").write_text("not: [valid")  # untracked, broken
    mark = daemon.count()
    for _ in range(2):  # two resyncs, each reading the committed state
        mark = daemon.count()
        daemon.wait_for_event("reconciled", after=mark, timeout=5)
    assert daemon.wait_for_event("reconciled", after=mark)["outcome"] == "noop"
    assert label_version(sim.rest_url, MODEL, "stable") == 2
    assert repo.config.read_bytes() == config
    assert not daemon.events("invalid_desired_state")

    (repo.desired / "other.yaml").unlink()
    commit = repo.commit("promote")
    wait_until(lambda: label_version(sim.rest_url, MODEL, "stable") == 3, 5)
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == commit)


def test_an_invalid_commit_is_reported_with_file_and_line_and_the_old_state_keeps_serving(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    repo.write(desired_text("[1, 2, 3]", PROMOTED))
    good = repo.commit("promote")
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == good)
    wait_until(lambda: label_version(sim.rest_url, MODEL, "stable") == 3, 5)
    config = repo.config.read_bytes()

    # stable names a version the policy does not serve (line 7 of the file).
    repo.write(desired_text("[1, 2, 3]", {"deprecated": 1, "stable": 7, "canary": 3}))
    bad = repo.commit("stable -> 7 (not served)")

    event = daemon.wait_for_event("invalid_desired_state", timeout=5)
    assert re.search(r"desired_state/animals\.yaml:\d+", event["problem"]), event
    assert event["commit"] == bad  # which commit was invalid
    failed = daemon.wait_for_event("reconcile_failed", lambda e: e["outcome"] == "invalid")
    assert "animals.yaml:" in failed["error"] and failed["commit"] == bad
    document = status_json(repo, daemon, sim.rest_url)
    assert re.search(r"desired_state/animals\.yaml:\d+", document["last_error"] or ""), document
    assert document["in_sync"] is False  # what is asked for now is not served
    assert document["last_apply"]["commit"] == good
    text = status_output(repo, daemon, sim.rest_url)
    assert re.search(r"last error: desired_state/animals\.yaml:\d+", text), text
    assert f"commit {good[:12]}" in text, text
    # The previous state keeps serving, through several resyncs.
    time.sleep(1.5)
    assert label_version(sim.rest_url, MODEL, "stable") == 3
    assert repo.config.read_bytes() == config
    assert daemon.process.poll() is None
    _, metrics = http_get(f"{daemon.metrics_url}/metrics")
    assert re.search(
        r'tfs_reconciler_reconciles_total\{outcome="invalid"\} [1-9]', metrics.decode()
    )
    assert bad not in [e.get("commit") for e in daemon.events("reconciled")]

    # A fix is applied at once (not after the backoff) and clears the error.
    repo.write(desired_text("[1, 2, 3]", LAB_LABELS))
    fixed = repo.commit("fix: stable back to 2")
    started = time.monotonic()
    wait_until(lambda: label_version(sim.rest_url, MODEL, "stable") == 2, 5)
    print(f"\nfix commit to live after an invalid commit: {time.monotonic() - started:.3f} s")
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == fixed)
    assert status_json(repo, daemon, sim.rest_url)["last_error"] is None


def test_a_yaml_syntax_error_is_reported_with_file_and_line(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    repo.write("apiVersion: tfs-reconciler/v1\nmodels:\n  animals: {versions: [1, 2\n")
    repo.commit("broken yaml")
    event = daemon.wait_for_event("invalid_desired_state", timeout=5)
    assert re.search(r"desired_state/animals\.yaml:\d+", event["problem"]), event
    assert label_version(sim.rest_url, MODEL, "stable") == 2


# --- drift ---------------------------------------------------------------------------------


def test_a_hand_edit_of_models_config_is_reverted(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim(poll_seconds=0.2)  # TFS reads the hand edit
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    original = served_config(repo)

    mark = daemon.count()
    hand_edit(repo)
    edited = time.monotonic()
    wait_until(lambda: served_config(repo) == original, 5, what="config restored")
    wait_until(lambda: label_version(sim.rest_url, MODEL, "stable") == 2, 5)
    print(f"\nhand edit of models.config reverted in {time.monotonic() - edited:.3f} s")
    drift = daemon.wait_for_event("drift", after=mark)
    assert "! animals: models.config was edited" in drift["drift"]
    daemon.wait_for_event("reconciled", lambda e: e["outcome"] == "applied", after=mark)
    _, metrics = http_get(f"{daemon.metrics_url}/metrics")
    assert 'tfs_reconciler_drift_detected_total{model="animals"} 1.0' in metrics.decode()


def test_without_self_heal_drift_is_reported_but_not_repaired(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    sim = start_sim(poll_seconds=0.2)
    daemon = run_with(sim, start_daemon, "--git", "--no-self-heal")
    daemon.wait_for_event("reconciled")
    edited = hand_edit(repo)
    wait_until(
        lambda: label_version(sim.rest_url, MODEL, "stable") == 1, 5, what="TFS read the edit"
    )

    mark = daemon.count()
    daemon.wait_for_event("drift", after=mark, timeout=5)
    wait_until(lambda: len(daemon.events("drift")) >= 3, 10, what="two more resyncs")
    levels = [e["level"] for e in daemon.events("drift")]
    assert len(levels) >= 3 and levels.count("warning") <= 2, levels  # said once, then debug
    states = [v for _, v in notify.lines("STATUS") if not v.startswith("reconciling")]
    assert states[-1].startswith("drift left alone (self-heal off) in animals at "), states
    assert repo.config.read_bytes() == edited
    assert label_version(sim.rest_url, MODEL, "stable") == 1
    document = status_json(repo, daemon, sim.rest_url)
    assert document["in_sync"] is False
    assert document["models"]["animals"]["differences"], document
    _, metrics = http_get(f"{daemon.metrics_url}/metrics")
    assert re.search(
        r'tfs_reconciler_drift_detected_total\{model="animals"\} [1-9]', metrics.decode()
    )

    # A commit is still applied (only drift repair is off).
    repo.write(desired_text("[1, 2, 3]", PROMOTED))
    repo.commit("promote")
    wait_until(lambda: label_version(sim.rest_url, MODEL, "stable") == 3, 5)


def test_a_version_folder_appearing_under_latest_is_loaded(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    repo.write(desired_text("{latest: 2}", {"stable": 3}))  # work-tree mode: no --git
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--resync", "30")
    daemon.wait_for_event("reconciled", lambda e: e["outcome"] != "noop")
    wait_until(lambda: version_states(sim.rest_url).get(2) == "AVAILABLE", 5)
    # The daemon's own writes of models.config wake it once more (a no-op pass): let it settle.
    daemon.wait_for_event("reconciled", lambda e: e["outcome"] == "noop")
    time.sleep(0.2)

    mark = daemon.count()
    add_version(repo.models, 4)
    appeared = time.monotonic()
    wake = daemon.wait_for_event(
        "woken", lambda e: "/animals/" in (e.get("path") or ""), after=mark, timeout=5
    )
    assert wake["events"] > 1  # the copy's burst of events is folded into one wake-up
    wait_until(lambda: version_states(sim.rest_url).get(4) == "AVAILABLE", 5, what="4 loaded")
    print(f"\nnew version folder to AVAILABLE (resync 30 s, so the watcher): "
          f"{time.monotonic() - appeared:.3f} s")  # fmt: skip
    wait_until(lambda: version_states(sim.rest_url).get(2) == "END", 5, what="2 unloaded")
    assert label_version(sim.rest_url, MODEL, "stable") == 3


def test_with_git_the_verify_request_is_the_committed_one(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    verify = "    verify:\n      request: dog_example.json\n"
    shutil.copy(DOG_EXAMPLE, repo.desired / "dog_example.json")
    repo.write(desired_text("[1, 2, 3]", {"deprecated": 1, "stable": 2, "canary": 3}) + verify)
    repo.commit("verify with the dog")
    add_version(repo.models, 4)
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    (repo.desired / "dog_example.json").write_text("{}")  # an edit nobody committed
    repo.write(desired_text("[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4}) + verify)
    commit = repo.commit("canary -> 4", "desired_state/animals.yaml")
    applied = daemon.wait_for_event("reconciled", commit_is(commit), timeout=10)
    assert applied["outcome"] == "applied", daemon.text
    assert "via=version:4" in sim.log  # verified, with the committed body
    assert label_version(sim.rest_url, MODEL, "canary") == 4


def test_with_git_a_verify_request_that_is_not_committed_is_refused_on_every_pass(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    add_version(repo.models, 4)
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    shutil.copy(DOG_EXAMPLE, repo.desired / "dog_example.json")  # in the work tree only
    verify = "    verify:\n      request: dog_example.json\n"
    repo.write(desired_text("[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4}) + verify)
    repo.commit("canary -> 4", "desired_state/animals.yaml")
    first = daemon.wait_for_event("invalid_desired_state", timeout=5)
    assert "dog_example.json is not committed under desired_state" in first["problem"], first
    mark = daemon.count()
    again = daemon.wait_for_event("invalid_desired_state", after=mark, timeout=5)  # next resync
    assert again["problem"] == first["problem"]
    assert label_version(sim.rest_url, MODEL, "canary") == 3


def test_under_latest_a_new_folder_never_drops_a_labelled_version(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    """TFS alone would load 5 and unload 3 (latest 2), and `stable` would answer 404."""
    repo.write(desired_text("{latest: 2}", {"stable": 3}))
    sim = start_sim(file_system_poll_seconds=0.2)
    daemon = run_with(sim, start_daemon, "--resync", "30")
    daemon.wait_for_event("reconciled", lambda e: e["outcome"] != "noop")
    wait_until(lambda: version_states(sim.rest_url).get(1) == "END", 5)
    dog = DOG_EXAMPLE.read_bytes()
    with PredictStream(sim.rest_url, "animals", dog, label="stable") as stable:
        add_version(repo.models, 4)  # latest 2 is now 3, 4: the label's version stays
        wait_until(lambda: version_states(sim.rest_url).get(4) == "AVAILABLE", 5)
        add_version(repo.models, 5)  # now 4, 5: stable 3 would not be served
        daemon.wait_for_event("blocked", timeout=5)
        time.sleep(1.0)  # several of TFS's file-system polls
    assert stable.failures == []
    assert version_states(sim.rest_url).get(5) is None  # not loaded behind the label's back
    assert label_version(sim.rest_url, MODEL, "stable") == 3


# --- TFS unreachable ----------------------------------------------------------------------


def test_with_tfs_unreachable_the_daemon_stays_up_and_converges_once_it_answers(
    repo: LabRepo, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    sim = SimulatorProcess(repo.models, load_seconds=0.2)  # ports chosen, not started yet
    try:
        daemon = run_with(sim, start_daemon, "--git")
        base = daemon.metrics_url
        daemon.wait_for_event("reconcile_failed", timeout=10)
        assert http_get(f"{base}/healthz")[0] == 200
        assert http_get(f"{base}/readyz")[0] == 503
        document = status_json(repo, daemon, sim.rest_url)
        assert document["last_error"], document
        assert document["tfs"]["reachable"] is False
        assert (document["in_sync"], document["state"]) == (False, "unknown")
        notify.wait_for("READY", "1")  # systemd hears READY; /readyz says not ready
        # TFS is asked again at every resync (1 s here), whatever the backoff has grown to,
        # and the figure logged (and in systemd's STATUS) says so.
        wait_until(lambda: len(daemon.events("reconcile_failed")) >= 3, 15, what="resyncs")
        assert daemon.process.poll() is None
        failures = daemon.events("reconcile_failed")
        assert len(failures) >= 3 and all(e["retry_in"] <= 1.0 for e in failures), failures

        sim.start()
        started = time.monotonic()
        wait_until(lambda: http_get(f"{base}/readyz")[0] == 200, 20, what="readyz 200")
        print(f"\nconverged {time.monotonic() - started:.2f} s after TFS started (backoff)")
        assert status_json(repo, daemon, sim.rest_url)["last_error"] is None
        assert label_version(sim.rest_url, MODEL, "stable") == 2
    finally:
        sim.stop()


# --- operations: signals, lock ------------------------------------------------------------


def test_sigterm_stops_cleanly_and_releases_the_lock(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    lock = repo.models / ".models.config.lock"
    assert lock.read_text() == f"{daemon.pid} daemon\n"

    daemon.kill(signal.SIGTERM)
    assert daemon.wait(10) == 0, daemon.text
    notify.wait_for("STOPPING", "1", timeout=2)
    assert daemon.events("stopped")
    assert temp_files(repo) == []
    assert "Traceback" not in daemon.text

    second = run_with(sim, start_daemon, "--git")
    second.wait_for_event("reconciled")
    assert second.process.poll() is None


def test_sigterm_during_an_apply_finishes_the_phase_in_flight_and_exits_0(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    add_version(repo.models, 4)
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=1.5"])
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    repo.write(desired_text("[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4}))
    commit = repo.commit("canary -> 4")
    daemon.wait_for_event("phase_written", timeout=5)
    time.sleep(0.3)
    daemon.kill(signal.SIGTERM)
    assert daemon.wait(20) == 0, daemon.text
    # Phase 1 (load 4) finished after the signal; phase 2 (move canary) never started, so a
    # stop never waits longer than one phase (systemd's TimeoutStopSec is 60 s).
    names = [e["event"] for e in daemon.events()]
    assert names.index("signal") < names.index("phase_converged")
    assert names.count("phase_written") == 1 and "interrupted" in names, daemon.text
    assert "reconcile_failed" not in names
    assert version_states(sim.rest_url).get(4) == "AVAILABLE"
    assert label_version(sim.rest_url, MODEL, "canary") == 3
    assert temp_files(repo) == []
    notify.wait_for("STOPPING", "1", timeout=2)

    again = run_with(sim, start_daemon, "--git")
    applied = again.wait_for_event("reconciled", lambda e: e["outcome"] == "applied")
    assert applied["commit"] == commit
    assert label_version(sim.rest_url, MODEL, "canary") == 4


def test_a_models_config_that_does_not_parse_is_put_back_and_the_daemon_runs_on(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    original = served_config(repo)
    with repo.config.open("a") as config:
        config.write("garbage {{{\n")  # TFS refuses it and keeps serving what it had
    daemon.wait_for_event("config_restored", timeout=5)
    invalid = daemon.events("config_invalid")[0]
    assert "not a valid ModelServerConfig" in invalid["problem"], invalid
    assert served_config(repo) == original
    assert daemon.process.poll() is None
    assert label_version(sim.rest_url, MODEL, "stable") == 2


def test_without_self_heal_a_models_config_that_does_not_parse_is_reported_not_fatal(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git", "--no-self-heal")
    daemon.wait_for_event("reconciled")
    with repo.config.open("a") as config:
        config.write("garbage {{{\n")
    broken = repo.config.read_bytes()
    failed = daemon.wait_for_event("reconcile_failed", timeout=5)
    assert "left as it is: self-heal is off" in failed["error"], failed
    time.sleep(1.5)  # a few resyncs: still up, file untouched
    assert daemon.process.poll() is None
    assert repo.config.read_bytes() == broken


def test_without_self_heal_a_hand_edit_is_left_alone_across_a_restart(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim(poll_seconds=0.2)
    daemon = run_with(sim, start_daemon, "--git", "--no-self-heal")
    daemon.wait_for_event("reconciled")
    repo.write(desired_text("[1, 2, 3]", PROMOTED))
    repo.commit("promote")
    daemon.wait_for_event("reconciled", lambda e: e["outcome"] == "applied")
    daemon.kill(signal.SIGTERM)
    assert daemon.wait(10) == 0
    edited = repo.config.read_text().replace("value: 3", "value: 1", 1).encode()
    repo.config.write_bytes(edited)

    again = run_with(sim, start_daemon, "--git", "--no-self-heal")
    again.wait_for_event("drift", timeout=5)
    time.sleep(1.0)
    assert repo.config.read_bytes() == edited
    assert "changed" not in [e["event"] for e in again.events()]


def test_a_burst_of_signals_while_it_logs_still_stops_it_cleanly(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    # Signals handled on the main thread could hang it when one landed while that thread held
    # a lock the handler takes (tests/test_signals.py shows it deterministically); this storm
    # of reloads and stops, while the loop logs at full speed, checks the daemon's wiring.
    sim = start_sim()
    daemon = start_daemon(
        "--git", "--resync", "0.01",
        rest_url=sim.rest_url,
        grpc_target=sim.grpc_target,
        env={"TFS_RECONCILER_LOG_LEVEL": "debug"},
    )  # fmt: skip
    daemon.wait_for_event("reconciled")
    for _ in range(300):  # spaced out: the kernel folds signals sent back to back into one
        daemon.kill(signal.SIGHUP)
        time.sleep(0.002)
    for _ in range(100):
        daemon.kill(signal.SIGTERM)
    assert daemon.wait(20) == 0, daemon.text[-3000:]
    assert daemon.events("settings_reloaded")
    assert daemon.events("stopped")
    assert "Traceback" not in daemon.text


def reloaded(notify: NotifySocket) -> list[str]:
    """Each reload done, as systemd hears it."""
    return [v for _, v in notify.lines("STATUS") if v == "settings reloaded"]


def test_sighup_drops_what_was_removed_from_the_env_file_and_recovers_from_a_bad_value(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    sim = start_sim()
    env_file = tmp_path / "tfs-reconciler.env"
    env_file.write_text("TFS_RECONCILER_RESYNC=0.3\n")
    daemon = run_with(sim, start_daemon, "--git", "--env-file", str(env_file))
    daemon.wait_for_event("reconciled")
    daemon.wait_for_event("reconciled", after=daemon.count())  # resyncs every 0.3 s

    env_file.write_text("TFS_RECONCILER_RESYNC=abc\n")
    mark = daemon.count()
    daemon.kill(signal.SIGHUP)
    failed = daemon.wait_for_event("settings_reload_failed", after=mark, timeout=5)
    assert "TFS_RECONCILER_RESYNC" in failed["error"], failed

    env_file.write_text("# back to the defaults (resync 30 s)\n")
    mark = daemon.count()
    daemon.kill(signal.SIGHUP)
    reloaded = daemon.wait_for_event("settings_reloaded", after=mark, timeout=5)
    # A resync already running when the signal came logs its `reconciled` before
    # `settings_reloaded`: the pass after the reload is the first one after that event.
    mark = daemon.events().index(reloaded) + 1
    daemon.wait_for_event("reconciled", after=mark, timeout=5)
    # Which resync the loop counts with after each reload (0.3 s kept on the bad value, the
    # default 30 s once the line is gone) is decided with a fake clock in
    # tests/unit/test_daemon_pass.py, not read from the timing of this process's log.


def test_sighup_cannot_move_the_daemon_to_another_models_config(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    sim = start_sim()
    env_file = tmp_path / "tfs-reconciler.env"
    env_file.write_text("TFS_RECONCILER_RESYNC=30\n")
    daemon = run_with(sim, start_daemon, "--git", "--env-file", str(env_file))
    daemon.wait_for_event("reconciled")
    other = tmp_path / "other-models"
    shutil.copytree(repo.models, other, ignore=shutil.ignore_patterns(".*.lock"))
    env_file.write_text(f"TFS_RECONCILER_RESYNC=30\nTFS_RECONCILER_CONFIG={other}/models.config\n")
    daemon.kill(signal.SIGHUP)
    failed = daemon.wait_for_event("settings_reload_failed", timeout=5)
    assert failed["error"] == "the models.config and state folder can only change with a restart"
    # It still holds the lock of the one it manages, and nothing took the other one.
    assert (repo.models / ".models.config.lock").read_text() == f"{daemon.pid} daemon\n"
    assert not (other / ".models.config.lock").exists()


def test_a_second_daemon_on_the_same_config_exits_1_naming_the_first(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim()
    first = run_with(sim, start_daemon, "--git")
    first.wait_for_event("reconciled")
    second = run_with(sim, start_daemon, "--git")
    assert second.wait(15) == 1
    assert f"pid {first.pid}" in second.text, second.text
    assert "Traceback" not in second.text
    assert first.process.poll() is None


def test_sighup_rereads_the_env_file(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket,
    tmp_path: Path,
) -> None:  # fmt: skip
    sim = start_sim()
    env_file = tmp_path / "tfs-reconciler.env"
    env_file.write_text("TFS_RECONCILER_RESYNC=30\nTFS_RECONCILER_LOG_LEVEL=debug\n")
    daemon = run_with(sim, start_daemon, "--git", "--env-file", str(env_file))
    daemon.wait_for_event("reconciled")
    time.sleep(1.5)
    assert len(daemon.events("reconciled")) == 1  # resync 30 s: no second pass yet

    env_file.write_text("TFS_RECONCILER_RESYNC=0.5\nTFS_RECONCILER_LOG_LEVEL=debug\n")
    mark = daemon.count()
    daemon.kill(signal.SIGHUP)
    daemon.wait_for_event("settings_reloaded", after=mark, timeout=5)
    notify.wait_for("RELOADING", "1", timeout=2)
    for _ in range(3):
        mark = daemon.count()
        daemon.wait_for_event("reconciled", after=mark, timeout=3)
    assert daemon.process.poll() is None

    # The log level too: warning hides the per-pass `reconciled` info events.
    env_file.write_text("TFS_RECONCILER_RESYNC=0.5\nTFS_RECONCILER_LOG_LEVEL=warning\n")
    reloads = len(reloaded(notify))
    daemon.kill(signal.SIGHUP)
    # Done reloading (its own `settings_reloaded` is hidden at warning): what it logs from
    # here is under the new level.
    wait_until(lambda: len(reloaded(notify)) > reloads, 5, what="the reload")
    mark = daemon.count()
    time.sleep(1.5)  # three resyncs
    assert [e["event"] for e in daemon.events()[mark:] if e["level"] == "info"] == []
    # ... and a hand edit is still repaired (the loop kept running with the new settings).
    original = served_config(repo)
    hand_edit(repo)
    wait_until(lambda: served_config(repo) == original, 5)


def test_watchdog_keep_alives_when_watchdog_usec_is_set(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    sim = start_sim()
    daemon = start_daemon(
        "--git", "--resync", "30",
        rest_url=sim.rest_url, grpc_target=sim.grpc_target,
        env={"WATCHDOG_USEC": "400000"},  # 0.4 s: a keep-alive every 0.2 s
    )  # fmt: skip
    daemon.wait_for_event("reconciled")
    ready = notify.wait_for("READY", "1")

    def keep_alives() -> list[float]:
        return [at for at, _ in notify.lines("WATCHDOG") if at > ready]

    wait_until(lambda: len(keep_alives()) >= 5, 10, what="keep-alives while idle")
    # How soon the idle loop wakes to send one (0.2 s here) is decided with a fake clock in
    # tests/unit/test_daemon_pass.py, not measured on this machine.


def test_no_watchdog_keep_alives_without_watchdog_usec(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git", "--resync", "30")
    daemon.wait_for_event("reconciled")
    notify.wait_for("READY", "1")
    time.sleep(1.0)
    assert len(notify.lines("WATCHDOG")) <= 1, notify.messages


# --- the endpoint -------------------------------------------------------------------------


def test_the_endpoint_exposes_health_readiness_metrics_and_status(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    base = daemon.metrics_url
    assert base.startswith("http://127.0.0.1:")
    assert http_get(f"{base}/healthz")[0] == 200
    wait_until(lambda: http_get(f"{base}/readyz")[0] == 200, 5)
    repo.write(desired_text("[1, 2, 3]", PROMOTED))
    commit = repo.commit("promote")
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == commit)
    # The version gauges come from a pass's observation: the apply's pass observed before it
    # loaded version 3, the pass its own write of models.config wakes observes after.
    live_gauge = r'tfs_reconciler_live_versions\{model="animals"\} 3\.0'
    wait_until(lambda: re.search(live_gauge, http_get(f"{base}/metrics")[1].decode()), 15)
    status, body = http_get(f"{base}/metrics")
    text = body.decode()
    assert status == 200
    for pattern in (
        r'tfs_reconciler_reconciles_total\{outcome="applied"\} [1-9]',
        r'tfs_reconciler_reconciles_total\{outcome="noop"\} [1-9]',
        r"tfs_reconciler_convergence_seconds_count [1-9]",
        r"tfs_reconciler_last_success_timestamp_seconds 1\.\d+e\+09",
        r'tfs_reconciler_desired_versions\{model="animals"\} 3\.0',
        r'tfs_reconciler_live_versions\{model="animals"\} 3\.0',
        rf'tfs_reconciler_applied_commit_info\{{commit="{commit}"\}} 1\.0',
    ):
        assert re.search(pattern, text), f"{pattern} not in\n{text}"
    status, body = http_get(f"{base}/status")
    assert status == 200 and json.loads(body)["last_apply"]["commit"] == commit


def test_status_works_without_a_daemon(repo: LabRepo, start_sim: StartSim) -> None:
    sim = start_sim()
    document = status_json(repo, None, sim.rest_url)
    assert document["source"] == "cli"
    assert document["config"] == os.path.realpath(repo.config)
    assert document["models"]["animals"]["live"]["labels"]["stable"] == 2


def test_status_asks_the_daemon_only_when_it_manages_the_same_models_config(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    assert status_json(repo, daemon, sim.rest_url)["source"] == "daemon"
    other = LabRepo(tmp_path / "other")
    shutil.copytree(repo.root, other.root, ignore=shutil.ignore_patterns(".*.lock"))
    document = status_json(other, daemon, sim.rest_url)  # the daemon's address, not its config
    assert document["source"] == "cli", document
    assert document["config"] == os.path.realpath(other.config)


# --- following a remote ------------------------------------------------------------------


def test_a_push_to_the_remote_becomes_live(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo.root), str(bare))
    dev = tmp_path / "dev"
    git(tmp_path, "clone", "--quiet", str(bare), str(dev))
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git-remote", str(bare), "--git-interval", "0.5")
    first = daemon.wait_for_event("reconciled")
    assert first["commit"] == git(bare, "rev-parse", "main")

    # A local commit in the daemon's own work tree is not what it follows.
    repo.write(desired_text("[1, 2, 3]", {"deprecated": 1, "stable": 1, "canary": 3}))
    repo.commit("local only")
    time.sleep(1.2)
    assert label_version(sim.rest_url, MODEL, "stable") == 2

    (dev / "desired_state" / "animals.yaml").write_text(desired_text("[1, 2, 3]", PROMOTED))
    git(dev, "add", "desired_state")
    git(dev, *GIT_IDENTITY, "commit", "--quiet", "-m", "promote")
    git(dev, "push", "--quiet", "origin", "main")
    pushed = time.monotonic()
    pushed_commit = git(dev, "rev-parse", "HEAD")
    wait_until(lambda: label_version(sim.rest_url, MODEL, "stable") == 3, 10, what="push live")
    print(f"\npush to live with --git-interval 0.5: {time.monotonic() - pushed:.3f} s")
    assert time.monotonic() - pushed < 3
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == pushed_commit)


def test_sighup_with_a_broken_env_file_keeps_the_daemon_and_its_settings(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    sim = start_sim()
    env_file = tmp_path / "tfs-reconciler.env"
    env_file.write_text("TFS_RECONCILER_RESYNC=0.5\nTFS_RECONCILER_LOG_LEVEL=debug\n")
    daemon = run_with(sim, start_daemon, "--git", "--env-file", str(env_file))
    daemon.wait_for_event("reconciled")

    env_file.write_text("TFS_RECONCILER_RESYNC=half a second\n")  # a typo
    mark = daemon.count()
    daemon.kill(signal.SIGHUP)
    failed = daemon.wait_for_event("settings_reload_failed", after=mark, timeout=5)
    assert "half a second" in failed["error"], failed
    assert daemon.process.poll() is None, daemon.text
    for _ in range(2):  # the loop runs on with the old settings (resync 0.5 s)
        mark = daemon.count()
        daemon.wait_for_event("reconciled", after=mark, timeout=3)
    repo.write(desired_text("[1, 2, 3]", PROMOTED))
    repo.commit("promote")
    wait_until(label_is(sim.rest_url, "stable", 3), 5)


def test_tfs_serving_another_config_is_drift_and_is_repaired(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    """TFS told another config behind the file's back (here a gRPC push; a restart with
    another file looks the same): no file event, so the resync finds it and repairs it."""
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    served = served_config(repo)
    model = served.models[0]
    other = replace(served, models=(replace(model, labels=(("canary", 3), ("stable", 3))),))
    mark = daemon.count()
    with TfsGrpc(sim.grpc_target) as client:
        client.reload(other)
    assert label_version(sim.rest_url, MODEL, "stable") == 3
    pushed = time.monotonic()
    wait_until(label_is(sim.rest_url, "stable", 2), 5, what="stable repaired")
    wait_until(label_is(sim.rest_url, "deprecated", 1), 5, what="deprecated repaired")
    print(f"\nTFS serving another config repaired in {time.monotonic() - pushed:.3f} s")
    drift = daemon.wait_for_event("drift", after=mark)
    assert any("stable" in d for d in drift["drift"]), drift
    assert served_config(repo) == served


def test_a_version_that_fails_to_load_is_rolled_back_and_not_retried_unchanged(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon
) -> None:
    (add_version(repo.models, 4) / "saved_model.pb").write_bytes(os.urandom(2048))
    sim = start_sim(extra_args=["--max_num_load_retries=0"])
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("reconciled")
    repo.write(desired_text("[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4}))
    repo.commit("canary -> 4 (corrupt)")
    failed = daemon.wait_for_event("reconcile_failed", timeout=15)
    assert failed["outcome"] == "rolled_back", failed
    assert label_version(sim.rest_url, MODEL, "canary") == 3
    # The resync within the backoff does not retry the same failing target.
    daemon.wait_for_event("waiting_for_change", timeout=3)
    document = status_json(repo, daemon, sim.rest_url)
    assert "4" in (document["last_error"] or ""), document
    assert label_version(sim.rest_url, MODEL, "canary") == 3

    repo.write(desired_text("[1, 2, 3]", LAB_LABELS))
    fixed = repo.commit("revert")
    daemon.wait_for_event("reconciled", commit_is(fixed), timeout=5)
    assert status_json(repo, daemon, sim.rest_url)["last_error"] is None


def test_sighup_naming_a_bad_git_branch_keeps_the_daemon_on_the_old_settings(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    sim = start_sim()
    env_file = tmp_path / "tfs-reconciler.env"
    env_file.write_text("TFS_RECONCILER_RESYNC=0.5\nTFS_RECONCILER_GIT=1\n")
    daemon = run_with(sim, start_daemon, "--env-file", str(env_file))
    daemon.wait_for_event("reconciled")

    env_file.write_text(
        "TFS_RECONCILER_RESYNC=0.5\nTFS_RECONCILER_GIT=1\nTFS_RECONCILER_GIT_BRANCH=a..b\n"
    )
    mark = daemon.count()
    daemon.kill(signal.SIGHUP)
    daemon.wait_for_event("settings_reload_failed", after=mark, timeout=5)
    time.sleep(0.5)
    assert daemon.process.poll() is None, daemon.text
    repo.write(desired_text("[1, 2, 3]", PROMOTED))
    repo.commit("promote")
    wait_until(label_is(sim.rest_url, "stable", 3), 5)


def test_watchdog_keep_alives_go_on_during_a_long_apply(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    """A load longer than WatchdogSec must not get the daemon killed by systemd mid-apply."""
    add_version(repo.models, 4)
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=2.0"])
    daemon = start_daemon(
        "--git", "--resync", "30",
        rest_url=sim.rest_url, grpc_target=sim.grpc_target,
        env={"WATCHDOG_USEC": "600000"},  # 0.6 s: a keep-alive every 0.3 s
    )  # fmt: skip
    daemon.wait_for_event("reconciled")
    repo.write(desired_text("[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4}))
    commit = repo.commit("canary -> 4 (a 2 s load)")
    written = time.monotonic()
    daemon.wait_for_event("reconciled", commit_is(commit), timeout=15)
    done = time.monotonic()
    during = [at for at, _ in notify.lines("WATCHDOG") if written <= at <= done]
    gaps = [b - a for a, b in itertools.pairwise([written, *during, done])]
    assert max(gaps) < 0.6, f"longest gap between keep-alives: {max(gaps):.2f} s"


def test_a_commit_made_while_tfs_is_down_is_applied_as_soon_as_tfs_answers(
    repo: LabRepo, start_daemon: StartDaemon
) -> None:
    sim = SimulatorProcess(repo.models, load_seconds=0.2)  # ports chosen, not started yet
    try:
        daemon = run_with(sim, start_daemon, "--git")
        daemon.wait_for_event("reconcile_failed", timeout=10)
        repo.write(desired_text("[1, 2, 3]", PROMOTED))
        repo.commit("promote while TFS is down")
        for _ in range(2):  # failures pile up: the backoff grows to 8 s
            mark = daemon.count()
            daemon.wait_for_event("reconcile_failed", after=mark, timeout=20)
        config = repo.config.read_bytes()
        assert b"Managed by tfs-reconciler" not in config  # nothing written while TFS is down

        sim.start()
        started = time.monotonic()
        wait_until(label_is(sim.rest_url, "stable", 3), 20, what="stable -> 3")
        took = time.monotonic() - started
        print(f"\npending commit live {took:.2f} s after TFS started answering")
        assert took < 3, f"{took:.1f} s: the backoff of the outage delayed the apply"
    finally:
        sim.stop()


def test_a_remote_that_cannot_be_fetched_is_shown_in_status_and_the_last_state_serves_on(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo.root), str(bare))
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git-remote", str(bare), "--git-interval", "0.5")
    daemon.wait_for_event("reconciled")

    moved = bare.rename(tmp_path / "gone.git")
    daemon.wait_for_event("fetch_failed", timeout=5)
    _, metrics = http_get(f"{daemon.metrics_url}/metrics")
    assert re.search(r"tfs_reconciler_git_fetch_failures_total [1-9]", metrics.decode())
    document = status_json(repo, daemon, sim.rest_url)
    assert "remote.git" in (document["last_error"] or ""), document
    assert label_version(sim.rest_url, MODEL, "stable") == 2
    assert daemon.process.poll() is None

    moved.rename(bare)
    wait_until(lambda: status_json(repo, daemon, sim.rest_url)["last_error"] is None, 5)


def test_an_invalid_first_commit_still_sends_ready_but_readyz_waits_for_a_good_one(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    repo.write("apiVersion: tfs-reconciler/v1\nmodels: [\n")
    repo.commit("broken from the start")
    sim = start_sim()
    daemon = run_with(sim, start_daemon, "--git")
    daemon.wait_for_event("invalid_desired_state")
    notify.wait_for("READY", "1")  # systemd must not time the start out
    base = daemon.metrics_url
    assert http_get(f"{base}/healthz")[0] == 200
    assert http_get(f"{base}/readyz")[0] == 503
    assert "animals.yaml:" in (status_json(repo, daemon, sim.rest_url)["last_error"] or "")
    assert label_version(sim.rest_url, MODEL, "stable") == 2

    repo.write(desired_text("[1, 2, 3]", PROMOTED))
    repo.commit("fixed")
    wait_until(lambda: http_get(f"{base}/readyz")[0] == 200, 5, what="readyz 200")
    assert label_version(sim.rest_url, MODEL, "stable") == 3


def test_sigterm_while_backing_off_exits_0_at_once(
    repo: LabRepo, start_daemon: StartDaemon, notify: NotifySocket
) -> None:
    daemon = start_daemon("--git", "--resync", "30")  # TFS is nowhere: it backs off
    for _ in range(2):
        mark = daemon.count()
        daemon.wait_for_event("reconcile_failed", after=mark, timeout=10)
    sent = time.monotonic()
    daemon.kill(signal.SIGTERM)
    assert daemon.wait(5) == 0, daemon.text
    print(f"\nSIGTERM while backing off: exited in {time.monotonic() - sent:.3f} s")
    assert time.monotonic() - sent < 2
    notify.wait_for("STOPPING", "1", timeout=2)


def test_git_mode_outside_a_repository_exits_1_with_a_message(
    repo: LabRepo, start_daemon: StartDaemon
) -> None:
    shutil.rmtree(repo.root / ".git")
    daemon = start_daemon("--git")
    assert daemon.wait(15) == 1
    assert "not inside a git work tree" in daemon.text, daemon.text
    assert "Traceback" not in daemon.text


def test_a_second_daemon_on_the_same_config_with_another_state_dir_exits_1(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    sim = start_sim()
    first = run_with(sim, start_daemon, "--git")
    first.wait_for_event("reconciled")
    second = run_with(sim, start_daemon, "--git", "--state-dir", str(tmp_path / "other-state"))
    try:
        code = second.wait(5)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 1
    assert f"pid {first.pid}" in second.text
